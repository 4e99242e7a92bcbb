"""Test-only hooks for the worker processes the reliability tests start: tests/helpers.py
puts this folder on their PYTHONPATH (``add_worker_hooks``, ``JobHolds``). Python imports
it at start-up; it changes nothing unless the process is ``python -m whisperq worker`` and
one of these is set:

WHISPERQ_TEST_HOLD_DIR, a folder: every job, as its transcription stage begins (inside its
visibility heartbeat, after its download), adds a line "<pool pid> <worker pid>" to
``started-<quoted job path>`` there and waits until ``release-<quoted job path>`` or
``release all`` exists (at most HOLD_LIMIT_S). Each heartbeat that extends a message adds a
line to ``beats-<pool pid>``. The pool processes are forked from the worker's main process
after this ran, so the patched classes are theirs too.

WHISPERQ_TEST_HOLD_POOL_START, a file: while it exists, a pool process that has told its
worker it is ready waits before reading its first job, so a job the worker receives
meanwhile sits in that process's pipe, received but not started. It says so on stderr
(the worker's log): "test hold: pool process <pid> waits", then "test hold: a job waits in
pool process <pid>'s pipe" once the worker has written one there.
"""

import os
import sys
import time
from pathlib import Path
from urllib.parse import quote

HOLD_LIMIT_S = 300.0  # a test that failed halfway does not leave a worker stuck for ever


def _append(path: Path, line: str) -> None:
    with path.open("a", encoding="utf-8") as handle:  # one short write: whole lines
        handle.write(line + "\n")


def _hold_jobs(folder: Path) -> None:
    from whisperq.worker.heartbeat import VisibilityHeartbeat
    from whisperq.worker.stages import Stages

    run_stage, extend = Stages.run, VisibilityHeartbeat.extend
    held = {}  # id -> job: a delivery is held once (a pack's lead job passes twice)

    def hold(path: str) -> None:
        name = quote(path, safe="")
        _append(folder / f"started-{name}", f"{os.getpid()} {os.getppid()}")
        releases = (folder / f"release-{name}", folder / "release all")
        deadline = time.monotonic() + HOLD_LIMIT_S
        while not any(release.exists() for release in releases):
            if time.monotonic() > deadline:
                print(f"test hold: {path} never released", file=sys.stderr, flush=True)
                return
            time.sleep(0.05)

    def run(self, job, stage, action):
        if stage == "transcription" and id(job) not in held:
            held[id(job)] = job  # kept: its id is not reused by a later job
            hold(job.path)
        return run_stage(self, job, stage, action)

    def beat(self, seconds):
        extended = extend(self, seconds)
        if extended:
            _append(folder / f"beats-{os.getpid()}", str(seconds))
        return extended

    Stages.run = run
    VisibilityHeartbeat.extend = beat


def _hold_pool_start(hold: Path) -> None:
    from celery.concurrency import asynpool

    ready = asynpool.Worker.on_loop_start

    def on_loop_start(self, pid):
        ready(self, pid)  # WORKER_UP: from now on the worker writes jobs to this process
        if not hold.exists():
            return
        print(f"test hold: pool process {pid} waits", file=sys.stderr, flush=True)
        told = False
        deadline = time.monotonic() + HOLD_LIMIT_S
        while hold.exists() and time.monotonic() < deadline:
            if not told and self.inq._reader.poll(0):  # looks; reads nothing
                print(f"test hold: a job waits in pool process {pid}'s pipe", file=sys.stderr)
                sys.stderr.flush()
                told = True
            time.sleep(0.05)

    asynpool.Worker.on_loop_start = on_loop_start


if sys.orig_argv[1:4] == ["-m", "whisperq", "worker"]:
    if os.environ.get("WHISPERQ_TEST_HOLD_DIR"):
        _hold_jobs(Path(os.environ["WHISPERQ_TEST_HOLD_DIR"]))
    if os.environ.get("WHISPERQ_TEST_HOLD_POOL_START"):
        _hold_pool_start(Path(os.environ["WHISPERQ_TEST_HOLD_POOL_START"]))
