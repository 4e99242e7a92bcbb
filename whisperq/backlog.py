"""When a backlog will be done: throughput from recently finished jobs, and the ETA of the
jobs waiting and in flight by the scaler's own formula. Pure arithmetic, standard library
only; ``whisperq.fleet`` feeds it what `whisperq status` reads from the group and results.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from whisperq.scaling import desired_capacity


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
