"""When a backlog will be done: throughput from recently finished jobs, and the ETA of the
jobs waiting and in flight by the scaler's own formula. Pure arithmetic, standard library
only; ``whisperq.fleet.group_status`` feeds it what `whisperq status` reads from the group
and results.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from whisperq.fleet.scaling import desired_capacity


def eta_seconds(
    backlog_jobs: int,
    mean_job_seconds: float | None,
    in_service: int,
    pending: int,
    jobs_per_instance: int,
    max_instances: int,
    boot_seconds: float,
    scaler_period_seconds: float,
    slots_per_instance: float = 1,
) -> float | None:
    """Seconds until the backlog (visible + in-flight jobs) is done; 0 for no backlog,
    None when it cannot be estimated (no mean job time yet, or no instance will ever run).

    The model, a fluid approximation:

    - "instances" are capacity units in a weighted group (the scaler's target and the
      group's maximum count units; ``capacity_units`` in ``group_status`` converts), and
      ``jobs_per_instance`` and ``slots_per_instance`` are per unit there;
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
    if not slots_per_instance > 0:
        raise ValueError("slots_per_instance must be more than 0")
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
    span_seconds: float  # the wall time the rate is over (``recent_throughput``); 0: no jobs
    jobs_per_minute: float
    audio_seconds_per_second: float  # audio seconds transcribed per wall second, fleet-wide
    mean_processing_seconds: float | None  # None when no job finished in the window


MIN_SPAN_SECONDS = 1.0  # a floor for the span, so jobs that recorded no time divide by something


def recent_throughput(
    finished: list[tuple[float, float, float]], window_seconds: float, now: float
) -> Throughput:
    """Throughput of the jobs that finished in the last ``window_seconds``, from
    ``(finished_at_epoch, audio_seconds, processing_seconds)`` of finished jobs.

    The rate is over the span the jobs actually cover -- from the first one's start
    (finished_at minus its processing time) to the last one's finish, bounded by the
    window -- not over the whole window: 4 jobs done in 6 s right after a batch are
    40 jobs/min, not 4 per 15 minutes. A fleet that worked through the whole window gets
    the window (its first job started before it). Not until now either: a fleet that has
    just gone idle keeps the rate it worked at.
    """
    if window_seconds <= 0:
        raise ValueError("window_seconds must be > 0")
    start_of_window = now - window_seconds
    recent = [item for item in finished if start_of_window < item[0] <= now]
    if not recent:
        return Throughput(0, 0.0, 0.0, 0.0, None)
    first_start = min(item[0] - max(0.0, item[2]) for item in recent)
    last_finish = max(item[0] for item in recent)
    span = max(MIN_SPAN_SECONDS, last_finish - max(first_start, start_of_window))
    audio = sum(item[1] for item in recent)
    processing = sum(item[2] for item in recent)
    return Throughput(
        jobs=len(recent),
        span_seconds=span,
        jobs_per_minute=len(recent) / (span / 60),
        audio_seconds_per_second=audio / span,
        mean_processing_seconds=processing / len(recent),
    )
