"""The S3 events the ingest step reads: S3 notifications and EventBridge "Object Created"
events (also inside an SNS envelope) -> the objects they name, keys decoded once.

Standard library only: the ingest Lambda ships this module (``whisperq.batches.ingest``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import unquote_plus


@dataclass(frozen=True)
class ObjectRef:
    """An object an event names (the key decoded)."""

    bucket: str
    key: str
    size: int | None = None
    etag: str | None = None
    event_time: datetime | None = field(default=None, compare=False)  # when S3 said

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


def objects_in_event(event: Mapping[str, Any]) -> list[ObjectRef]:
    """The created objects an event names, in order.

    - S3 notifications (``{"Records": [...]}``): the ``ObjectCreated:*`` records; other
      records (removals, ...) are skipped;
    - EventBridge (``"detail-type": "Object Created"``); other S3 detail types give none;
    - in both, the key arrives URL-encoded (``+`` for a space, ``%XX`` for the rest, a
      literal ``+`` as ``%2B``) and is decoded here, once, as AWS's own event parsers do
      (``unquote_plus``): the object's real key;
    - S3's ``s3:TestEvent`` (sent when a notification is configured) gives none;
    - an SNS envelope around any of these is opened.

    Anything else raises ValueError: it is not an event this route knows.
    """
    if not isinstance(event, Mapping):
        raise ValueError(f"an event is a JSON object, not {type(event).__name__}")
    if event.get("Event") == "s3:TestEvent":
        return []
    if event.get("Type") == "Notification" and isinstance(event.get("Message"), str):
        return objects_in_event(json.loads(event["Message"]))
    if "Records" in event:
        return [ref for record in event["Records"] if (ref := _notification_object(record))]
    if "detail-type" in event:
        if event.get("source") not in (None, "aws.s3"):
            raise ValueError(f"not an S3 event: source {event.get('source')!r}")
        if event["detail-type"] != "Object Created":
            return []
        detail = event.get("detail") or {}
        item = detail.get("object") or {}
        return [
            ObjectRef(
                bucket=str(detail["bucket"]["name"]),
                key=unquote_plus(str(item["key"])),
                size=_int_or_none(item.get("size")),
                etag=item.get("etag"),
                event_time=_time_or_none(event.get("time")),
            )
        ]
    raise ValueError("not an S3 notification or EventBridge S3 event")


def _notification_object(record: Mapping[str, Any]) -> ObjectRef | None:
    if not str(record.get("eventName", "")).startswith("ObjectCreated"):
        return None
    s3 = record["s3"]
    item = s3["object"]
    return ObjectRef(
        bucket=str(s3["bucket"]["name"]),
        key=unquote_plus(str(item["key"])),
        size=_int_or_none(item.get("size")),
        etag=item.get("eTag"),
        event_time=_time_or_none(record.get("eventTime")),
    )


def _int_or_none(value: Any) -> int | None:
    try:
        return None if value is None else int(value)
    except (TypeError, ValueError):
        return None


def _time_or_none(value: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(str(value)) if value else None
    except ValueError:
        return None
