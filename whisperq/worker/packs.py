"""More short jobs for a worker that has one: taken straight from the SQS queue, so that
their files can share Whisper's 30-second windows (whisperq.speech.packing).

Celery hands a pool process one job at a time (prefetch 1). When that job's file turns
out short, the worker receives up to ``pack_max_files - 1`` more messages from the same
queue itself, keeps those it can pack with it -- same batch, same options, file small
enough to be short (``pack_max_bytes``: the job's size is known before downloading) --
and hands the others on. It keeps each kept message invisible while it works (a heartbeat each) and
deletes it once that job's result or error record is written. Messages are the same
Celery messages as any other: a worker that dies mid-pack loses nothing, its messages
come back after the visibility timeout.

Handing on is a new copy of the message sent to the queue, then the received one
deleted: a job that is not short enough waits for an ordinary delivery, and its receive
count starts again (handing back with visibility 0 would count a receive each time, and a
long job picked up by packing workers a few times would end in the dead-letter queue
without ever running). A copy that cannot be sent is handed back instead.

A pool process killed mid-pack (kill -9, out of memory) cannot give its gathered jobs
back, and Celery knows only the lead job's message (which it requeues). So the pool
process notes the receipt handles it holds in a ``PackLedger`` file, keyed by the lead's
message, before it decodes anything, and drops each from the file before it settles it;
the worker's main process, told the pool process is gone (or once the worker has
stopped), hands back whatever a file still holds: those come back within seconds, not
after the visibility timeout.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from whisperq.celery_app import decode_job_message
from whisperq.schemas import TranscriptionJob
from whisperq.worker.heartbeat import MessageHandle, VisibilityHeartbeat, hand_back

log = logging.getLogger("whisperq.short_jobs")

SQS_MAX_RECEIVE = 10


@dataclass(frozen=True)
class GatheredJob:
    job: TranscriptionJob
    message: MessageHandle
    received: dict[str, Any] = field(default_factory=dict, compare=False)  # SQS's message

    @property
    def first_delivery(self) -> bool:
        return (self.message.receive_count or 1) <= 1


class PackLedger:
    """The gathered jobs each pack holds, in files a worker's main process can read: one
    per pack, named after its lead job's message, in a folder the main process makes
    before its pool processes fork (``open``). Without a folder (a ``JobRunner`` outside
    a worker) it notes nothing.

    A pool process writes the handles it holds (``note``) and rewrites the file without
    one before it deletes or gives that one back, so a handle in a file is one nobody has
    settled: handing it back cannot touch a delivery another worker holds. Writes are
    atomic (a new file renamed over the old). A note that cannot be written is logged:
    those jobs then come back after the visibility timeout, as before."""

    def __init__(self) -> None:
        self.folder: Path | None = None

    def open(self) -> None:
        """In the worker's main process, before the pool forks: a folder of its own (its
        pid), beside those of the user's other workers; a dead worker's is removed (its
        handles are stale: another worker may hold those messages by now)."""
        base = Path(tempfile.gettempdir()) / f"whisperq-packs-{os.getuid()}"
        try:
            base.mkdir(mode=0o700, exist_ok=True)
            for other in base.iterdir():
                if not (other.name.isdigit() and _alive(int(other.name))):
                    shutil.rmtree(other, ignore_errors=True)
            folder = base / str(os.getpid())
            folder.mkdir(mode=0o700)
        except OSError as error:
            log.warning(
                "no folder for packs' notes (%s): a killed pack waits out its timeout", error
            )
            return
        self.folder = folder

    def close(self) -> None:
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None

    def _file(self, lead: MessageHandle) -> Path | None:
        if self.folder is None:
            return None
        name = hashlib.blake2b(lead.receipt_handle.encode(), digest_size=16).hexdigest()
        return self.folder / f"{name}.json"

    def note(self, lead: MessageHandle, held: Iterable[MessageHandle]) -> None:
        """In the pool process: the gathered jobs ``lead``'s pack holds now (none: the
        file goes)."""
        file = self._file(lead)
        if file is None:
            return
        handles = [[handle.queue_url, handle.receipt_handle] for handle in held]
        try:
            if not handles:
                file.unlink(missing_ok=True)
                return
            draft = file.with_name(f"{file.name}.{os.getpid()}.draft")
            draft.write_text(json.dumps(handles), encoding="utf-8")
            os.replace(draft, file)
        except OSError as error:
            log.warning("could not note a pack's jobs for the worker (%s)", error)

    def hand_back(self, sqs: Callable[[], Any], lead: MessageHandle | None) -> int:
        """In the main process, once the pool process that ran ``lead``'s pack is gone:
        the jobs it still held go back to the queue now. Returns how many."""
        file = self._file(lead) if lead is not None else None
        return self._hand_back_file(sqs, file) if file is not None else 0

    def hand_back_all(self, sqs: Callable[[], Any]) -> int:
        """In the main process, once the pool has stopped: every pack left unfinished."""
        if self.folder is None:
            return 0
        return sum(self._hand_back_file(sqs, file) for file in self.folder.glob("*.json"))

    def _hand_back_file(self, sqs: Callable[[], Any], file: Path) -> int:
        try:
            handles = json.loads(file.read_text(encoding="utf-8"))
            file.unlink()
        except (OSError, ValueError):
            return 0  # no pack left unfinished (or nothing readable in it)
        return sum(hand_back(sqs(), MessageHandle(url, receipt)) for url, receipt in handles)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's
    return pid != os.getpid()  # this pid's folder is made anew


class Holding:
    """Gathered jobs' messages while a worker has them: each kept invisible (a
    heartbeat each) until it is deleted (its job over) or given back; noted in the
    ``ledger`` under the ``lead`` job's message meanwhile."""

    def __init__(
        self,
        sqs: Any,
        jobs: list[GatheredJob],
        visibility_timeout: int,
        ledger: PackLedger | None = None,
        lead: MessageHandle | None = None,
    ) -> None:
        self.sqs = sqs
        self._beats = {
            job.message: VisibilityHeartbeat(sqs, job.message, visibility_timeout) for job in jobs
        }
        self._ledger = ledger if lead is not None else None
        self._lead = lead

    def _note(self) -> None:
        if self._ledger is not None and self._lead is not None:
            self._ledger.note(self._lead, self._beats)

    def __enter__(self) -> Holding:
        self._note()  # before anything is decoded: a pool process may die in there
        for beat in self._beats.values():
            beat.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        """Whatever is still held goes back to the queue (the lead job failed, the
        worker is unfit or stopping): nothing is lost, nothing waits for a timeout."""
        for handle in list(self._beats):
            self.give_back(handle)
        self._note()  # nothing left: the note goes

    def _let_go(self, handle: MessageHandle) -> bool:
        beat = self._beats.pop(handle, None)
        if beat is not None:
            beat.stop()
            self._note()  # off the note before it is settled: never handed back twice
        return beat is not None

    def done(self, handle: MessageHandle) -> None:
        """The job's results or error record are written: its message goes."""
        if self._let_go(handle):
            delete(self.sqs, handle)

    def give_back(self, handle: MessageHandle) -> None:
        """The job did not run here: visible again at once."""
        if self._let_go(handle):
            hand_back(self.sqs, handle)

    def hand_on(self, job: GatheredJob) -> None:
        """A first delivery that turned out not to fit: a fresh copy queued instead."""
        if self._let_go(job.message):
            hand_on(self.sqs, job.received, job.message)


