"""The worker process's exit status, as systemd sees it: 75
(``defaults.WORKER_EXIT_INSTANCE_LEAVING``) when it stopped because its instance is going
away (a spot notice here), so that the unit's ``RestartPreventExitStatus=75`` keeps
``Restart=always`` from starting it again there; 0 after SIGTERM alone.

Real ``whisperq worker`` processes (Celery, the tiny.en model) against moto server and a
fake IMDS; every wait is for an event (a log line, the process's exit), bounded."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from celery.worker.worker import WorkController

from whisperq import defaults
from whisperq.settings import Settings
from whisperq.worker import instance_guard
from whisperq.worker.app import create_worker_app
from whisperq.worker.instance_guard import InstanceGuard

from helpers import FakeImds, wait_for

# Logged by the worker's main process once its pool has started (the spot watch starts
# just before): a notice from then on is the ordinary case.
READY = re.compile(r"MainProcess\] whisperq@\S+ ready\.")


def start_worker(aws: Settings, imds: FakeImds, log: Path) -> subprocess.Popen:
    """``whisperq worker`` as the image's unit starts it (REMAP_SIGTERM=SIGQUIT), watching
    the fake IMDS for spot notices; in a session of its own, so that it can be stopped."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WHISPERQ_")}
    env |= {
        "WHISPERQ_ENDPOINT_URL": aws.endpoint_url or "",
        "WHISPERQ_REGION": aws.region,
        "WHISPERQ_BUCKET": aws.bucket,
        "WHISPERQ_QUEUE_URL": aws.queue_url,
        "WHISPERQ_DLQ_URL": aws.dlq_url,
        "WHISPERQ_AWS_ACCESS_KEY_ID": "testing",
        "WHISPERQ_AWS_SECRET_ACCESS_KEY": "testing",
        "WHISPERQ_STATE_DIR": str(log.parent / "state"),
        "WHISPERQ_CONFIG_FILE": str(log.parent / "none.toml"),
        "WHISPERQ_SQS_WAIT_SECONDS": "1",
        "WHISPERQ_SPOT_WATCH": "on",
        "WHISPERQ_IMDS_ENDPOINT": imds.endpoint,
        "WHISPERQ_SPOT_POLL_SECONDS": "0.2",
        "WHISPERQ_SPOT_GRACE_SECONDS": "1",
        "WHISPERQ_SHUTDOWN_GRACE_SECONDS": "1",
        "WHISPERQ_INSTANCE_ID": imds.instance_id,
        "REMAP_SIGTERM": "SIGQUIT",
    }
    with log.open("wb") as handle:
        return subprocess.Popen(
            [sys.executable, "-m", "whisperq", "worker", "--concurrency", "1"],
            stdout=handle,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=log.parent,
            start_new_session=True,
        )


def exit_status(process: subprocess.Popen, log: Path, stop) -> int:
    """Wait for the worker to be ready, ``stop()`` it, and return its exit status."""
    try:
        wait_for(
            lambda: READY.search(log.read_text(errors="replace")) or process.poll() is not None,
            180,
            "the worker to be ready",
        )
        assert process.poll() is None, log.read_text(errors="replace")
        stop()
        return process.wait(timeout=120)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.mark.e2e
