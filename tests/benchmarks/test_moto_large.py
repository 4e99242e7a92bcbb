"""benchmarks/moto_large.py: moto's SQS queue attributes computed when read give the same
names and values as moto builds them all at once (so the day's benchmark talks to moto's
SQS, only without its per-request walk over every message)."""

from __future__ import annotations

import json
from pathlib import Path

import boto3
import pytest
from moto import mock_aws
from moto.sqs import models as sqs_models

from helpers import load_file_module

SCRIPT = Path(__file__).parents[2] / "benchmarks" / "moto_large.py"


QUEUES = {
    "plain": {},
    "with-policy": {
        "Policy": json.dumps({"Version": "2012-10-17", "Statement": []}),
        "VisibilityTimeout": "45",
    },
    "redriven": {"RedrivePolicy": "dead"},  # the DLQ's ARN is filled in below
    "fifo.fifo": {"FifoQueue": "true", "ContentBasedDeduplication": "true"},
}


@pytest.mark.parametrize("name", sorted(QUEUES))
def test_lazy_attributes_equal_moto_s_own(name):
    moto_large = load_file_module(SCRIPT, "moto_large")
    with mock_aws():
        sqs = boto3.client("sqs", region_name="us-east-1")
        dead = sqs.create_queue(QueueName="dead")["QueueUrl"]
        dead_arn = sqs.get_queue_attributes(QueueUrl=dead, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        attributes = dict(QUEUES[name])
        if "RedrivePolicy" in attributes:
            attributes["RedrivePolicy"] = json.dumps(
                {"deadLetterTargetArn": dead_arn, "maxReceiveCount": 3}
            )
        url = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
        for n in range(5):
            extra = {"MessageGroupId": "g"} if name.endswith(".fifo") else {}
            sqs.send_message(QueueUrl=url, MessageBody=f"job {n}", **extra)
        sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=2, VisibilityTimeout=60)
        backend = sqs_models.sqs_backends["123456789012"]["us-east-1"]
        queue = backend.queues[name]
        built = sqs_models.Queue.attributes.fget(queue)  # moto's own, all at once
        lazy = moto_large.LazyQueueAttributes(queue)
        assert list(lazy) == list(built)
        assert dict(lazy) == built
        assert lazy.get("ContentBasedDeduplication") == built.get("ContentBasedDeduplication")
        assert (
            lazy["ApproximateNumberOfMessages"],
            lazy["ApproximateNumberOfMessagesNotVisible"],
        ) == (
            built["ApproximateNumberOfMessages"],
            built["ApproximateNumberOfMessagesNotVisible"],
        )
        assert "NoSuchAttribute" not in lazy and lazy.get("NoSuchAttribute") is None


