"""What the worker fleet is doing, for `whisperq status`: the Auto Scaling group's counts,
throughput from the newest results, and the inputs of the backlog's ETA. Thin shells over
the Auto Scaling API and the result JSONs; the arithmetic is whisperq.backlog's (by the
scaler's own formula, whisperq.scaling).

Status stays cheap on big batches: one DescribeAutoScalingGroups call and at most
``RECENT_RESULTS`` result GETs, picked by LastModified from the listing status already
makes.
"""

from __future__ import annotations

import statistics
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from whisperq import defaults, storage, tracking
from whisperq.backlog import Throughput, eta_seconds, recent_throughput
from whisperq.settings import Settings
from whisperq.storage import QueueCounts
from whisperq.tracking import JobRecord

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
                "scaler_period_seconds": defaults.SCALER_PERIOD_SECONDS,
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
            scaler_period_seconds=defaults.SCALER_PERIOD_SECONDS,
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