def test_a_worker_stopped_by_a_spot_notice_exits_75_and_one_stopped_otherwise_does_not(
    aws, tmp_path
):
    with FakeImds() as imds:
        leaving = tmp_path / "leaving"
        leaving.mkdir()
        process = start_worker(aws, imds, leaving / "worker.log")

        def spot_notice() -> None:
            imds.notice = {"action": "terminate", "time": "2026-11-22T01:00:00Z"}

        status = exit_status(process, leaving / "worker.log", spot_notice)
        text = (leaving / "worker.log").read_text(errors="replace")
        assert "spot interruption notice:" in text, text
        assert status == defaults.WORKER_EXIT_INSTANCE_LEAVING == 75, text

        # The control: SIGTERM alone (systemctl stop, a redeploy) is no instance leaving.
        staying = tmp_path / "staying"
        staying.mkdir()
        imds.notice = None
        process = start_worker(aws, imds, staying / "worker.log")
        status = exit_status(process, staying / "worker.log", lambda: process.terminate())
        text = (staying / "worker.log").read_text(errors="replace")
        assert "spot interruption notice:" not in text
        # 0: restarted under Restart=always, and a `systemctl stop` leaves the unit
        # inactive, not failed (OnFailure= would mark a healthy instance unhealthy)
        assert status == 0, text


# --- the narrower boundaries: which stops count as the instance leaving -------------------


def test_the_worker_exits_75_only_when_its_guard_says_the_instance_is_leaving(aws, monkeypatch):
    """create_worker_app's Worker: the exit status run_worker returns (Celery's own
    worker_main drops it) is 75 after the guard saw the instance leave, whatever else
    stopped the worker, and Celery's own status otherwise."""
    monkeypatch.setattr(WorkController, "start", lambda self: None)
    worker_class = create_worker_app(aws).Worker
    for leaving, stopping, expected in [
        (True, True, defaults.WORKER_EXIT_INSTANCE_LEAVING),
        (False, True, 0),  # SIGTERM alone (worker_shutting_down): stopping, not leaving
        (False, False, 0),
    ]:

        def finish(self, leaving=leaving, stopping=stopping):
            self.leaving, self.stopping = leaving, stopping
            return False

        monkeypatch.setattr(InstanceGuard, "finish", finish)
        worker = worker_class.__new__(worker_class)
        worker.start()
        assert (worker.exitcode or 0, worker_class.exit_status) == (expected, expected)


def guard(aws, *, terminated: bool, imds_state: str, monkeypatch) -> InstanceGuard:
    """An InstanceGuard with a lifecycle hook whose watcher has (or has not) seen the group
    terminate the instance; IMDS, asked once more, says ``imds_state``."""
    completed = []
    monkeypatch.setattr(
        instance_guard, "complete_lifecycle_action", lambda *args: completed.append(args)
    )
    settings = aws.model_copy(
        update={"autoscaling_group": "g", "lifecycle_hook": "h", "instance_id": "i-1"}
    )
    made = InstanceGuard(SimpleNamespace(conf=SimpleNamespace()), settings)
    made.instance_id = "i-1"
    made.lifecycle = SimpleNamespace(stop=lambda: None, terminated=terminated)
    made.imds = SimpleNamespace(target_lifecycle_state=lambda: imds_state)
    return made


def test_the_group_terminating_the_instance_is_the_instance_leaving(aws, monkeypatch):
    """finish() after any stop: the instance is leaving when the group terminates it (seen
    by the watcher, or by IMDS asked once more), not when the group keeps it."""
    seen = guard(aws, terminated=True, imds_state="InService", monkeypatch=monkeypatch)
    assert seen.finish() is True and seen.leaving
    late = guard(aws, terminated=False, imds_state="Terminated", monkeypatch=monkeypatch)
    assert late.finish() is True and late.leaving
    kept = guard(aws, terminated=False, imds_state="InService", monkeypatch=monkeypatch)
    kept.stop()  # SIGTERM
    assert kept.finish() is False and kept.stopping and not kept.leaving


def test_a_spot_notice_after_sigterm_still_means_the_instance_is_leaving(aws, monkeypatch):
    signals = []
    monkeypatch.setattr(os, "kill", lambda pid, sig: signals.append(sig))
    made = InstanceGuard(SimpleNamespace(conf=SimpleNamespace()), aws)
    made.stop()  # SIGTERM first: the worker is stopping already
    made.on_spot_notice({"action": "terminate"})
    assert made.leaving and signals == []  # no second shutdown, but it will exit 75
