"""Nothing lost, on the real local stack: moto server, real Celery worker processes, the real
tiny.en model. Workers are killed, stopped and interrupted; every file must still end with
complete results or a failure record. Every wait is bounded; every process is stopped.

No test here depends on the machine's speed: a job that must still be running when
something happens is held at the start of its transcription stage until the test releases
it (``JobHolds``), and every wait is for an event -- a marker file, a log line, a heartbeat,
a queue count -- never for a fixed time. Nothing asserts on elapsed time."""

from __future__ import annotations

import json
import os
import pickle
import random
import re
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from whisperq import keys, storage
from whisperq.batches import tracking
from whisperq.batches.submit import submit
from whisperq.celery_app import TRANSCRIBE_TASK, decode_job_message, make_celery
from whisperq.settings import Settings
from whisperq.stacks import local as local_stack

from helpers import (
    CLEAR_SENTENCE,
    FakeImds,
    JobHolds,
    add_worker_hooks,
    char_error_rate,
    run_cli,
    wait_for,
    word_error_rate,
)

pytestmark = pytest.mark.e2e

SENTENCES = [
    "Thank you for calling customer support.",
    "My internet connection keeps dropping every evening.",
    "I was charged two times this month and I would like a refund.",
    "Please send the confirmation to my email address.",
    "Can you check the status of my order?",
    "The technician will visit you on Monday morning.",
    "Your account number ends with four five six.",
    "Is there anything else I can help you with today?",
]
RECEIVED = re.compile(r"Task whisperq\.transcribe\[[0-9a-f-]+\] received")


@dataclass
class Stack:
    settings: Settings

    def workers(self) -> list[local_stack.Managed]:
        state = local_stack.read_state(self.settings) or {}
        return [p for p in local_stack.managed_processes(state) if p.name.startswith("worker")]

    def alive_workers(self) -> list[local_stack.Managed]:
        return [worker for worker in self.workers() if local_stack.is_alive(worker)]

    def log(self, worker: local_stack.Managed) -> str:
        return Path(worker.log).read_text(encoding="utf-8", errors="replace")

    def received(self, worker: local_stack.Managed | None = None) -> int:
        chosen = [worker] if worker else self.workers()
        return sum(len(RECEIVED.findall(self.log(item))) for item in chosen)

    def worker(self, pid: int) -> local_stack.Managed:
        """The worker whose main process is ``pid`` (a held job's worker pid)."""
        (found,) = [worker for worker in self.workers() if worker.pid == pid]
        return found

    def counts(self) -> tuple[int, int]:
        """(visible, in flight) on the job queue: moto counts visibility when asked."""
        counts = storage.queue_counts(self.settings)
        return counts.visible, counts.in_flight

    def back_on_the_queue(self) -> None:
        """Wait until the one job is visible on the queue again, handed back by a stopped
        worker: Celery restores a cancelled job's message with the SQS wait time (2 s on
        the local stack) as its visibility; without that, these tests' 120 s visibility
        timeout would keep it in flight for twice as long as this waits."""
        wait_for(lambda: self.counts() == (1, 0), 60, "the job back on the queue")

    def status(self, batch: str) -> tracking.BatchStatus:
        s3 = storage.client(self.settings, "s3")
        return tracking.batch_status(self.settings, s3, batch)

    def wait_finished(self, batch: str, timeout: float) -> tracking.BatchStatus:
        return wait_for(
            lambda: (status := self.status(batch)).finished and status, timeout, f"{batch} done"
        )

    def result(self, batch: str, path: str) -> dict:
        s3 = storage.client(self.settings, "s3")
        return storage.get_json(s3, self.settings.bucket, keys.result_key(batch, path, "json"))

    def result_keys(self, batch: str) -> set[str]:
        s3 = storage.client(self.settings, "s3")
        prefix = keys.results_prefix(batch)
        return {o.key for o in storage.list_objects(s3, self.settings.bucket, prefix)}


