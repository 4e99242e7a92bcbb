"""A packed batch's estimate against its measured time: real short clips, tiny.en, packed as
a worker packs them. The estimate is calibrated on the same files decoded alone in the same
run (pack by pack, alternating), so a faster or slower (or busier) machine passes alike:
what is checked is the packed figure the estimates use (whisperq.fleet.speeds.SHORT), not
the machine's speed."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from packed_speed import measure, real_clips

from whisperq.fleet import speeds
from whisperq.fleet.simulation import Call, SimConfig, simulate

# Real clips, in references.tsv's order; two packs of 8 keep the test under a minute.
CLIPS = 16


@pytest.fixture(scope="module")
def tiny():
    from whisperq.speech import engine

    config = engine.EngineConfig(model="tiny.en")
    return engine.load_model(config), config


def simulated_batch_seconds(
    durations: list[float], speed_x: float, model: str, packed: bool
) -> float:
    """The simulator's time for a batch of ``durations`` queued at once on one instance
    with one slot, at ``model``'s short-file figure, packed or not."""
    config = SimConfig(
        speed_x=speed_x,
        short_factor=speeds.short_figure(model).factor(packed),
        spot_interruptions_per_instance_hour=0.0,
        day_s=0.0,
    )
    result = simulate([Call(0.0, seconds) for seconds in durations], config, fixed_instances=1)
    return result.busy_seconds


def test_a_packed_batchs_estimate_matches_its_measured_time(tiny):
    from whisperq.schemas import TranscriptionOptions

    loaded, config = tiny
    clips = real_clips()[:CLIPS]
    durations = [seconds for _, seconds in clips]
    assert all(speeds.is_short(seconds) for seconds in durations)
    timing = measure(
        loaded, config, [path for path, _ in clips], TranscriptionOptions(), join=False
    )
    # Calibrated on the batch alone, now, here: the model's figure that makes the estimate
    # of these files decoded alone what they took.
    short = speeds.short_figure("tiny.en")
    speed_x = timing.audio_seconds / timing.alone_seconds / short.alone
    alone = simulated_batch_seconds(durations, speed_x, "tiny.en", packed=False)
    assert alone == pytest.approx(timing.alone_seconds, rel=0.02)  # the calibration
    packed = simulated_batch_seconds(durations, speed_x, "tiny.en", packed=True)
    assert packed == pytest.approx(timing.packed_seconds, rel=0.3), (
        f"estimated {packed:.1f} s packed; measured {timing.packed_seconds:.1f} s packed, "
        f"{timing.alone_seconds:.1f} s alone ({timing.decoded_alone} of {timing.files} "
        "decoded alone when packed)"
    )
