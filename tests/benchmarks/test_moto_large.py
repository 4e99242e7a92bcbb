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
