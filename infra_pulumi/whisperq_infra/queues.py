"""The job queue and its dead-letter queue."""

from __future__ import annotations

import json

import pulumi
import pulumi_aws as aws

DAY = 24 * 3600
FOURTEEN_DAYS = 14 * DAY  # SQS's maximum retention
# SQS keeps a dead-lettered message's first enqueue time: with equal retention, a job that
# failed on day 13 would vanish from the dead-letter queue a day later. Jobs wait at most
# four days (the stale-backlog alarm fires after an hour); dead letters then stay ten days
# or more.
JOB_RETENTION_SECONDS = 4 * DAY
DEAD_LETTER_RETENTION_SECONDS = FOURTEEN_DAYS


def redrive_policy(dead_letter_arn: str, max_receive_count: int) -> str:
    return json.dumps(
        {"deadLetterTargetArn": dead_letter_arn, "maxReceiveCount": max_receive_count}
    )


def queue_pair(
    name: str,
    visibility_timeout: int,
    max_receive_count: int,
    opts: pulumi.ResourceOptions,
    **queue_args: object,
) -> tuple[aws.sqs.Queue, aws.sqs.Queue]:
    """A queue (SSE, kept JOB_RETENTION_SECONDS) and its dead-letter queue (kept longer),
    moving a message there after ``max_receive_count`` receives: (queue, dead letter)."""
    dead_letter = aws.sqs.Queue(
        f"{name}-dlq",
        message_retention_seconds=DEAD_LETTER_RETENTION_SECONDS,
        sqs_managed_sse_enabled=True,
        opts=opts,
    )
    queue = aws.sqs.Queue(
        name,
        visibility_timeout_seconds=visibility_timeout,
        message_retention_seconds=JOB_RETENTION_SECONDS,
        sqs_managed_sse_enabled=True,  # S3 and EventBridge can send to SSE-SQS queues too
        redrive_policy=dead_letter.arn.apply(lambda arn: redrive_policy(arn, max_receive_count)),
        opts=opts,
        **queue_args,
    )
    return queue, dead_letter


class Queues(pulumi.ComponentResource):
    def __init__(
        self,
        name: str,
        visibility_timeout: int,
        max_receive_count: int,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("whisperq:index:Queues", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        # Modest visibility on purpose: the worker's heartbeat extends it while a job runs,
        # so a dead worker's job is back within this many seconds.
        self.queue, self.dead_letter = queue_pair(
            name, visibility_timeout, max_receive_count, child, receive_wait_time_seconds=20
        )
        self.register_outputs({"queue_url": self.queue.url, "dlq_url": self.dead_letter.url})
