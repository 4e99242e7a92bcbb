"""The embedded stack keeps what it holds: a worker or the ingest process that died is
started again on the same moto server, with its batches and logs; only an explicit
`local reset` or `local down` discards them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from whisperq import storage
from whisperq.cli import app
from whisperq.errors import LocalStackError
from whisperq.settings import Settings
from whisperq.stacks import local as local_stack

runner = CliRunner()


def _worker(state: dict) -> local_stack.Managed:
    (worker,) = [p for p in local_stack.managed_processes(state) if p.name == "worker-1"]
    return worker


def _kill(process: local_stack.Managed) -> None:
    os.kill(process.pid, signal.SIGKILL)
    os.waitpid(process.pid, 0)  # our child: reaped, so it reads as dead at once


def test_up_restarts_a_dead_worker_and_keeps_the_data_and_logs(isolated_settings):
    settings = Settings()
    try:
        first = local_stack.up(settings, workers=1)
        stack = Settings()
        storage.client(stack, "s3").put_object(Bucket=stack.bucket, Key="keep/me", Body=b"1")
        dead = _worker(first.state)
        _kill(dead)

        status = runner.invoke(app, ["status"], env={"COLUMNS": "200"})
        assert "worker-1 not running" in status.output
        assert "whisperq local up" in status.output

        again = local_stack.up(settings, workers=1)
        assert (again.started, again.restarted) == (False, ("worker-1",))
        assert again.state["settings"] == first.state["settings"]  # same port, same queues
        assert storage.client(stack, "s3").get_object(Bucket=stack.bucket, Key="keep/me")
        worker = _worker(again.state)
        assert worker.pid != dead.pid and local_stack.is_alive(worker)
        assert worker.instance == dead.instance  # the dead worker's instance, not a new one
        log = Path(worker.log).read_text()
        assert log.count(local_stack.READY_MARK) >= 2  # the old lines are still there
        assert worker.log_offset > 0

        # nothing died: a plain "already running"
        assert local_stack.up(settings).restarted == ()
    finally:
        local_stack.down(settings)


def test_a_dead_moto_server_is_an_error_naming_reset_and_nothing_is_wiped(isolated_settings):
    settings = Settings()
    try:
        first = local_stack.up(settings, workers=1)
        (moto,) = [p for p in local_stack.managed_processes(first.state) if p.name == "moto"]
        _kill(moto)
        with pytest.raises(LocalStackError, match="local reset"):
            local_stack.up(settings)
        assert local_stack.read_state(settings) == local_stack.read_state(settings) is not None
        logs = local_stack.log_files(settings)
        assert {p.name for p in logs} >= {"moto.log", "worker-1.log"}

        reset = runner.invoke(
            app,
            [
                *("local", "reset", "--workers", "1", "--model", "base"),
                *("--visibility-timeout", "77", "--max-receive-count", "3"),
            ],
        )
        assert reset.exit_code == 0, reset.output
        fresh = local_stack.read_state(settings)
        assert fresh is not None and fresh["model"] == "base"
        assert fresh["settings"]["endpoint_url"] != first.state["settings"]["endpoint_url"]
        previous = settings.state_dir / "logs" / "previous"
        assert (previous / "worker-1.log").read_text().count(local_stack.READY_MARK) == 1
        # the options reached the stack: the queue's attributes, the worker's model
        stack = Settings()
        attributes = storage.client(stack, "sqs").get_queue_attributes(
            QueueUrl=stack.queue_url, AttributeNames=["VisibilityTimeout", "RedrivePolicy"]
        )["Attributes"]
        assert attributes["VisibilityTimeout"] == "77"
        assert json.loads(attributes["RedrivePolicy"])["maxReceiveCount"] in (3, "3")
        log = Path(_worker(fresh).log).read_text()
        assert "model base loaded" in log

        logs = runner.invoke(app, ["local", "logs", "--lines", "5"], env={"COLUMNS": "300"})
        assert logs.exit_code == 0
        for name in ("moto.log", "worker-1.log", "ingest.log"):
            assert name in logs.output
    finally:
        local_stack.down(settings)


def test_local_up_says_which_new_options_a_running_stack_did_not_take(isolated_settings):
    settings = Settings()
    try:
        local_stack.up(settings, workers=1)
        result = runner.invoke(app, ["local", "up", "--workers", "2", "--model", "base"])
        assert result.exit_code == 0, result.output
        assert "Not applied to the running stack" in result.output
        assert "--workers 2 (running: 1)" in result.output
        assert "--model base (running: tiny.en)" in result.output
        assert "whisperq local reset" in result.output
    finally:
        local_stack.down(settings)


def test_down_never_signals_a_process_that_took_a_recorded_pid(isolated_settings):
    """A PID in the state file that now belongs to another process (after a reboot) is
    not the stack's: `down` leaves it alone."""
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        real = local_stack._process_start_time(stranger.pid)
        assert real is not None
        recorded = local_stack.Managed("worker-1", stranger.pid, real + 1, "worker-1.log")
        assert not local_stack.is_alive(recorded)
        local_stack.stop_process(recorded, grace=1)
        assert stranger.poll() is None  # still running: never signalled
        same = local_stack.Managed("worker-1", stranger.pid, real, "worker-1.log")
        assert local_stack.is_alive(same)  # the guard is the start time, not the PID
    finally:
        stranger.kill()
        stranger.wait(timeout=10)
