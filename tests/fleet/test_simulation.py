"""The capacity simulator on small days: invariants, spot interruptions, traces, the plot."""

from pathlib import Path

import pytest

from whisperq.fleet.simulation import (
    Call,
    SimConfig,
    builtin_day,
    load_trace,
    peak_fleet_size,
    percentile,
    simulate,
    simulate_always_on,
)
from whisperq.fleet.speeds import SPEEDS, instance_vcpus, speed_for

from helpers import load_file_module

CALM = dict(spot_interruptions_per_instance_hour=0.0)


def small_day(calls=200, seed=3):
    """The built-in day's shape squeezed into one hour (08:00-09:00), so a few hundred
    calls keep several instances busy."""
    return [
        Call(8 * 3600 + (call.arrival_s - 8 * 3600) / 12, call.audio_s)
        for call in builtin_day(calls=calls, seed=seed)
    ]


def test_builtin_day_shape():
    day = builtin_day(calls=2000, seed=5)
    assert len(day) == 2000
    assert day == sorted(day)
    assert all(8 * 3600 <= call.arrival_s <= 20 * 3600 for call in day)
    assert all(120 <= call.audio_s <= 900 for call in day)
    lunch = sum(1 for call in day if 12 * 3600 <= call.arrival_s < 14 * 3600)
    morning = sum(1 for call in day if 8 * 3600 <= call.arrival_s < 10 * 3600)
    assert lunch > 1.8 * morning  # the peak is there
    assert len(builtin_day(calls=100, seed=5, scale=10)) == 1000
    assert builtin_day(calls=50, seed=9) == builtin_day(calls=50, seed=9)


def test_every_job_finishes_within_the_limits():
    day = small_day()
    config = SimConfig(max_instances=3, **CALM)
    result = simulate(day, config)
    assert result.jobs_done == result.calls == 200
    assert all(turnaround > 0 for turnaround in result.turnarounds)
    # no job is faster than its own transcription
    assert (
        min(t - c.audio_s / config.speed_x for t, c in zip(result.turnarounds, day, strict=True))
        >= -1e-9
    )
    assert result.peak_instances == 3  # the day needs more: the cap holds
    assert max(point.instances for point in result.timeline) <= 3
    assert all(point.busy <= point.instances for point in result.timeline)
    assert result.p50_turnaround_s <= result.p95_turnaround_s <= result.max_turnaround_s
    assert result.busy_seconds == pytest.approx(result.work_seconds)


def test_the_fleet_goes_to_zero_after_the_idle_period():
    day = [Call(100.0, 700.0), Call(130.0, 350.0)]
    config = SimConfig(idle_minutes=10, boot_s=60, model_load_s=0, **CALM)
    result = simulate(day, config)
    assert result.instances_at_end == 0
    assert result.timeline[-1].instances == 0
    assert result.peak_instances == 1  # 2 jobs, 4 per instance
    # first tick at 120 s sees the jobs, instance ready at 180 s, jobs take 100 s + 50 s,
    # last done at 330 s; the idle period starts at the 360 s tick and ends at 960 s
    assert max(result.turnarounds) == pytest.approx(330 - 130)
    assert result.end_s == pytest.approx(960)
    assert result.instance_seconds == pytest.approx(960 - 120)
    assert result.cost == pytest.approx(840 / 3600 * config.price_per_instance_hour)


def test_scale_in_never_removes_a_busy_instance():
    # one long job and a burst: the fleet grows, then shrinks while the long job runs on
    day = [Call(0.0, 7000.0)] + [Call(10.0 + i, 70.0) for i in range(40)]
    result = simulate(day, SimConfig(jobs_per_instance=1, max_instances=20, **CALM))
    assert result.jobs_done == 41
    assert result.jobs_redelivered == 0
    assert result.busy_seconds == pytest.approx(result.work_seconds)


def test_forced_interruptions_cost_only_the_redone_work():
    day = small_day(calls=200)
    times = tuple(8 * 3600 + 300 * k for k in range(1, 13))  # from 08:05
    config = SimConfig(max_instances=6, interruption_times=times, spot_grace_s=0.0, **CALM)
    result = simulate(day, config)
    assert result.jobs_done == 200
    assert result.interruptions == 12
    # no grace: every job running at a notice is handed back; one slot per instance
    assert result.jobs_redelivered == result.interruptions_busy > 0
    assert result.redone_seconds > 0
    assert result.busy_seconds == pytest.approx(result.work_seconds + result.redone_seconds)
    assert max(point.instances for point in result.timeline) <= 6
    assert result.instances_at_end == 0


