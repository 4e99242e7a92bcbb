"""The worker's instance role: exactly what a worker does, on exactly its own resources."""

from __future__ import annotations

import json
from typing import Any

import pulumi
import pulumi_aws as aws

from whisperq.keys import ARTIFACTS, INPUTS, RESULTS

METRICS_NAMESPACE = "whisperq"
SSM_CORE = "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore"
WORKER_LOG_GROUP = "/whisperq/workers"  # as in ami/cloudwatch-agent.json


def worker_policy(
    bucket_arn: str, queue_arn: str, group_arn: str, log_group_arn: str
) -> dict[str, Any]:
    """Read inputs, write (and clear stale error records among) results, work the queue,
    protect its own instance from scale-in, publish its own metrics and log. Nothing else."""
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
                "Sid": "ReadArtifacts",  # the wheel a stock image installs at boot
                "Effect": "Allow",
                "Action": ["s3:GetObject"],
                "Resource": [f"{bucket_arn}/{ARTIFACTS}/*"],
            },
            {
                "Sid": "WriteResults",
                "Effect": "Allow",
                "Action": ["s3:PutObject", "s3:DeleteObject"],
                "Resource": [f"{bucket_arn}/{RESULTS}/*"],
            },
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
                "Sid": "ProtectOwnInstanceWhileBusy",
                "Effect": "Allow",
                "Action": ["autoscaling:SetInstanceProtection"],
                "Resource": [group_arn],
            },
            {
                # The CloudWatch agent ships the worker's log (ami/cloudwatch-agent.json).
                "Sid": "ShipOwnLog",
                "Effect": "Allow",
                "Action": [
                    "logs:CreateLogGroup",
                    "logs:CreateLogStream",
                    "logs:DescribeLogStreams",
                    "logs:PutLogEvents",
                    "logs:PutRetentionPolicy",
                ],
                "Resource": [log_group_arn, f"{log_group_arn}:*"],
            },
            {
                # PutMetricData has no resource types: the namespace condition narrows it.
                "Sid": "PublishOwnMetrics",
                "Effect": "Allow",
                "Action": ["cloudwatch:PutMetricData"],
                "Resource": "*",
                "Condition": {"StringEquals": {"cloudwatch:namespace": METRICS_NAMESPACE}},
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
                lambda arns: json.dumps(worker_policy(*arns))
            ),
            opts=child,
        )
        # Shell access through SSM Session Manager instead of SSH.
        aws.iam.RolePolicyAttachment(
            f"{name}-ssm", role=self.role.name, policy_arn=SSM_CORE, opts=child
        )
        self.profile = aws.iam.InstanceProfile(name, role=self.role.name, opts=child)
        self.register_outputs({"role": self.role.arn})
