"""Capacity and cost arithmetic: prices, what a batch costs, when a backlog will be done,
and throughput from recent results. Pure functions, standard library only, so the status
command, the simulator and the benchmarks share one set of formulas.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from whisperq.scaling import desired_capacity

Market = Literal["spot", "on_demand"]


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


# Estimates as of 2026, us-east-1, Linux: on-demand from the public list price, spot a
# typical price (about 55-60% off for c6a, about 60% off for g4dn; it moves by hour, zone
# and type). Override with merge_prices() when you know your own prices.
DEFAULT_PRICES: dict[str, InstancePrice] = {
    "c6a.large": InstancePrice(on_demand=0.0765, spot=0.033),
    "c6a.xlarge": InstancePrice(on_demand=0.153, spot=0.066),
    "c6a.2xlarge": InstancePrice(on_demand=0.306, spot=0.132),
    "c6a.4xlarge": InstancePrice(on_demand=0.612, spot=0.264),
    "g4dn.xlarge": InstancePrice(on_demand=0.526, spot=0.21),
    "g4dn.2xlarge": InstancePrice(on_demand=0.752, spot=0.30),
    # The other types the stack's groups launch (infra_pulumi INSTANCE_TYPES), so that
    # `whisperq cost` prices a default deployment's results; spot by the same rule of thumb.
    "c6i.xlarge": InstancePrice(on_demand=0.17, spot=0.073),
    "c7a.xlarge": InstancePrice(on_demand=0.2053, spot=0.088),
    "m6a.xlarge": InstancePrice(on_demand=0.1728, spot=0.074),
    "g5.xlarge": InstancePrice(on_demand=1.006, spot=0.40),
    "g6.xlarge": InstancePrice(on_demand=0.8048, spot=0.32),
}

# AWS Transcribe batch, standard tier, first 250,000 minutes a month (list price).
MANAGED_PRICE_PER_MINUTE = 0.024
# OpenAI whisper-1 API (list price), for a second point of comparison.
OPENAI_WHISPER_PRICE_PER_MINUTE = 0.006


def merge_prices(
    overrides: Mapping[str, Mapping[str, float]],
    base: Mapping[str, InstancePrice] = DEFAULT_PRICES,
) -> dict[str, InstancePrice]:
    """The price table with ``overrides`` applied: ``{"c6a.large": {"spot": 0.03}}``.

    A known type may override one price; a type not in ``base`` must give both. Raises
    ValueError naming the type for an unknown type with a missing price, an unknown key
    or a negative price.
    """
    merged = dict(base)
    for instance_type, given in overrides.items():
        unknown_keys = set(given) - {"on_demand", "spot"}
        if unknown_keys:
            raise ValueError(
                f"price override for {instance_type}: unknown key(s) {sorted(unknown_keys)};"
                " use 'on_demand' and 'spot'"
            )
        known = merged.get(instance_type)
        values: dict[str, float] = {}
        for key in ("on_demand", "spot"):
            if key in given:
                values[key] = float(given[key])
            elif known is not None:
                values[key] = getattr(known, key)
            else:
                raise ValueError(
                    f"no {key} price for instance type {instance_type}: it is not in the"
                    " price table, so give both 'on_demand' and 'spot'"
                )
            if not math.isfinite(values[key]) or values[key] < 0:
                raise ValueError(f"{key} price for {instance_type} must be >= 0")
        merged[instance_type] = InstancePrice(**values)
    return merged


def hourly_price(
    instance_type: str,
    market: Market = "spot",
    prices: Mapping[str, InstancePrice] = DEFAULT_PRICES,
) -> float:
    """Dollars per instance-hour; ValueError naming the type when it has no price."""
    price = prices.get(instance_type)
    if price is None:
        raise ValueError(
            f"no price for instance type {instance_type}; known: {', '.join(sorted(prices))}"
            " (add it with a price override)"
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


def batch_cost(
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


def eta_seconds(
    backlog_jobs: int,
    mean_job_seconds: float | None,
    in_service: int,
    pending: int,
    jobs_per_instance: int,
    max_instances: int,
    boot_seconds: float,
    scaler_period_seconds: float,
    slots_per_instance: int = 1,
) -> float | None:
    """Seconds until the backlog (visible + in-flight jobs) is done; 0 for no backlog,
    None when it cannot be estimated (no mean job time yet, or no instance will ever run).

    The model, a fluid approximation:

    - work = backlog_jobs * mean_job_seconds slot-seconds; an instance runs
      ``slots_per_instance`` jobs at once, each taking mean_job_seconds;
    - the fleet grows to ``desired_capacity(backlog)`` (the scaler's own formula, so it
      respects max_instances) and keeps its instances until the backlog is done (busy
      workers are protected from scale-in);
    - from now the ``in_service`` instances work; the ``pending`` ones (launched, not in
      service) join after ``boot_seconds`` (boot + model load; assumed just launched);
      the rest of the target joins after one scaler period + ``boot_seconds``;
    - no more jobs run at once than there are jobs, and nothing finishes sooner than one
      job's time after the first instance is there.

    It ignores the progress of jobs already running (pessimistic) and the tail where the
    last jobs leave slots idle (optimistic).
    """
    if backlog_jobs <= 0:
        return 0.0
    if mean_job_seconds is None or not math.isfinite(mean_job_seconds) or mean_job_seconds <= 0:
        return None
    if slots_per_instance < 1:
        raise ValueError("slots_per_instance must be at least 1")
    in_service, pending = max(0, in_service), max(0, pending)
    target = desired_capacity(backlog_jobs, 0, jobs_per_instance, max_instances)
    after_pending = in_service + pending
    final = max(target, after_pending)
    scale_out = scaler_period_seconds + boot_seconds
    # (from, instances) steps; each lasts until the next one starts
    steps = [(0.0, in_service), (boot_seconds, after_pending), (scale_out, final)]
    first = next((start for start, instances in steps if instances > 0), None)
    if first is None:
        return None
    work = backlog_jobs * mean_job_seconds
    done_at = math.inf
    for index, (start, instances) in enumerate(steps):
        end = steps[index + 1][0] if index + 1 < len(steps) else math.inf
        rate = min(instances * slots_per_instance, backlog_jobs)  # slot-seconds per second
        if rate <= 0 or end <= start:
            continue
        if work <= rate * (end - start):
            done_at = start + work / rate
            break
        work -= rate * (end - start)
    return max(done_at, first + mean_job_seconds)


@dataclass(frozen=True)
class Throughput:
    jobs: int  # finished in the window
    jobs_per_minute: float
    audio_seconds_per_second: float  # audio seconds transcribed per wall second, fleet-wide
    mean_processing_seconds: float | None  # None when no job finished in the window


def recent_throughput(
    finished: list[tuple[float, float, float]], window_seconds: float, now: float
) -> Throughput:
    """Throughput over the last ``window_seconds`` from
    ``(finished_at_epoch, audio_seconds, processing_seconds)`` of finished jobs."""
    if window_seconds <= 0:
        raise ValueError("window_seconds must be > 0")
    recent = [item for item in finished if now - window_seconds < item[0] <= now]
    audio = sum(item[1] for item in recent)
    processing = sum(item[2] for item in recent)
    return Throughput(
        jobs=len(recent),
        jobs_per_minute=len(recent) / (window_seconds / 60),
        audio_seconds_per_second=audio / window_seconds,
        mean_processing_seconds=processing / len(recent) if recent else None,
    )