def can_share_window(lead: TranscriptionJob, other: TranscriptionJob, max_bytes: int) -> bool:
    """Whether ``other`` may be packed with ``lead``: the same batch (a word put in the
    wrong file must not cross from one customer's batch into another's), the very same
    options (they decide how the window is decoded and what each result holds) and a
    file of at most ``max_bytes`` (likely short)."""
    return other.batch == lead.batch and other.size <= max_bytes and other.options == lead.options


def gather(
    sqs: Any,
    queue_url: str,
    lead: TranscriptionJob,
    count: int,
    visibility_timeout: int,
    max_bytes: int,
) -> list[GatheredJob]:
    """Up to ``count`` more jobs that can share windows with ``lead``, received now (no
    waiting: only what the queue holds already), in at most ``ceil(count / 10)`` receives
    (copies handed on are visible again at once: receiving until the queue runs dry could
    go on for as long as other workers leave them there).

    A job received before (``ApproximateReceiveCount`` over 1) is kept whatever it is:
    this is one of its deliveries, and handing it on would wipe the count that sends a
    job that keeps failing to the dead-letter queue. A first-time job that cannot share
    is handed on (``hand_on``); a message that is not a whisperq job is handed back."""
    gathered: list[GatheredJob] = []
    for _ in range(math.ceil(count / SQS_MAX_RECEIVE)):
        wanted = min(SQS_MAX_RECEIVE, count - len(gathered))
        if wanted <= 0:
            break
        try:
            received = sqs.receive_message(
                QueueUrl=queue_url,
                MaxNumberOfMessages=wanted,
                VisibilityTimeout=visibility_timeout,
                WaitTimeSeconds=0,
                AttributeNames=["ApproximateReceiveCount"],
                MessageAttributeNames=["All"],
            ).get("Messages", [])
        except Exception as error:  # packing is an optimisation: the lead job goes on
            log.warning("could not receive more short jobs: %s", error)
            break
        for message in received:
            seen = message.get("Attributes", {}).get("ApproximateReceiveCount")
            handle = MessageHandle(queue_url, message["ReceiptHandle"], int(seen) if seen else None)
            try:
                job = decode_job_message(message["Body"])
            except Exception:
                hand_back(sqs, handle)  # not ours to judge: an ordinary delivery refuses it
                continue
            if (handle.receive_count or 1) > 1 or can_share_window(lead, job, max_bytes):
                gathered.append(GatheredJob(job, handle, message))
            else:
                hand_on(sqs, message, handle)
        if len(received) < wanted:
            break  # the queue has no more right now
    return gathered


def hand_on(sqs: Any, message: dict[str, Any], handle: MessageHandle) -> None:
    """The message back on the queue as a new one (receive count from zero), the received
    copy deleted; if the copy cannot be sent, the message is handed back instead."""
    copy: dict[str, Any] = {"QueueUrl": handle.queue_url, "MessageBody": message["Body"]}
    if message.get("MessageAttributes"):
        copy["MessageAttributes"] = message["MessageAttributes"]
    try:
        sqs.send_message(**copy)
    except Exception as error:
        log.warning("could not hand a job on (%s); handing it back", error)
        hand_back(sqs, handle)
        return
    if not delete(sqs, handle) and not delete(sqs, handle):
        # Both copies are now queued: the job runs twice (the same result, rewritten).
        log.error("a job handed on is queued twice: its received copy could not be deleted")


def delete(sqs: Any, handle: MessageHandle) -> bool:
    """Acknowledge a gathered job (its result or error record is written). A failed
    delete only means the job is delivered again and rewrites the same result."""
    try:
        sqs.delete_message(QueueUrl=handle.queue_url, ReceiptHandle=handle.receipt_handle)
    except Exception as error:
        log.warning("could not delete a job's message: %s", error)
        return False
    return True
