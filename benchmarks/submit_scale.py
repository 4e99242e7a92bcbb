"""Submitting and tracking many small files: requests and time, side by side in one run.

Against a moto server on 127.0.0.1 (started and stopped here, by PID), with N small WAV
files (0.5 s of 8 kHz silence each):

  (a) queueing as before: one ``send_task`` (one SQS SendMessage) per file, through Celery,
      against the same jobs sent ten per SendMessageBatch (``whisperq.messages``);
  (b) ``whisperq submit``: upload, jobs ten per SendMessageBatch, one entry per file;
  (c) ``status`` of that batch, twice: once with no results, once with every file done.

Printed: wall seconds, S3 and SQS requests by operation, SQS requests per file, and
(b)'s queueing time against (a)'s.

    python benchmarks/submit_scale.py            # 1,000 files
    python benchmarks/submit_scale.py --files 200
    python benchmarks/submit_scale.py --quick    # 50 files (a test runs it)
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import sys
import tempfile
import time
import uuid
import wave
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from whisperq import entry_states, keys, storage
from whisperq.batches import tracking
from whisperq.batches.submit import submit
from whisperq.settings import Settings
from whisperq.stacks.local import free_port


def make_files(folder: Path, count: int) -> None:
    silence = b"\x00\x00" * 4000  # 0.5 s at 8 kHz, 16-bit mono
    for index in range(count):
        path = folder / f"calls/{index // 100:02d}/call-{index:05d}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        with wave.open(str(path), "wb") as handle:
            handle.setnchannels(1)
            handle.setsampwidth(2)
            handle.setframerate(8000)
            handle.writeframes(silence + index.to_bytes(4, "little"))  # distinct content


class Counting:
    """Wraps storage.client so every client counts its requests by service.operation."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self._real = storage.client

    def client(self, settings: Settings, service: str) -> Any:
        made = self._real(settings, service)
        made.meta.events.register(
            f"before-call.{service}",
            lambda model, **_: self.calls.update([f"{service}.{model.name}"]),
        )
        return made

    def take(self) -> Counter[str]:
        taken, self.calls = self.calls, Counter()
        return taken


def fresh_target(endpoint: str) -> Settings:
    name = f"bench-{uuid.uuid4().hex[:10]}"
    base = Settings(
        endpoint_url=endpoint,
        region="us-east-1",
        aws_access_key_id="bench",
        aws_secret_access_key="bench",
    )
    storage.client(base, "s3").create_bucket(Bucket=name)
    queue = storage.client(base, "sqs").create_queue(QueueName=name)["QueueUrl"]
    return base.model_copy(update={"bucket": name, "queue_url": queue})


def cli_env(settings: Settings, state_dir: Path | None = None) -> dict[str, str]:
    """The environment a benchmark's in-process `whisperq` commands run with: the moto
    target's settings, no config file, and (``state_dir``) no local stack's settings."""
    env = {
        "WHISPERQ_ENDPOINT_URL": settings.endpoint_url or "",
        "WHISPERQ_REGION": settings.region,
        "WHISPERQ_AWS_ACCESS_KEY_ID": "bench",
        "WHISPERQ_AWS_SECRET_ACCESS_KEY": "bench",
        "WHISPERQ_BUCKET": settings.bucket,
        "WHISPERQ_QUEUE_URL": settings.queue_url,
        "WHISPERQ_CONFIG_FILE": "/nonexistent/whisperq-bench.toml",
    }
    if settings.dlq_url:
        env["WHISPERQ_DLQ_URL"] = settings.dlq_url
    if state_dir is not None:
        env["WHISPERQ_STATE_DIR"] = str(state_dir)
    return env


def wait_for(endpoint: str, process: subprocess.Popen, timeout: float = 30) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit("moto server exited")
        try:
            urllib.request.urlopen(endpoint, timeout=1)
            return
        except OSError:
            time.sleep(0.2)
    raise SystemExit("moto server did not start")


