"""`whisperq ingest`: S3 object events from the ingest queue become jobs (a long-running
consumer for the local stack and for servers; on AWS the ingest Lambda does the same)."""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import FrameType
from typing import Annotated, Any

import typer

from whisperq import finished, storage
from whisperq.batches import ingest as ingesting
from whisperq.cli.app import app, settings_for_storage
from whisperq.errors import ConfigError
from whisperq.settings import ENV_PREFIX, Settings
from whisperq.stacks import local as local_stack

log = logging.getLogger("whisperq.ingest")

READY_MARK = local_stack.INGEST_READY_MARK  # logged once it polls (`local up` waits for it)
RECEIVE_LIMIT = 10  # SQS: at most 10 messages per receive
# SQS: a message's visibility is at most 12 hours.
MAX_VISIBILITY_S = 43200
# How often daily batches whose day is over are closed (the Lambda's schedule on AWS).
CLOSE_DAYS_EVERY_S = 60.0


class Consumer:
    """Receives events from the ingest queue and ingests their objects.

    A message is deleted once every object in it came to an end (queued, duplicate,
    ignored, failed with a reason). One that must come again (another delivery holds a
    fresh claim; an unexpected error) is left on the queue: a TryLater comes back when
    the claim in its way expires, anything else after the queue's visibility timeout,
    and after the queue's maxReceiveCount receives SQS moves it to the dead-letter queue.
    """

    def __init__(
        self,
        settings: Settings,
        probe: Callable[[Path], float | None] | None,
        threads: int = 4,
        stop: threading.Event | None = None,
    ) -> None:
        self.queue_url = settings.ingest_queue_url
        self.config = ingesting.IngestConfig.from_env(settings.ingest_environment())
        self.s3 = storage.client(settings, "s3")
        self.sqs = storage.client(settings, "sqs")
        self.probe = probe
        self.threads = threads
        self.stop = stop or threading.Event()
        self.counts: Counter[str] = Counter()
        self.events = storage.events_client(settings)
        self.days_closed_at: float | None = None

    def receive(self, wait_seconds: int) -> list[dict[str, Any]]:
        answer = self.sqs.receive_message(
            QueueUrl=self.queue_url,
            MaxNumberOfMessages=RECEIVE_LIMIT,
            WaitTimeSeconds=wait_seconds,
        )
        return answer.get("Messages", [])

    def run(self, wait_seconds: int, once: bool = False) -> Counter[str]:
        """Poll until stopped (or, with ``once``, until a receive finds nothing)."""
        log.info("%s: %s -> %s", READY_MARK, self.queue_url, self.config.queue_url)
        with ThreadPoolExecutor(max_workers=self.threads) as pool:
            while not self.stop.is_set():
                self.close_days()
                try:
                    messages = self.receive(wait_seconds)
                except Exception as error:  # the queue unreachable: say so, try again
                    log.warning("cannot receive from %s: %s", self.queue_url, error)
                    self.stop.wait(min(5.0, max(1.0, wait_seconds)))
                    continue
                if not messages:
                    if once:
                        break
                    continue
                list(pool.map(self.handle, messages))
        return self.counts

    def close_days(self) -> None:
        """Daily batches whose day is over: ``done.json`` when nothing is pending (at most
        every CLOSE_DAYS_EVERY_S; the ingest Lambda's schedule does this on AWS)."""
        now = time.monotonic()
        if self.days_closed_at is not None and now - self.days_closed_at < CLOSE_DAYS_EVERY_S:
            return
        self.days_closed_at = now
        try:
            outcomes = finished.close_open_batches(self.config, self.s3, events=self.events)
        except Exception as error:  # the events still count: try again at the next round
            log.warning("could not close the daily batches whose day is over: %s", error)
            return
        for batch, outcome in sorted(outcomes.items()):
            log.info("daily batch %s: %s", batch, outcome)

    def handle(self, message: dict[str, Any]) -> None:
        handled = ingesting.handle_event(
            self.s3, self.sqs, self.config, message.get("Body", ""), self.probe, self.events
        )
        for outcome in handled.outcomes:
            self.counts[outcome.status] += 1
            level = logging.WARNING if outcome.status == "failed" else logging.INFO
            log.log(level, "%s", outcome.describe())
        for ref, why in handled.retry:
            self.counts["retry"] += 1
            log.warning("retry %s: %s", ref.url if ref else "event", why)
        if handled.done:
            self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])
        elif handled.retry_after > 0:
            # Come back when the claim in the way has expired, not before (each receive
            # counts towards the dead-letter queue's maxReceiveCount).
            self.sqs.change_message_visibility(
                QueueUrl=self.queue_url,
                ReceiptHandle=message["ReceiptHandle"],
                VisibilityTimeout=min(MAX_VISIBILITY_S, max(1, round(handled.retry_after))),
            )


_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def _stop_on_signals(stop: threading.Event) -> dict[int, Any]:
    """SIGTERM and SIGINT set ``stop``; returns the handlers they had."""

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("%s: stopping after the events in hand", signal.Signals(signum).name)
        stop.set()

    return {signum: signal.signal(signum, on_signal) for signum in _STOP_SIGNALS}


@app.command()
def ingest(
    once: Annotated[
        bool, typer.Option("--once", help="Handle the events on the queue now, then exit.")
    ] = False,
    wait_seconds: Annotated[
        int | None,
        typer.Option(
            "--wait-seconds",
            min=0,
            max=20,
            help="SQS long-poll wait per receive (default: WHISPERQ_SQS_WAIT_SECONDS).",
        ),
    ] = None,
    threads: Annotated[
        int, typer.Option("--threads", min=1, max=RECEIVE_LIMIT, help="Events at once.")
    ] = 4,
    loglevel: Annotated[
        str, typer.Option("--loglevel", "-l", help="DEBUG, INFO, WARNING or ERROR.")
    ] = "INFO",
) -> None:
    """Turn S3 object events into jobs: an object created under `incoming/<batch>/<path>`
    becomes a job of `<batch>`, as if `whisperq submit` had sent it.

    Reads WHISPERQ_INGEST_QUEUE_URL (the bucket's object-created events); per-folder
    options from WHISPERQ_INGEST_OPTIONS. Non-audio objects are ignored, a deleted one
    fails alone with a reason, a repeated event is a duplicate. `whisperq local up`
    runs this for the local stack; on AWS the ingest Lambda does the same work.
    SIGTERM or Ctrl-C stops it after the events in hand.

    Example: `whisperq ingest --loglevel INFO`
    """
    logging.basicConfig(
        level=loglevel.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    for noisy in ("botocore", "boto3", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    settings = settings_for_storage()
    if not settings.ingest_queue_url:
        raise ConfigError(
            f"No ingest queue configured: set {ENV_PREFIX}INGEST_QUEUE_URL to the queue the "
            "bucket's object-created events go to (the stack's ingest_queue_url output), or "
            "use the local stack (`whisperq local up`), which has one."
        )
    from whisperq.batches.submit import probe_duration  # PyAV: reads more formats than WAV headers

    stop = threading.Event()
    consumer = Consumer(settings, probe_duration, threads=threads, stop=stop)
    wait = settings.sqs_wait_seconds if wait_seconds is None else wait_seconds
    started = time.monotonic()
    previous = _stop_on_signals(stop)
    try:
        counts = consumer.run(wait if not once else max(1, min(wait, 2)), once=once)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    summary = ", ".join(f"{count} {status}" for status, count in sorted(counts.items()))
    log.info("stopped after %.0f s: %s", time.monotonic() - started, summary or "no objects")
