"""Prices: dollars per instance-hour by type and market, the user's overrides merged in,
and what instance time costs next to the managed services' price for the same audio.

The numbers are whisperq.defaults' (estimates); ``whisperq cost`` and ``whisperq
simulate`` price with :func:`configured_prices`. Standard library only.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from whisperq import defaults
from whisperq.errors import PriceError

if TYPE_CHECKING:
    from whisperq.settings import Settings

Market = Literal["spot", "on_demand"]

MANAGED_PRICE_PER_MINUTE = defaults.MANAGED_PRICE_PER_MINUTE
OPENAI_WHISPER_PRICE_PER_MINUTE = defaults.OPENAI_WHISPER_PRICE_PER_MINUTE

# Where a person sets prices, for messages.
OVERRIDES = "instance_prices (config file or WHISPERQ_INSTANCE_PRICES)"


@dataclass(frozen=True)
class InstancePrice:
    """Dollars per instance-hour (Linux) on each market."""

    on_demand: float
    spot: float

    def for_market(self, market: Market) -> float:
        if market == "spot":
            return self.spot
        if market == "on_demand":
            return self.on_demand
        raise ValueError(f"market must be 'spot' or 'on_demand' (got {market!r})")


DEFAULT_PRICES: dict[str, InstancePrice] = {
    name: InstancePrice(**price) for name, price in defaults.INSTANCE_PRICES.items()
}


def merge_prices(
    overrides: Mapping[str, Mapping[str, float]],
    base: Mapping[str, InstancePrice] = DEFAULT_PRICES,
    source: str = OVERRIDES,
) -> dict[str, InstancePrice]:
    """The price table with ``overrides`` applied: ``{"c6a.large": {"spot": 0.03}}``.

    A known type may override one price; a type not in ``base`` must give both. Raises
    :class:`PriceError` naming ``source`` and the type for an unknown type with a missing
    price, an unknown key or a negative price.
    """
    merged = dict(base)
    for instance_type, given in overrides.items():
        unknown_keys = set(given) - {"on_demand", "spot"}
        if unknown_keys:
            raise PriceError(
                f"{source}: price override for {instance_type}: unknown key(s)"
                f" {sorted(unknown_keys)}; use 'on_demand' and 'spot'."
            )
        known = merged.get(instance_type)
        values: dict[str, float] = {}
        for key in ("on_demand", "spot"):
            if key in given:
                values[key] = float(given[key])
            elif known is not None:
                values[key] = getattr(known, key)
            else:
                raise PriceError(
                    f"{source}: no {key} price for instance type {instance_type}: it is not"
                    " in the price table, so give both 'on_demand' and 'spot'."
                )
            if not math.isfinite(values[key]) or values[key] < 0:
                raise PriceError(f"{source}: {key} price for {instance_type} must be >= 0.")
        merged[instance_type] = InstancePrice(**values)
    return merged


def configured_prices(settings: Settings) -> dict[str, InstancePrice]:
    """The built-in table with ``instance_prices`` from the configuration applied;
    :class:`PriceError` (naming the setting and the type) for a bad override."""
    return merge_prices(settings.instance_prices)


def _how_to_price(instance_type: str) -> str:
    example = {instance_type: {"on_demand": 0.17, "spot": 0.07}}
    return (
        f"Set its $ per instance-hour with instance_prices in the config file"
        f' (instance_prices = {{ "{instance_type}" = {{ on_demand = 0.17, spot = 0.07 }} }})'
        f" or in WHISPERQ_INSTANCE_PRICES='{json.dumps(example)}'."
    )


def hourly_price(
    instance_type: str,
    market: Market = "spot",
    prices: Mapping[str, InstancePrice] = DEFAULT_PRICES,
) -> float:
    """Dollars per instance-hour; :class:`PriceError` naming the type, the known ones and
    how to add a price when it has none."""
    price = prices.get(instance_type)
    if price is None:
        raise PriceError(
            f"no price for instance type {instance_type}; known: {', '.join(sorted(prices))}."
            f" {_how_to_price(instance_type)}"
        )
    return price.for_market(market)


@dataclass(frozen=True)
class CostEstimate:
    audio_hours: float
    worker_seconds: float  # instance-seconds billed, all types together
    dollars: float
    dollars_per_audio_hour: float | None  # None when there is no audio
    managed_dollars: float  # the same audio on the managed service
    ratio: float | None  # managed_dollars / dollars: how many times dearer; None if free


def estimate_cost(
    audio_seconds: float,
    worker_seconds_by_type: Mapping[str, float],
    prices: Mapping[str, InstancePrice] = DEFAULT_PRICES,
    market: Market = "spot",
    managed_price_per_minute: float = MANAGED_PRICE_PER_MINUTE,
) -> CostEstimate:
    """What transcribing ``audio_seconds`` cost on instances billed for
    ``worker_seconds_by_type`` (instance type -> instance-seconds), next to the managed
    service's price for the same audio."""
    if audio_seconds < 0:
        raise ValueError("audio_seconds must be >= 0")
    dollars = 0.0
    worker_seconds = 0.0
    for instance_type, seconds in worker_seconds_by_type.items():
        if seconds < 0:
            raise ValueError(f"worker seconds for {instance_type} must be >= 0")
        dollars += seconds / 3600 * hourly_price(instance_type, market, prices)
        worker_seconds += seconds
    audio_hours = audio_seconds / 3600
    managed = audio_seconds / 60 * managed_price_per_minute
    return CostEstimate(
        audio_hours=audio_hours,
        worker_seconds=worker_seconds,
        dollars=dollars,
        dollars_per_audio_hour=dollars / audio_hours if audio_hours > 0 else None,
        managed_dollars=managed,
        ratio=managed / dollars if dollars > 0 else None,
    )
