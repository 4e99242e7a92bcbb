"""A production day on the control plane: submit + ingest + status + wait + results.

Issue 28's last "done when": a day of N calls (default 50,000) through whisperq's control
plane against a moto server on 127.0.0.1 (started and stopped here, by PID), with S3 and
SQS requests (by operation) and seconds per step, and checks that nothing is lost or
doubled.

Real: the CLI (``whisperq submit``, ``status``, ``wait``, ``results``, called in this
process with typer's CliRunner), the ingest code (``whisperq.batches.ingest.handle_event``
with S3 notification bodies, configured as ``whisperq ingest`` and the Lambda are:
``Settings.ingest_environment()`` -> ``IngestConfig.from_env``, template
``{folder}-{date}``), the worker's result writing (``whisperq.worker.results.ResultStore``:
renderings, then the result JSON) and its batch-end check
(``whisperq.worker.batch_end.BatchEnds``: entry renamed done/failed, ``done.json`` once
the queue is dry), and S3 and SQS's APIs (moto). Stubbed: transcription (one segment of
"(stub transcript)" per call, written in the shape a real transcript has), and the rest of
a worker's reads (the input's download and HEAD, the late-sidecar look: a real worker
makes a few more GETs a job than the stub's row shows). ~0.5% of the day's calls (1% of
the ingested ones) fail in the stub: an error record (``schemas.ErrorRecord``), the entry
marked failed.

The day, in two rounds (morning and afternoon), so that the queue holds both batches' jobs
in order and "half done" means about half of each:

  - half the calls submitted with ``whisperq submit DIR --batch nightly-<day> --metadata
    calls.csv`` (0.5 s WAVs written to a temporary folder; the CSV gives each call's ids);
  - half dropped by the "telephony platform" under ``incoming/support/<line>/...`` (a
    ``.json`` sidecar beside every third one), each object's notification handled by the
    ingest code (4 threads, as concurrent Lambdas): batch ``support-<day>`` with the
    ``support`` folder's options (its own formats: vtt, txt).

``<day>`` is yesterday (UTC; the day before when the last hour's grace is not over yet):
the nightly pipeline transcribes yesterday's calls, and a daily batch is finished only once
its day is over. moto stamps every object with the time it is written; the ingest step
names a daily batch from the object's Last-Modified, so the drops' Last-Modified is moved
back to that day as the ingest step reads it (``YesterdaysDrops``), and the notifications'
eventTime says that day too.

Then: ``status BATCH --json`` for each batch while about half the jobs are settled (the
stub paused, the rest waiting on the queue); the stub worker to the end; ``wait BATCH``
for each (1 for the batch with failures, 0 for the other); plain ``status``;
``results BATCH --format json``. Checked (asserted and printed): every path has exactly one
result or error record, each job delivered once, results == submitted + ingested, sampled
results' metadata == the CSV row / sidecar, ``done.json`` once per batch with the right
counts, files downloaded == done (+ the error records that come with json).

    python benchmarks/day_run.py                # 50,000 calls: over 3 hours on a 2-core
                                                # VM (moto walks the whole queue for each
                                                # receive and delete: BENCHMARKS.md)
    python benchmarks/day_run.py --calls 10000  # 9 minutes there
    python benchmarks/day_run.py --quick        # 200 calls (a test runs it)
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import platform
import sys
import tempfile
import threading
import time
import wave
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from datetime import time as day_time
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

from typer.testing import CliRunner

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from submit_scale import Counting, cli_env, fresh_target, moto_server  # noqa: E402

from whisperq import defaults, keys, storage  # noqa: E402
from whisperq.batches import download, ingest  # noqa: E402
from whisperq.celery_app import decode_job_message  # noqa: E402
from whisperq.errors import FailureCause, next_step  # noqa: E402
from whisperq.schemas import (  # noqa: E402
    ErrorRecord,
    ModelInfo,
    Segment,
    Timings,
    TranscriptionJob,
    TranscriptionOptions,
    utc_now,
)
from whisperq.settings import Settings  # noqa: E402

ROUNDS = ("morning", "afternoon")
INGEST_FOLDER = "support"
SUPPORT_OPTIONS = {"speakers": ["agent", "customer"], "formats": ["vtt", "txt"]}
SIDECAR_EVERY = 3  # every third dropped call has a .json sidecar
FAIL_EVERY = 100  # 1 ingested call in 100 fails in the stub (0.5% of the day)
STUB_THREADS = 4
INGEST_THREADS = 4
SILENCE = b"\x00\x00" * 4000  # 0.5 s at 8 kHz, 16-bit mono


# --- the day --------------------------------------------------------------------------------


def closed_day(now: datetime) -> date:
    """The latest UTC day whose daily batch is closed (its day over, plus the grace)."""
    grace = timedelta(seconds=defaults.DAILY_BATCH_GRACE_SECONDS + 300)
    return (now - grace).date() - timedelta(days=1)


def wav_bytes(index: int) -> bytes:
    import io

    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(8000)
        handle.writeframes(SILENCE + index.to_bytes(4, "little"))  # distinct content
    return buffer.getvalue()


def submitted_path(index: int) -> str:
    return f"calls/{index // 100:03d}/call-{index:06d}.wav"


def dropped_path(index: int) -> str:
    """The path in the batch (the key under incoming/support/)."""
    return f"line-{index % 8}/rec-{index:06d}.wav"


def csv_row(index: int) -> dict[str, str]:
    return {"call_id": f"C{index:07d}", "agent_id": f"A{index % 97:03d}", "queue": "sales"}


def sidecar(index: int) -> dict[str, Any]:
    return {"call_id": f"S{index:07d}", "agent_id": index % 89, "queue": "billing"}


def fails(index: int) -> bool:
    return index % FAIL_EVERY == FAIL_EVERY // 3


@dataclass
class Day:
    calls: int
    day: date
    submit_batch: str
    ingest_batch: str
    submitted: dict[int, list[int]] = field(default_factory=dict)  # round -> indexes
    dropped: dict[int, list[int]] = field(default_factory=dict)

    @classmethod
    def make(cls, calls: int, now: datetime) -> Day:
        day = closed_day(now)
        made = cls(calls, day, f"nightly-{day.isoformat()}", f"{INGEST_FOLDER}-{day.isoformat()}")
        half = calls // 2
        sub, drop = list(range(half)), list(range(calls - half))
        for number in range(len(ROUNDS)):
            made.submitted[number] = sub[number :: len(ROUNDS)]
            made.dropped[number] = drop[number :: len(ROUNDS)]
        return made

    @property
    def submit_paths(self) -> dict[str, int]:
        return {submitted_path(i): i for indexes in self.submitted.values() for i in indexes}

    @property
    def ingest_paths(self) -> dict[str, int]:
        return {dropped_path(i): i for indexes in self.dropped.values() for i in indexes}

    @property
    def expected_failures(self) -> set[str]:
        return {path for path, index in self.ingest_paths.items() if fails(index)}


def write_round(folder: Path, day: Day, number: int) -> Path:
    """The round's WAV files under ``folder/<round>/calls/...`` and its calls.csv."""
    root = folder / ROUNDS[number]
    rows = []
    for index in day.submitted[number]:
        path = root / submitted_path(index)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(wav_bytes(index))
        rows.append({"path": submitted_path(index), **csv_row(index)})
    table = folder / f"{ROUNDS[number]}.csv"
    with table.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, ["path", "call_id", "agent_id", "queue"])
        writer.writeheader()
        writer.writerows(rows)
    return table


