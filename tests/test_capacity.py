"""Prices, batch cost, the backlog ETA and recent throughput: pure arithmetic."""

import pytest

from whisperq.capacity import (
    DEFAULT_PRICES,
    MANAGED_PRICE_PER_MINUTE,
    InstancePrice,
    batch_cost,
    eta_seconds,
    hourly_price,
    merge_prices,
    recent_throughput,
)

PRICES = {"x.large": InstancePrice(on_demand=1.0, spot=0.25), "x.xlarge": InstancePrice(2.0, 0.5)}


def test_the_table_has_the_types_and_spot_is_cheaper():
    for name in ("c6a.large", "c6a.xlarge", "c6a.2xlarge", "c6a.4xlarge"):
        assert name in DEFAULT_PRICES
    assert {"g4dn.xlarge", "g4dn.2xlarge"} <= set(DEFAULT_PRICES)
    for price in DEFAULT_PRICES.values():
        assert 0 < price.spot < price.on_demand
    # c6a doubles with size
    assert DEFAULT_PRICES["c6a.xlarge"].on_demand == pytest.approx(
        2 * DEFAULT_PRICES["c6a.large"].on_demand
    )
    assert pytest.approx(1.44 / 60) == MANAGED_PRICE_PER_MINUTE


def test_batch_cost_by_hand():
    # 1.5 instance-hours at $0.25 and 0.5 at $0.50 for half an hour of audio
    cost = batch_cost(1800, {"x.large": 5400, "x.xlarge": 1800}, PRICES, "spot")
    assert cost.audio_hours == pytest.approx(0.5)
    assert cost.worker_seconds == pytest.approx(7200)
    assert cost.dollars == pytest.approx(0.375 + 0.25)
    assert cost.dollars_per_audio_hour == pytest.approx(1.25)
    assert cost.managed_dollars == pytest.approx(30 * 0.024)  # 30 audio minutes
    assert cost.ratio == pytest.approx(0.72 / 0.625)


def test_batch_cost_on_demand():
    cost = batch_cost(3600, {"x.large": 3600}, PRICES, "on_demand")
    assert cost.dollars == pytest.approx(1.0)
    assert cost.ratio == pytest.approx(1.44)


def test_batch_cost_with_no_audio_or_no_instances_divides_by_nothing():
    empty = batch_cost(0, {}, PRICES)
    assert empty.dollars == 0
    assert empty.dollars_per_audio_hour is None
    assert empty.ratio is None
    idle = batch_cost(0, {"x.large": 3600}, PRICES)
    assert idle.dollars == pytest.approx(0.25)
    assert idle.dollars_per_audio_hour is None


def test_batch_cost_names_an_unknown_type():
    with pytest.raises(ValueError, match=r"m9\.huge"):
        batch_cost(60, {"m9.huge": 60}, PRICES)
    with pytest.raises(ValueError, match="market"):
        hourly_price("x.large", "reserved", PRICES)  # type: ignore[arg-type]


def test_merge_prices_overrides_partially_and_adds_types():
    merged = merge_prices(
        {"x.large": {"spot": 0.1}, "new.large": {"on_demand": 3.0, "spot": 1.0}}, PRICES
    )
    assert merged["x.large"] == InstancePrice(on_demand=1.0, spot=0.1)
    assert merged["new.large"] == InstancePrice(3.0, 1.0)
    assert merged["x.xlarge"] == PRICES["x.xlarge"]
    assert PRICES["x.large"].spot == 0.25  # the base table is left alone
    assert merge_prices({"c6a.large": {"spot": 0.02}})["c6a.large"].on_demand == pytest.approx(
        DEFAULT_PRICES["c6a.large"].on_demand
    )


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"new.large": {"spot": 1.0}}, r"on_demand price for instance type new\.large"),
        ({"new.large": {"on_demand": 1.0}}, r"spot price for instance type new\.large"),
        ({"x.large": {"reserved": 1.0}}, r"x\.large: unknown key"),
        ({"x.large": {"spot": -1}}, r"spot price for x\.large must be >= 0"),
    ],
)
def test_merge_prices_errors_name_the_type(overrides, message):
    with pytest.raises(ValueError, match=message):
        merge_prices(overrides, PRICES)


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
        (now - 30, 600.0, 80.0),
        (now - 61, 900.0, 100.0),  # outside the window
        (now + 5, 900.0, 100.0),  # in the future: clock skew, not counted
    ]
    rate = recent_throughput(finished, window_seconds=60, now=now)
    assert rate.jobs == 2
    assert rate.jobs_per_minute == pytest.approx(2.0)
    assert rate.audio_seconds_per_second == pytest.approx(900 / 60)
    assert rate.mean_processing_seconds == pytest.approx(60)
    quiet = recent_throughput([], window_seconds=300, now=now)
    assert (quiet.jobs, quiet.jobs_per_minute, quiet.mean_processing_seconds) == (0, 0.0, None)
    with pytest.raises(ValueError):
        recent_throughput(finished, window_seconds=0, now=now)
