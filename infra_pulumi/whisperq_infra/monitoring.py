"""The workers' log group, alarms (dead letters, stale backlog, instances that could not
work) to an SNS topic (mailed to whisperq:alertEmail), and a dashboard (the job queue, the
fleet, the jobs, and the ingest queue with its dead letters)."""

from __future__ import annotations

import json
from typing import Any

import pulumi
import pulumi_aws as aws
from whisperq_infra.iam import METRICS_NAMESPACE

OLDEST_MESSAGE_ALARM_S = 3600
WORKER_LOG_RETENTION_DAYS = 14
# ami/mark-unhealthy.sh logs this (once per instance) when it has the group replace an
# instance whose worker cannot run: a boot that failed, or a worker that hit its start limit.
UNHEALTHY_LOG_MARK = "marked-unhealthy"
UNHEALTHY_METRIC = "InstancesMarkedUnhealthy"


def dashboard_body(
    region: str,
    queue_name: str,
    dead_letter_name: str,
    group_name: str,
    ingest_names: tuple[str, str] | None = None,
) -> str:
    """The dashboard: the job queue and its dead letters, the fleet, the jobs and the audio
    done; with ``ingest_names`` (the ingest queue and its dead-letter queue) the S3 events
    waiting to become jobs and those that could not."""

    def widget(title: str, metrics: list[Any], stat: str = "Sum", period: int = 60) -> dict:
        return {
            "type": "metric",
            "width": 12,
            "height": 6,
            "properties": {
                "title": title,
                "region": region,
                "stat": stat,
                "period": period,
                "view": "timeSeries",
                "metrics": metrics,
            },
        }

    sqs, asg, own = "AWS/SQS", "AWS/AutoScaling", METRICS_NAMESPACE
    group = ("AutoScalingGroupName", group_name)
    widgets = [
        widget(
            "Backlog (waiting + running) and dead letters",
            [
                [sqs, "ApproximateNumberOfMessagesVisible", "QueueName", queue_name],
                [sqs, "ApproximateNumberOfMessagesNotVisible", "QueueName", queue_name],
                [sqs, "ApproximateNumberOfMessagesVisible", "QueueName", dead_letter_name],
            ],
            stat="Maximum",
        ),
        widget(
            "Instances",
            [[asg, "GroupInServiceInstances", *group], [asg, "GroupDesiredCapacity", *group]],
            stat="Maximum",
        ),
        widget("Jobs per minute", [[own, "JobsCompleted"], [own, "JobsFailed"]]),
        widget(
            "Audio seconds per second",
            [
                [{"expression": "audio / 60", "label": "audio s/s"}],
                [own, "AudioSeconds", {"id": "audio", "visible": False}],
            ],
        ),
    ]
    if ingest_names is not None:
        ingest_queue, ingest_dead_letters = ingest_names
        widgets.append(
            widget(
                "Ingest: S3 events waiting, in flight and dead-lettered",
                [
                    [sqs, "ApproximateNumberOfMessagesVisible", "QueueName", ingest_queue],
                    [sqs, "ApproximateNumberOfMessagesNotVisible", "QueueName", ingest_queue],
                    [sqs, "ApproximateNumberOfMessagesVisible", "QueueName", ingest_dead_letters],
                ],
                stat="Maximum",
            )
        )
    return json.dumps({"widgets": widgets})