# --- the CLI, in this process ---------------------------------------------------------------


def day_cli_env(settings: Settings, state_dir: Path) -> dict[str, str]:
    return cli_env(settings, state_dir) | {"COLUMNS": "200"}


def cli(env: dict[str, str], *args: str, cwd: Path | None = None) -> tuple[int, str, str]:
    """``whisperq ARGS``: exit code, stdout, stderr."""
    from whisperq.cli import app

    previous = Path.cwd()
    if cwd is not None:
        os.chdir(cwd)
    try:
        result = CliRunner().invoke(app, list(args), env=env)
    finally:
        os.chdir(previous)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


# --- measuring ------------------------------------------------------------------------------


@dataclass
class Step:
    name: str
    seconds: float
    calls: Counter[str]
    files: int = 0  # per-file figures over this many files (0: none)
    note: str = ""

    def service(self, prefix: str) -> int:
        return sum(n for name, n in self.calls.items() if name.startswith(prefix + "."))


class Steps:
    def __init__(self, counting: Counting) -> None:
        self.counting = counting
        self.rows: list[Step] = []

    def run(self, name: str, work: Callable[[], Any], files: int = 0, note: str = "") -> Any:
        self.counting.take()
        started = time.perf_counter()
        answer = work()
        seconds = time.perf_counter() - started
        step = Step(name, seconds, self.counting.take(), files, note)
        self.rows.append(step)
        print(  # as it goes: a long run that fails later keeps what it measured
            f"[{datetime.now(UTC):%H:%M:%S}] {name}: {seconds:.1f} s, "
            f"{dict(sorted(step.calls.items()))}",
            flush=True,
        )
        return answer


