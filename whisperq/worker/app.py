"""The Celery worker: one task, ``whisperq.transcribe``, from S3 input to S3 results, and
the signals that wire the worker's parts to Celery.

The model is loaded when each pool process starts (``worker_process_init``), so the first
job does not pay for it and no job ever loads it again.

Stopping (SIGTERM, a spot notice, the group terminating the instance through its lifecycle
hook): a job still running gets the soft-shutdown grace, then is cancelled and goes back to
the queue (Celery). A job received but not started -- in Celery's hands or in a pool
process's pipe -- goes back at once (visibility 0) and never starts here
(``shutdown``: ``UnstartedJobs``, ``StartGate``): Celery alone would run it to its end.
Once the worker has stopped, a lifecycle hook is completed (``guard``:
``InstanceGuard.finish``).

A pool process that dies mid-pack (kill -9, out of memory) takes along short jobs Celery
does not know of: the main process hands them back when Celery reports the job lost, and
once the worker has stopped (``packs``: ``PackLedger``).

Workers run ``whisperq.transcribe`` and nothing else: Celery's own tasks
(``celery.backend_cleanup``, ``celery.chord_unlock``, ...) are unregistered, and a message
naming any other task is refused -- logged with its task name and message ids, and
deleted, as an invalid payload is (``OnlyTranscribe``).
"""

from __future__ import annotations

import logging
import os
import socket
from typing import Any

from celery import Celery
from celery.exceptions import Reject
from celery.signals import task_received, worker_process_init, worker_ready, worker_shutting_down
from celery.worker.consumer import Consumer
from celery.worker.request import Request

from whisperq import defaults
from whisperq.celery_app import TRANSCRIBE_TASK, make_celery
from whisperq.settings import Settings
from whisperq.speech import engine
from whisperq.worker.heartbeat import message_handle
from whisperq.worker.instance_guard import InstanceGuard
from whisperq.worker.packs import PackLedger
from whisperq.worker.runner import JobRunner
from whisperq.worker.shutdown import StartGate, UnstartedJobs, start_key

log = logging.getLogger("whisperq.worker")


class OnlyTranscribe(Consumer):
    """Celery's consumer, refusing every task but ``whisperq.transcribe`` on purpose."""

    def on_unknown_task(self, body: Any, message: Any, exc: Exception) -> None:
        """A message naming a task this worker does not run (the worker app has only
        ``whisperq.transcribe``): never run, logged, deleted -- as an invalid payload is.
        Celery's own handling would reject it, which kombu leaves on a queue with a
        dead-letter queue to come round again until it is dead-lettered."""
        headers = message.headers if isinstance(message.headers, dict) else {}
        sqs_message = (message.delivery_info or {}).get("sqs_message") or {}
        log.error(
            "refused a message for task %.200r (task id %.100r, SQS message %s): workers "
            "run %s only; the message is deleted, nothing was run",
            headers.get("task"),
            headers.get("id"),
            sqs_message.get("MessageId", "unknown"),
            TRANSCRIBE_TASK,
        )
        message.ack_log_error(log, self.connection_errors)


def only_transcribe(app: Celery) -> None:
    """Unregister every task but ``whisperq.transcribe`` (Celery registers its own on
    finalizing: ``celery.backend_cleanup``, ``celery.chord_unlock``, ``celery.chain``,
    ...): a message naming one is an unknown task to the worker (``OnlyTranscribe``)."""
    for name in list(app.tasks):  # finalizes the app
        if name != TRANSCRIBE_TASK:
            app.tasks.unregister(name)