@pytest.fixture
def start_stack(monkeypatch):
    """start_stack(workers, visibility_timeout, max_receive_count, **WHISPERQ_settings)."""

    def start(workers=2, visibility_timeout=3, max_receive_count=5, **env) -> Stack:
        env.setdefault("shutdown_grace_seconds", 2)
        for name, value in env.items():
            monkeypatch.setenv(f"WHISPERQ_{name.upper()}", str(value))
        local_stack.up(
            Settings(),
            workers=workers,
            visibility_timeout=visibility_timeout,
            max_receive_count=max_receive_count,
        )
        return Stack(Settings())

    yield start
    settings = Settings()
    state = local_stack.read_state(settings)
    for process in local_stack.managed_processes(state or {}):
        if local_stack.is_alive(process):
            os.killpg(process.pid, signal.SIGKILL)
    local_stack.down(settings)


@pytest.fixture
def holds(tmp_path, monkeypatch) -> JobHolds:
    """Jobs of the workers started after this wait at their transcription stage until
    released: a job runs exactly as long as the test needs, on any machine."""
    return JobHolds(tmp_path / "holds", monkeypatch)


CALL = "call.wav"


@pytest.fixture
def call(make_speech, tmp_path) -> Path:
    """A short call: how long its job runs is the hold's to say, not the audio's."""
    return make_speech(tmp_path / "in" / CALL, " ".join(SENTENCES[:2]))