# --- ingest ---------------------------------------------------------------------------------


class YesterdaysDrops:
    """The ingest step's S3 client, with the drops' Last-Modified moved back by ``shift``
    (moto stamps objects with the time they are written; the telephony platform wrote
    these on the day being transcribed). Everything else goes to the client as it is."""

    def __init__(self, s3: Any, shift: timedelta) -> None:
        self._s3 = s3
        self._shift = shift

    def __getattr__(self, name: str) -> Any:
        return getattr(self._s3, name)

    def _moved(self, answer: dict[str, Any], key: str) -> dict[str, Any]:
        if key.startswith(keys.INCOMING + "/") and answer.get("LastModified"):
            answer["LastModified"] = answer["LastModified"] - self._shift
        return answer

    def get_object(self, **params: Any) -> dict[str, Any]:
        return self._moved(self._s3.get_object(**params), params["Key"])

    def head_object(self, **params: Any) -> dict[str, Any]:
        return self._moved(self._s3.head_object(**params), params["Key"])


def notification(bucket: str, key: str, size: int, when: datetime) -> str:
    """An S3 event notification body (one record, as S3 sends them to SQS)."""
    record = {
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "awsRegion": "us-east-1",
        "eventTime": when.astimezone(UTC).isoformat(timespec="milliseconds"),
        "eventName": "ObjectCreated:Put",
        "s3": {
            "bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
            "object": {"key": quote_plus(key, safe="/"), "size": size},
        },
    }
    return json.dumps({"Records": [record]})


def drop_round(settings: Settings, day: Day, number: int) -> list[tuple[str, int]]:
    """The telephony platform's writes: audio, then its sidecar; (key, size) in order."""
    s3 = storage.client(settings, "s3")
    written: list[tuple[str, int]] = []

    def drop(index: int) -> list[tuple[str, int]]:
        key = f"{keys.INCOMING}/{INGEST_FOLDER}/{dropped_path(index)}"
        body = wav_bytes(1_000_000 + index)
        s3.put_object(Bucket=settings.bucket, Key=key, Body=body)
        objects = [(key, len(body))]
        if index % SIDECAR_EVERY == 0:
            text = json.dumps(sidecar(index)).encode()
            s3.put_object(Bucket=settings.bucket, Key=key + ".json", Body=text)
            objects.append((key + ".json", len(text)))
        return objects

    with ThreadPoolExecutor(8) as pool:
        for objects in pool.map(drop, day.dropped[number]):
            written.extend(objects)
    return written


def ingest_round(
    settings: Settings,
    config: ingest.IngestConfig,
    shift: timedelta,
    objects: list[tuple[str, int]],
) -> Counter[str]:
    """Each object's notification through ``handle_event`` (4 at a time); events told to
    try later come again after the others, as SQS would deliver them again."""
    s3 = YesterdaysDrops(storage.client(settings, "s3"), shift)
    sqs = storage.client(settings, "sqs")
    outcomes: Counter[str] = Counter()
    when = datetime.now(UTC) - shift
    bodies = [notification(settings.bucket, key, size, when) for key, size in objects]
    for _attempt in range(5):
        with ThreadPoolExecutor(INGEST_THREADS) as pool:
            handled = list(
                pool.map(lambda body: ingest.handle_event(s3, sqs, config, body), bodies)
            )
        again = []
        for body, answer in zip(bodies, handled, strict=True):
            outcomes.update(outcome.status for outcome in answer.outcomes)
            if not answer.done:
                outcomes["try later"] += 1
                again.append(body)
        if not again:
            return outcomes
        time.sleep(max(answer.retry_after for answer in handled if not answer.done))
        bodies = again
    raise SystemExit(f"ingest: {len(bodies)} event(s) still not done: {handled[0].retry}")


