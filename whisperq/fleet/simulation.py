"""An event-driven simulator of the deployed system: calls arrive on the queue, the scaler
Lambda runs ``whisperq.fleet.scaling.decide`` every period, the Auto Scaling group launches and
removes spot instances, workers take one job per slot, spot notices take instances away.

Standard library only and fast (a 100,000-call day runs in seconds), so that capacity and
cost questions are answered by running the day, not by guessing. The model, in short:

- Queue: FIFO. A job handed back after a spot notice goes to the front (it is the oldest).
- Scaler: every ``scaler_period_s``, ``decide(visible, in_flight, current=desired, ...)``
  exactly as the Lambda calls it; the result is the group's desired capacity.
- Group: launches instances up to desired (never more than ``max_instances`` alive,
  interrupted ones included); an instance takes work ``boot_s + model_load_s`` after its
  launch. Above desired it removes booting instances first, then idle ones (newest
  first); busy instances are protected from scale-in and go when they are idle.
- Worker: ``slots_per_instance`` jobs at once; each slot runs at
  ``speed_x / slots_per_instance`` (the instance's cores are split between its worker
  processes, as ``cpu_threads = cores / concurrency`` does), so a job takes
  ``audio_s * slots / speed_x`` seconds, ``speed_x`` being the speed on long calls; a short
  file (``speeds.SHORT_FILE_SECONDS``) runs at ``short_factor`` times it (slower alone, as
  each pays a whole window; faster packed several to a window: ``speeds.ShortFigure``; a
  packed job is charged its share of a pack, as if others were always there to share with).
  Dispatch fills the oldest instances first.
- Spot: notices arrive at random (exponential, ``spot_interruptions_per_instance_hour``)
  or at the given ``interruption_times``. On a notice the worker takes no more work; a
  running job that ends within ``spot_grace_s`` finishes, the others are handed back at
  notice + grace and start again from the beginning elsewhere (the redone work is the
  job's time so far). The instance goes at notice + ``spot_notice_s`` (billed until then);
  the group launches its replacement as soon as that keeps within ``max_instances``.
- Billing: per second from launch to termination, at ``price_per_instance_hour``.
"""

from __future__ import annotations

import csv
import heapq
import math
import random
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from whisperq import defaults
from whisperq.fleet import speeds
from whisperq.fleet.scaling import decide

DAY_SECONDS = 24 * 3600

_SIMULATED_PRICES = defaults.INSTANCE_PRICES[defaults.SIMULATED_INSTANCE_TYPE]


class Call(NamedTuple):
    arrival_s: float  # seconds from the start of the day
    audio_s: float