def pool_children(pid: int) -> list[int]:
    try:
        return [int(x) for x in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def assert_complete(stack: Stack, batch: str, path: str) -> dict:
    """All four outputs exist and the JSON is whole and about this file."""
    expected = {keys.result_key(batch, path, fmt) for fmt in keys.RESULT_FORMATS}
    assert expected <= stack.result_keys(batch)
    result = stack.result(batch, path)
    assert result["path"] == path and result["segments"]
    return result


def test_a_long_job_runs_once_while_its_worker_lives(start_stack, holds, call):
    """A job that runs past two 3 s visibility timeouts (held) stays invisible -- its
    heartbeat extends it -- so the idle second worker never gets it; it runs once."""
    stack = start_stack(workers=2, visibility_timeout=3)
    submit(stack.settings, [str(call)], batch="long")
    pool, worker = holds.started(CALL)
    # a beat comes a third of the timeout (1 s) after the last, at the earliest: six beats
    # since the job started mean its message was received more than two timeouts ago
    wait_for(lambda: holds.beats(pool) >= 6, 120, "six heartbeats")
    assert stack.counts() == (0, 1)  # past its timeout, still invisible: held by its worker
    holds.release(CALL)

    stack.wait_finished("long", 120)
    assert_complete(stack, "long", CALL)
    assert holds.starts(CALL) == [(pool, worker)]  # it ran once,
    assert stack.received() == 1  # never given to the second worker
    assert all("heartbeat is off" not in stack.log(w) for w in stack.workers())


def test_kill_9_mid_job_the_job_is_redone_by_another_worker(start_stack, holds, call):
    """SIGKILL to the worker running a job (held): the job comes back after the visibility
    timeout and the other worker does it; nothing dead-lettered."""
    stack = start_stack(workers=2, visibility_timeout=3)
    submit(stack.settings, [str(call)], batch="k9")
    pool, worker = holds.started(CALL)
    victim = stack.worker(worker)
    os.killpg(victim.pid, signal.SIGKILL)
    holds.release(CALL)  # its next delivery runs through

    status = stack.wait_finished("k9", 120)
    assert (status.done, status.failed) == (1, 0)
    result = assert_complete(stack, "k9", CALL)
    assert int(result["worker_id"].rsplit(":", 1)[1]) not in {worker, pool}
    assert len(holds.starts(CALL)) == 2  # the killed delivery, and the one that finished
    assert stack.received() == 2
    assert storage.queue_counts(stack.settings).dead_lettered == 0


def test_sigterm_lets_a_job_that_fits_the_grace_finish(start_stack, holds, call):
    """SIGTERM while a job runs; the job is let go once the soft shutdown has begun, with
    a short file's work left and a 15 s grace: it finishes and is acknowledged."""
    stack = start_stack(workers=1, visibility_timeout=60, shutdown_grace_seconds=15)
    submit(stack.settings, [str(call)], batch="term")
    (worker,) = stack.workers()
    holds.started(CALL)
    os.killpg(worker.pid, signal.SIGTERM)  # as systemd stops a service
    wait_for(lambda: "Initiating Soft Shutdown" in stack.log(worker), 60, "the soft shutdown")
    holds.release(CALL)
    wait_for(lambda: not local_stack.is_alive(worker), 120, "the worker to stop")

    assert stack.status("term").done == 1
    assert "succeeded in" in stack.log(worker)
    assert stack.counts() == (0, 0)  # acknowledged, not handed back


def test_sigterm_hands_back_a_job_that_does_not_fit(start_stack, holds, call):
    """SIGTERM while a job runs past the 1 s grace (held): the job is cancelled and handed
    back as the worker ends -- not left to the 120 s timeout; a new worker finishes it."""
    stack = start_stack(workers=1, visibility_timeout=120, shutdown_grace_seconds=1)
    submit(stack.settings, [str(call)], batch="handback")
    (worker,) = stack.workers()
    holds.started(CALL)
    os.killpg(worker.pid, signal.SIGTERM)
    wait_for(lambda: not local_stack.is_alive(worker), 60, "the worker to stop")
    assert stack.status("handback").pending == 1
    assert "succeeded in" not in stack.log(worker)
    stack.back_on_the_queue()

    holds.release(CALL)
    local_stack.start_worker(stack.settings)
    stack.wait_finished("handback", 120)
    assert_complete(stack, "handback", CALL)
    assert stack.received() == 2


def test_sigterm_hands_back_a_job_received_but_not_started(
    start_stack, make_speech, tmp_path, monkeypatch
):
    """SIGTERM between a job's receipt and its start in the pool: the job is visible on the
    queue again at once (visibility 0), not after the timeout, and this worker never runs it
    (Celery's pool.stop would have run it to the end)."""
    hold = tmp_path / "hold-pool-start"  # see tests/worker/worker_hooks/sitecustomize.py
    hold.touch()
    monkeypatch.setenv("WHISPERQ_TEST_HOLD_POOL_START", str(hold))
    add_worker_hooks(monkeypatch)
    stack = start_stack(workers=1, visibility_timeout=120, shutdown_grace_seconds=30)
    (worker,) = stack.workers()
    try:
        wait_for(lambda: "test hold: pool process" in stack.log(worker), 60, "the held pool")
        call = make_speech(tmp_path / "short.wav", CLEAR_SENTENCE)
        submit(stack.settings, [str(call)], batch="unstarted")
        wait_for(lambda: "test hold: a job waits" in stack.log(worker), 60, "the job in the pipe")
        assert stack.received(worker) == 1
        sqs = storage.client(stack.settings, "sqs")
        url = stack.settings.queue_url

        def receive():
            reply = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=1, WaitTimeSeconds=1)
            return reply.get("Messages")

        assert receive() is None  # in flight: the worker holds it (for 120 s)
        held_by = {worker.pid, *pool_children(worker.pid)}
        os.killpg(worker.pid, signal.SIGTERM)  # as systemd stops a service
        wait_for(lambda: "handed back unstarted" in stack.log(worker), 60, "the hand-back")
        (message,) = receive()  # at once: the 120 s timeout would keep it for two minutes
    finally:
        hold.unlink()  # the pool process may read its pipe now
    wait_for(lambda: not local_stack.is_alive(worker), 60, "the worker to stop")

    assert decode_job_message(message["Body"]).path == "short.wav"
    assert stack.result_keys("unstarted") == set()  # this worker did not run it
    log = stack.log(worker)
    assert "not started" in log  # the pool process, let go, declined it
    assert "Processing audio" not in log and "succeeded in" not in log

    # nothing lost: another worker takes it and finishes it
    sqs.change_message_visibility(
        QueueUrl=url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
    )
    local_stack.start_worker(stack.settings)
    stack.wait_finished("unstarted", 120)
    result = assert_complete(stack, "unstarted", "short.wav")
    assert int(result["worker_id"].rsplit(":", 1)[1]) not in held_by