def create_worker_app(settings: Settings) -> Celery:
    """The Celery app with the transcription task and the instance guards registered."""
    app = make_celery(settings)
    app.conf.worker_soft_shutdown_timeout = settings.shutdown_grace_seconds
    app.conf.worker_consumer = f"{__name__}:{OnlyTranscribe.__name__}"
    gate = StartGate()  # before the pool forks: its processes share it
    ledger = PackLedger()  # opened by the worker's main process before the pool forks
    runner = JobRunner(settings, may_gather=lambda: not gate.stopping, ledger=ledger)
    unstarted = UnstartedJobs(settings, gate)

    class TranscribeRequest(Request):
        def on_failure(self, exc_info: Any, send_failed_event: bool = True, **kw: Any) -> Any:
            # In the main process. A pack this job's pool process left unfinished (the
            # process died: Celery requeues the lead job only) goes back now; a job that
            # raised has given its pack back already, and left nothing noted.
            handed = ledger.hand_back(unstarted.sqs, message_handle(self.message.properties))
            if handed:
                log.warning(
                    "%s[%s]: its pool process is gone; %d job(s) it had taken along handed back",
                    TRANSCRIBE_TASK,
                    self.id,
                    handed,
                )
            return super().on_failure(exc_info, send_failed_event, **kw)

    # shared=False: this closure belongs to this app only (a shared task would be added to
    # every Celery app created after it in the process, with this app's runner and gate).
    @app.task(
        name=TRANSCRIBE_TASK,
        bind=True,
        ignore_result=True,
        Request=TranscribeRequest,
        shared=False,
    )
    def transcribe(self: Any, payload: Any) -> str:
        message = message_handle(self.request.properties)
        if not gate.start(start_key(self.request.id, message)):
            # The worker is stopping and its main process hands this job back (or, if it
            # came too late for that, Celery requeues it): it must not run here as well.
            log.warning(
                "the worker is stopping: %s[%s] not started", TRANSCRIBE_TASK, self.request.id
            )
            raise Reject("the worker is stopping", requeue=True)
        if message is None:
            log.warning("no SQS receipt handle on the request: visibility heartbeat is off")
        try:
            return runner.run(payload, message)
        except Exception as error:
            # Not acknowledged: SQS delivers it again after the visibility timeout (to
            # another worker), and moves it to the dead-letter queue after maxReceiveCount.
            log.error("handing %s back to the queue: %s", TRANSCRIBE_TASK, error)
            raise Reject(str(error), requeue=False) from error

    @worker_process_init.connect(weak=False)
    def load_model_in_pool_process(**_: Any) -> None:
        runner.warm_up()

    only_transcribe(app)
    guard = InstanceGuard(app, settings)

    class Worker(app.Worker):  # type: ignore[name-defined]
        # The last start()'s exit status, for run_worker: Celery's worker command ends in
        # ctx.exit(worker.exitcode), which app.worker_main (click, not standalone) drops.
        exit_status: int = 0

        def start(self) -> None:
            # Returns when the worker has stopped: its jobs done, cancelled and handed
            # back, the pool gone (every shutdown, warm or cold, ends inside it).
            ledger.open()  # before the pool forks
            try:
                super().start()
            finally:
                try:
                    handed = ledger.hand_back_all(unstarted.sqs)  # no pool process is left
                    if handed:
                        log.warning("%d job(s) taken along by cancelled jobs handed back", handed)
                    ledger.close()
                finally:
                    guard.finish()
                    if guard.leaving:
                        # Stopped for a spot notice or the group's scale-in: a distinct
                        # exit status, so systemd does not start it again on an instance
                        # that is going away (RestartPreventExitStatus= in the unit).
                        # SIGTERM alone (systemctl stop, a redeploy) is no reason.
                        self.exitcode = defaults.WORKER_EXIT_INSTANCE_LEAVING
                    Worker.exit_status = int(self.exitcode or 0)

        def wait_for_soft_shutdown(self) -> None:
            # Celery's cold shutdown (SIGQUIT; SIGTERM with REMAP_SIGTERM=SIGQUIT, as
            # whisperq runs; a spot notice) calls this first, in the main process: before
            # it waits for running jobs and stops the pool, which would run every job
            # already in a pool process's pipe to its end. worker_shutting_down comes too
            # late there (after the pool has stopped); it is first on a warm shutdown.
            unstarted.hand_back()
            super().wait_for_soft_shutdown()

    app.Worker = Worker
    worker_ready.connect(guard.start, weak=False)
    worker_ready.connect(unstarted.prepare, weak=False)
    worker_shutting_down.connect(unstarted.hand_back, weak=False)
    worker_shutting_down.connect(guard.stop, weak=False)
    task_received.connect(guard.job_received, weak=False)
    return app


def run_worker(settings: Settings, loglevel: str = "INFO") -> int:
    """``whisperq worker``: a Celery worker in the foreground; returns its exit status
    (``defaults.WORKER_EXIT_INSTANCE_LEAVING`` when its instance is going away).

    The model is resolved first, so a wrong name stops the worker with a message instead
    of pool processes that fail to start over and over.
    """
    from billiard.common import REMAP_SIGTERM

    engine.resolve_model(settings.model)
    concurrency = engine.choose_concurrency(
        settings.worker_concurrency, engine.choose_device(settings.device)
    )
    settings = settings.model_copy(update={"worker_concurrency": concurrency})
    if REMAP_SIGTERM != "SIGQUIT":
        log.warning(
            "REMAP_SIGTERM=SIGQUIT is not set: SIGTERM waits for running jobs without limit"
        )
    app = create_worker_app(settings)
    app.worker_main(
        [
            "worker",
            f"--loglevel={loglevel}",
            f"--concurrency={settings.worker_concurrency}",
            "--pool=prefork",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            f"--hostname=whisperq@{socket.gethostname()}-{os.getpid()}",
        ]
    )
    return int(app.Worker.exit_status)
