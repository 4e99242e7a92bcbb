"""Estimates that know short files are packed several to a window: the figures, the rule
for which batches are packed, the simulator's short files, and the cost of packed jobs."""

from __future__ import annotations

import pytest

from whisperq.fleet import speeds
from whisperq.fleet.batch_cost import busy_seconds, serial_intervals
from whisperq.fleet.simulation import (
    VOICEMAIL_SECONDS,
    Call,
    SimConfig,
    builtin_day,
    peak_fleet_size,
    simulate,
)
from whisperq.fleet.simulation_report import DayOptions, run_day

CALM = dict(spot_interruptions_per_instance_hour=0.0)


# --- figures and the rule -------------------------------------------------------------------


def test_every_short_file_figure_says_where_it_comes_from():
    assert {figure.model for figure in speeds.SHORT} >= {"base", "tiny.en"}
    for figure in speeds.SHORT:
        assert figure.basis == "measured" and 0 < figure.alone <= 1 and figure.packed > 0
        assert "benchmarks/packed_speed.py" in figure.source  # the command that measures it
        assert figure.detail  # the runs behind it


def test_a_short_figure_is_alone_times_packed():
    figure = speeds.ShortFigure("m", 0.5, 3.0, "measured", "here")
    assert figure.factor(packed=True) == 1.5 and figure.factor(packed=False) == 0.5
    assert figure.describe() == (
        "1.5x the speed above (alone 0.5x it, packed 3x faster than alone; measured: here)"
    )
    assert "not packed" in figure.describe(packed=False)


def test_a_model_without_its_own_short_figure_takes_bases_as_an_estimate():
    base = speeds.short_figure("base")
    small = speeds.short_figure("small")
    assert (small.alone, small.packed) == (base.alone, base.packed)
    assert small.basis == "estimate" and "base" in small.source
    assert "estimate: " in small.describe()


def test_the_short_file_limit_is_the_packers_window():
    from whisperq.speech import packing

    assert speeds.SHORT_FILE_SECONDS == packing.WINDOW_SECONDS
    assert speeds.is_short(29.0) and not speeds.is_short(29.01)


def test_languages_never_packed_are_the_engines():
    from whisperq.speech import engine

    assert speeds._NOT_PACKED_LANGUAGES == engine.WRITTEN_WITHOUT_SPACES


@pytest.mark.parametrize(
    ("options", "packed"),
    [
        ({}, True),  # no language given: counted as packable (being built, issue 29)
        ({"language": "en"}, True),
        ({"language": "de", "channels": "mix"}, True),
        ({"language": "ja"}, False),  # written without spaces
        ({"language": "en", "diarize": True}, False),
        ({"language": "en", "channels": "split"}, False),
        ({"multilingual": True}, False),
    ],
)
def test_which_batches_estimates_take_as_packed(options, packed):
    assert speeds.may_pack(**options) is packed


def test_may_pack_agrees_with_the_engine_where_the_language_is_known():
    """The estimates' rule is the engine's, but for an unknown language."""
    from types import SimpleNamespace

    from whisperq.schemas import TranscriptionOptions
    from whisperq.speech import engine

    def model(multilingual: bool) -> object:
        inner = SimpleNamespace(is_multilingual=multilingual)
        return SimpleNamespace(model=SimpleNamespace(model=inner))

    cases = [
        ({"language": "en"}, model(True)),
        ({"language": "zh"}, model(True)),
        ({"language": "en", "diarize": True}, model(True)),
        ({"language": "en", "channels": "split"}, model(True)),
        ({"multilingual": True}, model(True)),
        ({}, model(False)),  # an English-only model knows its language
    ]
    fields = ("language", "diarize", "channels", "multilingual")
    for case, loaded in cases:
        options = TranscriptionOptions(**case)
        as_estimated = speeds.may_pack(**{name: getattr(options, name) for name in fields})
        assert as_estimated == engine.packable(options, loaded), case


def test_job_speed_applies_the_short_factor_to_short_files_only():
    assert speeds.job_speed(10.0, 7.0, 2.0) == 14.0
    assert speeds.job_speed(10.0, 7.0) == 7.0
    assert speeds.job_speed(300.0, 7.0, 2.0) == 7.0  # too long to share a window


# --- the simulator's short files --------------------------------------------------------------


def test_a_day_without_voicemails_is_the_day_it_always_was():
    assert builtin_day(calls=300, seed=4) == builtin_day(calls=300, seed=4, voicemails=0.0)


def test_voicemails_are_a_share_of_the_day_and_short():
    day = builtin_day(calls=2000, seed=5, voicemails=0.3)
    short = [call for call in day if call.audio_s < 120]
    assert 0.25 < len(short) / len(day) < 0.35
    low, high, _ = VOICEMAIL_SECONDS
    assert all(low <= call.audio_s <= high and speeds.is_short(call.audio_s) for call in short)
    everything = builtin_day(calls=500, seed=5, voicemails=1.0)
    assert all(speeds.is_short(call.audio_s) for call in everything)
    with pytest.raises(ValueError, match="share"):
        builtin_day(calls=10, voicemails=1.5)


