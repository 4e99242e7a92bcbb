"""Nothing lost, nothing run that should not be, with a real Celery worker process against
moto server and tiny.en: a pool process killed mid-pack hands the whole pack back, and a
message naming any task but ``whisperq.transcribe`` is refused.

Every wait is bounded and synchronised on what the worker logs, the files a test double
writes, or the queue's attributes; every process is stopped by PID (its group), also when a
test fails."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from whisperq import storage
from whisperq.celery_app import TRANSCRIBE_TASK, make_celery
from whisperq.messages import encode_job_message
from whisperq.schemas import TranscriptionJob, TranscriptResult
from whisperq.stacks.local import READY_MARK
from whisperq.worker.app import create_worker_app
from whisperq.worker.heartbeat import MessageHandle
from whisperq.worker.packs import GatheredJob, Holding, PackLedger

from helpers import result_keys, upload_job, wait_for, worker_environment

# A worker as `whisperq worker` runs, with one test double: when WHISPERQ_TEST_PACK_HELD
# names a file, the first pack to reach its shared decoding (its jobs gathered, noted,
# downloaded and cut) writes its pool process's pid there and waits to be killed (at most
# HOLD_S; later packs run straight through). The pool forks after this ran: the double is
# the pool processes' too.
WORKER = """
import os, runpy, sys, time
from pathlib import Path

HOLD_S = 120.0
held_file = os.environ.get("WHISPERQ_TEST_PACK_HELD")
if held_file:
    from whisperq.speech import engine

    real = engine.transcribe_packed

    def held(*args, **kwargs):
        marker = Path(held_file)
        if not marker.exists():
            draft = marker.with_name(marker.name + ".draft")
            draft.write_text(str(os.getpid()))
            draft.rename(marker)
            deadline = time.monotonic() + HOLD_S
            while time.monotonic() < deadline:
                time.sleep(0.05)
        return real(*args, **kwargs)

    engine.transcribe_packed = held

