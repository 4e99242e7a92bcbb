"""Helpers for tests: scoring what was said, waiting with bounds, a fake IMDS, jobs held
in their worker until the test lets them go."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, unquote

import jiwer
from whisper_normalizer.english import EnglishTextNormalizer

from whisperq import keys, storage
from whisperq.schemas import Segment, TranscriptionJob, TranscriptionOptions, Word
from whisperq.speech import packing

_normalize = EnglishTextNormalizer()

# A sentence tiny.en transcribes right from espeak-ng at 8 kHz, run after run; many others
# sit on a knife edge ("send the invoice" -> "hand me in voice") as CPU load varies.
CLEAR_SENTENCE = "Hello, my internet connection keeps dropping every evening."


def word_error_rate(reference: str, hypothesis: str) -> float:
    """WER after Whisper's English normalisation (case, punctuation, numbers)."""
    return jiwer.wer(_normalize(reference), _normalize(hypothesis) or "<empty>")


def char_error_rate(reference: str, hypothesis: str) -> float:
    """CER after the same normalisation: kinder to near-misses ("a count" for "account")."""
    return jiwer.cer(_normalize(reference), _normalize(hypothesis) or "<empty>")


def words(text: str) -> set[str]:
    return set(_normalize(text).split())


T = TypeVar("T")


def create_group(autoscaling: Any, name: str, desired: int, max_size: int = 5) -> list[str]:
    """An Auto Scaling group in moto server; returns its instance ids."""
    autoscaling.create_launch_configuration(
        LaunchConfigurationName=name, ImageId="ami-12c6146b", InstanceType="c6a.xlarge"
    )
    autoscaling.create_auto_scaling_group(
        AutoScalingGroupName=name,
        LaunchConfigurationName=name,
        MinSize=0,
        MaxSize=max_size,
        DesiredCapacity=desired,
        AvailabilityZones=["us-east-1a"],
    )
    groups = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[name])
    return [instance["InstanceId"] for instance in groups["AutoScalingGroups"][0]["Instances"]]


def load_file_module(path: Path, name: str) -> Any:
    """A script that is not in a package (a benchmark, a Lambda's handler.py) as a module."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_batch(settings: Any, batch: str, paths: list[str], duration: float = 60.0) -> None:
    """A batch's records in S3, as submit writes them (no audio uploaded)."""
    from whisperq import storage
    from whisperq.batches import records as batch_records
    from whisperq.schemas import TranscriptionOptions

    s3 = storage.client(settings, "s3")
    options = TranscriptionOptions().model_dump(mode="json")
    batch_records.ensure_batch(s3, settings.bucket, batch, options, "submit", strict=True)
    entries = [
        batch_records.entry_document(batch, path, f"{index:064x}", 1000, duration, "submit")
        for index, path in enumerate(paths)
    ]
    batch_records.write_entries(s3, settings.bucket, batch, entries)


def settle(settings: Any, batch: str, paths: list[str], state: str = "done") -> None:
    """What a worker leaves for each path: its result JSON (or, ``state="failed"``, its
    error record), then its entry renamed to that state (whisperq.entry_states)."""
    from concurrent.futures import ThreadPoolExecutor

    from whisperq import entry_states, keys

    s3 = s3_client(settings)

    def one(path: str) -> None:
        key = (
            keys.result_key(batch, path, "json") if state == "done" else keys.error_key(batch, path)
        )
        s3.put_object(Bucket=settings.bucket, Key=key, Body=b"{}")
        assert entry_states.mark(s3, settings.bucket, batch, path, state), path

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(one, paths))


_S3_CLIENTS: dict[tuple[str | None, str], Any] = {}


def s3_client(settings: Any) -> Any:
    """One S3 client per endpoint and bucket for the helpers here: making one per call
    reads botocore's models again each time (1,500 puts took minutes)."""
    from whisperq import storage

    target = (settings.endpoint_url, settings.bucket)
    if target not in _S3_CLIENTS:
        _S3_CLIENTS[target] = storage.client(settings, "s3")
    return _S3_CLIENTS[target]


