"""Nothing lost, on the real local stack: moto server, real Celery worker processes, the real
tiny.en model. Workers are killed, stopped and interrupted; every file must still end with
complete results or a failure record. Every wait is bounded; every process is stopped."""

from __future__ import annotations

import json
import os
import pickle
import random
import re
import signal
import subprocess
import time
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

    def holder(self) -> local_stack.Managed:
        """The live worker that has received a job and not finished it."""

        def find():
            for worker in self.alive_workers():
                text = self.log(worker)
                if len(RECEIVED.findall(text)) > text.count("succeeded in") + text.count("handing"):
                    return worker
            return None

        return wait_for(find, 60, "a worker to take the job")

    def running(self, worker: local_stack.Managed) -> None:
        """Wait until the job is running in the pool, not just received: a job received but
        not started goes back at once on shutdown (see the test of that below), not after
        the grace these tests are about."""
        wait_for(lambda: "Processing audio" in self.log(worker), 60, "the job to start")

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
def long_call(make_speech, tmp_path) -> Path:
    """About 70 s of speech: several seconds of work for tiny.en on one core."""
    return make_speech(tmp_path / "in" / "long call.wav", " ".join(SENTENCES * 3))


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


def test_a_long_job_runs_once_while_its_worker_lives(start_stack, long_call):
    stack = start_stack(workers=2, visibility_timeout=3)
    submit(stack.settings, [str(long_call)], batch="long")
    stack.wait_finished("long", 180)
    result = assert_complete(stack, "long", "long call.wav")
    assert result["timings"]["transcribe"] > 3  # it did outlive the 3 s timeout
    assert stack.received() == 1  # never given to the second worker
    assert all("heartbeat is off" not in stack.log(w) for w in stack.workers())


def test_kill_9_mid_job_the_job_is_redone_by_another_worker(start_stack, long_call):
    stack = start_stack(workers=2, visibility_timeout=3)
    submit(stack.settings, [str(long_call)], batch="k9")
    victim = stack.holder()
    victim_pids = {victim.pid, *pool_children(victim.pid)}
    os.killpg(victim.pid, signal.SIGKILL)

    status = stack.wait_finished("k9", 180)
    assert (status.done, status.failed) == (1, 0)
    result = assert_complete(stack, "k9", "long call.wav")
    assert int(result["worker_id"].rsplit(":", 1)[1]) not in victim_pids
    assert stack.received() == 2
    assert storage.queue_counts(stack.settings).dead_lettered == 0


def test_sigterm_lets_a_job_that_fits_the_grace_finish(start_stack, make_speech, tmp_path):
    stack = start_stack(workers=1, visibility_timeout=60, shutdown_grace_seconds=8)
    # ~25 s of speech: a few seconds of work, well inside the 8 s grace
    call = make_speech(tmp_path / "short.wav", " ".join(SENTENCES))
    submit(stack.settings, [str(call)], batch="term")
    (worker,) = stack.workers()
    stack.running(worker)
    os.killpg(worker.pid, signal.SIGTERM)  # as systemd stops a service
    wait_for(lambda: not local_stack.is_alive(worker), 40, "the worker to stop")

    assert stack.status("term").done == 1
    assert "Initiating Soft Shutdown" in stack.log(worker)
    counts = storage.queue_counts(stack.settings)
    assert (counts.visible, counts.in_flight) == (0, 0)  # acknowledged, not handed back


def test_sigterm_hands_back_a_job_that_does_not_fit(start_stack, long_call):
    stack = start_stack(workers=1, visibility_timeout=120, shutdown_grace_seconds=1)
    submit(stack.settings, [str(long_call)], batch="handback")
    (worker,) = stack.workers()
    stack.running(worker)
    stopped_at = time.monotonic()
    os.killpg(worker.pid, signal.SIGTERM)
    wait_for(lambda: not local_stack.is_alive(worker), 30, "the worker to stop")
    assert stack.status("handback").pending == 1

    local_stack.start_worker(stack.settings)
    stack.wait_finished("handback", 100)
    # back at once: far sooner than the 120 s visibility timeout would have allowed
    assert time.monotonic() - stopped_at < 100
    assert_complete(stack, "handback", "long call.wav")
    assert stack.received() == 2


# Test-only, put on the workers' PYTHONPATH by the test below: a pool process that has told
# its worker it is ready waits before reading its first job while the hold file exists, so
# a job the worker receives meanwhile sits in that process's pipe, received but not started.
HOLD_POOL_START = """
import pathlib, sys, time

HOLD = pathlib.Path({hold!r})

if sys.orig_argv[1:4] == ["-m", "whisperq", "worker"]:
    from celery.concurrency import asynpool

    _ready = asynpool.Worker.on_loop_start

    def _on_loop_start(self, pid):
        _ready(self, pid)  # WORKER_UP: from now on the worker writes jobs to this process
        if HOLD.exists():
            print(f"test hold: pool process {{pid}} waits", file=sys.stderr, flush=True)
        deadline = time.monotonic() + 120
        while HOLD.exists() and time.monotonic() < deadline:
            time.sleep(0.05)

    asynpool.Worker.on_loop_start = _on_loop_start
"""


