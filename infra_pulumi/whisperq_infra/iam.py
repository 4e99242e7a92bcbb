"""The worker's instance role: exactly what a worker does, on exactly its own resources."""

from __future__ import annotations

import json
from typing import Any

import pulumi
import pulumi_aws as aws

from whisperq.keys import (
    ARTIFACTS,
    BATCH_INFO,
    BATCHES,
    DONE,
    FILES,
    INPUTS,
    MANIFEST,
    RESULTS,
)

METRICS_NAMESPACE = "whisperq"
# Session Manager's own minimal instance policy (AWS Systems Manager User Guide, "Create a
# custom IAM role for Session Manager"), without the S3/KMS actions that session logging
# and session encryption would add (neither is set up). Instead of the managed
# AmazonSSMManagedInstanceCore, which also lets an instance read every SSM parameter in
# the account: workers decode untrusted audio. None of these has resource-level
# permissions in AWS's docs' policy, hence "*".
SESSION_MANAGER_ACTIONS = [
    "ssm:UpdateInstanceInformation",
    "ssmmessages:CreateControlChannel",
    "ssmmessages:CreateDataChannel",
    "ssmmessages:OpenControlChannel",
    "ssmmessages:OpenDataChannel",
]


def worker_log_group(stack: str, name: str = "whisperq") -> str:
    """The workers' log group, one per stack (two stacks in one account keep theirs apart);
    the stack creates it, with retention, and the user data gives the CloudWatch agent the
    name."""
    return f"/{name}/{stack}/workers"