def put_as_worker(settings: Any, key: str, body: bytes = b"{}") -> None:
    """Put ``key``; a result JSON or an error record then renames its file's entry, as a
    worker does (whisperq.entry_states). Other keys (renderings) are only put."""
    from whisperq import entry_states, keys

    s3 = s3_client(settings)
    s3.put_object(Bucket=settings.bucket, Key=key, Body=body)
    batch = key.removeprefix(f"{keys.RESULTS}/").partition("/")[0]
    parsed = keys.parse_result_key(batch, key)
    if parsed is not None and parsed[1] in ("json", "error"):
        state = "done" if parsed[1] == "json" else "failed"
        entry_states.mark(s3, settings.bucket, batch, parsed[0], state)


def write_legacy_manifest(settings: Any, batch: str, paths: list[str], duration: float) -> None:
    """A batch as whisperq wrote it before per-file entries: one manifest.json."""
    import json

    from whisperq import keys, storage

    now = "2026-01-01T00:00:00+00:00"
    files = [
        {
            "path": path,
            "input_key": keys.input_key(batch, path),
            "sha256": f"{index:064x}",
            "size": 1000,
            "duration": duration,
            "submitted_at": now,
            "queued": True,
        }
        for index, path in enumerate(paths)
    ]
    manifest = {
        "schema_version": 1,
        "batch": batch,
        "created_at": now,
        "updated_at": now,
        "options": {"language": "en"},
        "files": files,
    }
    s3 = storage.client(settings, "s3")
    storage.put_text(
        s3, settings.bucket, keys.manifest_key(batch), json.dumps(manifest), "application/json"
    )


