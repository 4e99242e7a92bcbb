"""What the worker fleet is doing, for `whisperq status`: the Auto Scaling group's counts,
why it is short of its desired capacity (its failed launches, with what to do), throughput
from the newest results, and the inputs of the backlog's ETA. Thin shells over the Auto
Scaling API and the result JSONs; the arithmetic is whisperq.fleet.backlog's (by the scaler's own
formula, whisperq.fleet.scaling).

Status stays cheap on big batches: one DescribeAutoScalingGroups call (and one
DescribeScalingActivities, only while the group runs fewer than it wants) and at most
``RECENT_RESULTS`` result GETs, picked by LastModified from the listing status already
makes.
"""

from __future__ import annotations

import re
import statistics
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from whisperq import defaults, storage
from whisperq.batches import tracking
from whisperq.batches.tracking import JobRecord
from whisperq.fleet.backlog import Throughput, eta_seconds, recent_throughput
from whisperq.settings import Settings
from whisperq.storage import QueueCounts

RECENT_RESULTS = 50  # result JSONs status reads for throughput, whatever the batch size
THROUGHPUT_WINDOW_S = 15 * 60.0
SCALING_ACTIVITIES = 5  # the group's newest scaling activities read for a failed launch

_PENDING_STATES = ("Pending", "Pending:Wait", "Pending:Proceed")


# --- the group ---------------------------------------------------------------------------


@dataclass(frozen=True)
class GroupState:
    name: str
    desired: int  # capacity units: instances, or their weights in a weighted group
    min_size: int  # capacity units, as desired
    max_size: int  # capacity units, as desired
    in_service: int  # instances
    pending: int  # instances launched, not yet in service (booting)
    instance_types: dict[str, int]  # of the instances in service or pending
    # The group's weights (its overrides' WeightedCapacity), by instance type: desired,
    # min and max count these units (the smallest type's instance is one); {}: unweighted.
    weights: dict[str, int] = field(default_factory=dict)
    # Capacity units of the instances in service / pending (each counts as its weight);
    # None: one per instance.
    in_service_units: int | None = None
    pending_units: int | None = None
    launch_types: tuple[str, ...] = ()  # the types the group may launch (its overrides)

    @property
    def weighted(self) -> bool:
        """Whether desired capacity counts anything but instances (a weight other than 1)."""
        return (
            any(weight != 1 for weight in self.weights.values())
            or (self.in_service_units is not None and self.in_service_units != self.in_service)
            or (self.pending_units is not None and self.pending_units != self.pending)
        )

    @property
    def in_service_capacity(self) -> int:
        """Capacity units in service, as the desired capacity counts them."""
        return self.in_service if self.in_service_units is None else self.in_service_units

    @property
    def pending_capacity(self) -> int:
        """Capacity units booting, as the desired capacity counts them."""
        return self.pending if self.pending_units is None else self.pending_units

    @property
    def running(self) -> int:
        """Capacity units in service or booting, as the desired capacity counts them."""
        return self.in_service_capacity + self.pending_capacity

    @property
    def short(self) -> bool:
        """Fewer capacity units in service or booting than the group wants."""
        return self.running < self.desired


def capacity_units(instances: Iterable[tuple[str, Any]], weights: Mapping[str, int]) -> int:
    """Capacity units of ``instances``, each (type, its own WeightedCapacity as AWS reports
    it, or None), in a group weighted by ``weights`` (type -> weighted capacity): each
    counts as its own weight, else its type's, else 1. Two c6a.4xlarge of weight 4 are 8
    units. A weighted group's desired, minimum and maximum capacity count these units, and
    so does the scaler's target (its "jobs per instance" are jobs per unit)."""
    return sum(_weight(own if own is not None else weights.get(kind)) for kind, own in instances)


