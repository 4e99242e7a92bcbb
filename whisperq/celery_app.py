"""The Celery app on SQS: one place for broker and delivery settings.

Decisions (docs/operations.md, "How the worker behaves"): kombu's SQS transport with a predefined
queue (workers need no CreateQueue/ListQueues rights), JSON only (nobody who can write to
the queue can make a worker unpickle code), late acks with reject-on-worker-lost and
prefetch 1 (a job whose worker dies is redelivered, and no worker hoards jobs another
could run).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlsplit

from celery import Celery

from whisperq.messages import TRANSCRIBE_TASK, job_payload_of
from whisperq.schemas import TranscriptionJob
from whisperq.settings import Settings


def broker_url(settings: Settings) -> str:
    """``sqs://`` URL; on the local stack its host:port is the SQS endpoint kombu uses."""
    if not settings.endpoint_url:
        return "sqs://"  # AWS: the default credential chain, region from transport options
    endpoint = urlsplit(settings.endpoint_url)
    secret = settings.aws_secret_access_key
    user = quote(settings.aws_access_key_id or "", safe="")
    password = quote(secret.get_secret_value() if secret else "", safe="")
    credentials = f"{user}:{password}@" if user else ""
    return f"sqs://{credentials}{endpoint.hostname}:{endpoint.port}"


def transport_options(settings: Settings) -> dict[str, Any]:
    options: dict[str, Any] = {
        "region": settings.region,
        "predefined_queues": {settings.queue_name: {"url": settings.queue_url}},
        "wait_time_seconds": settings.sqs_wait_seconds,
        "polling_interval": 1,
    }
    if settings.endpoint_url:
        options["is_secure"] = settings.endpoint_url.startswith("https://")
    return options


def make_celery(settings: Settings) -> Celery:
    """A Celery app bound to ``settings``' queue. Cheap; does not connect."""
    settings.require_storage()
    app = Celery("whisperq", set_as_current=False)
    app.conf.update(
        broker_url=broker_url(settings),
        broker_transport_options=transport_options(settings),
        broker_connection_retry_on_startup=True,
        task_default_queue=settings.queue_name,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        result_backend=None,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_concurrency=settings.worker_concurrency or None,  # 0 = auto, resolved by run_worker
        # SQS has no broadcast: remote control, events and gossip cannot work on it.
        worker_enable_remote_control=False,
        worker_send_task_events=False,
    )
    return app


def enqueue(app: Celery, job: TranscriptionJob) -> None:
    """Put one job on the queue, by task name (the submitting side needs no worker code)."""
    app.send_task(TRANSCRIBE_TASK, args=[job.model_dump(mode="json")])


def decode_job_message(body: str) -> TranscriptionJob:
    """The job inside an SQS message body (see :mod:`whisperq.messages`). Raises
    ValueError if it is not one."""
    payload = job_payload_of(body)
    try:
        return TranscriptionJob.model_validate(payload)
    except ValueError as error:
        raise ValueError(f"not a whisperq job message: {error}") from error
