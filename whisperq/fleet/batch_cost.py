"""What a finished batch cost: every result JSON of the batch, the time each machine ran
at least one job (what an instance is billed for), priced per instance type.

``whisperq cost`` is the one command that reads every result of a batch. Prices and the
arithmetic are whisperq.fleet.pricing's.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from whisperq.batches import tracking
from whisperq.batches.tracking import JobRecord
from whisperq.fleet.pricing import (
    MANAGED_PRICE_PER_MINUTE,
    CostEstimate,
    InstancePrice,
    Market,
    estimate_cost,
    hourly_price,
)
from whisperq.settings import Settings


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


_Finished = tuple[float, float]  # a job's (finished_at epoch, job_seconds)


def serial_intervals(jobs: Iterable[_Finished]) -> list[tuple[float, float]]:
    """``(start, end)`` of one worker process's jobs, from their ``(finished_at,
    job_seconds)``: a process runs one job at a time, so a job ends no later than the next
    one starts. Packed jobs need this: each records its share of the pack's time and
    finishes after the whole pack, so taken at face value their spans overlap and the
    union counts one share of the pack, not the pack."""
    spans: list[tuple[float, float]] = []
    next_start = math.inf
    for end, seconds in sorted(jobs, reverse=True):
        end = min(end, next_start)
        next_start = end - max(0.0, seconds)
        spans.append((next_start, end))
    return spans[::-1]


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


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


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
    billed basis is, per machine, the time it ran at least one job (each process's jobs
    laid one after another: ``serial_intervals``). PriceError naming
    the type, and how to price it, for a type with no price."""
    # (type, assumed) -> machine -> worker process -> (finished_at, job_seconds) of its jobs
    finished: dict[tuple[str, bool], dict[str, dict[str, list[_Finished]]]]
    finished = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    jobs: Counter[tuple[str, bool]] = Counter()
    job_seconds: defaultdict[tuple[str, bool], float] = defaultdict(float)
    for record in records:
        key = (record.instance_type or fallback_type, record.instance_type is None)
        process = finished[key][record.host][record.worker_id]
        process.append((record.finished_at.timestamp(), record.job_seconds))
        jobs[key] += 1
        job_seconds[key] += record.job_seconds
    by_type = []
    for key in sorted(finished):
        instance_type, assumed = key
        price = hourly_price(instance_type, market, price_table)
        seconds = sum(
            busy_seconds(span for process in machine.values() for span in serial_intervals(process))
            for machine in finished[key].values()
        )
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
    seconds_by_type: defaultdict[str, float] = defaultdict(float)
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
        estimate=estimate_cost(audio, seconds_by_type, price_table, market),
    )


def read_batch_records(
    settings: Settings, s3: Any, batch: str, threads: int = 16
) -> tuple[list[JobRecord], int]:
    """Every finished result of the batch: one listing, then GETs ``threads`` at a time."""
    return tracking.read_job_records(
        settings, s3, tracking.result_keys(settings, s3, batch), threads=threads
    )
