"""Job messages as Celery workers read them from SQS, built and read without Celery.

Submitting sends jobs in batches of ten (SQS ``SendMessageBatch``) and the ingest Lambda
sends them with nothing but boto3, so the message is built here: the same envelope
kombu's SQS transport writes for ``send_task`` (a base64 JSON envelope around Celery's
protocol-2 body ``[args, kwargs, embed]``; tests compare the two). Standard library only:
the ingest Lambda ships this module as it is.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any

TRANSCRIBE_TASK = "whisperq.transcribe"
SEND_BATCH_LIMIT = 10  # SQS: at most 10 messages (and 256 KiB) per SendMessageBatch


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def encode_job_message(payload: dict[str, Any], queue_name: str) -> str:
    """The SQS message body for one ``whisperq.transcribe`` task with ``payload``."""
    task_id = str(uuid.uuid4())
    body = json.dumps(
        [[payload], {}, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}]
    ).encode("utf-8")
    envelope = {
        "body": _b64(body),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": {
            "lang": "py",
            "task": TRANSCRIBE_TASK,
            "id": task_id,
            "shadow": None,
            "eta": None,
            "expires": None,
            "group": None,
            "group_index": None,
            "retries": 0,
            "timelimit": [None, None],
            "root_id": task_id,
            "parent_id": None,
            "argsrepr": repr([payload])[:1024],
            "kwargsrepr": "{}",
            "origin": f"{os.getpid()}@{socket.gethostname()}",
            "ignore_result": True,
            "replaced_task_nesting": 0,
            "stamped_headers": None,
            "stamps": {},
        },
        "properties": {
            "correlation_id": task_id,
            "reply_to": str(uuid.uuid4()),
            "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": queue_name},
            "priority": 0,
            "body_encoding": "base64",
            "delivery_tag": str(uuid.uuid4()),
        },
    }
    return _b64(json.dumps(envelope).encode("utf-8"))


def job_payload_of(body: str) -> Any:
    """The payload inside a job message body. Raises ValueError if it is not one."""
    try:
        envelope = json.loads(base64.b64decode(body))
        if envelope.get("headers", {}).get("task") != TRANSCRIBE_TASK:
            raise ValueError(f"not a {TRANSCRIBE_TASK} task")
        if envelope.get("content-type") != "application/json":
            raise ValueError(f"content type {envelope.get('content-type')!r} is not JSON")
        args, _kwargs, _embed = json.loads(base64.b64decode(envelope["body"]))
        return args[0]
    except (KeyError, IndexError, TypeError, ValueError) as error:
        raise ValueError(f"not a whisperq job message: {error}") from error


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def send_jobs(
    sqs: Any,
    queue_url: str,
    payloads: Sequence[dict[str, Any]],
    sent: Callable[[int], None] | None = None,
) -> int:
    """Send one job per payload, ten per ``SendMessageBatch``; returns the requests made.
    ``sent(n)`` is called as each batch of ``n`` jobs is on the queue (progress).

    Entries SQS refuses inside a batch (it answers per entry) are sent again once on
    their own; one that still fails raises, so no job is dropped silently.
    """
    queue_name = queue_url.rstrip("/").rsplit("/", 1)[-1]
    requests = 0
    for chunk in _chunks(payloads, SEND_BATCH_LIMIT):
        entries = [
            {"Id": str(index), "MessageBody": encode_job_message(payload, queue_name)}
            for index, payload in enumerate(chunk)
        ]
        answer = sqs.send_message_batch(QueueUrl=queue_url, Entries=entries)
        requests += 1
        refused = {item["Id"]: item for item in answer.get("Failed", [])}
        for entry in entries:
            if entry["Id"] in refused:
                sqs.send_message(QueueUrl=queue_url, MessageBody=entry["MessageBody"])
                requests += 1
        if sent is not None:
            sent(len(chunk))
    return requests