def write_result(
    settings: Any,
    batch: str,
    path: str,
    *,
    duration: float,
    job_seconds: float = 4.0,
    finished_at: Any = None,
    worker_id: str = "host-a:101",
    instance_type: str | None = None,
    segments: list[Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> None:
    """A finished job's result JSON, as a worker writes it (no model needed), and its
    entry, if it has one, renamed "done" (whisperq.entry_states): its timings add up to
    ``job_seconds`` (1 s download, 1 s upload, the rest transcribing); ``extra``: fields
    put into the JSON as they are (e.g. stored metrics)."""
    from datetime import UTC, datetime

    from whisperq import entry_states, keys, storage
    from whisperq.schemas import ModelInfo, TranscriptResult

    result = TranscriptResult(
        batch=batch,
        path=path,
        input_key=keys.input_key(batch, path),
        sha256="0" * 64,
        duration=duration,
        language="en",
        language_probability=0.99,
        model=ModelInfo(name="tiny.en", device="cpu", compute_type="int8"),
        options={},
        text=" ".join(segment.text for segment in segments) if segments else "hello",
        segments=segments or [],
        timings={"download": 1.0, "transcribe": job_seconds - 2.0, "upload": 1.0},
        instance_type=instance_type,
        worker_id=worker_id,
        finished_at=finished_at or datetime(2026, 3, 2, 9, 0, tzinfo=UTC),
    )
    s3 = storage.client(settings, "s3")
    storage.put_text(
        s3,
        settings.bucket,
        keys.result_key(batch, path, "json"),
        json.dumps(result.model_dump(mode="json") | (extra or {})),
        "application/json",
    )
    entry_states.mark(s3, settings.bucket, batch, path, "done")


def run_cli(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    """``whisperq ARGS`` in a subprocess, as a user runs it (wide output, bounded)."""
    return subprocess.run(
        [sys.executable, "-m", "whisperq", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=os.environ | {"COLUMNS": "200"},
    )


def wait_for(check: Callable[[], T], timeout: float, what: str, interval: float = 0.2) -> T:
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


class FakeImds:
    """IMDSv2 as EC2 serves it: a token by PUT, metadata by GET with the token."""

    def __init__(self, instance_id: str = "i-0123456789abcdef0") -> None:
        self.notice: dict | None = None
        self.instance_id = instance_id
        # autoscaling/target-lifecycle-state: "InService", "Terminated", ...; None: not in
        # a group (404)
        self.lifecycle_state: str | None = None
        self.requests: Counter = Counter()
        # (path, what it said) for each answer sent, counted once it is written: the body,
        # or the status code when there is none ("404")
        self.answered: Counter = Counter()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _reply(self, code, body=b""):
                self.send_response(code)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                self.wfile.flush()
                fake.answered[(self.path, body.decode() or str(code))] += 1

            def do_PUT(self):
                fake.requests["token"] += 1
                ok = self.path == "/latest/api/token" and self.headers.get(
                    "X-aws-ec2-metadata-token-ttl-seconds"
                )
                self._reply(200 if ok else 400, b"TOKEN" if ok else b"")

            def do_GET(self):
                if self.headers.get("X-aws-ec2-metadata-token") != "TOKEN":
                    return self._reply(401)
                fake.requests[self.path] += 1
                if self.path == "/latest/meta-data/instance-id":
                    return self._reply(200, fake.instance_id.encode())
                if self.path == "/latest/meta-data/spot/instance-action" and fake.notice:
                    return self._reply(200, json.dumps(fake.notice).encode())
                lifecycle = "/latest/meta-data/autoscaling/target-lifecycle-state"
                if self.path == lifecycle and fake.lifecycle_state:
                    return self._reply(200, fake.lifecycle_state.encode())
                return self._reply(404)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


# --- jobs held in their worker ---------------------------------------------------------

WORKER_HOOKS = Path(__file__).parent / "worker" / "worker_hooks"
RELEASE_ALL = "release all"  # never a quoted job path's marker: those have no spaces


def add_worker_hooks(monkeypatch: Any) -> None:
    """Workers started from now on load tests/worker/worker_hooks/sitecustomize.py, which
    does something only where its WHISPERQ_TEST_HOLD_* variable is set."""
    paths = [str(WORKER_HOOKS), os.environ.get("PYTHONPATH")]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, paths)))


class JobHolds:
    """Jobs that stop at the start of their transcription stage, in their pool process
    and inside their visibility heartbeat, until the test releases them: "a job still
    running" for as long as a test needs, on any machine, without long audio or sleeps.

    Set up before the workers start (the hooks are read at their start-up). A job path's
    starts are (pool pid, worker pid), one per delivery that reached the stage; a path
    released stays released (its later deliveries run straight through)."""

    def __init__(self, folder: Path, monkeypatch: Any) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        monkeypatch.setenv("WHISPERQ_TEST_HOLD_DIR", str(folder))
        add_worker_hooks(monkeypatch)

    def _marker(self, kind: str, path: str) -> Path:
        return self.folder / f"{kind}-{quote(path, safe='')}"

    @staticmethod
    def _lines(file: Path) -> list[str]:
        try:
            text = file.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        return text.splitlines()[: text.count("\n")]  # whole lines only

    def starts(self, path: str) -> list[tuple[int, int]]:
        """(pool pid, worker pid) of each delivery of ``path`` that reached the hold."""
        lines = self._lines(self._marker("started", path))
        return [(int(pool), int(worker)) for pool, worker in (line.split() for line in lines)]

    def started(self, path: str, count: int = 1, timeout: float = 120) -> tuple[int, int]:
        """Wait until ``path``'s ``count``-th delivery is held: its (pool pid, worker pid)."""
        starts = wait_for(
            lambda: (found := self.starts(path))[count - 1 :] and found,
            timeout,
            f"delivery {count} of {path} to start",
        )
        return starts[count - 1]

    def holding(self) -> dict[str, list[tuple[int, int]]]:
        """Every job path that has started and is not released: its starts."""
        found = {}
        for marker in self.folder.glob("started-*"):
            path = unquote(marker.name.removeprefix("started-"))
            if not self.released(path):
                found[path] = self.starts(path)
        return found

    def released(self, path: str) -> bool:
        return self._marker("release", path).exists() or (self.folder / RELEASE_ALL).exists()

    def release(self, *paths: str) -> None:
        for path in paths:
            self._marker("release", path).touch()

    def release_all(self) -> None:
        (self.folder / RELEASE_ALL).touch()

    def beats(self, pool_pid: int) -> int:
        """Visibility heartbeats (messages extended) sent by that pool process."""
        return len(self._lines(self.folder / f"beats-{pool_pid}"))


# --- jobs ------------------------------------------------------------------------------


def upload_job(settings: Any, local: Path, batch: str, path: str, options: Any = None) -> dict:
    """Upload ``local`` as a batch's input; the task payload a worker would receive."""
    s3 = storage.client(settings, "s3")
    key = keys.input_key(batch, path)
    s3.upload_file(str(local), settings.bucket, key)
    data = local.read_bytes()
    return TranscriptionJob(
        batch=batch,
        path=path,
        input_key=key,
        sha256=hashlib.sha256(data).hexdigest(),
        size=len(data),
        options=options or TranscriptionOptions(),
    ).model_dump(mode="json")


def result_keys(settings: Any, batch: str) -> list[str]:
    s3 = storage.client(settings, "s3")
    return sorted(
        o.key for o in storage.list_objects(s3, settings.bucket, keys.results_prefix(batch))
    )


# --- S3 events and the jobs they become ------------------------------------------------


def s3_notification(bucket: str, *keys_and_sizes: tuple[str, int | None], event="Put") -> str:
    """An S3 notification body as S3 sends it to SQS: keys URL-encoded, '+' for spaces."""
    from urllib.parse import quote_plus

    records = [
        {
            "eventVersion": "2.1",
            "eventSource": "aws:s3",
            "eventName": f"ObjectCreated:{event}",
            "s3": {
                "bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
                "object": {"key": quote_plus(key, safe="/"), "size": size},
            },
        }
        for key, size in keys_and_sizes
    ]
    return json.dumps({"Records": records})


def drain_jobs(settings: Any, queue_url: str | None = None) -> list[dict]:
    """Every job message on the queue (received and deleted): their payloads."""
    from whisperq.messages import job_payload_of

    sqs = storage.client(settings, "sqs")
    url = queue_url or settings.queue_url
    payloads = []
    for _ in range(1000):  # bounded: 10,000 messages at most
        messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
        if not messages:
            return payloads
        for message in messages:
            payloads.append(job_payload_of(message["Body"]))
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    raise AssertionError("more than 10,000 job messages on the queue")


def silent_wav(seconds: float, rate: int = 8000) -> bytes:
    """A mono 16-bit PCM WAV of silence (a known duration, no espeak-ng needed)."""
    import io
    import wave

    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(b"\0\0" * round(seconds * rate))
    return buffer.getvalue()


def queued_jobs(settings: Any, limit: int = 50) -> list[Any]:
    """Read (and delete) the Celery messages on the queue, decoded as kombu sends them."""
    from whisperq.celery_app import decode_job_message

    sqs = storage.client(settings, "sqs")
    jobs = []
    for _ in range(max(10, limit // 5)):  # bounded
        reply = sqs.receive_message(QueueUrl=settings.queue_url, MaxNumberOfMessages=10)
        messages = reply.get("Messages", [])
        if not messages:
            break
        for message in messages:
            jobs.append(decode_job_message(message["Body"]))
            sqs.delete_message(QueueUrl=settings.queue_url, ReceiptHandle=message["ReceiptHandle"])
        if len(jobs) >= limit:
            break
    return jobs


def worker_environment(aws: Any, **environment: str) -> dict[str, str]:
    """The environment of a `whisperq worker` process on this test's moto stack (``aws``:
    its Settings): one pool process, short polls, SIGTERM as the image's unit sends it
    (REMAP_SIGTERM=SIGQUIT); ``environment`` adds to it or overrides."""
    return os.environ | {
        "WHISPERQ_ENDPOINT_URL": aws.endpoint_url or "",
        "WHISPERQ_REGION": aws.region,
        "WHISPERQ_AWS_ACCESS_KEY_ID": "testing",
        "WHISPERQ_AWS_SECRET_ACCESS_KEY": "testing",
        "WHISPERQ_BUCKET": aws.bucket,
        "WHISPERQ_QUEUE_URL": aws.queue_url,
        "WHISPERQ_DLQ_URL": aws.dlq_url,
        "WHISPERQ_SQS_WAIT_SECONDS": "1",
        "WHISPERQ_WORKER_CONCURRENCY": "1",
        "REMAP_SIGTERM": "SIGQUIT",
        **environment,
    }


# --- a packed window's transcript, built by hand (packing's rules without the model) ---------


def word(text: str, start: float, end: float) -> Word:
    return Word(start=start, end=end, word=text, probability=0.9)


def segment(*spoken: Word) -> Segment:
    return Segment(
        start=spoken[0].start,
        end=spoken[-1].end,
        text=" ".join(w.word for w in spoken),
        avg_logprob=-0.2,
        no_speech_prob=0.01,
        words=list(spoken),
    )


# three files placed in a window, a second of silence between them
WINDOW = [
    packing.Placement(0, 0.0, 2.5),
    packing.Placement(1, 3.5, 6.0),
    packing.Placement(2, 7.0, 9.0),
]
