"""What the worker fleet is doing and what a batch cost: thin shells over the Auto Scaling
API and the result JSONs; the arithmetic is whisperq.capacity's (the same formulas the
scaler and the simulator use).

Status stays cheap on big batches: one DescribeAutoScalingGroups call and at most
``RECENT_RESULTS`` result GETs, picked by LastModified from the listing status already
makes. ``whisperq cost`` is the one command that reads every result of a batch.
"""

from __future__ import annotations

import statistics
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from whisperq import storage, tracking
from whisperq.capacity import (
    MANAGED_PRICE_PER_MINUTE,
    CostEstimate,
    InstancePrice,
    Market,
    Throughput,
    batch_cost,
    eta_seconds,
    hourly_price,
    merge_prices,
    recent_throughput,
)
from whisperq.settings import Settings
from whisperq.storage import QueueCounts
from whisperq.tracking import JobRecord

SCALER_PERIOD_S = 60.0  # the scaler Lambda's schedule, rate(1 minute), in infra_pulumi
RECENT_RESULTS = 50  # result JSONs status reads for throughput, whatever the batch size
THROUGHPUT_WINDOW_S = 15 * 60.0

_PENDING_STATES = ("Pending", "Pending:Wait", "Pending:Proceed")


# --- the group ---------------------------------------------------------------------------


@dataclass(frozen=True)
class GroupState:
    name: str
    desired: int
    min_size: int
    max_size: int
    in_service: int
    pending: int  # launched, not yet in service (booting)
    instance_types: dict[str, int]  # of the instances in service or pending


def describe_group(settings: Settings, name: str) -> GroupState | None:
    """The Auto Scaling group's counts (one DescribeAutoScalingGroups); None if none."""
    autoscaling = storage.client(settings, "autoscaling")
    groups = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[name])
    if not groups["AutoScalingGroups"]:
        return None
    group = groups["AutoScalingGroups"][0]
    in_service = pending = 0
    types: Counter[str] = Counter()
    for instance in group.get("Instances", []):
        state = instance.get("LifecycleState", "")
        if state == "InService":
            in_service += 1
        elif state in _PENDING_STATES:
            pending += 1
        else:
            continue  # terminating, standby, detached: not working for the queue
        types[instance.get("InstanceType") or "?"] += 1
    return GroupState(
        name=name,
        desired=int(group["DesiredCapacity"]),
        min_size=int(group["MinSize"]),
        max_size=int(group["MaxSize"]),
        in_service=in_service,
        pending=pending,
        instance_types=dict(sorted(types.items())),
    )


# --- status: throughput and ETA --------------------------------------------------------------


def sampled_throughput(
    records: Sequence[JobRecord],
    now: float,
    window_s: float = THROUGHPUT_WINDOW_S,
    limit: int = RECENT_RESULTS,
) -> tuple[Throughput, float]:
    """Throughput from the newest ``limit`` results, and the window it is over. When all
    of a full sample finished inside the window, more finished than were read: the window
    shrinks to the sample's span (N-1 jobs over the time since the oldest of them)."""
    finished = [(r.finished_at.timestamp(), r.duration, r.job_seconds) for r in records]
    window = window_s
    if finished and len(finished) >= limit:
        oldest = min(item[0] for item in finished)
        if now - oldest < window_s:
            window = max(1.0, now - oldest)
    return recent_throughput(finished, window, now), window


def observed_slots(records: Iterable[JobRecord]) -> int | None:
    """Jobs an instance runs at once, as seen in results: the median over machines of
    their distinct pool processes (worker_id is host:pid; pool processes live long)."""
    processes: dict[str, set[str]] = defaultdict(set)
    for record in records:
        processes[record.host].add(record.worker_id)
    if not processes:
        return None
    return statistics.median_low(len(pids) for pids in processes.values())