def test_a_spot_notice_stops_the_worker_and_hands_the_job_back(
    start_stack, holds, call, monkeypatch
):
    """A spot notice while a job runs past the 1 s spot grace (held): the worker stops, the
    job is handed back as it ends -- not left to the 120 s timeout -- and a worker started
    after finishes it."""
    with FakeImds() as imds:
        stack = start_stack(
            workers=1,
            visibility_timeout=120,
            spot_watch="on",
            imds_endpoint=imds.endpoint,
            spot_poll_seconds=0.5,
            spot_grace_seconds=1,
            shutdown_grace_seconds=60,
        )
        submit(stack.settings, [str(call)], batch="spot")
        (worker,) = stack.workers()
        holds.started(CALL)
        imds.notice = {"action": "terminate", "time": "2026-11-22T01:00:00Z"}
        wait_for(lambda: not local_stack.is_alive(worker), 60, "the worker to stop")
        log = stack.log(worker)
        assert "spot interruption" in log and "stopping, grace 1s" in log
        assert imds.requests["/latest/meta-data/spot/instance-action"] >= 1
    assert "succeeded in" not in log and stack.result_keys("spot") == set()
    stack.back_on_the_queue()

    holds.release(CALL)
    monkeypatch.setenv("WHISPERQ_SPOT_WATCH", "off")
    local_stack.start_worker(stack.settings)
    stack.wait_finished("spot", 120)
    assert_complete(stack, "spot", CALL)
    assert len(holds.starts(CALL)) == 2


def test_a_busy_worker_protects_its_instance_from_scale_in(start_stack, holds, call):
    """Scale-in protection is on while the worker holds a job (held running) and goes off
    once it is idle again."""
    # the local stack registers each worker as an instance of its Auto Scaling group in moto
    stack = start_stack(workers=1)
    autoscaling = storage.client(stack.settings, "autoscaling")
    group = stack.settings.autoscaling_group
    (found,) = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[group])[
        "AutoScalingGroups"
    ]
    (instance_id,) = [instance["InstanceId"] for instance in found["Instances"]]

    def protected() -> bool:
        found = autoscaling.describe_auto_scaling_instances(InstanceIds=[instance_id])
        return found["AutoScalingInstances"][0]["ProtectedFromScaleIn"]

    assert not protected()
    submit(stack.settings, [str(call)], batch="protect")
    holds.started(CALL)
    # set as the worker received the job, before the job started
    assert protected(), stack.log(stack.workers()[0])[-2000:]
    holds.release(CALL)
    stack.wait_finished("protect", 120)
    wait_for(lambda: not protected(), 60, "protection to drop when idle")


def test_chaos_workers_killed_and_restarted_nothing_lost(start_stack, holds, make_speech, tmp_path):
    """40 short jobs, 3 workers; 4 times, a worker that is running a job (held there) is
    SIGKILLed and replaced: every job ends done with its own words, the killed ones redone."""
    stack = start_stack(workers=3, visibility_timeout=3)
    calls = tmp_path / "chaos"
    for number in range(40):
        make_speech(calls / f"call-{number:02d}.wav", f"Call {number}. {SENTENCES[number % 8]}")
    submit(stack.settings, [str(calls)], batch="chaos")

    def running_on_live_workers() -> list[tuple[str, int]]:
        """(job path, worker pid) of each held job whose worker lives."""
        alive = {worker.pid for worker in stack.alive_workers()}
        held = [(path, starts[-1][1]) for path, starts in holds.holding().items() if starts]
        return sorted(item for item in held if item[1] in alive)

    rng = random.Random(7)
    killed = []
    for round_ in range(4):
        path, worker = rng.choice(wait_for(running_on_live_workers, 120, f"round {round_}"))
        os.killpg(worker, signal.SIGKILL)  # mid-job: the job cannot end while it is held
        killed.append(path)
        local_stack.start_worker(stack.settings)
        holds.release(*holds.holding())  # the rest run on; the next jobs are held again
    holds.release_all()

    status = stack.wait_finished("chaos", 300)
    assert (status.submitted, status.done, status.failed) == (40, 40, 0)
    for number in range(40):
        result = assert_complete(stack, "chaos", f"chaos/call-{number:02d}.wav")
        # its own words, not another file's (tiny.en garbles some sentences a little)
        scores = [char_error_rate(f"Call {number}. {s}", result["text"]) for s in SENTENCES]
        assert scores.index(min(scores)) == number % 8, result["text"]
    assert all(len(holds.starts(path)) >= 2 for path in killed)  # each killed job redone
    assert not any(key.endswith(keys.ERROR_SUFFIX) for key in stack.result_keys("chaos"))
    counts = storage.queue_counts(stack.settings)
    assert (counts.visible, counts.in_flight, counts.dead_lettered) == (0, 0, 0)