@dataclass(frozen=True)
class SimConfig:
    # the stack's defaults (whisperq:jobsPerInstance ...): whisperq.defaults
    jobs_per_instance: int = defaults.JOBS_PER_INSTANCE
    max_instances: int = defaults.MAX_INSTANCES
    idle_minutes: float = float(defaults.IDLE_MINUTES)
    scaler_period_s: float = defaults.SCALER_PERIOD_SECONDS
    boot_s: float = defaults.BOOT_SECONDS  # spot launch to a running worker service
    model_load_s: float = defaults.MODEL_LOAD_SECONDS
    # audio s per wall s of ONE instance, all slots together
    # the one figure measured here (base); a simulated day takes its model's (speeds)
    speed_x: float = speeds.speed_for("base", defaults.SIMULATED_INSTANCE_TYPE).speed_x
    slots_per_instance: int = 1  # worker concurrency
    # short files' speed as a multiple of speed_x (speeds.ShortFigure.factor)
    short_factor: float = 1.0
    spot_interruptions_per_instance_hour: float = defaults.SPOT_INTERRUPTIONS_PER_INSTANCE_HOUR
    spot_notice_s: float = defaults.SPOT_NOTICE_SECONDS
    # the worker's min(shutdown_grace_seconds, spot_grace_seconds), at their defaults
    spot_grace_s: float = min(defaults.SHUTDOWN_GRACE_SECONDS, defaults.SPOT_GRACE_SECONDS)
    price_per_instance_hour: float = _SIMULATED_PRICES["spot"]
    seed: int = 0
    # Forced notices (seconds from the start of the day), for tests and what-ifs: each goes
    # to the oldest busy instance, else the oldest one taking work; skipped if none.
    interruption_times: tuple[float, ...] = ()
    day_s: float = DAY_SECONDS  # what an always-on fleet is billed for, at least

    def __post_init__(self) -> None:
        if self.jobs_per_instance < 1 or self.max_instances < 1 or self.slots_per_instance < 1:
            raise ValueError("jobs_per_instance, max_instances and slots must be at least 1")
        if self.speed_x <= 0 or self.scaler_period_s <= 0:
            raise ValueError("speed_x and scaler_period_s must be > 0")
        if self.short_factor <= 0:
            raise ValueError("short_factor must be > 0")
        if min(self.boot_s, self.model_load_s, self.idle_minutes, self.spot_grace_s) < 0:
            raise ValueError("boot_s, model_load_s, idle_minutes and spot_grace_s must be >= 0")
        if self.spot_interruptions_per_instance_hour < 0:
            raise ValueError("spot_interruptions_per_instance_hour must be >= 0")
        if self.spot_grace_s > self.spot_notice_s:
            raise ValueError("spot_grace_s cannot exceed spot_notice_s")

    @property
    def ready_after_s(self) -> float:
        return self.boot_s + self.model_load_s

    def job_seconds(self, audio_s: float) -> float:
        """Wall seconds one job occupies its slot (a packed short file: its share)."""
        speed = speeds.job_speed(audio_s, self.speed_x, self.short_factor)
        return audio_s * self.slots_per_instance / speed


class TimelinePoint(NamedTuple):
    t: float
    backlog: int  # visible + in flight, what the scaler sees
    instances: int  # alive (booting, working, or serving out a spot notice)
    busy: int  # instances running at least one job


@dataclass
class SimResult:
    calls: int
    audio_seconds: float
    turnarounds: list[float]  # finish - arrival, per job, in job order
    jobs_done: int
    jobs_redelivered: int
    interruptions: int
    interruptions_busy: int  # notices to instances that were running a job
    peak_instances: int
    launches: int
    instance_seconds: float  # billed
    cost: float
    work_seconds: float  # slot-seconds the jobs need once each
    redone_seconds: float  # slot-seconds of work lost to handed-back jobs
    busy_seconds: float  # slot-seconds spent running jobs (= work + redone)
    end_s: float  # the last event: last instance gone (autoscaled) or billing end
    instances_at_end: int
    timeline: list[TimelinePoint] = field(repr=False)
    fixed_instances: int | None = None  # set for an always-on fleet

    @property
    def audio_hours(self) -> float:
        return self.audio_seconds / 3600

    @property
    def instance_hours(self) -> float:
        return self.instance_seconds / 3600

    @property
    def cost_per_audio_hour(self) -> float | None:
        return self.cost / self.audio_hours if self.audio_seconds > 0 else None

    def turnaround_percentile(self, percent: float) -> float | None:
        return percentile(self.turnarounds, percent)

    @property
    def p50_turnaround_s(self) -> float | None:
        return self.turnaround_percentile(50)

    @property
    def p95_turnaround_s(self) -> float | None:
        return self.turnaround_percentile(95)

    @property
    def max_turnaround_s(self) -> float | None:
        return max(self.turnarounds) if self.turnarounds else None