sys.argv = ["whisperq", "worker"]
runpy.run_module("whisperq", run_name="__main__", alter_sys=True)
"""

SHORT_CALLS = {
    "a.wav": "My electricity bill is wrong this month.",
    "b.wav": "Hello, my internet connection keeps dropping every evening.",
    "c.wav": "I was charged two times and I would like a refund.",
}


@dataclass
class Worker:
    process: subprocess.Popen
    log_file: Path

    def log(self) -> str:
        return self.log_file.read_text(encoding="utf-8", errors="replace")


@pytest.fixture
def start_worker(aws, tmp_path):
    """start_worker(**environment) -> a `whisperq worker` on this test's queue, its model
    loaded. Stopped at the end (SIGTERM, then SIGKILL to its process group)."""
    script = tmp_path / "worker_main.py"
    script.write_text(WORKER, encoding="utf-8")
    started: list[subprocess.Popen] = []

    def start(**environment: str) -> Worker:
        log_file = tmp_path / f"worker-{len(started)}.log"
        env = worker_environment(aws, **environment)
        with log_file.open("wb") as out:
            process = subprocess.Popen(
                [sys.executable, str(script)],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # its own group: the pool goes with it
            )
        started.append(process)
        worker = Worker(process, log_file)
        wait_for(
            lambda: READY_MARK in worker.log() or process.poll() is not None,
            180,
            "the worker to load its model",
        )
        assert process.poll() is None, worker.log()[-3000:]
        return worker

    yield start
    for process in started:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)  # a cold shutdown: its pool goes too
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)  # not reaped yet: still its group
                process.wait(timeout=30)


def queue_counts(settings, queue_url: str | None = None) -> tuple[int, int]:
    attributes = storage.client(settings, "sqs").get_queue_attributes(
        QueueUrl=queue_url or settings.queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return (
        int(attributes["ApproximateNumberOfMessages"]),
        int(attributes["ApproximateNumberOfMessagesNotVisible"]),
    )


def set_queue(settings, visibility_timeout: int, max_receive_count: int) -> None:
    """The test's queue as deployed: its visibility timeout, and a dead-letter queue."""
    sqs = storage.client(settings, "sqs")
    dlq_arn = sqs.get_queue_attributes(QueueUrl=settings.dlq_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    redrive = f'{{"deadLetterTargetArn": "{dlq_arn}", "maxReceiveCount": "{max_receive_count}"}}'
    sqs.set_queue_attributes(
        QueueUrl=settings.queue_url,
        Attributes={"VisibilityTimeout": str(visibility_timeout), "RedrivePolicy": redrive},
    )


# --- a pool process killed mid-pack ---------------------------------------------------------

HANDED_BACK = re.compile(r"its pool process is gone; (\d+) job\(s\) it had taken along handed back")


def test_a_pool_process_killed_mid_pack_hands_the_whole_pack_back(
    aws, start_worker, make_speech, tmp_path
):
    """The lead job's message is Celery's (requeued on the worker lost); the jobs it took
    along are the main process's to hand back. With a 12-hour visibility timeout, every
    file is done only if they came back at once."""
    set_queue(aws, visibility_timeout=43200, max_receive_count=5)
    sqs = storage.client(aws, "sqs")
    for name, text in SHORT_CALLS.items():
        payload = upload_job(aws, make_speech(tmp_path / name, text), "pk", name)
        body = encode_job_message(payload, aws.queue_name)
        sqs.send_message(QueueUrl=aws.queue_url, MessageBody=body)
    held = tmp_path / "pack-held"
    worker = start_worker(WHISPERQ_TEST_PACK_HELD=str(held))

    pool_pid = int(wait_for(lambda: held.exists() and held.read_text(), 120, "a pack in flight"))
    assert queue_counts(aws) == (0, 3)  # the lead and the two it took along, all held
    assert result_keys(aws, "pk") == []
    os.kill(pool_pid, signal.SIGKILL)  # as the OOM killer does

    line = wait_for(lambda: HANDED_BACK.search(worker.log()), 60, "the pack handed back")
    assert int(line.group(1)) == 2, worker.log()[-3000:]

    def finished() -> bool:
        done = [f"results/pk/{name}.json" for name in SHORT_CALLS]
        return set(done) <= set(result_keys(aws, "pk")) and queue_counts(aws) == (0, 0)

    wait_for(finished, 180, "every file of the pack done")  # long before 12 hours
    s3 = storage.client(aws, "s3")
    for name in SHORT_CALLS:
        result = TranscriptResult.model_validate(
            storage.get_json(s3, aws.bucket, f"results/pk/{name}.json")
        )
        assert not result.worker_id.endswith(f":{pool_pid}")  # redone by the new process
    assert queue_counts(aws, aws.dlq_url) == (0, 0)


def test_a_worker_stopped_mid_pack_hands_the_whole_pack_back(
    aws, start_worker, make_speech, tmp_path
):
    """SIGTERM while a pack is decoding: the grace runs out, the pool process is
    cancelled, and every job of the pack is on the queue again, none waiting out the
    12-hour visibility timeout."""
    set_queue(aws, visibility_timeout=43200, max_receive_count=5)
    sqs = storage.client(aws, "sqs")
    for name, text in SHORT_CALLS.items():
        payload = upload_job(aws, make_speech(tmp_path / name, text), "ps", name)
        sqs.send_message(
            QueueUrl=aws.queue_url, MessageBody=encode_job_message(payload, aws.queue_name)
        )
    held = tmp_path / "pack-held"
    worker = start_worker(WHISPERQ_TEST_PACK_HELD=str(held), WHISPERQ_SHUTDOWN_GRACE_SECONDS="1")
    wait_for(lambda: held.exists() and held.read_text(), 120, "a pack in flight")
    assert queue_counts(aws) == (0, 3)

    os.killpg(worker.process.pid, signal.SIGTERM)  # as systemd stops the service
    worker.process.wait(timeout=60)

    wait_for(lambda: queue_counts(aws) == (3, 0), 30, "the pack back on the queue")
    assert result_keys(aws, "ps") == []


def test_a_packs_note_holds_what_is_not_settled_and_goes_when_the_pack_ends(aws):
    """What the main process hands back for a dead pool process: only messages nobody has
    settled (a handle settled and then handed back could touch another worker's
    delivery)."""
    sqs = storage.client(aws, "sqs")
    for number in range(3):
        sqs.send_message(QueueUrl=aws.queue_url, MessageBody=f"job {number}")
    received: list[dict] = []
    for _ in range(10):  # bounded: moto may answer with fewer than asked
        received += sqs.receive_message(
            QueueUrl=aws.queue_url, MaxNumberOfMessages=10, VisibilityTimeout=600
        ).get("Messages", [])
        if len(received) == 3:
            break
    job = TranscriptionJob(
        batch="n", path="x.wav", input_key="inputs/n/x.wav", sha256="0" * 64, size=1
    )
    gathered = [
        GatheredJob(job, MessageHandle(aws.queue_url, message["ReceiptHandle"]))
        for message in received
    ]
    lead = MessageHandle(aws.queue_url, "the lead job's receipt handle")
    ledger = PackLedger()
    ledger.open()
    try:
        assert ledger.folder is not None and ledger.folder.name == str(os.getpid())
        with Holding(sqs, gathered, 600, ledger, lead) as held:
            held.done(gathered[0].message)  # its result is written: deleted
            assert len(list(ledger.folder.glob("*.json"))) == 1
            # the pool process dies here: the main process hands back the other two
            assert ledger.hand_back(lambda: sqs, lead) == 2
            assert queue_counts(aws) == (2, 0)
            assert ledger.hand_back(lambda: sqs, lead) == 0  # once
        assert list(ledger.folder.iterdir()) == []  # the pack is over: no note left
        assert ledger.hand_back_all(lambda: sqs) == 0
    finally:
        folder = ledger.folder
        ledger.close()
    assert folder is not None and not folder.exists()


# --- messages naming other tasks --------------------------------------------------------------


def test_the_worker_app_has_no_task_but_transcribe(aws):
    app = create_worker_app(aws)
    assert sorted(app.tasks) == [TRANSCRIBE_TASK]
    assert "celery.backend_cleanup" not in app.tasks


REFUSED = "refused a message for task {name!r} (task id {id!r}, SQS message "


def test_a_message_naming_another_task_is_refused_deleted_and_never_run(aws, start_worker):
    set_queue(aws, visibility_timeout=30, max_receive_count=2)
    worker = start_worker()
    hostile = make_celery(aws)
    sent = {
        name: hostile.send_task(name, args=args).id
        for name, args in (
            ("celery.backend_cleanup", []),  # Celery's own, registered by default
            ("celery.accumulate", [1, 2]),
            ("whisperq.not_a_task", ["rm -rf /"]),  # a name nobody registered
        )
    }

    for name, task_id in sent.items():
        wait_for(
            lambda n=name, i=task_id: REFUSED.format(name=n, id=i) in worker.log(),
            60,
            f"{name} refused",
        )
    log = worker.log()
    for name in sent:
        assert f"Task {name}[" not in log  # never received as a task, never run
    assert "Received unregistered task" not in log  # handled on purpose, not by default
    # deleted, not left to come round until it is dead-lettered
    wait_for(lambda: queue_counts(aws) == (0, 0), 30, "the queue empty")
    assert queue_counts(aws, aws.dlq_url) == (0, 0)
    assert worker.process.poll() is None  # and the worker goes on