# --- the stub worker ------------------------------------------------------------------------


class StubWorker:
    """Threads that take jobs off the queue and leave what a worker leaves for each: the
    batch's renderings and the result JSON (``ResultStore``, a stub transcript), or an
    error record; the entry renamed and the batch-end check (``BatchEnds``); the message
    deleted. Counts deliveries per (batch, path)."""

    def __init__(self, settings: Settings, failing: set[tuple[str, str]]) -> None:
        from whisperq.worker.clients import ProcessClients
        from whisperq.worker.results import ResultStore

        self.settings = settings
        self.failing = failing
        self.clients = ProcessClients(settings)
        self.results = ResultStore(settings, self.clients)
        self.deliveries: Counter[tuple[str, str]] = Counter()
        # (batch, path) -> SQS's ApproximateReceiveCount at each delivery
        self.receive_counts: dict[tuple[str, str], list[int]] = {}
        self.settled: Counter[str] = Counter()  # done / failed
        self.batch_end_outcomes: Counter[str] = Counter()
        self._lock = threading.Lock()

    def run(self, until: int) -> None:
        """Work until ``until`` jobs are taken in all (each settled before it returns), or
        the queue is empty (looked at twice, so that a last message in moto's hands is seen)."""
        with ThreadPoolExecutor(STUB_THREADS) as pool:
            for future in [pool.submit(self._loop, until) for _ in range(STUB_THREADS)]:
                future.result()

    def _loop(self, until: int) -> None:
        from whisperq.worker.batch_end import BatchEnds

        ends = BatchEnds(self.settings, self.clients, recheck_seconds=0)  # a pool process's
        sqs = self.clients.client("sqs")
        empty = 0
        while len(self.deliveries) < until and empty < 2:  # jobs taken, each counted once
            messages = sqs.receive_message(
                QueueUrl=self.settings.queue_url,
                MaxNumberOfMessages=10,
                WaitTimeSeconds=1,
                AttributeNames=["ApproximateReceiveCount"],
            ).get("Messages", [])
            empty = 0 if messages else empty + 1
            for message in messages:
                job = decode_job_message(message["Body"])
                with self._lock:
                    self.deliveries[(job.batch, job.path)] += 1
                    count = int(message.get("Attributes", {}).get("ApproximateReceiveCount", 0))
                    self.receive_counts.setdefault((job.batch, job.path), []).append(count)
                state = self.process(job)
                ends.job_settled(job, state)
                outcomes = ends.after_job()
                sqs.delete_message(
                    QueueUrl=self.settings.queue_url, ReceiptHandle=message["ReceiptHandle"]
                )
                with self._lock:
                    self.settled[state] += 1
                    self.batch_end_outcomes.update(outcomes.values())
        # No job comes any more: what the pool process's timer does RECHECK_SECONDS later
        # (here once the queue may be asked again: it was long a moment ago).
        if ends.noted:
            time.sleep(ends.quiet_seconds())
            outcomes = ends.after_job()
            with self._lock:
                self.batch_end_outcomes.update(outcomes.values())

    def process(self, job: TranscriptionJob) -> keys.EntryState:
        from whisperq.speech.engine import Transcript

        if (job.batch, job.path) in self.failing:
            self.write_error(job)
            return "failed"
        segment = Segment(
            start=0.0, end=0.5, text="(stub transcript)", avg_logprob=-0.2, no_speech_prob=0.1
        )
        transcript = Transcript(
            [segment], "en", 0.99, 0.5, options=job.options.model_dump(mode="json")
        )
        self.results.upload_renderings(job, transcript, set())
        model = ModelInfo(name="stub", device="cpu", compute_type="none")
        timings = Timings(download=0.0, transcribe=0.0, upload=0.0)
        self.results.upload_result(job, self.results.result(job, transcript, model, timings))
        return "done"

    def write_error(self, job: TranscriptionJob) -> None:
        cause = FailureCause.NOT_AUDIO
        record = ErrorRecord(
            batch=job.batch,
            path=job.path,
            input_key=job.input_key,
            reason="the recording could not be decoded (the day run's stub failure); "
            + next_step(cause, job.batch, job.path),
            kind="permanent",
            cause=cause.value,
            error_type="InvalidDataError",
            attempts=1,
            receive_count=1,
            worker_id="day-run-stub",
            failed_at=utc_now(),
        )
        storage.put_text(
            self.clients.s3,
            self.settings.bucket,
            keys.error_key(job.batch, job.path),
            record.model_dump_json(indent=2),
            "application/json",
        )