def worker_policy(
    bucket_arn: str,
    queue_arn: str,
    group_arn: str,
    log_group_arn: str,
    region: str = "*",
    account: str = "*",
    event_bus: str | None = None,
) -> dict[str, Any]:
    """Read inputs, write (and clear stale error records among) results, work the queue
    (and hand on jobs it cannot pack), mark a finished batch (done.json, and the event on
    ``event_bus`` when there is one), protect its own instance from scale-in, mark it
    unhealthy, complete its termination lifecycle action, publish its own metrics and log,
    Session Manager. Nothing else."""
    announce: list[dict[str, Any]] = []
    if event_bus:
        announce.append(
            {
                # "whisperq batch finished", put by the worker that created done.json.
                "Sid": "AnnounceFinishedBatches",
                "Effect": "Allow",
                "Action": ["events:PutEvents"],
                "Resource": [f"arn:aws:events:{region}:{account}:event-bus/{event_bus}"],
            }
        )
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "ReadInputs",
                "Effect": "Allow",
                "Action": ["s3:GetObject"],
                "Resource": [f"{bucket_arn}/{INPUTS}/*"],
            },
            {
                # S3 answers a GET of a missing key with 404 only to a caller that may list
                # the bucket, else with 403: without this an expired input reads as a
                # missing permission. ListBucket on the bucket, unconditioned: S3 checks
                # it without a prefix for that answer, so a condition on s3:prefix would
                # not help. It lets a worker list key names (not read objects).
                "Sid": "TellMissingInputsFromDenied",
                "Effect": "Allow",
                "Action": ["s3:ListBucket"],
                "Resource": [bucket_arn],
            },
            {
                "Sid": "ReadArtifacts",  # the wheel a stock image installs at boot
                "Effect": "Allow",
                "Action": ["s3:GetObject"],
                "Resource": [f"{bucket_arn}/{ARTIFACTS}/*"],
            },
            {
                "Sid": "WriteResults",
                "Effect": "Allow",
                "Action": ["s3:PutObject"],
                "Resource": [f"{bucket_arn}/{RESULTS}/*"],
            },
            {
                # Only a stale failure record, once the file succeeded: never a transcript.
                "Sid": "ClearStaleErrorRecords",
                "Effect": "Allow",
                "Action": ["s3:DeleteObject"],
                "Resource": [f"{bucket_arn}/{RESULTS}/*.error.json"],
            },
            {
                # A batch's end (whisperq/finished.py), once the queue has run dry: its
                # marker and its batch.json (a daily batch's open_until; manifest.json for
                # a batch from before per-file entries).
                "Sid": "ReadBatchEnds",
                "Effect": "Allow",
                "Action": ["s3:GetObject"],
                "Resource": [
                    f"{bucket_arn}/{BATCHES}/*/{DONE}",
                    f"{bucket_arn}/{BATCHES}/*/{BATCH_INFO}",
                    f"{bucket_arn}/{BATCHES}/*/{MANIFEST}",
                ],
            },
            {
                # A settled file's entry renamed to its state (whisperq/entry_states.py): a
                # server-side copy (read + write) and the old key deleted, so that status
                # counts a batch from one listing. The entry holds the call metadata the
                # job carries anyway; batch.json and done.json stay out of reach.
                "Sid": "MarkSettledFiles",
                "Effect": "Allow",
                "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"],
                "Resource": [f"{bucket_arn}/{BATCHES}/*/{FILES}/*"],
            },
            {
                # Created once (If-None-Match: *) by whoever sees the batch finished first.
                "Sid": "MarkFinishedBatches",
                "Effect": "Allow",
                "Action": ["s3:PutObject"],
                "Resource": [f"{bucket_arn}/{BATCHES}/*/{DONE}"],
            },
            *announce,
            {
                "Sid": "WorkTheQueue",
                "Effect": "Allow",
                "Action": [
                    "sqs:ReceiveMessage",
                    "sqs:DeleteMessage",
                    "sqs:ChangeMessageVisibility",
                    "sqs:GetQueueAttributes",
                ],
                "Resource": [queue_arn],
            },
            {
                # Packing short jobs (whisperq/worker/packs.py): a job received along that
                # cannot share the windows is queued again as a new message and the received
                # copy deleted. Handing it back instead counts a receive each time, and a
                # long job met by a few packing workers would reach the dead-letter queue
                # without ever running. On its own queue only.
                "Sid": "HandOnJobsItCannotPack",
                "Effect": "Allow",
                "Action": ["sqs:SendMessage"],
                "Resource": [queue_arn],
            },
            {
                "Sid": "ProtectOwnInstanceWhileBusy",
                "Effect": "Allow",
                "Action": ["autoscaling:SetInstanceProtection"],
                "Resource": [group_arn],
            },
            {
                # `whisperq mark-unhealthy`: a worker that cannot start (boot failure,
                # restart loop) has its instance replaced instead of idling for days.
                "Sid": "MarkOwnInstanceUnhealthy",
                "Effect": "Allow",
                "Action": ["autoscaling:SetInstanceHealth"],
                "Resource": [group_arn],
            },
            {
                # The termination lifecycle hook (scale-in, capacity rebalancing): the
                # worker hands its job back, then lets the group go on.
                "Sid": "CompleteOwnTerminationHook",
                "Effect": "Allow",
                "Action": ["autoscaling:CompleteLifecycleAction"],
                "Resource": [group_arn],
            },
            {
                # The CloudWatch agent ships the worker's log into the stack's log group,
                # which the stack creates with its retention: no CreateLogGroup or
                # PutRetentionPolicy here.
                "Sid": "ShipOwnLog",
                "Effect": "Allow",
                "Action": [
                    "logs:CreateLogStream",
                    "logs:DescribeLogStreams",
                    "logs:PutLogEvents",
                ],
                "Resource": [log_group_arn, f"{log_group_arn}:*"],
            },
            {
                # The agent lists log groups before it writes (a list call: names only).
                "Sid": "AgentFindsLogGroups",
                "Effect": "Allow",
                "Action": ["logs:DescribeLogGroups"],
                "Resource": [f"arn:aws:logs:{region}:{account}:log-group:*"],
            },
            {
                # PutMetricData has no resource types: the namespace condition narrows it.
                "Sid": "PublishOwnMetrics",
                "Effect": "Allow",
                "Action": ["cloudwatch:PutMetricData"],
                "Resource": "*",
                "Condition": {"StringEquals": {"cloudwatch:namespace": METRICS_NAMESPACE}},
            },
            {
                # Shell access through SSM Session Manager instead of SSH.
                "Sid": "SessionManager",
                "Effect": "Allow",
                "Action": list(SESSION_MANAGER_ACTIONS),
                "Resource": "*",
            },
        ],
    }


def assume_role_policy(service: str) -> str:
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"Service": service},
                    "Action": "sts:AssumeRole",
                }
            ],
        }
    )


class WorkerIdentity(pulumi.ComponentResource):
    def __init__(
        self,
        name: str,
        bucket_arn: pulumi.Input[str],
        queue_arn: pulumi.Input[str],
        group_arn: pulumi.Input[str],
        log_group_arn: pulumi.Input[str],
        region: str,
        account: str,
        event_bus: str | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("whisperq:index:WorkerIdentity", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.role = aws.iam.Role(
            name, assume_role_policy=assume_role_policy("ec2.amazonaws.com"), opts=child
        )
        aws.iam.RolePolicy(
            name,
            role=self.role.id,
            policy=pulumi.Output.all(bucket_arn, queue_arn, group_arn, log_group_arn).apply(
                lambda arns: json.dumps(
                    worker_policy(*arns, region=region, account=account, event_bus=event_bus)
                )
            ),
            opts=child,
        )
        self.profile = aws.iam.InstanceProfile(name, role=self.role.name, opts=child)
        self.register_outputs({"role": self.role.arn})
