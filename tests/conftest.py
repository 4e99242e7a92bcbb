"""Shared fixtures: isolated settings, generated speech, and a moto server on 127.0.0.1.

Every process a fixture starts is stopped by PID in its finaliser, also when a test fails.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from whisperq import storage
from whisperq.settings import Settings
from whisperq.stacks import local as local_stack


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Marks tests by what they need, so that `pytest -m "not moto and not e2e"` runs the
    unit tests alone: ``moto`` for those that talk to a moto server (``e2e`` tests start
    the whole stack and are marked by hand)."""
    for item in items:
        if "moto_endpoint" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.moto)


@pytest.fixture(autouse=True)
def isolated_settings(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """No test reads the user's config, .env or running local stack."""
    home = tmp_path_factory.mktemp("home")
    for name in list(__import__("os").environ):
        if name.startswith("WHISPERQ_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("WHISPERQ_STATE_DIR", str(home / "state"))
    monkeypatch.setenv("WHISPERQ_CONFIG_FILE", str(home / "config.toml"))
    # One pool process per worker: the reliability tests count on one job per worker.
    monkeypatch.setenv("WHISPERQ_WORKER_CONCURRENCY", "1")
    monkeypatch.chdir(home)
    return home


# --- speech -----------------------------------------------------------------------------


def _require(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.fail(f"{tool} is not installed: run `make system-deps` (apt: espeak-ng sox ffmpeg)")
    return path


SpeechMaker = Callable[..., Path]


@pytest.fixture
def make_speech() -> SpeechMaker:
    """make_speech(path, text, voice="en-us", rate=8000, channels=1) -> path of a WAV file."""
    espeak, sox = _require("espeak-ng"), _require("sox")

    def make(path: Path, text: str, voice: str = "en-us", rate: int = 8000, channels: int = 1):
        path.parent.mkdir(parents=True, exist_ok=True)
        raw = path.with_name(path.name + ".raw.wav")
        subprocess.run([espeak, "-v", voice, "-s", "150", "-w", str(raw), text], check=True)
        # pad with half a second of silence each side: a realistic call start and end
        subprocess.run(
            [
                sox,
                str(raw),
                "-r",
                str(rate),
                "-c",
                str(channels),
                "-b",
                "16",
                str(path),
                "pad",
                "0.5",
                "0.5",
            ],
            check=True,
        )
        raw.unlink()
        return path

    return make


# --- moto server ------------------------------------------------------------------------


@pytest.fixture(scope="session")
def moto_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A moto server for the whole session, on a free loopback port."""
    port = local_stack.free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with log.open("wb") as handle:
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        probe = Settings(endpoint_url=endpoint, aws_access_key_id="t", aws_secret_access_key="t")
        s3 = storage.client(probe, "s3")
        deadline = time.monotonic() + 30
        while True:
            try:
                s3.list_buckets()
                break
            except Exception:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError(f"moto server did not start; see {log}") from None
                time.sleep(0.2)
        yield endpoint
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@pytest.fixture
def aws(moto_endpoint: str) -> Settings:
    """Settings for a fresh bucket, queue and dead-letter queue of this test's own."""
    name = f"t-{uuid.uuid4().hex[:12]}"
    base = Settings(
        endpoint_url=moto_endpoint,
        region="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        sqs_wait_seconds=1,
    )
    storage.client(base, "s3").create_bucket(Bucket=name)
    sqs = storage.client(base, "sqs")
    dlq = sqs.create_queue(QueueName=f"{name}-dlq")["QueueUrl"]
    queue = sqs.create_queue(QueueName=name)["QueueUrl"]
    return base.model_copy(update={"bucket": name, "queue_url": queue, "dlq_url": dlq})


@pytest.fixture
def cli_env(aws: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The CLI (which reads only Settings) pointed at this test's bucket and queues."""
    for name in ("endpoint_url", "bucket", "queue_url", "dlq_url", "region", "aws_access_key_id"):
        monkeypatch.setenv(f"WHISPERQ_{name.upper()}", getattr(aws, name))
    monkeypatch.setenv("WHISPERQ_AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("COLUMNS", "200")
    return aws