# --- checks ---------------------------------------------------------------------------------


def result_kinds(s3: Any, bucket: str, batch: str) -> dict[str, Counter[str]]:
    """path -> kinds of result keys it has (json, error, srt, ...)."""
    found: dict[str, Counter[str]] = {}
    for item in storage.list_objects(s3, bucket, keys.results_prefix(batch)):
        parsed = keys.parse_result_key(batch, item.key)
        assert parsed is not None, item.key
        found.setdefault(parsed[0], Counter())[parsed[1]] += 1
    return found


def sample(items: Iterable[str], count: int) -> list[str]:
    ordered = sorted(items, key=lambda text: hashlib.sha256(text.encode()).hexdigest())
    return ordered[:count]


def check(line: str, ok: bool, checks: list[tuple[str, bool]]) -> None:
    checks.append((line, ok))
    print(f"check: {'ok  ' if ok else 'FAIL'} {line}", flush=True)


def verify(
    settings: Settings,
    s3: Any,
    day: Day,
    stub: StubWorker,
    downloaded: dict[str, list[Path]],
    checks: list[tuple[str, bool]],
) -> dict[str, dict[str, Any]]:
    """Every check after the run; the batches' done.json documents."""
    expected = {day.submit_batch: day.submit_paths, day.ingest_batch: day.ingest_paths}
    formats = {
        day.submit_batch: set(TranscriptionOptions().formats),
        day.ingest_batch: set(SUPPORT_OPTIONS["formats"]),
    }
    failures = day.expected_failures
    dones: dict[str, dict[str, Any]] = {}
    settled: Counter[str] = Counter()
    for batch, paths in expected.items():
        kinds = result_kinds(s3, settings.bucket, batch)
        bad = sorted(
            path
            for path, found in kinds.items()
            if found["json"] + found["error"] != 1 or max(found.values()) != 1
        )
        check(
            f"{batch}: every path has one result or error record, none doubled "
            f"({len(kinds):,} paths; {len(bad)} not so{': ' + ', '.join(bad[:3]) if bad else ''})",
            not bad and kinds.keys() == paths.keys(),
            checks,
        )
        failed = {path for path, found in kinds.items() if found["error"]}
        settled.update(
            kind for found in kinds.values() for kind in found if kind in ("json", "error")
        )
        want_failed = failures if batch == day.ingest_batch else set()
        check(
            f"{batch}: {len(failed)} error record(s), as the stub failed them ({len(want_failed)})",
            failed == want_failed,
            checks,
        )
        wrong_formats = [
            path
            for path, found in kinds.items()
            if path not in failed and set(found) != formats[batch] | {"json"}
        ]
        check(
            f"{batch}: done files have json + {','.join(sorted(formats[batch]))} "
            f"(the batch's formats; {len(wrong_formats)} otherwise)",
            not wrong_formats,
            checks,
        )
        done = storage.get_json(s3, settings.bucket, keys.done_key(batch)) or {}
        dones[batch] = done
        check(
            f"{batch}: done.json says submitted {done.get('submitted')}, done "
            f"{done.get('done')}, failed {done.get('failed')} (expected {len(paths)}, "
            f"{len(paths) - len(want_failed)}, {len(want_failed)})",
            (done.get("submitted"), done.get("done"), done.get("failed"))
            == (len(paths), len(paths) - len(want_failed), len(want_failed))
            and set(done.get("failed_paths", [])) == want_failed,
            checks,
        )
        files = downloaded[batch]
        results = [p for p in files if not p.name.endswith(keys.ERROR_SUFFIX)]
        check(
            f"{batch}: downloaded {len(results):,} result JSON(s) + "
            f"{len(files) - len(results)} error record(s) == done {len(paths) - len(want_failed):,}"
            f" + failed {len(want_failed)}",
            len(results) == len(paths) - len(want_failed)
            and len(files) - len(results) == len(want_failed),
            checks,
        )
    # metadata of a few results: the CSV row (submit), the sidecar or none (ingest)
    wrong = []
    picked = 0
    for path in sample(day.submit_paths, 5):
        picked += 1
        result = storage.get_json(
            s3, settings.bucket, keys.result_key(day.submit_batch, path, "json")
        )
        if result.get("metadata") != csv_row(day.submit_paths[path]):
            wrong.append((path, result.get("metadata")))
    ingested = {p: i for p, i in day.ingest_paths.items() if p not in failures}
    with_sidecar = [p for p, i in ingested.items() if i % SIDECAR_EVERY == 0]
    without = [p for p, i in ingested.items() if i % SIDECAR_EVERY != 0]
    for path in sample(with_sidecar, 5) + sample(without, 2):
        picked += 1
        index = ingested[path]
        result = storage.get_json(
            s3, settings.bucket, keys.result_key(day.ingest_batch, path, "json")
        )
        want = sidecar(index) if index % SIDECAR_EVERY == 0 else None
        if result.get("metadata") != want or result.get("options", {}).get("speakers") != [
            "agent",
            "customer",
        ]:
            wrong.append((path, result.get("metadata")))
    check(
        f"metadata of {picked} sampled results == their CSV row / sidecar / none"
        + (f"; wrong: {wrong[:3]}" if wrong else ""),
        not wrong,
        checks,
    )
    check(
        f"results {settled['json']:,} + error records {settled['error']:,} == submitted "
        f"{len(day.submit_paths):,} + ingested {len(day.ingest_paths):,}",
        settled["json"] + settled["error"] == len(day.submit_paths) + len(day.ingest_paths),
        checks,
    )
    twice = {key: stub.receive_counts[key] for key, n in stub.deliveries.items() if n != 1}
    delivered = set(stub.deliveries)
    every = {(b, p) for b, paths in expected.items() for p in paths}
    shown = "; ".join(f"{b}/{p} (receive counts {counts})" for (b, p), counts in twice.items())
    check(
        f"every job delivered: {len(stub.deliveries):,} jobs, {sum(stub.deliveries.values()):,}"
        f" deliveries, {len(every - delivered)} never delivered; {len(twice)} delivered more "
        "than once, each still one result or error record (above)"
        + (f": {shown[:500]}" if twice else ""),
        delivered == every,
        checks,
    )
    return dones