@dataclass(frozen=True)
class FleetStatus:
    group_name: str
    group: GroupState | None  # None: no such group on the target
    results_read: int
    window_seconds: float
    throughput: Throughput
    mean_job_seconds: float | None  # in the window, else over the results read
    slots_per_instance: int
    backlog: int  # visible + in flight
    jobs_per_instance: int
    max_instances: int  # the lower of the scaler's and the group's maximum
    boot_seconds: float
    eta_seconds: float | None  # 0 = no backlog; None = cannot tell yet

    def as_dict(self) -> dict[str, Any]:
        group = asdict(self.group) if self.group else None
        return {
            "group": self.group_name,
            "found": self.group is not None,
            **{key: value for key, value in (group or {}).items() if key != "name"},
            "throughput": {
                "window_seconds": round(self.window_seconds, 1),
                "results_read": self.results_read,
                "jobs": self.throughput.jobs,
                "jobs_per_minute": round(self.throughput.jobs_per_minute, 3),
                "audio_seconds_per_second": round(self.throughput.audio_seconds_per_second, 3),
                "mean_job_seconds": _round(self.mean_job_seconds),
            },
            "backlog": self.backlog,
            "eta_seconds": _round(self.eta_seconds),
            "eta_assumes": {
                "jobs_per_instance": self.jobs_per_instance,
                "max_instances": self.max_instances,
                "boot_seconds": self.boot_seconds,
                "scaler_period_seconds": SCALER_PERIOD_S,
                "slots_per_instance": self.slots_per_instance,
            },
        }