def test_sigterm_hands_back_a_job_received_but_not_started(
    start_stack, make_speech, tmp_path, monkeypatch
):
    """SIGTERM between a job's receipt and its start in the pool: the job is visible on the
    queue again at once (visibility 0), not after the timeout, and this worker never runs it
    (Celery's pool.stop would have run it to the end)."""
    hold = tmp_path / "hold-pool-start"
    hold.touch()
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(HOLD_POOL_START.format(hold=str(hold)))
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(filter(None, [str(hook), os.environ.get("PYTHONPATH")]))
    )
    stack = start_stack(workers=1, visibility_timeout=120, shutdown_grace_seconds=30)
    (worker,) = stack.workers()
    try:
        wait_for(lambda: "test hold: pool process" in stack.log(worker), 60, "the held pool")
        call = make_speech(tmp_path / "short.wav", CLEAR_SENTENCE)
        submit(stack.settings, [str(call)], batch="unstarted")
        wait_for(lambda: stack.received(worker) == 1, 60, "the worker to receive the job")
        time.sleep(1)  # the worker writes it into the held pool process's pipe
        sqs = storage.client(stack.settings, "sqs")
        url = stack.settings.queue_url

        def receive():
            reply = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=1, WaitTimeSeconds=1)
            return reply.get("Messages")

        assert receive() is None  # in flight: the worker holds it
        held_by = {worker.pid, *pool_children(worker.pid)}
        os.killpg(worker.pid, signal.SIGTERM)  # as systemd stops a service
        stopped_at = time.monotonic()
        (message,) = wait_for(receive, 5, "the job back on the queue")
        assert time.monotonic() - stopped_at < 5  # at once, not after the 120 s timeout
    finally:
        hold.unlink()  # the pool process may read its pipe now
    wait_for(lambda: not local_stack.is_alive(worker), 30, "the worker to stop")

    assert decode_job_message(message["Body"]).path == "short.wav"
    assert stack.result_keys("unstarted") == set()  # this worker did not run it
    log = stack.log(worker)
    assert "handed back unstarted" in log  # by the main process, at once
    assert "not started" in log  # the pool process, let go, declined it
    assert "Processing audio" not in log and "succeeded in" not in log

    # nothing lost: another worker takes it and finishes it
    sqs.change_message_visibility(
        QueueUrl=url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
    )
    local_stack.start_worker(stack.settings)
    stack.wait_finished("unstarted", 100)
    result = assert_complete(stack, "unstarted", "short.wav")
    assert int(result["worker_id"].rsplit(":", 1)[1]) not in held_by


def test_a_spot_notice_stops_the_worker_and_hands_the_job_back(start_stack, long_call, monkeypatch):
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
        submit(stack.settings, [str(long_call)], batch="spot")
        (worker,) = stack.workers()
        stack.running(worker)
        imds.notice = {"action": "terminate", "time": "2026-11-22T01:00:00Z"}
        wait_for(lambda: not local_stack.is_alive(worker), 30, "the worker to stop")
        assert "spot interruption" in stack.log(worker)
        assert imds.requests["/latest/meta-data/spot/instance-action"] >= 1

    monkeypatch.setenv("WHISPERQ_SPOT_WATCH", "off")
    local_stack.start_worker(stack.settings)
    stack.wait_finished("spot", 100)
    assert_complete(stack, "spot", "long call.wav")


def test_a_busy_worker_protects_its_instance_from_scale_in(start_stack, long_call):
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
    submit(stack.settings, [str(long_call)], batch="protect")
    wait_for(protected, 60, "protection while the job runs")
    stack.wait_finished("protect", 180)
    wait_for(lambda: not protected(), 30, "protection to drop when idle")


def test_chaos_workers_killed_and_restarted_nothing_lost(start_stack, make_speech, tmp_path):
    """40 short jobs, 3 workers; a busy worker is SIGKILLed and replaced 4 times."""
    stack = start_stack(workers=3, visibility_timeout=3)
    calls = tmp_path / "chaos"
    for number in range(40):
        make_speech(calls / f"call-{number:02d}.wav", f"Call {number}. {SENTENCES[number % 8]}")
    submit(stack.settings, [str(calls)], batch="chaos")

    rng = random.Random(7)
    for _ in range(4):
        time.sleep(3)
        if stack.status("chaos").finished:
            break
        busy = [w for w in stack.alive_workers() if pool_children(w.pid)]
        os.killpg(rng.choice(busy).pid, signal.SIGKILL)
        local_stack.start_worker(stack.settings)

    status = stack.wait_finished("chaos", 300)
    assert (status.submitted, status.done, status.failed) == (40, 40, 0)
    for number in range(40):
        result = assert_complete(stack, "chaos", f"chaos/call-{number:02d}.wav")
        # its own words, not another file's (tiny.en garbles some sentences a little)
        scores = [char_error_rate(f"Call {number}. {s}", result["text"]) for s in SENTENCES]
        assert scores.index(min(scores)) == number % 8, result["text"]
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


def test_a_job_that_keeps_killing_its_worker_goes_to_the_dlq_and_comes_back(start_stack, long_call):
    stack = start_stack(workers=1, visibility_timeout=5, max_receive_count=2)
    submit(stack.settings, [str(long_call)], batch="poison")
    (worker,) = stack.workers()
    for delivery in (1, 2):  # the pool process dies mid-job, as on OOM or a segfault
        wait_for(lambda n=delivery: stack.received() >= n, 60, f"delivery {delivery}")
        child = wait_for(lambda: pool_children(worker.pid), 30, "the pool process")
        time.sleep(0.5)
        os.kill(child[0], signal.SIGKILL)

    wait_for(lambda: storage.queue_counts(stack.settings).dead_lettered == 1, 60, "the dead letter")
    assert stack.status("poison").pending == 1

    (letter,) = json.loads(run_cli("dlq", "--json").stdout)["messages"]
    assert (letter["batch"], letter["path"]) == ("poison", "long call.wav")

    retried = run_cli("retry", "poison")
    assert "0 failed file(s) and 1 dead-lettered job(s)" in retried.stderr
    stack.wait_finished("poison", 180)
    assert_complete(stack, "poison", "long call.wav")
    assert storage.queue_counts(stack.settings).dead_lettered == 0
