"""Stopping without running a job twice: a job received but not started when the worker
stops goes back to the queue at once, and never starts here.

Celery alone would run every job already received -- in its hands, or in a pool
process's pipe -- to its end before stopping. Instead, the pool processes and the main
process share a ``StartGate``: a pool process records each delivery it starts, or declines
it once the worker is stopping; the main process, as it stops, hands back with
visibility 0 every job the gate has not seen start (``UnstartedJobs``) and keeps Celery
from touching those messages again. A job already running is the soft shutdown's (grace,
then cancel, then back to the queue).
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import logging
import multiprocessing
from typing import Any

from whisperq import storage
from whisperq.settings import Settings
from whisperq.worker.heartbeat import MessageHandle, hand_back, message_handle

log = logging.getLogger("whisperq.worker")


def start_key(task_id: str | None, message: MessageHandle | None) -> bytes:
    """One delivery of one job (a redelivered job is a new start): 16 bytes."""
    receipt = message.receipt_handle if message else ""
    return hashlib.blake2b(f"{task_id}\0{receipt}".encode(), digest_size=16).digest()


class StartGate:
    """Shared by the worker's main process and its pool processes: which deliveries the
    pool has started, and whether the worker is stopping.

    When the worker stops, a job a pool process has started is left to the soft shutdown
    (grace, then cancel); one it has not started goes back to the queue at once. Which is
    which must be decided once, with no gap between "started?" and "hand back" (the main
    process learns that a job started only when it reads the pool's note, later): a pool
    process records each delivery it starts, under a lock, unless the worker is stopping
    (then it declines the job); the main process sets "stopping" under the same lock and
    reads the record. So every job is either recorded as started or never starts here.

    Shared memory made before the pool forks (Celery's prefork pool forks on Linux). The
    record is a ring of the latest starts, far more than a worker holds unacknowledged
    (prefetch 1 per pool process). A lock left held by a process killed inside it (taken
    for microseconds) is waited for ``LOCK_TIMEOUT`` seconds; then the main process hands
    back nothing and the pool process runs the job unless the worker is stopping: no job
    runs twice, some wait for Celery's requeue as before.
    """

    SLOTS = 256
    KEY_BYTES = 16
    LOCK_TIMEOUT = 2.0

    def __init__(self) -> None:
        self._lock = multiprocessing.Lock()
        self._stopping = multiprocessing.RawValue(ctypes.c_bool, False)
        self._next = multiprocessing.RawValue(ctypes.c_uint64, 0)
        self._started = multiprocessing.RawArray(ctypes.c_char, self.SLOTS * self.KEY_BYTES)

    @property
    def stopping(self) -> bool:
        return bool(self._stopping.value)

    def start(self, key: bytes) -> bool:
        """In a pool process, as a job starts: True to run it, False when the worker is
        stopping (the job must not run here)."""
        if not self._lock.acquire(timeout=self.LOCK_TIMEOUT):
            log.warning("start gate lock not free; starting unless the worker is stopping")
            return not self._stopping.value
        try:
            if self._stopping.value:
                return False
            slot = (self._next.value % self.SLOTS) * self.KEY_BYTES
            memoryview(self._started).cast("B")[slot : slot + self.KEY_BYTES] = key
            self._next.value += 1
            return True
        finally:
            self._lock.release()

    def stop(self) -> set[bytes] | None:
        """In the main process: no job starts from now on. The keys of the deliveries
        already started, or None when that cannot be known (lock not free)."""
        if not self._lock.acquire(timeout=self.LOCK_TIMEOUT):
            self._stopping.value = True
            return None
        try:
            self._stopping.value = True
            recorded = min(self._next.value, self.SLOTS)
            raw = bytes(memoryview(self._started).cast("B")[: recorded * self.KEY_BYTES])
        finally:
            self._lock.release()
        return {raw[i : i + self.KEY_BYTES] for i in range(0, len(raw), self.KEY_BYTES)}


class UnstartedJobs:
    """In the worker's main process, as it stops: every job received but not started goes
    back to the queue at once (visibility 0), and Celery is kept from ever acknowledging,
    rejecting or restoring it afterwards (its receipt handle may by then be stale: another
    worker may hold the message)."""

    def __init__(self, settings: Settings, gate: StartGate) -> None:
        self.settings = settings
        self.gate = gate
        self._sqs: Any = None

    def prepare(self, **_: Any) -> None:
        """At worker_ready: the SQS client, so shutdown does not have to build one."""
        self.sqs()

    def sqs(self) -> Any:
        if self._sqs is None:
            self._sqs = storage.client(self.settings, "sqs")
        return self._sqs

    def hand_back(self, **_: Any) -> int:
        """Hand back what has not started; returns how many. Safe to call again."""
        from celery.worker import state

        started = self.gate.stop()
        if started is None:
            log.warning("cannot tell which jobs have started: Celery requeues the rest")
            return 0
        handed = 0
        for request in list(state.reserved_requests):
            if request.acknowledged or request.time_start:
                continue  # done, or running: the soft shutdown's to finish or cancel
            message = message_handle(request.message.properties)
            if message is None or start_key(request.id, message) in started:
                continue  # not SQS; or started in a pool process that has not said so yet
            if not hand_back(self.sqs(), message):
                continue  # Celery requeues it (visible after the SQS wait time)
            # Celery must not touch the message again: no ack or reject when the pool
            # process declines the job, no restore when the connection closes.
            request.acknowledged = True
            with contextlib.suppress(AttributeError, KeyError):
                request.message.channel.qos.ack(request.message.delivery_tag)
            state.task_ready(request)
            handed += 1
            log.warning(
                "the worker is stopping: %s[%s] handed back unstarted", request.name, request.id
            )
        return handed
