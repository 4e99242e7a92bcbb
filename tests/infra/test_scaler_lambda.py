"""The scaling Lambda's handler against moto server's SQS and Auto Scaling APIs."""

from __future__ import annotations

import handler
import pytest

from whisperq import storage

from helpers import create_group


@pytest.fixture
def fleet(aws):
    autoscaling = storage.client(aws, "autoscaling")
    name = f"{aws.bucket}-workers"
    create_group(autoscaling, name, desired=0)
    env = {
        "QUEUE_URL": aws.queue_url,
        "GROUP_NAME": name,
        "JOBS_PER_INSTANCE": "2",
        "MAX_INSTANCES": "3",
        "IDLE_MINUTES": "10",
    }
    return storage.client(aws, "sqs"), autoscaling, env


def desired(autoscaling, env):
    groups = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[env["GROUP_NAME"]])
    return groups["AutoScalingGroups"][0]["DesiredCapacity"]


def test_scales_from_zero_out_to_the_cap_and_back_to_zero_after_idling(aws, fleet):
    sqs, autoscaling, env = fleet
    assert handler.scale_once(sqs, autoscaling, env, now=0) == {"desired": 0, "was": 0}

    sqs.send_message(QueueUrl=aws.queue_url, MessageBody="job")
    assert handler.scale_once(sqs, autoscaling, env, now=60)["desired"] == 1
    assert desired(autoscaling, env) == 1

    for _ in range(9):
        sqs.send_message(QueueUrl=aws.queue_url, MessageBody="job")
    handler.scale_once(sqs, autoscaling, env, now=120)
    assert desired(autoscaling, env) == 3  # ceil(10 / 2) = 5, capped at 3

    sqs.purge_queue(QueueUrl=aws.queue_url)
    handler.scale_once(sqs, autoscaling, env, now=180)
    assert desired(autoscaling, env) == 3  # idle, but not for long yet
    handler.scale_once(sqs, autoscaling, env, now=180 + 9 * 60)
    assert desired(autoscaling, env) == 3
    handler.scale_once(sqs, autoscaling, env, now=180 + 10 * 60)
    assert desired(autoscaling, env) == 0

    sqs.send_message(QueueUrl=aws.queue_url, MessageBody="job")
    handler.scale_once(sqs, autoscaling, env, now=2000)
    assert desired(autoscaling, env) == 1
    tags = autoscaling.describe_tags()["Tags"]
    assert not [
        t for t in tags if t["Key"] == handler.IDLE_TAG and t["ResourceId"] == env["GROUP_NAME"]
    ]


def test_in_flight_jobs_keep_their_instances(aws, fleet):
    sqs, autoscaling, env = fleet
    for _ in range(4):
        sqs.send_message(QueueUrl=aws.queue_url, MessageBody="job")
    for _ in range(4):
        sqs.receive_message(QueueUrl=aws.queue_url, MaxNumberOfMessages=1, VisibilityTimeout=300)
    assert handler.scale_once(sqs, autoscaling, env, now=0)["desired"] == 2