# --- the run --------------------------------------------------------------------------------


def make_target(endpoint: str) -> Settings:
    """fresh_target's bucket and queue, with a dead-letter queue (5 deliveries)."""
    target = fresh_target(endpoint)
    sqs = storage.client(target, "sqs")
    name = target.queue_url.rstrip("/").rsplit("/", 1)[-1]
    dlq = sqs.create_queue(QueueName=f"{name}-dlq")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    policy = json.dumps({"deadLetterTargetArn": arn, "maxReceiveCount": "5"})
    sqs.set_queue_attributes(
        QueueUrl=target.queue_url,
        Attributes={"RedrivePolicy": policy, "VisibilityTimeout": "300"},
    )
    return target.model_copy(update={"dlq_url": dlq})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=50_000, help="calls in the day")
    parser.add_argument("--quick", action="store_true", help="200 calls")
    args = parser.parse_args()
    calls = 200 if args.quick else args.calls
    if calls < 20:
        raise SystemExit("--calls: at least 20")

    started_at = datetime.now(UTC)
    day = Day.make(calls, started_at)
    # The drops' Last-Modified: moved back to noon of the day being transcribed.
    shift = started_at - datetime.combine(day.day, day_time(12), tzinfo=UTC)
    counting = Counting()
    real_client = storage.client
    steps = Steps(counting)
    checks: list[tuple[str, bool]] = []
    exits: dict[str, int] = {}
    outcomes: Counter[str] = Counter()
    with moto_server(large=True) as endpoint, tempfile.TemporaryDirectory(prefix="day-run-") as tmp:
        folder = Path(tmp)
        target = make_target(endpoint)
        env = day_cli_env(target, folder / "state")
        ingest_settings = target.model_copy(
            update={
                "ingest_options": {INGEST_FOLDER: SUPPORT_OPTIONS},
                "ingest_batch": "{folder}-{date}",
            }
        )
        config = ingest.IngestConfig.from_env(ingest_settings.ingest_environment())
        storage.client = counting.client  # type: ignore[assignment]
        uncounted = real_client(target, "s3")

        for number, name in enumerate(ROUNDS):
            table = write_round(folder, day, number)
            round_dir = folder / name

            def submit(table: Path = table, round_dir: Path = round_dir) -> dict[str, Any]:
                code, out, err = cli(
                    env,
                    "submit",
                    "calls",
                    "--batch",
                    day.submit_batch,
                    "--metadata",
                    str(table),
                    "--json",
                    cwd=round_dir,
                )
                if code != 0:
                    raise SystemExit(f"submit failed ({code}): {err[-2000:]}")
                return json.loads(out)

            submitted = steps.run(f"submit ({name})", submit, files=len(day.submitted[number]))
            assert submitted["queued"] == len(day.submitted[number]), submitted
            dropped = steps.run(
                f"drop ({name}; the telephony platform, not whisperq)",
                lambda number=number: drop_round(target, day, number),
                files=len(day.dropped[number]),
            )
            outcomes += steps.run(
                f"ingest ({name})",
                lambda dropped=dropped: ingest_round(target, config, shift, dropped),
                files=len(day.dropped[number]),
            )
        sidecars = sum(1 for i in day.ingest_paths.values() if i % SIDECAR_EVERY == 0)
        check(
            f"ingest outcomes {dict(sorted(outcomes.items()))}: queued {len(day.ingest_paths):,},"
            f" metadata {sidecars:,}",
            outcomes["queued"] == len(day.ingest_paths) and outcomes["metadata"] == sidecars,
            checks,
        )

        failing = {(day.ingest_batch, path) for path in day.expected_failures}
        stub = StubWorker(target, failing)
        total = len(day.submit_paths) + len(day.ingest_paths)
        steps.run("stub worker, first half", lambda: stub.run(total // 2), files=total // 2)
        half_settled = len(stub.deliveries)  # jobs settled (a job SQS handed out twice: once)
        halves: dict[str, dict[str, Any]] = {}
        for batch in (day.submit_batch, day.ingest_batch):

            def half_status(batch: str = batch) -> dict[str, Any]:
                code, out, err = cli(env, "status", batch, "--json")
                if code != 0:
                    raise SystemExit(f"status {batch} failed ({code}): {err[-2000:]}")
                return json.loads(out)

            halves[batch] = steps.run(f"status {batch} --json, half done", half_status)
        counts = {
            batch: (mine["submitted"], mine["done"], mine["failed"], mine["pending"])
            for batch, answer in halves.items()
            for mine in answer["batches"]
        }
        settled_half = sum(done + failed for _, done, failed, _ in counts.values())
        waiting = next(iter(halves.values()))["queue"]["visible"]
        check(
            f"status half done: (submitted, done, failed, pending) {counts}; queue "
            f"{waiting:,} waiting; {half_settled:,} settled by the stub",
            settled_half == half_settled
            and counts[day.submit_batch][0] == len(day.submit_paths)
            and counts[day.ingest_batch][0] == len(day.ingest_paths)
            and all(pending > 0 for *_, pending in counts.values())
            and waiting == total - half_settled,
            checks,
        )
        steps.run("stub worker, second half", lambda: stub.run(total), files=total - half_settled)
        marked_by_worker = [
            batch
            for batch in (day.submit_batch, day.ingest_batch)
            if storage.get_json(uncounted, target.bucket, keys.done_key(batch)) is not None
        ]
        print(
            f"done.json after the worker: {marked_by_worker or 'none'}; stub's batch-end checks:"
            f" {dict(stub.batch_end_outcomes)}; settled {dict(stub.settled)}",
            flush=True,
        )
        for batch in (day.submit_batch, day.ingest_batch):

            def wait(batch: str = batch) -> int:
                code, _out, err = cli(env, "wait", batch, "--timeout", "600", "--interval", "1")
                if code not in (0, 1):
                    raise SystemExit(f"wait {batch} exited {code}: {err[-2000:]}")
                return code

            exits[batch] = steps.run(f"wait {batch}", wait)
        check(
            f"wait's exit codes {exits} (1 for the batch with failures, else 0)",
            exits == {day.submit_batch: 0, day.ingest_batch: 1},
            checks,
        )

        def plain_status() -> str:
            code, out, err = cli(env, "status")
            if code != 0:
                raise SystemExit(f"status failed ({code}): {err[-2000:]}")
            return out

        table_text = steps.run("status (plain)", plain_status)
        check(
            "plain status shows both batches",
            day.submit_batch in table_text and day.ingest_batch in table_text,
            checks,
        )
        downloaded: dict[str, list[Path]] = {}
        for batch in (day.submit_batch, day.ingest_batch):
            out_dir = folder / "results" / batch

            def results(batch: str = batch, out_dir: Path = out_dir) -> list[Path]:
                code, _out, err = cli(
                    env, "results", batch, "--out", str(out_dir), "--format", "json"
                )
                if code != 0:
                    raise SystemExit(f"results {batch} failed ({code}): {err[-2000:]}")
                return [
                    path
                    for path in out_dir.rglob("*")
                    if path.is_file() and path.name != download.MARKER  # which batch it holds
                ]

            downloaded[batch] = steps.run(
                f"results {batch} --format json", results, files=len(expected_paths(day, batch))
            )
        storage.client = real_client  # type: ignore[assignment]
        dones = verify(target, uncounted, day, stub, downloaded, checks)
        present = [b for b, done in dones.items() if done]
        check(f"done.json present for {len(present)} of 2 batches", len(present) == 2, checks)

    report(day, steps, stub, started_at, checks)
    if not all(ok for _, ok in checks):
        raise SystemExit("some checks failed (above)")


def expected_paths(day: Day, batch: str) -> dict[str, int]:
    return day.submit_paths if batch == day.submit_batch else day.ingest_paths


def report(
    day: Day,
    steps: Steps,
    stub: StubWorker,
    started_at: datetime,
    checks: list[tuple[str, bool]],
) -> None:
    total = len(day.submit_paths) + len(day.ingest_paths)
    print()
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, moto server on 127.0.0.1; "
        f"started {started_at:%Y-%m-%d %H:%M} UTC"
    )
    print(
        f"day {day.day.isoformat()}: {total:,} calls = {len(day.submit_paths):,} submitted "
        f"(batch {day.submit_batch}, --metadata CSV) + {len(day.ingest_paths):,} ingested "
        f"(batch {day.ingest_batch}, a sidecar for every {SIDECAR_EVERY}rd); "
        f"{len(day.expected_failures)} fail in the stub; 0.5 s WAVs; "
        f"{STUB_THREADS} stub worker threads, {INGEST_THREADS} ingest threads"
    )
    print()
    print("| step | S3 requests | SQS requests | seconds | per file |")
    print("| --- | ---: | ---: | ---: | --- |")
    for step in steps.rows:
        per_file = ""
        if step.files:
            s3_each = step.service("s3") / step.files
            sqs_each = step.service("sqs") / step.files
            per_file = (
                f"{s3_each:.2f} S3 + {sqs_each:.2f} SQS, "
                f"{1000 * step.seconds / step.files:.1f} ms ({step.files:,} files)"
            )
        print(
            f"| {step.name} | {step.service('s3'):,} | {step.service('sqs'):,} | "
            f"{step.seconds:.1f} | {per_file} |"
        )
    whisperq_rows = [row for row in steps.rows if "telephony" not in row.name]
    s3_all = sum(row.service("s3") for row in whisperq_rows)
    sqs_all = sum(row.service("sqs") for row in whisperq_rows)
    seconds = sum(row.seconds for row in whisperq_rows)
    print(
        f"| **whisperq in all** (no drop) | **{s3_all:,}** | **{sqs_all:,}** | **{seconds:.0f}** | "
        f"{s3_all / total:.2f} S3 + {sqs_all / total:.2f} SQS per call |"
    )
    print()
    print("by operation:")
    for step in steps.rows:
        print(f"  {step.name}: {dict(sorted(step.calls.items()))}")
    print()
    redelivered = sum(1 for n in stub.deliveries.values() if n > 1)
    print(
        f"stub worker: {dict(stub.settled)} settled, {sum(stub.deliveries.values()):,} "
        f"deliveries of {len(stub.deliveries):,} jobs ({redelivered} redelivered); "
        f"batch-end checks {dict(stub.batch_end_outcomes)}"
    )
    failed = [line for line, ok in checks if not ok]
    print(f"checks: {len(checks) - len(failed)} of {len(checks)} passed")
    for line in failed:
        print(f"  FAILED: {line}")


if __name__ == "__main__":
    main()
