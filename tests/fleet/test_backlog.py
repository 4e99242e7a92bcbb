"""The backlog's ETA and recent throughput: pure arithmetic."""

import pytest

from whisperq.fleet.backlog import eta_seconds, recent_throughput


def eta(**given):
    values = dict(
        backlog_jobs=100,
        mean_job_seconds=60.0,
        in_service=10,
        pending=0,
        jobs_per_instance=10,
        max_instances=10,
        boot_seconds=120.0,
        scaler_period_seconds=60.0,
    )
    values.update(given)
    return eta_seconds(**values)


def test_eta_empty_backlog_is_zero_and_no_throughput_is_none():
    assert eta(backlog_jobs=0) == 0
    assert eta(backlog_jobs=0, mean_job_seconds=None) == 0
    assert eta(mean_job_seconds=None) is None
    assert eta(mean_job_seconds=0.0) is None


def test_eta_steady_fleet():
    # 100 jobs x 60 s on 10 instances already in service, target 10
    assert eta() == pytest.approx(600)
    # two slots per instance: twice the rate
    assert eta(slots_per_instance=2) == pytest.approx(300)


def test_more_instances_finish_sooner():
    slow = eta(in_service=5, max_instances=5)
    fast = eta(in_service=10, max_instances=10)
    assert slow == pytest.approx(1200)
    assert fast < slow


def test_eta_adds_the_scale_out_delay():
    # from zero: nothing runs until a scaler period + boot (180 s), then 10 instances
    assert eta(in_service=0, backlog_jobs=40, jobs_per_instance=4) == pytest.approx(180 + 240)
    # 2 pending instances join after the boot (120 s) and do 120 s of work before the rest
    assert eta(in_service=0, pending=2, backlog_jobs=40, jobs_per_instance=4) == pytest.approx(
        180 + (40 * 60 - 2 * 60) / 10
    )
    # 5 in service, 5 more to come at 180 s: 900 slot-seconds done by then, 5100 left
    assert eta(in_service=5, backlog_jobs=100) == pytest.approx(180 + 5100 / 10)


def test_eta_respects_max_instances():
    # the formula wants 100 instances, the group allows 2
    assert eta(in_service=2, backlog_jobs=100, jobs_per_instance=1, max_instances=2) == (
        pytest.approx(3000)
    )
    assert eta(in_service=0, max_instances=0) is None  # nothing will ever run


def test_eta_no_faster_than_one_job():
    # one job on ten instances still takes one job's time
    assert eta(backlog_jobs=1, jobs_per_instance=1) == pytest.approx(60)
    assert eta(backlog_jobs=3, in_service=0, pending=5, jobs_per_instance=1) == pytest.approx(
        120 + 60
    )


def test_recent_throughput():
    now = 10_000.0
    finished = [
        (now - 10, 300.0, 40.0),
        (now - 30, 600.0, 80.0),  # started 110 s ago: before the window, which bounds it
        (now - 61, 900.0, 100.0),  # outside the window
        (now + 5, 900.0, 100.0),  # in the future: clock skew, not counted
    ]
    rate = recent_throughput(finished, window_seconds=60, now=now)
    assert rate.jobs == 2
    assert rate.span_seconds == pytest.approx(50)  # window start (now - 60) to now - 10
    assert rate.jobs_per_minute == pytest.approx(2 / (50 / 60))
    assert rate.audio_seconds_per_second == pytest.approx(900 / 50)
    assert rate.mean_processing_seconds == pytest.approx(60)
    quiet = recent_throughput([], window_seconds=300, now=now)
    assert (quiet.jobs, quiet.jobs_per_minute, quiet.mean_processing_seconds) == (0, 0.0, None)
    assert quiet.span_seconds == 0
    with pytest.raises(ValueError):
        recent_throughput(finished, window_seconds=0, now=now)


def test_throughput_right_after_a_batch_is_over_the_time_it_ran():
    """4 jobs of 3 s on two pool processes, from 1000 to 1006; status asked at 1010: 4 jobs
    in 6 s is 40 jobs/min -- not 4 per 15-minute window (0.267)."""
    finished = [(1003.0, 30.0, 3.0), (1003.0, 30.0, 3.0), (1006.0, 30.0, 3.0), (1006.0, 30.0, 3.0)]
    rate = recent_throughput(finished, window_seconds=900, now=1010)
    assert rate.jobs == 4
    assert rate.span_seconds == 6
    assert rate.jobs_per_minute == 40
    assert rate.audio_seconds_per_second == 20  # 120 audio seconds in 6 wall seconds
    assert rate.mean_processing_seconds == 3


def test_throughput_of_a_fleet_busy_all_window_is_over_the_window():
    # one job every 10 s for 20 minutes, each 30 s long: the first counted started before
    # the window, so the span is the window up to the last finish
    now = 5_000.0
    finished = [(now - n * 10, 60.0, 30.0) for n in range(120)]
    rate = recent_throughput(finished, window_seconds=900, now=now)
    assert rate.jobs == 90  # finished in (now - 900, now]
    assert rate.span_seconds == 900
    assert rate.jobs_per_minute == pytest.approx(90 / 15)


def test_throughput_of_one_job_is_its_own_time_and_never_divides_by_zero():
    assert recent_throughput([(100.0, 60.0, 12.0)], 900, now=500).jobs_per_minute == 5
    instant = recent_throughput([(100.0, 60.0, 0.0)], 900, now=500)
    assert instant.span_seconds == 1 and instant.jobs_per_minute == 60