def run_requests(sqs) -> list:
    """One sequence of SQS requests touching every patched path; returns every answer that
    does not depend on chance (bodies, counts, error codes; not receipt handles)."""
    answers: list = []

    def counts(url):
        attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])
        return {k: v for k, v in attributes["Attributes"].items() if k.startswith("Approx")}

    def receive(url, n, visibility=60):
        got = sqs.receive_message(
            QueueUrl=url,
            MaxNumberOfMessages=n,
            VisibilityTimeout=visibility,
            AttributeNames=["ApproximateReceiveCount"],
        ).get("Messages", [])
        answers.append(
            ("received", [(m["Body"], m["Attributes"]["ApproximateReceiveCount"]) for m in got])
        )
        return got

    def error_code(call, **kwargs):
        try:
            call(**kwargs)
        except sqs.exceptions.ClientError as error:
            return error.response["Error"]["Code"]
        return None

    dead = sqs.create_queue(QueueName="dead")["QueueUrl"]
    dead_arn = sqs.get_queue_attributes(QueueUrl=dead, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    redrive = json.dumps({"deadLetterTargetArn": dead_arn, "maxReceiveCount": 2})
    url = sqs.create_queue(QueueName="jobs", Attributes={"RedrivePolicy": redrive})["QueueUrl"]
    for n in range(20):
        delay = {"DelaySeconds": 60} if n in (3, 9, 15) else {}
        sqs.send_message(QueueUrl=url, MessageBody=f"job {n:02d}", **delay)
    answers.append(("sent", counts(url)))

    first = receive(url, 5)
    answers.append(("five in flight", counts(url)))
    for message in first[:2]:
        sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    answers.append(
        (
            "deleted again",
            error_code(sqs.delete_message, QueueUrl=url, ReceiptHandle=first[0]["ReceiptHandle"]),
        )
    )
    answers.append(
        (
            "unknown handle",
            error_code(sqs.delete_message, QueueUrl=url, ReceiptHandle="not-a-handle"),
        )
    )
    sqs.change_message_visibility(
        QueueUrl=url, ReceiptHandle=first[2]["ReceiptHandle"], VisibilityTimeout=0
    )
    answers.append(("one back", counts(url)))
    answers.append(
        (
            "visibility of a deleted job",
            error_code(
                sqs.change_message_visibility,
                QueueUrl=url,
                ReceiptHandle=first[1]["ReceiptHandle"],
                VisibilityTimeout=0,
            ),
        )
    )

    second = receive(url, 10)
    for message in second:  # all back: the next receive counts them twice
        sqs.change_message_visibility(
            QueueUrl=url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
        )
    answers.append(("ten back", counts(url)))
    receive(url, 10)  # those received twice go to the dead-letter queue instead
    answers.append(("after redrive", counts(url), counts(dead)))
    dead_letters = receive(dead, 10)
    entries = [
        {"Id": "old", "ReceiptHandle": second[0]["ReceiptHandle"]},
        {"Id": "bad", "ReceiptHandle": "nope"},
    ]
    entries += [
        {"Id": f"d{i}", "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(dead_letters[:3])
    ]
    batch = sqs.delete_message_batch(QueueUrl=dead, Entries=entries)
    answers.append(
        (
            "batch delete",
            sorted(e["Id"] for e in batch.get("Successful", [])),
            sorted((e["Id"], e["Code"]) for e in batch.get("Failed", [])),
        )
    )
    answers.append(("dead after delete", counts(dead)))

    sqs.purge_queue(QueueUrl=url)
    answers.append(("purged", counts(url)))
    answers.append(
        (
            "handle from before the purge",
            error_code(sqs.delete_message, QueueUrl=url, ReceiptHandle=first[3]["ReceiptHandle"]),
        )
    )
    sqs.send_message(QueueUrl=url, MessageBody="after purge")
    last = receive(url, 10)
    sqs.delete_message(QueueUrl=url, ReceiptHandle=last[0]["ReceiptHandle"])
    answers.append(("empty again", counts(url)))
    receive(url, 10)
    return answers


def test_the_patched_queue_answers_a_sequence_of_requests_as_moto_does(monkeypatch):
    moto_large = load_file_module(SCRIPT, "moto_large")
    with mock_aws():
        stock = run_requests(boto3.client("sqs", region_name="us-east-1"))
    for owner, name, replacement in moto_large.patches():
        monkeypatch.setattr(owner, name, replacement)
    with mock_aws():
        patched = run_requests(boto3.client("sqs", region_name="us-east-1"))
    assert patched == stock
    # the sequence reached each path: counts with jobs in flight and delayed, a job
    # dead-lettered and deleted there by its old handle, unknown handles refused
    assert stock[2] == (
        "five in flight",
        {
            "ApproximateNumberOfMessages": "12",
            "ApproximateNumberOfMessagesDelayed": "3",
            "ApproximateNumberOfMessagesNotVisible": "5",
        },
    )
    assert ("received", [("job 02", "3")]) in stock
    assert ("batch delete", ["d0", "old"], [("bad", "ReceiptHandleIsInvalid")]) in stock
    assert ("handle from before the purge", "ReceiptHandleIsInvalid") in stock


def deletes_and_sends_at_once(sqs) -> tuple[int, int]:
    """300 jobs received, then deleted from 6 threads while 2 threads send 100 more:
    (jobs left on the queue, jobs sent during the deletes)."""
    from concurrent.futures import ThreadPoolExecutor

    url = sqs.create_queue(QueueName="jobs")["QueueUrl"]
    for start in range(0, 300, 10):
        entries = [{"Id": str(n), "MessageBody": f"job {n}"} for n in range(start, start + 10)]
        sqs.send_message_batch(QueueUrl=url, Entries=entries)
    handles = []
    while len(handles) < 300:
        got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=600)
        handles += [m["ReceiptHandle"] for m in got["Messages"]]

    def delete(handle: str) -> None:
        sqs.delete_message(QueueUrl=url, ReceiptHandle=handle)

    def send(n: int) -> None:
        sqs.send_message(QueueUrl=url, MessageBody=f"late {n}")

    with ThreadPoolExecutor(8) as pool:
        work = [pool.submit(delete, h) for h in handles]
        work += [pool.submit(send, n) for n in range(100)]
        for future in work:
            future.result()
    counts = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    left = int(counts["ApproximateNumberOfMessages"]) + int(
        counts["ApproximateNumberOfMessagesNotVisible"]
    )
    return left, 100


def test_deletes_and_sends_at_once_lose_nothing(monkeypatch):
    """Every deleted job gone, every job sent meanwhile there (moto's own delete copies
    the list unlocked: a delete can undo another, or drop a job sent at that moment)."""
    moto_large = load_file_module(SCRIPT, "moto_large")
    for owner, name, replacement in moto_large.patches():
        monkeypatch.setattr(owner, name, replacement)
    with mock_aws():
        left, sent = deletes_and_sends_at_once(boto3.client("sqs", region_name="us-east-1"))
    assert left == sent