def one_notice(day, max_instances, at=65.0):
    config = SimConfig(
        jobs_per_instance=1,
        max_instances=max_instances,
        boot_s=0,
        model_load_s=0,
        interruption_times=(at,),
        spot_grace_s=60.0,
        **CALM,
    )
    return simulate(day, config)


def test_a_job_that_ends_within_the_grace_is_not_redone():
    result = one_notice([Call(0.0, 70.0 * 7)], max_instances=2)  # 70 s of work
    assert (result.interruptions, result.interruptions_busy) == (1, 1)
    assert result.jobs_redelivered == 0
    assert result.turnarounds == pytest.approx([70.0])
    assert result.busy_seconds == pytest.approx(result.work_seconds)


def test_a_long_job_is_handed_back_after_the_grace_and_redone_from_the_start():
    # 200 s of work from 0; notice at 65; handed back at 125 to the replacement launched
    # at the notice (room under the maximum), done at 325
    result = one_notice([Call(0.0, 200.0 * 7)], max_instances=2)
    assert result.jobs_redelivered == 1
    assert result.redone_seconds == pytest.approx(125)
    assert result.busy_seconds == pytest.approx(200 + 125)
    assert result.turnarounds == pytest.approx([325.0])
    # at the maximum the replacement waits for the interrupted instance to go (185 s)
    capped = one_notice([Call(0.0, 200.0 * 7)], max_instances=1)
    assert capped.turnarounds == pytest.approx([185.0 + 200.0])
    assert capped.peak_instances == 1


def test_random_interruptions_keep_the_invariants_and_are_deterministic():
    day = small_day(calls=300)
    config = SimConfig(max_instances=8, spot_interruptions_per_instance_hour=2.0, seed=11)
    first = simulate(day, config)
    assert first.interruptions > 5
    assert first.jobs_done == 300
    assert first.busy_seconds == pytest.approx(first.work_seconds + first.redone_seconds)
    assert first.peak_instances <= 8
    assert max(point.instances for point in first.timeline) <= 8
    assert first.instances_at_end == 0
    again = simulate(day, config)
    assert again.turnarounds == first.turnarounds
    assert (again.cost, again.interruptions) == (first.cost, first.interruptions)
    other = simulate(day, SimConfig(max_instances=8, spot_interruptions_per_instance_hour=2.0))
    assert other.turnarounds != first.turnarounds


def test_slots_split_the_instance():
    day = [Call(0.0, 700.0), Call(0.0, 700.0)]
    config = SimConfig(slots_per_instance=2, boot_s=0, model_load_s=0, **CALM)
    result = simulate(day, config)
    assert result.peak_instances == 1
    # both jobs run at once, each at half the instance's speed: 200 s
    assert result.turnarounds == pytest.approx([200.0, 200.0])


def test_always_on_costs_more_on_the_builtin_day():
    day = small_day(calls=400)
    config = SimConfig(max_instances=50)
    autoscaled = simulate(day, config)
    fleet = peak_fleet_size(day, config)
    always_on = simulate_always_on(day, config)
    assert always_on.fixed_instances == fleet >= 1
    assert always_on.jobs_done == 400
    # billed the whole day: the fleet times 24 h (replacements follow their predecessors)
    assert always_on.instance_hours == pytest.approx(fleet * 24, rel=0.01)
    assert always_on.cost > 2 * autoscaled.cost
    assert autoscaled.cost_per_audio_hour < always_on.cost_per_audio_hour


def test_peak_fleet_size_keeps_pace_with_the_busiest_hour():
    config = SimConfig(speed_x=7.0)
    # 10 calls of 42 minutes in one hour: 7 audio hours at 7x = 1 instance-hour
    assert peak_fleet_size([Call(60.0 * i, 2520.0) for i in range(10)], config) == 1
    assert peak_fleet_size([Call(60.0 * i, 2521.0) for i in range(10)], config) == 2
    # the same calls spread over ten hours need one instance too
    assert peak_fleet_size([Call(3600.0 * i, 2520.0) for i in range(10)], config) == 1
    assert peak_fleet_size([], config) == 0