@contextmanager
def moto_server(large: bool = False) -> Iterator[str]:
    """A moto server on a free loopback port for the benchmark's run: its endpoint; stopped
    by PID afterwards, killed if it is slow to go (one holding 250,000 objects is).
    ``large``: with ``moto_large.py``'s fix for queues of tens of thousands of jobs."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    server = (
        [sys.executable, str(Path(__file__).with_name("moto_large.py"))]
        if large
        else [str(Path(sys.executable).with_name("moto_server"))]
    )
    moto = subprocess.Popen(
        [*server, "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(endpoint, moto)
        yield endpoint
    finally:
        moto.terminate()
        try:
            moto.wait(timeout=30)
        except subprocess.TimeoutExpired:
            moto.kill()
            moto.wait(timeout=10)


def per_file_send_task(settings: Settings, count: int) -> float:
    """(a): the old queueing path, one Celery send_task per job."""
    from whisperq.celery_app import make_celery

    app = make_celery(settings)
    payload = {"batch": "old", "path": "x.wav"}
    started = time.perf_counter()
    for _ in range(count):
        app.send_task("whisperq.transcribe", args=[payload])
    return time.perf_counter() - started


def batched_send(settings: Settings, count: int) -> float:
    """(a'): the same jobs, ten per SendMessageBatch."""
    from whisperq.messages import send_jobs

    payloads = [{"batch": "old", "path": "x.wav"}] * count
    sqs = storage.client(settings, "sqs")
    started = time.perf_counter()
    send_jobs(sqs, settings.queue_url, payloads)
    return time.perf_counter() - started


def mark_all_done(settings: Settings, batch: str) -> None:
    s3 = storage.client(settings, "s3")
    view = tracking.load_batch(settings, s3, batch)
    assert view is not None

    def settle(path: str) -> None:  # as a worker: the result, then the entry renamed
        s3.put_object(Bucket=settings.bucket, Key=keys.result_key(batch, path, "json"), Body=b"{}")
        entry_states.mark(s3, settings.bucket, batch, path, "done")

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(settle, view.files))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--quick", action="store_true", help="50 files")
    args = parser.parse_args()
    if args.quick:
        args.files = 50

    counting = Counting()
    with moto_server() as endpoint, tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        make_files(folder, args.files)

        old_seconds = per_file_send_task(fresh_target(endpoint), args.files)
        batched_seconds = batched_send(fresh_target(endpoint), args.files)

        target = fresh_target(endpoint)
        storage.client = counting.client  # type: ignore[assignment]
        started = time.perf_counter()
        report = submit(target, ["calls"], batch="scale", cwd=folder)
        submit_seconds = time.perf_counter() - started
        submit_calls = counting.take()

        s3 = storage.client(target, "s3")
        counting.take()
        started = time.perf_counter()
        status = tracking.batch_status(target, s3, "scale")
        status_seconds = time.perf_counter() - started
        status_calls = counting.take()
        mark_all_done(target, "scale")
        counting.take()
        started = time.perf_counter()
        done = tracking.batch_status(target, s3, "scale")
        done_seconds = time.perf_counter() - started
        done_calls = counting.take()

    assert status is not None and done is not None
    assert len(report.queued) == args.files == status.submitted == done.done
    sqs_requests = sum(n for name, n in submit_calls.items() if name.startswith("sqs."))
    print(f"machine: {platform.machine()}, {platform.python_version()}, moto server on 127.0.0.1")
    print(f"files: {args.files} x 8 KB WAV (0.5 s each)")
    print(
        f"queueing {args.files} jobs: per-file send_task {old_seconds:.2f} s, "
        f"ten per SendMessageBatch {batched_seconds:.2f} s "
        f"({old_seconds / batched_seconds:.1f}x faster)"
    )
    print(
        f"(b) whisperq submit: {submit_seconds:.2f} s in all; SQS requests {sqs_requests} "
        f"({sqs_requests / args.files:.3f} per file; report says {report.sqs_requests})"
    )
    for name, count in sorted(submit_calls.items()):
        print(f"      {name:<28} {count}")
    print(f"(c) status, nothing done: {status_seconds:.3f} s, {dict(status_calls)}")
    print(f"    status, all done:     {done_seconds:.3f} s, {dict(done_calls)}")


if __name__ == "__main__":
    main()