def percentile(values: Sequence[float], percent: float) -> float | None:
    """Nearest-rank percentile; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(percent / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


# Voicemails (an assumption, not measured): 3-29 s, most about 10 s; all short enough to
# share a window (speeds.SHORT_FILE_SECONDS).
VOICEMAIL_SECONDS = (3.0, 29.0, 10.0)  # low, high, mode (triangular)


def builtin_day(
    calls: int = 10_000, seed: int = 1, scale: float = 1.0, voicemails: float = 0.0
) -> list[Call]:
    """A call centre's day: ``calls * scale`` recordings of 2-15 minutes (triangular, most
    about 5 minutes, mean 7.3) arriving 08:00-20:00 at a base rate with a bell-shaped
    lunchtime peak (centred on 13:00, three times the base rate there), sorted by arrival.
    A share ``voicemails`` (0-1) of them are voicemails (``VOICEMAIL_SECONDS``) instead."""
    if not 0 <= voicemails <= 1:
        raise ValueError("voicemails must be a share between 0 and 1")
    count = round(calls * scale)
    rng = random.Random(seed)

    def rate(hour: float) -> float:  # relative; peak 3.0 at 13:00, 1.0 far from it
        return 1.0 + 2.0 * math.exp(-0.5 * ((hour - 13.0) / 1.25) ** 2)

    arrivals: list[Call] = []
    while len(arrivals) < count:
        hour = rng.uniform(8.0, 20.0)
        if rng.random() * 3.0 <= rate(hour):  # rejection sampling of the profile
            audio = rng.triangular(120.0, 900.0, 300.0)
            # drawn only when asked, so the day without voicemails stays the same
            if voicemails and rng.random() < voicemails:
                audio = rng.triangular(*VOICEMAIL_SECONDS)
            arrivals.append(Call(hour * 3600, audio))
    arrivals.sort()
    return arrivals


def load_trace(path: str | Path) -> list[Call]:
    """Calls from a CSV file with a header and the columns ``arrival_s,audio_s`` (seconds
    from the start of the day; other columns are ignored), sorted by arrival."""
    path = Path(path)
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        columns = reader.fieldnames or []
        missing = [name for name in ("arrival_s", "audio_s") if name not in columns]
        if missing:
            raise ValueError(
                f"{path}: line 1: the header must name the columns arrival_s,audio_s"
                f" (missing {', '.join(missing)})"
            )
        calls: list[Call] = []
        for row in reader:
            line = reader.line_num
            if not any((value or "").strip() for value in row.values()):
                continue  # blank line
            try:
                arrival = float(row["arrival_s"])
                audio = float(row["audio_s"])
            except (TypeError, ValueError):
                raise ValueError(
                    f"{path}: line {line}: arrival_s and audio_s must be numbers"
                    f" (got {row.get('arrival_s')!r}, {row.get('audio_s')!r})"
                ) from None
            if not (math.isfinite(arrival) and arrival >= 0):
                raise ValueError(f"{path}: line {line}: arrival_s must be >= 0 (got {arrival})")
            if not (math.isfinite(audio) and audio > 0):
                raise ValueError(f"{path}: line {line}: audio_s must be > 0 (got {audio})")
            calls.append(Call(arrival, audio))
    calls.sort()
    return calls


def peak_fleet_size(arrivals: Sequence[Call], config: SimConfig, window_s: float = 3600) -> int:
    """Instances that keep pace with the busiest ``window_s`` of arriving work (on
    average over the window; shorter bursts still queue). 0 for no calls."""
    if not arrivals:
        return 0
    ordered = sorted(arrivals)
    # each call's work as audio decoded alone at speed_x (a packed short file's is less)
    work = [
        call.audio_s
        * config.speed_x
        / speeds.job_speed(call.audio_s, config.speed_x, config.short_factor)
        for call in ordered
    ]
    busiest = 0.0
    in_window = 0.0
    first = 0
    for index, call in enumerate(ordered):
        in_window += work[index]
        while ordered[first].arrival_s <= call.arrival_s - window_s:
            in_window -= work[first]
            first += 1
        busiest = max(busiest, in_window)
    return max(1, math.ceil(busiest / (config.speed_x * window_s)))


# Event kinds; at equal times the lower number goes first (a job that finishes at the
# moment of a scaler run is no longer in flight for it).
_FINISH, _HANDBACK, _TERMINATE, _READY, _ARRIVAL, _NOTICE, _TICK = range(7)
_BOOTING, _WORKING, _DRAINING = range(3)


class _Instance:
    __slots__ = ("id", "launched", "running", "state")

    def __init__(self, instance_id: int, launched: float) -> None:
        self.id = instance_id
        self.launched = launched
        self.state = _BOOTING
        self.running: dict[int, float] = {}  # job -> started at


def simulate(
    arrivals: Sequence[Call], config: SimConfig, fixed_instances: int | None = None
) -> SimResult:
    """Run the day. Autoscaled by default; with ``fixed_instances`` an always-on fleet of
    that size (already up at the start, no scaler, interrupted instances replaced, the
    fleet billed from the start until ``config.day_s`` or the last job, the later)."""
    calls = sorted(arrivals)
    count = len(calls)
    audio = [call.audio_s for call in calls]
    work = [config.job_seconds(a) for a in audio]
    rng = random.Random(config.seed)
    if fixed_instances is not None and fixed_instances < 1:
        raise ValueError("fixed_instances must be at least 1")
    fixed = fixed_instances is not None
    max_instances = config.max_instances if fixed_instances is None else fixed_instances
    interrupt_rate = config.spot_interruptions_per_instance_hour / 3600

    events: list[tuple[float, int, int, int, int]] = []  # (t, kind, seq, a, b)
    seq = 0

    def push(t: float, kind: int, a: int = 0, b: int = 0) -> None:
        nonlocal seq
        seq += 1
        heapq.heappush(events, (t, kind, seq, a, b))

    queue: deque[int] = deque()
    attempt = [0] * count
    finish_at = [0.0] * count
    where = [-1] * count  # instance running the job
    turnarounds = [0.0] * count
    alive: dict[int, _Instance] = {}
    free: list[int] = []  # heap of instance ids that may have a free slot
    draining = booting = 0
    running_jobs = 0
    desired = 0 if fixed_instances is None else fixed_instances
    idle_since: float | None = None
    stats = {"done": 0, "redelivered": 0, "interruptions": 0, "busy_notices": 0}
    launches = peak = 0
    billed = busy_s = redone_s = 0.0
    timeline: list[TimelinePoint] = []

    def launch(now: float, ready_now: bool = False) -> None:
        nonlocal launches, peak, booting
        instance = _Instance(launches, now)
        launches += 1
        alive[instance.id] = instance
        peak = max(peak, len(alive))
        if ready_now:
            instance.state = _WORKING
            heapq.heappush(free, instance.id)
        else:
            booting += 1
            push(now + config.ready_after_s, _READY, instance.id)
        if interrupt_rate > 0:
            push(now + rng.expovariate(interrupt_rate), _NOTICE, instance.id)

    def terminate(instance: _Instance, now: float) -> None:
        nonlocal billed, draining, booting
        del alive[instance.id]
        billed += now - instance.launched
        if instance.state == _DRAINING:
            draining -= 1
        elif instance.state == _BOOTING:
            booting -= 1

    def dispatch(now: float) -> None:
        nonlocal running_jobs
        while queue and free:
            instance = alive.get(free[0])
            if (
                instance is None
                or instance.state != _WORKING
                or len(instance.running) >= config.slots_per_instance
            ):
                heapq.heappop(free)
                continue
            job = queue.popleft()
            instance.running[job] = now
            where[job] = instance.id
            running_jobs += 1
            finish_at[job] = now + work[job]
            push(finish_at[job], _FINISH, job, attempt[job])
            if len(instance.running) >= config.slots_per_instance:
                heapq.heappop(free)

    def reconcile(now: float) -> None:
        """The group moving towards its desired capacity."""
        active = len(alive) - draining
        if active < desired:
            for _ in range(min(desired - active, max_instances - len(alive))):
                launch(now)
        elif active > desired and (booting or not queue):
            # (with jobs waiting after dispatch, no instance taking work is idle)
            # booting ones first, then idle ones, newest first; busy ones are protected
            removable = sorted(
                (
                    item
                    for item in alive.values()
                    if item.state == _BOOTING or (item.state == _WORKING and not item.running)
                ),
                key=lambda item: (item.state != _BOOTING, -item.id),
            )
            for instance in removable[: active - desired]:
                terminate(instance, now)

    def notice(instance: _Instance, now: float) -> None:
        nonlocal draining, booting
        stats["interruptions"] += 1
        if instance.running:
            stats["busy_notices"] += 1
        if instance.state == _BOOTING:
            booting -= 1
        instance.state = _DRAINING
        draining += 1
        for job in instance.running:
            if finish_at[job] > now + config.spot_grace_s:
                push(now + config.spot_grace_s, _HANDBACK, job, attempt[job])
        push(now + config.spot_notice_s, _TERMINATE, instance.id)

    for _ in range(fixed_instances or 0):
        launch(0.0, ready_now=True)
    for job, call in enumerate(calls):
        push(call.arrival_s, _ARRIVAL, job)
    for t in config.interruption_times:
        push(t, _NOTICE, -1)
    if count:
        push(0.0, _TICK)

    now = 0.0
    while events and count:  # no calls: nothing to run (an always-on fleet is just billed)
        now, kind, _, a, b = heapq.heappop(events)
        if kind == _FINISH:
            if b != attempt[a] or where[a] < 0:
                continue  # handed back meanwhile
            instance = alive[where[a]]
            busy_s += now - instance.running.pop(a)
            where[a] = -1
            running_jobs -= 1
            stats["done"] += 1
            turnarounds[a] = now - calls[a].arrival_s
            if instance.state == _WORKING:
                heapq.heappush(free, instance.id)
        elif kind == _ARRIVAL:
            queue.append(a)
        elif kind == _TICK:
            if not fixed:
                decision = decide(
                    visible=len(queue),
                    in_flight=running_jobs,
                    current=desired,
                    jobs_per_instance=config.jobs_per_instance,
                    max_instances=config.max_instances,
                    idle_minutes=config.idle_minutes,
                    idle_since=idle_since,
                    now=now,
                )
                desired, idle_since = decision.desired, decision.idle_since
        elif kind == _READY:
            booted = alive.get(a)
            if booted is not None and booted.state == _BOOTING:
                booted.state = _WORKING
                booting -= 1
                heapq.heappush(free, booted.id)
        elif kind == _NOTICE:
            if a < 0:  # forced: the oldest busy instance, else the oldest taking work
                candidates = [item for item in alive.values() if item.state == _WORKING]
                busy = [item for item in candidates if item.running]
                target = min(busy or candidates, key=lambda item: item.id, default=None)
            else:
                target = alive.get(a)
            if target is not None and target.state != _DRAINING:
                notice(target, now)
        elif kind == _HANDBACK:
            if b == attempt[a] and where[a] >= 0:
                instance = alive[where[a]]
                elapsed = now - instance.running.pop(a)
                busy_s += elapsed
                redone_s += elapsed
                where[a] = -1
                attempt[a] += 1
                running_jobs -= 1
                stats["redelivered"] += 1
                queue.appendleft(a)
        elif kind == _TERMINATE:
            leaving = alive.get(a)
            if leaving is not None:
                terminate(leaving, now)
        dispatch(now)
        reconcile(now)  # what it launches is not ready yet: nothing more to dispatch
        if kind == _TICK:
            busy_count = sum(1 for item in alive.values() if item.running)
            timeline.append(TimelinePoint(now, len(queue) + running_jobs, len(alive), busy_count))
            finished = stats["done"] == count
            if finished and (fixed or not alive):
                break
            push(now + config.scaler_period_s, _TICK)

    end = now
    instances_at_end = len(alive)
    if fixed:
        end = max(config.day_s, now)
        for instance in list(alive.values()):
            terminate(instance, end)
    return SimResult(
        calls=count,
        audio_seconds=sum(audio),
        turnarounds=turnarounds,
        jobs_done=stats["done"],
        jobs_redelivered=stats["redelivered"],
        interruptions=stats["interruptions"],
        interruptions_busy=stats["busy_notices"],
        peak_instances=peak,
        launches=launches,
        instance_seconds=billed,
        cost=billed / 3600 * config.price_per_instance_hour,
        work_seconds=sum(work),
        redone_seconds=redone_s,
        busy_seconds=busy_s,
        end_s=end,
        instances_at_end=instances_at_end,
        timeline=timeline,
        fixed_instances=fixed_instances,
    )


def simulate_always_on(
    arrivals: Sequence[Call], config: SimConfig, instances: int | None = None
) -> SimResult:
    """The same day on a fixed fleet, by default ``peak_fleet_size`` instances (not capped
    by ``max_instances``: it is another deployment), billed for the whole day."""
    size = peak_fleet_size(arrivals, config) if instances is None else instances
    return simulate(arrivals, config, fixed_instances=max(1, size))
