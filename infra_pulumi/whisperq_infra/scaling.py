"""Scaling on the queue: a scheduled Lambda that runs whisperq's own scaling step.

Why a Lambda and not CloudWatch alarms: target tracking does not act at zero capacity and
scales in on visible messages alone; step scaling for 0 -> 1 plus metric math for 1 -> N
plus an idle alarm for N -> 0 is three mechanisms whose thresholds must agree with the
formula. The Lambda runs the formula itself (whisperq/fleet/scaling.py, the same file the CLI
and the simulator use), every minute, from GetQueueAttributes.
"""

from __future__ import annotations

import json
from pathlib import Path

import pulumi
import pulumi_aws as aws
from whisperq_infra.config import DeploymentConfig
from whisperq_infra.iam import assume_role_policy

from whisperq import defaults

HANDLER = Path(__file__).resolve().parents[1] / "scaler" / "handler.py"
FORMULA = Path(__file__).resolve().parents[2] / "whisperq" / "fleet" / "scaling.py"


def rate_expression(seconds: float) -> str:
    """EventBridge's schedule for a period of whole minutes: rate(1 minute), rate(5 minutes)."""
    minutes = int(seconds // 60)
    if minutes < 1 or minutes * 60 != seconds:
        raise ValueError(f"the scaler's period must be whole minutes (got {seconds} s)")
    return f"rate({minutes} minute{'s' if minutes > 1 else ''})"


# `whisperq status` and the simulator assume the same period (whisperq.defaults).
SCHEDULE = rate_expression(defaults.SCALER_PERIOD_SECONDS)


def scaler_policy(queue_arn: str, group_arn: str, log_group_arn: str) -> dict:
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": ["sqs:GetQueueAttributes"],
                "Resource": [queue_arn],
            },
            {
                "Effect": "Allow",
                "Action": [
                    "autoscaling:SetDesiredCapacity",
                    "autoscaling:CreateOrUpdateTags",
                    "autoscaling:DeleteTags",
                ],
                "Resource": [group_arn],
            },
            {
                # Describe calls have no resource-level permissions in Auto Scaling.
                "Effect": "Allow",
                "Action": ["autoscaling:DescribeAutoScalingGroups"],
                "Resource": "*",
            },
            {
                "Effect": "Allow",
                "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
                "Resource": [f"{log_group_arn}:*"],
            },
        ],
    }


class QueueScaler(pulumi.ComponentResource):
    def __init__(
        self,
        name: str,
        config: DeploymentConfig,
        queue_url: pulumi.Input[str],
        queue_arn: pulumi.Input[str],
        group_name: str,
        group_arn: pulumi.Input[str],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("whisperq:index:QueueScaler", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        function_name = f"{group_name}-scaler"
        log_group = aws.cloudwatch.LogGroup(
            name, name=f"/aws/lambda/{function_name}", retention_in_days=14, opts=child
        )
        role = aws.iam.Role(
            name, assume_role_policy=assume_role_policy("lambda.amazonaws.com"), opts=child
        )
        aws.iam.RolePolicy(
            name,
            role=role.id,
            policy=pulumi.Output.all(queue_arn, group_arn, log_group.arn).apply(
                lambda arns: json.dumps(scaler_policy(*arns))
            ),
            opts=child,
        )
        self.function = aws.lambda_.Function(
            name,
            name=function_name,
            runtime="python3.12",
            handler="handler.handler",
            role=role.arn,
            timeout=30,
            memory_size=128,
            code=pulumi.AssetArchive(
                {
                    "handler.py": pulumi.FileAsset(str(HANDLER)),
                    "scaling.py": pulumi.FileAsset(str(FORMULA)),
                }
            ),
            environment={
                "variables": {
                    "QUEUE_URL": queue_url,
                    "GROUP_NAME": group_name,
                    "JOBS_PER_INSTANCE": str(config.jobs_per_instance),
                    "MAX_INSTANCES": str(config.max_instances),
                    "IDLE_MINUTES": str(config.idle_minutes),
                }
            },
            opts=pulumi.ResourceOptions(parent=self, depends_on=[log_group]),
        )
        self.schedule = aws.cloudwatch.EventRule(name, schedule_expression=SCHEDULE, opts=child)
        aws.cloudwatch.EventTarget(name, rule=self.schedule.name, arn=self.function.arn, opts=child)
        self.permission = aws.lambda_.Permission(
            name,
            action="lambda:InvokeFunction",
            function=self.function.name,
            principal="events.amazonaws.com",
            source_arn=self.schedule.arn,
            opts=child,
        )
        self.register_outputs({"function": self.function.name})