def _round(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


def fleet_status(
    settings: Settings,
    group: GroupState | None,
    queue: QueueCounts,
    records: Sequence[JobRecord],
    now: float,
) -> FleetStatus:
    """The fleet lines of `whisperq status`: counts, recent throughput, the backlog's ETA."""
    name = settings.autoscaling_group or (group.name if group else "")
    throughput, window = sampled_throughput(records, now)
    mean = throughput.mean_processing_seconds
    if mean is None and records:
        # Nothing finished lately (a fleet back from idle): the last jobs' times still
        # tell how long a job takes.
        mean = statistics.fmean(record.job_seconds for record in records)
    slots = settings.fleet_slots_per_instance or observed_slots(records) or 1
    max_instances = settings.fleet_max_instances
    if group is not None:
        max_instances = min(max_instances, group.max_size)
    backlog = queue.visible + queue.in_flight
    eta = None
    if group is not None:
        eta = eta_seconds(
            backlog_jobs=backlog,
            mean_job_seconds=mean,
            in_service=group.in_service,
            pending=group.pending,
            jobs_per_instance=settings.fleet_jobs_per_instance,
            max_instances=max_instances,
            boot_seconds=settings.fleet_boot_seconds,
            scaler_period_seconds=SCALER_PERIOD_S,
            slots_per_instance=slots,
        )
    return FleetStatus(
        group_name=name,
        group=group,
        results_read=len(records),
        window_seconds=window,
        throughput=throughput,
        mean_job_seconds=mean,
        slots_per_instance=slots,
        backlog=backlog,
        jobs_per_instance=settings.fleet_jobs_per_instance,
        max_instances=max_instances,
        boot_seconds=settings.fleet_boot_seconds,
        eta_seconds=eta,
    )


def read_fleet_status(
    settings: Settings, s3: Any, queue: QueueCounts, newest: tracking.NewestResults
) -> FleetStatus:
    """The group (one call) and the newest results status's listing picked (one GET each)."""
    assert settings.autoscaling_group
    group = describe_group(settings, settings.autoscaling_group)
    records, _ = tracking.read_job_records(settings, s3, newest.keys)
    return fleet_status(settings, group, queue, records, time.time())


# --- cost --------------------------------------------------------------------------------


def prices(settings: Settings) -> dict[str, InstancePrice]:
    """The built-in price table with ``instance_prices`` from the configuration applied;
    ValueError (naming the type) for a bad override."""
    return merge_prices(settings.instance_prices)


def busy_seconds(intervals: Iterable[tuple[float, float]]) -> float:
    """Length of the union of ``(start, end)`` intervals: time with at least one job."""
    total = 0.0
    span: tuple[float, float] | None = None
    for start, end in sorted(intervals):
        if span is not None and start <= span[1]:
            span = (span[0], max(span[1], end))
            continue
        if span is not None:
            total += span[1] - span[0]
        span = (start, end)
    if span is not None:
        total += span[1] - span[0]
    return total


@dataclass(frozen=True)
class TypeCost:
    instance_type: str
    assumed: bool  # the results did not record it: settings.fleet_instance_type
    jobs: int
    job_seconds: float  # sum of the jobs' download + decode + transcribe + upload
    instance_seconds: float  # time its instances ran at least one job (billed basis)
    price_per_hour: float
    dollars: float


@dataclass(frozen=True)
class BatchCost:
    batch: str
    market: Market
    results: int
    unreadable: int  # result JSONs that could not be read (not counted)
    audio_seconds: float
    job_seconds: float
    by_type: list[TypeCost]
    estimate: CostEstimate

    def as_dict(self) -> dict[str, Any]:
        estimate = self.estimate
        return {
            "batch": self.batch,
            "estimate": True,
            "market": self.market,
            "results": self.results,
            "unreadable_results": self.unreadable,
            "audio_seconds": round(self.audio_seconds, 3),
            "audio_hours": round(estimate.audio_hours, 6),
            "job_seconds": round(self.job_seconds, 3),
            "instance_seconds": round(estimate.worker_seconds, 3),
            # dollars unrounded: a small batch costs fractions of a cent
            "dollars": estimate.dollars,
            "dollars_per_audio_hour": estimate.dollars_per_audio_hour,
            "managed_price_per_minute": MANAGED_PRICE_PER_MINUTE,
            "managed_dollars": estimate.managed_dollars,
            "managed_over_cost": _round(estimate.ratio, 2),
            "by_type": [asdict(item) for item in self.by_type],
            "not_included": "idle and boot time of instances; jobs redone after spot "
            "notices; failed jobs",
        }


def cost_of_records(
    batch: str,
    records: Sequence[JobRecord],
    market: Market,
    price_table: Mapping[str, InstancePrice],
    fallback_type: str,
    unreadable: int = 0,
) -> BatchCost:
    """What a batch's finished jobs cost. An instance is billed for its time, not per job:
    jobs that overlap on one machine (a worker's pool processes) count once, so the
    billed basis is, per machine, the time it ran at least one job. ValueError naming
    the type for a type with no price."""
    intervals: dict[tuple[str, bool], dict[str, list[tuple[float, float]]]] = defaultdict(
        lambda: defaultdict(list)
    )
    jobs: Counter[tuple[str, bool]] = Counter()
    job_seconds: Counter[tuple[str, bool]] = Counter()
    for record in records:
        key = (record.instance_type or fallback_type, record.instance_type is None)
        end = record.finished_at.timestamp()
        intervals[key][record.host].append((end - record.job_seconds, end))
        jobs[key] += 1
        job_seconds[key] += record.job_seconds
    by_type = []
    for key in sorted(intervals):
        instance_type, assumed = key
        price = hourly_price(instance_type, market, price_table)
        seconds = sum(busy_seconds(spans) for spans in intervals[key].values())
        by_type.append(
            TypeCost(
                instance_type=instance_type,
                assumed=assumed,
                jobs=jobs[key],
                job_seconds=job_seconds[key],
                instance_seconds=seconds,
                price_per_hour=price,
                dollars=seconds / 3600 * price,
            )
        )
    seconds_by_type: Counter[str] = Counter()
    for item in by_type:
        seconds_by_type[item.instance_type] += item.instance_seconds
    audio = sum(record.duration for record in records)
    return BatchCost(
        batch=batch,
        market=market,
        results=len(records),
        unreadable=unreadable,
        audio_seconds=audio,
        job_seconds=sum(job_seconds.values()),
        by_type=by_type,
        estimate=batch_cost(audio, seconds_by_type, price_table, market),
    )


def read_batch_records(
    settings: Settings, s3: Any, batch: str, threads: int = 16
) -> tuple[list[JobRecord], int]:
    """Every finished result of the batch: one listing, then GETs ``threads`` at a time."""
    return tracking.read_job_records(
        settings, s3, tracking.result_keys(settings, s3, batch), threads=threads
    )