class Monitoring(pulumi.ComponentResource):
    def __init__(
        self,
        name: str,
        region: str,
        queue_name: pulumi.Input[str],
        dead_letter_name: pulumi.Input[str],
        group_name: str,
        worker_log_group: str,
        alert_email: str | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("whisperq:index:Monitoring", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.name, self.region, self.group_name = name, region, group_name
        self.queue_name, self.dead_letter_name = queue_name, dead_letter_name
        self.topic = aws.sns.Topic(f"{name}-alarms", opts=child)
        # Without a subscriber the alarms go nowhere: a worker that keeps failing is replaced,
        # and paid for, again and again unnoticed. SNS mails a confirmation link first; the
        # subscription is pending (and delivers nothing) until it is followed.
        self.alert_subscription: aws.sns.TopicSubscription | None = None
        if alert_email:
            self.alert_subscription = aws.sns.TopicSubscription(
                f"{name}-alert-email",
                topic=self.topic.arn,
                protocol="email",
                endpoint=alert_email,
                opts=child,
            )
        # The workers' log (the CloudWatch agent ships it; the role may write, not create):
        # one per stack, with retention, and `pulumi destroy` removes it.
        self.worker_logs = aws.cloudwatch.LogGroup(
            f"{name}-workers",
            name=worker_log_group,
            retention_in_days=WORKER_LOG_RETENTION_DAYS,
            opts=child,
        )
        # Why a metric filter on the mark script's own line, not the group's
        # GroupTerminatingInstances: that one also counts every scale-in and spot
        # reclaim; this line is written only when an instance could not work. Its
        # blind spot: a boot that fails before the log agent is installed (the instance
        # then powers itself off and the group's activity history shows the replacement).
        self.unhealthy_filter = aws.cloudwatch.LogMetricFilter(
            f"{name}-marked-unhealthy",
            log_group_name=self.worker_logs.name,
            pattern=f'"{UNHEALTHY_LOG_MARK}"',
            metric_transformation={
                "name": UNHEALTHY_METRIC,
                "namespace": METRICS_NAMESPACE,
                "value": "1",
                "unit": "Count",
            },
            opts=child,
        )
        self.unhealthy_alarm = aws.cloudwatch.MetricAlarm(
            f"{name}-marked-unhealthy",
            alarm_description=(
                "A worker could not run (boot failed, or it kept failing) and its instance "
                f"was replaced: the workers' log group {worker_log_group} has why "
                f"(search for {UNHEALTHY_LOG_MARK}). Replacements boot, and cost, again "
                "until the cause is fixed."
            ),
            namespace=METRICS_NAMESPACE,
            metric_name=UNHEALTHY_METRIC,
            statistic="Sum",
            period=300,
            evaluation_periods=1,
            threshold=0,
            comparison_operator="GreaterThanThreshold",
            treat_missing_data="notBreaching",
            alarm_actions=[self.topic.arn],
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.unhealthy_filter]),
        )
        self.dead_letter_alarm = aws.cloudwatch.MetricAlarm(
            f"{name}-dead-letters",
            alarm_description="Jobs reached the dead-letter queue: `whisperq dlq` shows them.",
            namespace="AWS/SQS",
            metric_name="ApproximateNumberOfMessagesVisible",
            dimensions={"QueueName": dead_letter_name},
            statistic="Maximum",
            period=60,
            evaluation_periods=1,
            threshold=0,
            comparison_operator="GreaterThanThreshold",
            treat_missing_data="notBreaching",
            alarm_actions=[self.topic.arn],
            opts=child,
        )
        self.stale_backlog_alarm = aws.cloudwatch.MetricAlarm(
            f"{name}-stale-backlog",
            alarm_description="A job has waited over an hour: is the fleet scaling out?",
            namespace="AWS/SQS",
            metric_name="ApproximateAgeOfOldestMessage",
            dimensions={"QueueName": queue_name},
            statistic="Maximum",
            period=300,
            evaluation_periods=1,
            threshold=OLDEST_MESSAGE_ALARM_S,
            comparison_operator="GreaterThanThreshold",
            treat_missing_data="notBreaching",
            alarm_actions=[self.topic.arn],
            opts=child,
        )

    def add_dashboard(
        self, ingest_names: tuple[pulumi.Input[str], pulumi.Input[str]] | None = None
    ) -> None:
        """The dashboard, once the ingest route (made after this component: its alarm
        needs the topic) can name its queues: ``ingest_names`` (queue, dead-letter queue)."""
        region, group_name = self.region, self.group_name
        names = [self.queue_name, self.dead_letter_name, *(ingest_names or ())]
        self.dashboard = aws.cloudwatch.Dashboard(
            self.name,
            dashboard_name=group_name,
            dashboard_body=pulumi.Output.all(*names).apply(
                lambda got: dashboard_body(
                    region, got[0], got[1], group_name, (got[2], got[3]) if got[2:] else None
                )
            ),
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.dashboard_url = self.dashboard.dashboard_name.apply(
            lambda dashboard: (
                f"https://{region}.console.aws.amazon.com/cloudwatch/home"
                f"?region={region}#dashboards:name={dashboard}"
            )
        )
        self.register_outputs({"dashboard_url": self.dashboard_url})