def describe_group(settings: Settings, name: str, autoscaling: Any = None) -> GroupState | None:
    """The Auto Scaling group's counts (one DescribeAutoScalingGroups); None if none."""
    autoscaling = autoscaling or storage.client(settings, "autoscaling")
    groups = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[name])
    if not groups["AutoScalingGroups"]:
        return None
    group = groups["AutoScalingGroups"][0]
    overrides = group.get("MixedInstancesPolicy", {}).get("LaunchTemplate", {}).get("Overrides", [])
    weights = {
        item["InstanceType"]: _weight(item.get("WeightedCapacity"))
        for item in overrides
        if item.get("InstanceType") and item.get("WeightedCapacity") is not None
    }
    in_service: list[tuple[str, Any]] = []
    pending: list[tuple[str, Any]] = []
    for instance in group.get("Instances", []):
        state = instance.get("LifecycleState", "")
        # (type, its own weight: AWS gives each instance of a weighted group the weight it
        # was launched with; moto leaves it out, and the type's override says it)
        item = (instance.get("InstanceType") or "?", instance.get("WeightedCapacity"))
        if state == "InService":
            in_service.append(item)
        elif state in _PENDING_STATES:
            pending.append(item)
        # terminating, standby, detached: not working for the queue
    types = Counter(kind for kind, _ in in_service + pending)
    return GroupState(
        name=name,
        desired=int(group["DesiredCapacity"]),
        min_size=int(group["MinSize"]),
        max_size=int(group["MaxSize"]),
        in_service=len(in_service),
        pending=len(pending),
        instance_types=dict(sorted(types.items())),
        weights=weights,
        in_service_units=capacity_units(in_service, weights),
        pending_units=capacity_units(pending, weights),
        launch_types=tuple(item["InstanceType"] for item in overrides if item.get("InstanceType")),
    )


def _weight(value: Any) -> int:
    """An instance's capacity units (its override's WeightedCapacity; 1 when unweighted)."""
    try:
        return max(1, int(value))
    except (TypeError, ValueError):
        return 1


# --- status: why the group is short of its desired capacity --------------------------------

STANDARD_SPOT_QUOTA = "All Standard (A, C, D, H, I, M, R, T, Z) Spot Instance Requests"
GPU_SPOT_QUOTA = "All G and VT Spot Instance Requests"
_STANDARD_FAMILIES = frozenset({"a", "c", "d", "h", "i", "im", "is", "m", "r", "t", "z"})
_GPU_FAMILIES = frozenset({"g", "gr", "vt"})

# EC2 error codes a failed spot launch names, and what to do about each. {quotas}: the
# Service Quotas names for the group's instance types.
_QUOTA_HINT = (
    "request a higher {quotas} quota in Service Quotas (EC2); a new account starts at "
    "0 vCPUs for G and VT and 5 for Standard"
)
LAUNCH_HINTS: Mapping[str, str] = {
    "MaxSpotInstanceCountExceeded": _QUOTA_HINT,
    "VcpuLimitExceeded": _QUOTA_HINT,
    "InsufficientInstanceCapacity": (
        "no spot capacity for these types in these zones at the moment: the group keeps "
        "trying; more instance types (whisperq:instanceTypes) or subnets in more zones help"
    ),
    "UnfulfillableCapacity": (
        "no spot capacity matched the group's types, zones and price at the moment: the "
        "group keeps trying; if it persists, check the {quotas} quota in Service Quotas and "
        "add instance types or zones"
    ),
    "SpotMaxPriceTooLow": (
        "the spot price is above the maximum price the launch template allows: remove the "
        "maximum (spot then costs the market price, never more than on-demand) or raise it"
    ),
    "PendingVerification": (
        "AWS is still verifying the account for this region (usually minutes, at most a few "
        "hours): the group keeps trying"
    ),
}
_CODE = re.compile(r"\b([A-Z][A-Za-z]+(?:\.[A-Za-z]+)?) - ")


def spot_quota(instance_type: str) -> str:
    """The spot vCPU quota ``instance_type`` counts against, as Service Quotas names it
    (quoted) for the Standard and the G and VT families; in words for the others."""
    found = re.match(r"[a-z]*", instance_type.strip().lower())
    family = found.group() if found else ""
    if family in _GPU_FAMILIES:
        return f"'{GPU_SPOT_QUOTA}'"
    if family in _STANDARD_FAMILIES:
        return f"'{STANDARD_SPOT_QUOTA}'"
    return f"Spot Instance Requests ({family.upper() or instance_type} family)"