def test_a_ten_times_day_runs():
    day = builtin_day(calls=300, seed=2, scale=10)
    result = simulate(day, SimConfig(max_instances=100))
    assert result.jobs_done == 3000
    assert result.peak_instances <= 100
    assert result.instances_at_end == 0


def test_empty_day():
    result = simulate([], SimConfig())
    assert (result.jobs_done, result.instance_seconds, result.p95_turnaround_s) == (0, 0, None)
    assert result.cost_per_audio_hour is None


def test_config_is_checked():
    with pytest.raises(ValueError):
        SimConfig(max_instances=0)
    with pytest.raises(ValueError):
        SimConfig(spot_grace_s=200)


def test_instance_speed_scales_with_vcpus():
    assert [instance_vcpus(name) for name in ("c6a.large", "c6a.xlarge", "c6a.4xlarge")] == [
        2,
        4,
        16,
    ]
    base = speed_for("base", "c6a.large")
    assert (base.speed_x, base.basis) == (7.0, "measured")
    assert "benchmarks/throughput.py" in base.source
    bigger = speed_for("base", "c6a.2xlarge")
    assert bigger.speed_x == pytest.approx(28.0) and "scaled linearly" in bigger.source
    with pytest.raises(ValueError, match="vCPUs"):
        instance_vcpus("c6a.metal")


def test_every_model_the_stack_may_load_has_a_marked_speed():
    from whisperq import defaults

    for kind, model in defaults.MODEL.items():
        figure = speed_for(model, defaults.INSTANCE_TYPES[kind][0])
        assert figure.basis in ("measured", "published", "estimate") and figure.source
    assert all(f.basis == "measured" for f in SPEEDS if "benchmarks/" in f.source)
    assert speed_for("distil-large-v3", "g4dn.xlarge").speed_x == 89.0  # published, T4
    with pytest.raises(ValueError, match=r"no speed figure for large-v3 on GPU type g5\.xlarge"):
        speed_for("large-v3", "g5.xlarge")
    with pytest.raises(ValueError, match=r"known: .*base.*--speed-x"):
        speed_for("medium.en", "c6a.large")
    # larger models are slower: the estimates keep the order of the work they do
    order = ["tiny.en", "base", "small", "distil-large-v3", "large-v3"]
    cpu = [speed_for(model, "c6a.large").speed_x for model in order]
    assert cpu == sorted(cpu, reverse=True)


def test_percentile_nearest_rank():
    assert percentile([5, 1, 3, 2, 4], 50) == 3
    assert percentile(list(range(1, 101)), 95) == 95
    assert percentile([], 50) is None


def test_load_trace(tmp_path: Path):
    path = tmp_path / "day.csv"
    path.write_text("arrival_s,audio_s,agent\n300,120.5,a\n\n60,600,b\n")
    assert load_trace(path) == [Call(60.0, 600.0), Call(300.0, 120.5)]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("arrival_s,audio_s\n60,600\n90,abc\n", "line 3: arrival_s and audio_s must be numbers"),
        ("arrival_s,audio_s\n60,0\n", "line 2: audio_s must be > 0"),
        ("arrival_s,audio_s\n-5,60\n", "line 2: arrival_s must be >= 0"),
        ("arrival_s,audio_s\n60\n", "line 2: arrival_s and audio_s must be numbers"),
        ("60,600\n", "line 1: the header"),
        ("", "line 1: the header"),
    ],
)
def test_load_trace_names_the_bad_line(tmp_path: Path, text, message):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        load_trace(path)


def load_benchmark():
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "simulate.py"
    return load_file_module(path, "simulate_benchmark")


def test_benchmark_prints_the_table(tmp_path: Path, capsys):
    trace = tmp_path / "day.csv"
    trace.write_text("arrival_s,audio_s\n" + "".join(f"{60 * i},{300}\n" for i in range(50)))
    assert load_benchmark().main(["--trace", str(trace), "--max-instances", "5"]) == 0
    out = capsys.readouterr().out
    assert "autoscaled" in out and "always-on" in out
    assert "AWS Transcribe" in out and "estimates" in out
    assert load_benchmark().main(["--trace", str(tmp_path / "missing.csv")]) == 2


def test_benchmark_plot(tmp_path: Path):
    pytest.importorskip("matplotlib")
    png = tmp_path / "day.png"
    assert load_benchmark().main(["--calls", "100", "--plot", str(png), "--json"]) == 0
    data = png.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 1000
