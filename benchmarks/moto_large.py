"""A moto server for benchmarks of large days: moto's own server, with fixes that keep its
SQS answers the same and make a request cost what it costs when the queue is short.

moto 5.2's SQS walks every message on a queue, in Python, for most requests:

- it builds a queue's whole attribute dict -- counting every message, visible, in flight
  and delayed -- to read one attribute: each SendMessage reads ``ContentBasedDeduplication``
  that way, and GetQueueAttributes builds the dict three times per name asked;
- ReceiveMessage first lists every visible message, then takes ten;
- DeleteMessage looks for the receipt handle in every message, then copies the list.

With 50,000 jobs on the queue a 50,000-call day (``day_run.py``) becomes quadratic: the
morning's 12,500 submits took 20 minutes on the 2-core development VM, and with 40,000
jobs queued the stub workers took 4-5 jobs a second, against 30 on a short queue. Real
SQS does none of this. Here:

- ``Queue.attributes`` is a mapping that computes an attribute when it is read;
- the message counts come from the few messages that can be in flight or delayed (those
  received, their visibility changed, or sent with a delay), not from every message;
- ReceiveMessage walks the queue from its head and stops once it has its messages;
- DeleteMessage and ChangeMessageVisibility find the message by its receipt handle.

Same answers (``tests/benchmarks/test_moto_large.py`` runs one sequence of requests
against stock moto and this, and compares every answer). One difference on purpose:
stock moto's DeleteMessage replaces the queue's message list with a copy, unlocked, so
two deletes at once (or a delete and a send) can undo one another -- the deleted job comes
back after its visibility timeout, the sent one is lost. Here a delete removes its message
in place, under the queue's lock.

Everything else is moto as installed: S3 prefix listings still walk the whole bucket (the
day's per-file listings are few; see BENCHMARKS.md).

    python benchmarks/moto_large.py -H 127.0.0.1 -p 5000     # moto_server's arguments
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator, Mapping
from copy import deepcopy
from typing import Any

from moto.core.utils import camelcase_to_underscores, unix_time, unix_time_millis
from moto.sqs import models as sqs_models
from moto.sqs.exceptions import InvalidParameterValue, ReceiptHandleIsInvalid

Message = sqs_models.Message
Queue = sqs_models.Queue


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


class QueueIndex:
    """What a queue's requests look up: each receipt handle's message, and the messages
    that may be in flight or delayed (``held``; every other message on the queue is
    visible). A message joins ``held`` when it is received, its visibility changed or it
    is sent with a delay, and leaves when it is deleted or found visible and due."""

    def __init__(self) -> None:
        self.by_handle: dict[str, Message] = {}
        self.held: set[Message] = set()


def index_of(queue: Queue) -> QueueIndex:
    index = queue.__dict__.get("_large_index")
    if index is None:
        index = queue.__dict__.setdefault("_large_index", QueueIndex())
    return index


def available(message: Message) -> bool:
    return message.visible and not message.delayed


def unavailable_messages(queue: Queue) -> list[Message]:
    """The queue's messages in flight or delayed now (moto walks them all to know)."""
    index = index_of(queue)
    with queue._messages_lock:
        for message in [m for m in index.held if available(m)]:
            index.held.discard(message)
        return list(index.held)


def count_delayed(queue: Queue) -> int:
    return sum(1 for m in unavailable_messages(queue) if m.delayed)


def count_not_visible(queue: Queue) -> int:
    return sum(1 for m in unavailable_messages(queue) if not m.visible)


def count_visible(queue: Queue) -> int:
    with queue._messages_lock:
        return len(queue._messages) - len(unavailable_messages(queue))


def add_message(queue: Queue, message: Message) -> None:
    with queue._messages_lock:
        STOCK["add_message"](queue, message)
        if message.delayed:
            index_of(queue).held.add(message)


def delete_message(queue: Queue, receipt_handle: str) -> None:
    """By receipt handle, in place and under the queue's lock (see the module's note)."""
    if receipt_handle in queue.deleted_messages:
        return  # moto answers a second delete quietly, as SQS does
    index = index_of(queue)
    with queue._messages_lock:
        message = index.by_handle.get(receipt_handle)
        if message is None:
            raise ReceiptHandleIsInvalid()
        try:
            queue._messages.remove(message)  # found near the head: the oldest are in flight
        except ValueError:
            raise ReceiptHandleIsInvalid() from None
        queue.pending_messages.discard(message)
        queue.deleted_messages.update(message.all_receipt_handles)
        index.held.discard(message)
        for handle in message.all_receipt_handles:
            index.by_handle.pop(handle, None)


def wait_for_messages(queue: Queue, timeout: int) -> None:
    with queue._messages_lock:
        queue._messages_lock.wait_for(
            lambda: any(available(m) for m in queue._messages), timeout=timeout
        )


