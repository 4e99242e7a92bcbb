"""Prices and what instance time costs: pure arithmetic."""

import json

import pytest

from whisperq.errors import ConfigError, PriceError
from whisperq.fleet.pricing import (
    DEFAULT_PRICES,
    MANAGED_PRICE_PER_MINUTE,
    InstancePrice,
    estimate_cost,
    hourly_price,
    merge_prices,
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


def test_estimate_cost_by_hand():
    # 1.5 instance-hours at $0.25 and 0.5 at $0.50 for half an hour of audio
    cost = estimate_cost(1800, {"x.large": 5400, "x.xlarge": 1800}, PRICES, "spot")
    assert cost.audio_hours == pytest.approx(0.5)
    assert cost.worker_seconds == pytest.approx(7200)
    assert cost.dollars == pytest.approx(0.375 + 0.25)
    assert cost.dollars_per_audio_hour == pytest.approx(1.25)
    assert cost.managed_dollars == pytest.approx(30 * 0.024)  # 30 audio minutes
    assert cost.ratio == pytest.approx(0.72 / 0.625)


def test_estimate_cost_on_demand():
    cost = estimate_cost(3600, {"x.large": 3600}, PRICES, "on_demand")
    assert cost.dollars == pytest.approx(1.0)
    assert cost.ratio == pytest.approx(1.44)


def test_estimate_cost_with_no_audio_or_no_instances_divides_by_nothing():
    empty = estimate_cost(0, {}, PRICES)
    assert empty.dollars == 0
    assert empty.dollars_per_audio_hour is None
    assert empty.ratio is None
    idle = estimate_cost(0, {"x.large": 3600}, PRICES)
    assert idle.dollars == pytest.approx(0.25)
    assert idle.dollars_per_audio_hour is None


def test_an_unknown_type_is_a_config_error_that_says_how_to_price_it():
    with pytest.raises(PriceError, match=r"no price for instance type m9\.huge") as raised:
        estimate_cost(60, {"m9.huge": 60}, PRICES)
    message = str(raised.value)
    assert isinstance(raised.value, ConfigError) and isinstance(raised.value, ValueError)
    assert "known: x.large, x.xlarge" in message
    assert 'instance_prices = { "m9.huge" = { on_demand = 0.17, spot = 0.07 } }' in message
    variable = message.split("WHISPERQ_INSTANCE_PRICES='")[1].split("'")[0]
    assert json.loads(variable) == {"m9.huge": {"on_demand": 0.17, "spot": 0.07}}
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
    with pytest.raises(PriceError, match=message) as raised:
        merge_prices(overrides, PRICES)
    assert str(raised.value).startswith(
        "instance_prices (config file or WHISPERQ_INSTANCE_PRICES): "
    )
    with pytest.raises(PriceError, match=r"^--price: "):
        merge_prices(overrides, PRICES, source="--price")
