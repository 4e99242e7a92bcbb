"""A moto server for benchmarks of large days: moto's own server, with one fix that keeps
its SQS answers the same and makes a request cost what it costs when the queue is short.

moto 5.2's SQS builds a queue's whole attribute dict -- counting every message, visible,
in flight and delayed -- to read one attribute: each SendMessage reads
``ContentBasedDeduplication`` that way, and GetQueueAttributes builds the dict three times
per name asked. With 50,000 jobs on the queue each such request walks 50,000 messages
several times, and a 50,000-call day (``day_run.py``) becomes quadratic: the morning's
12,500 submits alone took 20 minutes on the 2-core development VM, the ingest of the
next 12,500 files an hour (4 files a second), against 50 a second on a short queue.
Real SQS does neither. Here ``Queue.attributes`` is a mapping that computes an attribute
when it is read: the same names and the same values, so the answers are unchanged
(``tests/benchmarks/test_moto_large.py`` compares them with stock moto's).

Everything else is moto as installed: S3 prefix listings still walk the whole bucket
(the day's per-file listings are few; see BENCHMARKS.md), ReceiveMessage still walks the
queue (a receive takes ten jobs).

    python benchmarks/moto_large.py -H 127.0.0.1 -p 5000     # moto_server's arguments
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Mapping
from typing import Any

from moto.core.utils import camelcase_to_underscores
from moto.sqs import models as sqs_models


class LazyQueueAttributes(Mapping[str, Any]):
    """``Queue.attributes`` as moto 5.2 builds it (the same keys, in order, and values),
    each value computed when it is read."""

    def __init__(self, queue: Any) -> None:
        self.queue = queue
        names = list(queue.BASE_ATTRIBUTES)
        if queue.fifo_queue:
            names += queue.FIFO_ATTRIBUTES
        if queue.kms_master_key_id:
            names += queue.KMS_ATTRIBUTES
        self.names = list(dict.fromkeys(names))

    def __getitem__(self, name: str) -> Any:
        if name not in self.names:
            raise KeyError(name)
        queue = self.queue
        if name == "Policy" and queue.policy:
            value = queue.policy
        elif name == "RedrivePolicy" and queue.redrive_policy:
            value = json.dumps(queue.redrive_policy)
        else:
            value = getattr(queue, camelcase_to_underscores(name))
        return str(value).lower() if isinstance(value, bool) else value

    def __iter__(self) -> Iterator[str]:
        return iter(self.names)

    def __len__(self) -> int:
        return len(self.names)


def install() -> None:
    """Make every moto SQS queue's ``attributes`` lazy (this process only)."""
    sqs_models.Queue.attributes = property(LazyQueueAttributes)  # type: ignore[assignment]


def main(argv: list[str]) -> None:
    install()
    from moto.server import main as moto_main

    moto_main(argv)


if __name__ == "__main__":
    main(sys.argv[1:])