def test_bad_input_fails_alone_with_reasons(start_stack, make_speech, tmp_path):
    stack = start_stack(workers=1, visibility_timeout=30)
    batch_dir = tmp_path / "mixed"
    good = make_speech(batch_dir / "good.wav", SENTENCES[3])
    make_speech(batch_dir / "also good.wav", SENTENCES[1], rate=16000, channels=2)
    (batch_dir / "empty.wav").write_bytes(b"")
    (batch_dir / "random.wav").write_bytes(random.Random(1).randbytes(50_000))
    (batch_dir / "text.wav").write_text("Meeting notes, not a recording.\n" * 50)
    (batch_dir / "truncated.wav").write_bytes(good.read_bytes()[:44])  # header only
    sox = ["sox", "-n", "-r", "8000", "-c", "1", "-b", "16", str(batch_dir / "silence.wav")]
    subprocess.run([*sox, "trim", "0", "60"], check=True)
    subprocess.run(["sox", str(good), str(batch_dir / "tiny.wav"), "trim", "0", "0.1"], check=True)

    submit(stack.settings, [str(batch_dir)], batch="mixed")
    status = stack.wait_finished("mixed", 180)

    broken = {"mixed/empty.wav", "mixed/random.wav", "mixed/text.wav", "mixed/truncated.wav"}
    assert set(status.failed_paths) == broken
    assert status.done == 4
    s3 = storage.client(stack.settings, "s3")
    for record in tracking.failure_records(stack.settings, s3, status):
        assert "could not be read as audio" in record.reason and "--force" in record.reason
        assert record.kind == "permanent" and record.attempts == 1
    for path, sentence in (("mixed/good.wav", SENTENCES[3]), ("mixed/also good.wav", SENTENCES[1])):
        assert word_error_rate(sentence, stack.result("mixed", path)["text"]) <= 0.4
    for quiet in ("mixed/silence.wav", "mixed/tiny.wav"):
        result = stack.result("mixed", quiet)
        assert (result["text"], result["segments"]) == ("", [])  # nothing invented


class _Touch:
    """Unpickling this would create a file: proof of code execution."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_pickle_message_is_refused_and_never_executed(start_stack, make_speech, tmp_path):
    stack = start_stack(workers=1, visibility_timeout=30)
    marker = tmp_path / "pwned"
    hostile = make_celery(stack.settings)
    hostile.send_task(TRANSCRIBE_TASK, args=[_Touch(marker)], serializer="pickle")
    pickle.loads(pickle.dumps(_Touch(tmp_path / "control")))  # the payload does work...
    assert (tmp_path / "control").exists()

    (worker,) = stack.workers()
    wait_for(lambda: "untrusted content" in stack.log(worker), 60, "the refusal in the log")
    assert not marker.exists()  # ...but the worker never ran it

    call = make_speech(tmp_path / "after.wav", SENTENCES[0])
    submit(stack.settings, [str(call)], batch="after")
    assert stack.wait_finished("after", 120).done == 1  # and it kept working


def test_a_job_that_keeps_killing_its_worker_goes_to_the_dlq_and_comes_back(
    start_stack, holds, call
):
    """The pool process dies mid-job (held), as on OOM or a segfault, on each of the
    job's deliveries: after max_receive_count it is dead-lettered; `retry` brings it back
    and it is done."""
    stack = start_stack(workers=1, visibility_timeout=5, max_receive_count=2)
    submit(stack.settings, [str(call)], batch="poison")
    for delivery in (1, 2):
        pool, _ = holds.started(CALL, delivery)
        os.kill(pool, signal.SIGKILL)

    wait_for(lambda: storage.queue_counts(stack.settings).dead_lettered == 1, 60, "the dead letter")
    assert stack.status("poison").pending == 1
    assert len(holds.starts(CALL)) == 2

    (letter,) = json.loads(run_cli("dlq", "--json").stdout)["messages"]
    assert (letter["batch"], letter["path"]) == ("poison", CALL)

    holds.release(CALL)
    retried = run_cli("retry", "poison")
    assert "0 failed file(s) and 1 dead-lettered job(s)" in retried.stderr
    stack.wait_finished("poison", 120)
    assert_complete(stack, "poison", CALL)
    assert storage.queue_counts(stack.settings).dead_lettered == 0
