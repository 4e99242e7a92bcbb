"""Thin shells around boto3: clients from Settings, S3 listing and JSON objects, SQS counts.

Standard library and boto3 only at run time (Settings is a type here): the ingest Lambda
ships this module with ``whisperq.finished``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

if TYPE_CHECKING:
    from whisperq.settings import Settings

# botocore's standard retry mode: exponential backoff with jitter on throttling and 5xx.
_CLIENT_CONFIG = Config(retries={"max_attempts": 8, "mode": "standard"}, max_pool_connections=32)


def client(settings: Settings, service: str) -> Any:
    """A boto3 client for ``service`` pointed at the configured target."""
    secret = settings.aws_secret_access_key
    return boto3.session.Session().client(
        service,
        region_name=settings.region,
        endpoint_url=settings.endpoint_url,
        aws_access_key_id=settings.aws_access_key_id,
        aws_secret_access_key=secret.get_secret_value() if secret else None,
        config=_CLIENT_CONFIG,
    )


def events_client(settings: Settings) -> Any:
    """EventBridge at the configured target, when there is a bus to put events on."""
    return client(settings, "events") if settings.event_bus else None


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    last_modified: datetime | None = None  # from the listing, free: picks the newest results
    etag: str | None = None  # from the listing: a download need not HEAD the object first


def list_objects(s3: Any, bucket: str, prefix: str) -> Iterator[ObjectInfo]:
    """Every object under ``prefix``: one request per 1,000 keys, no GETs."""
    paginator = s3.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            yield ObjectInfo(item["Key"], item["Size"], item.get("LastModified"), item.get("ETag"))


def list_common_prefixes(s3: Any, bucket: str, prefix: str) -> list[str]:
    """The 'folders' directly under ``prefix``."""
    paginator = s3.get_paginator("list_objects_v2")
    found: list[str] = []
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix, Delimiter="/"):
        found.extend(item["Prefix"] for item in page.get("CommonPrefixes", []))
    return found


def get_json(s3: Any, bucket: str, key: str) -> Any | None:
    """The parsed JSON object at ``key``, or None if there is none."""
    try:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
            return None
        raise
    return json.loads(body)


def put_text(s3: Any, bucket: str, key: str, text: str, content_type: str) -> None:
    s3.put_object(Bucket=bucket, Key=key, Body=text.encode("utf-8"), ContentType=content_type)


@dataclass(frozen=True)
class QueueCounts:
    visible: int
    in_flight: int
    dead_lettered: int | None  # None when no DLQ is configured
    retention_seconds: float = 345_600.0  # how long SQS keeps a job (its default: 4 days)

    def as_dict(self) -> dict[str, int | None]:
        """The counts, as `status --json` shows them."""
        return {
            "visible": self.visible,
            "in_flight": self.in_flight,
            "dead_lettered": self.dead_lettered,
        }


def queue_counts(settings: Settings) -> QueueCounts:
    """Approximate message counts of the job queue and its dead-letter queue, and how long
    the job queue keeps a message: one request per queue (a command reads them once)."""
    sqs = client(settings, "sqs")
    names = [
        "ApproximateNumberOfMessages",
        "ApproximateNumberOfMessagesNotVisible",
        "MessageRetentionPeriod",
    ]
    attributes = sqs.get_queue_attributes(QueueUrl=settings.queue_url, AttributeNames=names)
    main = attributes["Attributes"]
    dead: int | None = None
    if settings.dlq_url:
        dlq = sqs.get_queue_attributes(QueueUrl=settings.dlq_url, AttributeNames=names[:1])
        dead = int(dlq["Attributes"]["ApproximateNumberOfMessages"])
    return QueueCounts(
        visible=int(main["ApproximateNumberOfMessages"]),
        in_flight=int(main["ApproximateNumberOfMessagesNotVisible"]),
        dead_lettered=dead,
        retention_seconds=float(main.get("MessageRetentionPeriod", 345_600)),
    )