def test_a_short_job_runs_at_its_own_speed():
    config = SimConfig(speed_x=5.0, short_factor=2.5, **CALM)
    assert config.job_seconds(10.0) == pytest.approx(10.0 / 12.5)
    assert config.job_seconds(100.0) == pytest.approx(100.0 / 5.0)
    assert SimConfig(speed_x=5.0, **CALM).job_seconds(10.0) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="short_factor"):
        SimConfig(short_factor=0.0)


def test_a_voicemail_batch_simulates_faster_packed():
    """80 voicemails at once on one always-on instance: the day's work is their alone time
    over the speedup."""
    batch = [Call(0.0, 12.0)] * 80
    alone = simulate(batch, SimConfig(speed_x=7.0, day_s=0.0, **CALM), fixed_instances=1)
    packed = simulate(
        batch, SimConfig(speed_x=7.0, day_s=0.0, short_factor=2.0, **CALM), fixed_instances=1
    )
    assert alone.busy_seconds == pytest.approx(80 * 12.0 / 7.0)
    assert packed.busy_seconds == pytest.approx(alone.busy_seconds / 2.0)


def test_the_always_on_fleet_is_sized_on_packed_work():
    hour = [Call(i * 3.6, 20.0) for i in range(1000)]  # 20,000 s of voicemail in an hour
    assert peak_fleet_size(hour, SimConfig(speed_x=2.0)) == 3
    assert peak_fleet_size(hour, SimConfig(speed_x=2.0, short_factor=2.0)) == 2


def test_the_report_says_how_short_calls_were_charged():
    packed = run_day(DayOptions(calls=300, voicemails=0.5, model="base"))
    figure = speeds.short_figure("base")
    assert packed.short_calls > 100
    header = packed.header()
    assert f"; {packed.short_calls:,} short calls (<= 29 s) packed, at {figure.describe()}" in (
        header
    )
    assert "measured: " in header
    settings = packed.as_dict()["settings"]
    assert settings["short_speed_factor"] == figure.factor(packed=True)
    assert settings["short_packed_speedup"] == figure.packed
    assert settings["short_basis"] == "measured" and settings["short_calls"] == packed.short_calls

    alone = run_day(DayOptions(calls=300, voicemails=0.5, model="base", packing=False))
    assert "not packed (--no-packing), at " in alone.header()
    assert alone.as_dict()["settings"]["short_packed_speedup"] is None
    assert packed.autoscaled.work_seconds < alone.autoscaled.work_seconds

    plain = run_day(DayOptions(calls=300))
    assert plain.short_calls == 0 and "short calls" not in plain.header()


def test_simulate_takes_voicemails_and_no_packing(isolated_settings):
    import json

    from typer.testing import CliRunner

    from whisperq.cli import app

    runner = CliRunner()
    result = runner.invoke(app, ["simulate", "--calls", "200", "--voicemails", "1", "--json"])
    assert result.exit_code == 0, result.output
    settings = json.loads(result.stdout)["settings"]
    assert settings["voicemails"] == 1 and settings["short_calls"] == 200
    assert settings["short_basis"] == "estimate"  # small, the default: base's figures
    result = runner.invoke(app, ["simulate", "--calls", "200", "--voicemails", "1", "--no-packing"])
    assert result.exit_code == 0, result.output
    assert "not packed" in result.stdout


# --- what packed jobs cost --------------------------------------------------------------------


def test_serial_intervals_lay_a_processs_jobs_one_after_another():
    # a pack of three: each recorded its share (2 s) and finished after the pack (6 s)
    pack = [(6.1, 2.0), (6.2, 2.0), (6.3, 2.0)]
    spans = [value for span in serial_intervals(pack) for value in span]
    assert spans == pytest.approx([0.3, 2.3, 2.3, 4.3, 4.3, 6.3])
    assert busy_seconds(serial_intervals(pack)) == pytest.approx(6.0)
    assert busy_seconds((end - s, end) for end, s in pack) == pytest.approx(2.2)  # the old way
    # jobs that did not overlap stay where they were
    apart = [(10.0, 4.0), (20.0, 5.0)]
    assert serial_intervals(apart) == [(6.0, 10.0), (15.0, 20.0)]
    assert serial_intervals([]) == []


def test_a_pack_is_billed_for_the_whole_pack_not_one_share():
    """Eight voicemails packed by one pool process: 8 s of transcription shared out, 1 s
    each; each finished after the pack, 0.1 s apart. The machine ran 8.8 s, not 1.8 s."""
    from datetime import UTC, datetime, timedelta

    from whisperq.batches.tracking import JobRecord
    from whisperq.fleet.batch_cost import cost_of_records
    from whisperq.fleet.pricing import DEFAULT_PRICES

    start = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    timings = {"download": 0.0, "transcribe": 1.0, "upload": 0.1}
    pack = [
        JobRecord(
            duration=10.0,
            timings=timings,
            finished_at=start + timedelta(seconds=8.0 + 0.1 * (number + 1)),
            worker_id="ip-1:11",
            instance_type="c6a.large",
        )
        for number in range(8)
    ]
    cost = cost_of_records("vm", pack, "spot", DEFAULT_PRICES, "c6a.large")
    assert cost.job_seconds == pytest.approx(8.8)
    assert cost.by_type[0].instance_seconds == pytest.approx(8.8)