def launch_hint(message: str, instance_types: Iterable[str] = ()) -> tuple[str | None, str | None]:
    """The EC2 error code in a failed launch's status message, and what to do about it
    (None for a code without advice). A quota the hint names is the one the group's
    instance types count against."""
    code = next((known for known in LAUNCH_HINTS if known in message), None)
    if code is None:
        lowered = message.lower()
        if "max spot instance count exceeded" in lowered:
            code = "MaxSpotInstanceCountExceeded"
        elif "is being validated" in lowered:
            code = "PendingVerification"
        else:
            found = _CODE.search(message)
            return (found.group(1) if found else None), None
    names = list(dict.fromkeys(spot_quota(kind) for kind in instance_types if kind))
    quotas = " and ".join(names) or "the instance family's Spot Instance Requests"
    return code, LAUNCH_HINTS[code].format(quotas=quotas)


@dataclass(frozen=True)
class LaunchProblem:
    """Why the group runs fewer instances than it wants: its newest failed launch."""

    message: str  # the group's own words (the scaling activity's status message)
    code: str | None  # the EC2 error code in it (MaxSpotInstanceCountExceeded, ...)
    hint: str | None  # what to do, in words
    started_at: str | None  # when that launch was tried (ISO 8601)


def newest_failed_launch(activities: Iterable[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The newest of a group's scaling activities that failed to launch an instance (a
    failed termination is no reason to be short)."""
    failed = [
        a
        for a in activities
        if a.get("StatusCode") == "Failed"
        and not str(a.get("Description", "")).startswith("Terminating")
    ]
    failed.sort(key=lambda a: _epoch(a.get("StartTime")), reverse=True)
    return failed[0] if failed else None


def _epoch(value: Any) -> float:
    return value.timestamp() if isinstance(value, datetime) else 0.0


def failed_launch(
    activities: Iterable[Mapping[str, Any]], instance_types: Iterable[str]
) -> LaunchProblem | None:
    """The newest failed launch among ``activities``, with its hint; None if none failed."""
    activity = newest_failed_launch(activities)
    if activity is None:
        return None
    text = activity.get("StatusMessage") or activity.get("Description") or "launch failed"
    message = _one_line(str(text))
    code, hint = launch_hint(message, instance_types)
    started = activity.get("StartTime")
    return LaunchProblem(
        message=message,
        code=code,
        hint=hint,
        started_at=started.isoformat() if isinstance(started, datetime) else None,
    )


def read_launch_problem(
    autoscaling: Any, group: GroupState, fallback_type: str | None = None
) -> LaunchProblem | None:
    """Why ``group`` is short of its desired capacity, from its newest scaling activities
    (one DescribeScalingActivities); None when it is not short, or no launch failed."""
    if not group.short:
        return None
    try:
        reply = autoscaling.describe_scaling_activities(
            AutoScalingGroupName=group.name, MaxRecords=SCALING_ACTIVITIES
        )
    except (BotoCoreError, ClientError) as error:
        code = error.response.get("Error", {}).get("Code") if isinstance(error, ClientError) else ""
        return LaunchProblem(
            message=f"cannot read the group's scaling activities: {_one_line(str(error))}",
            code=code or None,
            hint="the CLI's role needs autoscaling:DescribeScalingActivities"
            if code in ("AccessDenied", "AccessDeniedException")
            else None,
            started_at=None,
        )
    types = (
        group.launch_types
        or tuple(group.instance_types)
        or ((fallback_type,) if fallback_type else ())
    )
    return failed_launch(reply.get("Activities", []), types)


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --- status: throughput and ETA --------------------------------------------------------------


def sampled_throughput(
    records: Sequence[JobRecord],
    now: float,
    window_s: float = THROUGHPUT_WINDOW_S,
    limit: int = RECENT_RESULTS,
) -> tuple[Throughput, float]:
    """Throughput from the newest ``limit`` results, and the window it is over (the rate
    itself is over the span the jobs cover: ``recent_throughput``). When all of a full
    sample finished inside the window, more finished than were read: the window shrinks
    to start at the oldest of them, which is not counted (N-1 jobs, from its finish on)."""
    finished = [(r.finished_at.timestamp(), r.duration, r.job_seconds) for r in records]
    window = window_s
    if finished and len(finished) >= limit:
        oldest = min(item[0] for item in finished)
        if now - oldest < window_s:
            window = max(1.0, now - oldest)
    return recent_throughput(finished, window, now), window


def observed_slots(
    records: Iterable[JobRecord], weights: Mapping[str, int] | None = None
) -> float | None:
    """Jobs one capacity unit runs at once, as seen in results: the median over machines
    of their distinct pool processes (worker_id is host:pid; pool processes live long),
    each divided by the machine's weight in the group (its type's, from the results'
    instance_type: a c6a.2xlarge of weight 2 running 8 is 4 per unit); per instance when
    the group is unweighted."""
    processes: dict[str, set[str]] = defaultdict(set)
    kinds: dict[str, str | None] = {}
    for record in records:
        processes[record.host].add(record.worker_id)
        kinds[record.host] = kinds.get(record.host) or record.instance_type
    if not processes:
        return None
    weights = weights or {}
    return statistics.median_low(
        len(pids) / _weight(weights.get(kinds[host] or "")) for host, pids in processes.items()
    )


@dataclass(frozen=True)
class FleetStatus:
    group_name: str
    group: GroupState | None  # None: no such group on the target
    results_read: int
    window_seconds: float
    throughput: Throughput
    mean_job_seconds: float | None  # in the window, else over the results read
    # The ETA's inputs count capacity units, as the scaler and the group do: in a weighted
    # group a unit is an instance of weight 1 (the smallest type), else an instance.
    slots_per_instance: float  # jobs one unit runs at once
    backlog: int  # visible + in flight
    jobs_per_instance: int  # the scaler's: backlog / this = desired capacity units
    max_instances: int  # units: the lower of the scaler's and the group's maximum
    boot_seconds: float
    eta_seconds: float | None  # 0 = no backlog; None = cannot tell yet
    launch_problem: LaunchProblem | None = None  # why the group is short of desired, if known

    def as_dict(self) -> dict[str, Any]:
        group = asdict(self.group) if self.group else None
        return {
            "group": self.group_name,
            "found": self.group is not None,
            **{key: value for key, value in (group or {}).items() if key != "name"},
            # capacity units in service or booting, as desired counts them
            "running_units": self.group.running if self.group else None,
            "weighted": self.group.weighted if self.group else None,
            "short": self.group.short if self.group else None,
            "launch_problem": asdict(self.launch_problem) if self.launch_problem else None,
            "throughput": {
                "window_seconds": round(self.window_seconds, 1),
                "span_seconds": round(self.throughput.span_seconds, 1),
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
                # what jobs_per_instance, max_instances and slots_per_instance count
                "per": "capacity unit" if self.group and self.group.weighted else "instance",
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
    launch_problem: LaunchProblem | None = None,
) -> FleetStatus:
    """The fleet lines of `whisperq status`: counts, recent throughput, the backlog's ETA."""
    name = settings.autoscaling_group or (group.name if group else "")
    throughput, window = sampled_throughput(records, now)
    mean = throughput.mean_processing_seconds
    if mean is None and records:
        # Nothing finished lately (a fleet back from idle): the last jobs' times still
        # tell how long a job takes.
        mean = statistics.fmean(record.job_seconds for record in records)
    weights = group.weights if group is not None else {}
    slots = settings.fleet_slots_per_instance or observed_slots(records, weights) or 1
    max_instances = settings.fleet_max_instances
    if group is not None:
        max_instances = min(max_instances, group.max_size)
    backlog = queue.visible + queue.in_flight
    eta = None
    if group is not None:
        eta = eta_seconds(
            backlog_jobs=backlog,
            mean_job_seconds=mean,
            # capacity units, as the scaler's target and the group's maximum count them
            in_service=group.in_service_capacity,
            pending=group.pending_capacity,
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
        launch_problem=launch_problem,
    )


def read_fleet_status(
    settings: Settings, s3: Any, queue: QueueCounts, newest: tracking.NewestResults
) -> FleetStatus:
    """The group (one call; one more while it is short of its desired capacity) and the
    newest results status's listing picked (one GET each)."""
    assert settings.autoscaling_group
    autoscaling = storage.client(settings, "autoscaling")
    group = describe_group(settings, settings.autoscaling_group, autoscaling)
    problem = None
    if group is not None:
        problem = read_launch_problem(autoscaling, group, settings.fleet_instance_type)
    records, _ = tracking.read_job_records(settings, s3, newest.keys)
    return fleet_status(settings, group, queue, records, time.time(), problem)
