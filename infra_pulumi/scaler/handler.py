"""The fleet's scaler: a Lambda run every minute by EventBridge.

It applies whisperq's own scaling step (whisperq/fleet/scaling.py, shipped beside this file in
the Lambda's zip): desired = clamp(ceil((visible + in flight) / jobs per instance), 0, max),
and zero only after the queue has been empty for the idle period. The moment the queue
was first seen empty is kept as a tag on the group, so the function holds no state.
"""

from __future__ import annotations

import os
import time
from typing import Any

import boto3

try:
    import scaling  # in the Lambda zip
except ImportError:  # in the repository (tests)
    from whisperq.fleet import scaling

IDLE_TAG = "whisperq:idle-since"


def scale_once(sqs: Any, autoscaling: Any, env: dict[str, str], now: float) -> dict[str, Any]:
    queue = sqs.get_queue_attributes(
        QueueUrl=env["QUEUE_URL"],
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    name = env["GROUP_NAME"]
    (group,) = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[name])[
        "AutoScalingGroups"
    ]
    tags = {tag["Key"]: tag["Value"] for tag in group.get("Tags", [])}
    idle_since = float(tags[IDLE_TAG]) if tags.get(IDLE_TAG) else None
    decision = scaling.decide(
        visible=int(queue["ApproximateNumberOfMessages"]),
        in_flight=int(queue["ApproximateNumberOfMessagesNotVisible"]),
        current=int(group["DesiredCapacity"]),
        jobs_per_instance=int(env["JOBS_PER_INSTANCE"]),
        max_instances=int(env["MAX_INSTANCES"]),
        idle_minutes=float(env["IDLE_MINUTES"]),
        idle_since=idle_since,
        now=now,
    )
    if decision.desired != group["DesiredCapacity"]:
        autoscaling.set_desired_capacity(
            AutoScalingGroupName=name, DesiredCapacity=decision.desired, HonorCooldown=False
        )
    if decision.idle_since != idle_since:
        tag = {"ResourceId": name, "ResourceType": "auto-scaling-group", "Key": IDLE_TAG}
        if decision.idle_since is None:
            autoscaling.delete_tags(Tags=[tag])
        else:
            value = str(decision.idle_since)
            autoscaling.create_or_update_tags(
                Tags=[tag | {"Value": value, "PropagateAtLaunch": False}]
            )
    return {"desired": decision.desired, "was": group["DesiredCapacity"]}


def handler(event: Any, context: Any) -> dict[str, Any]:
    return scale_once(
        boto3.client("sqs"), boto3.client("autoscaling"), dict(os.environ), time.time()
    )