def receive_message(
    backend: Any,
    queue_name: str,
    count: int,
    wait_seconds_timeout: int,
    visibility_timeout: int,
    message_attribute_names: list[str] | None = None,
) -> list[Message]:
    """moto's ReceiveMessage, step for step, walking the queue from its head and
    stopping once it has ``count`` messages instead of listing every visible one first."""
    queue = backend.get_queue(queue_name)
    index = index_of(queue)
    result: list[Message] = []
    previous_result_count = 0
    polling_end = unix_time() + wait_seconds_timeout
    currently_pending_groups = deepcopy(queue.pending_message_groups)
    while True:
        if result or (wait_seconds_timeout and unix_time() > polling_end):
            break
        messages_to_dlq: list[Message] = []
        with queue._messages_lock:
            for message in queue._messages:
                if not available(message):
                    continue
                if message in queue.pending_messages:
                    queue.pending_messages.remove(message)  # its visibility timed out
                    currently_pending_groups = deepcopy(queue.pending_message_groups)
                if (
                    message.group_id
                    and queue.fifo_queue
                    and message.group_id in currently_pending_groups
                ):
                    continue
                if (
                    queue.dead_letter_queue is not None
                    and queue.redrive_policy
                    and message.approximate_receive_count >= queue.redrive_policy["maxReceiveCount"]
                ):
                    messages_to_dlq.append(message)
                    continue
                queue.pending_messages.add(message)
                message.mark_received(visibility_timeout=visibility_timeout)
                index.held.add(message)
                index.by_handle[message.receipt_handle] = message
                message_copy = deepcopy(message)
                sqs_models._filter_message_attributes(message_copy, message_attribute_names or [])
                if not backend.is_message_valid_based_on_retention_period(queue_name, message):
                    break
                result.append(message_copy)
                if len(result) >= count:
                    break
            for message in messages_to_dlq:
                queue._messages.remove(message)
                index.held.discard(message)
                dead = queue.dead_letter_queue
                dead.add_message(message)
                index_of(dead).by_handle.update(
                    (handle, message) for handle in message.all_receipt_handles if handle
                )
        if previous_result_count == len(result):
            if wait_seconds_timeout == 0:
                break
            queue.wait_for_messages(1)
            continue
        previous_result_count = len(result)
    return result


def change_message_visibility(
    backend: Any, queue_name: str, receipt_handle: str, visibility_timeout: int
) -> None:
    queue = backend.get_queue(queue_name)
    index = index_of(queue)
    with queue._messages_lock:
        message = index.by_handle.get(receipt_handle)
        if message is None or message not in queue._messages:
            raise ReceiptHandleIsInvalid
        given = unix_time_millis() + int(visibility_timeout) * 1000
        if given - message.sent_timestamp > 43200 * 1000:
            raise InvalidParameterValue(
                f"Value {visibility_timeout} for parameter VisibilityTimeout is invalid. "
                "Reason: Total VisibilityTimeout for the message is beyond the limit "
                "[43200 seconds]"
            )
        message.change_visibility(visibility_timeout)
        index.held.add(message)
        if message.visible and message in queue.pending_messages:
            queue.pending_messages.remove(message)


def purge_queue(backend: Any, queue_name: str) -> None:
    STOCK["purge_queue"](backend, queue_name)
    backend.get_queue(queue_name).__dict__.pop("_large_index", None)


STOCK: dict[str, Callable[..., Any]] = {
    "add_message": Queue.add_message,
    "purge_queue": sqs_models.SQSBackend.purge_queue,
}


def patches() -> list[tuple[type, str, Any]]:
    """(class, attribute, replacement) for every change this module makes to moto."""
    return [
        (Queue, "attributes", property(LazyQueueAttributes)),
        (Queue, "approximate_number_of_messages", property(count_visible)),
        (Queue, "approximate_number_of_messages_not_visible", property(count_not_visible)),
        (Queue, "approximate_number_of_messages_delayed", property(count_delayed)),
        (Queue, "add_message", add_message),
        (Queue, "delete_message", delete_message),
        (Queue, "wait_for_messages", wait_for_messages),
        (sqs_models.SQSBackend, "receive_message", receive_message),
        (sqs_models.SQSBackend, "change_message_visibility", change_message_visibility),
        (sqs_models.SQSBackend, "purge_queue", purge_queue),
    ]


def install() -> None:
    """Apply every patch (this process only)."""
    for owner, name, replacement in patches():
        setattr(owner, name, replacement)


def main(argv: list[str]) -> None:
    install()
    from moto.server import main as moto_main

    moto_main(argv)


if __name__ == "__main__":
    main(sys.argv[1:])
