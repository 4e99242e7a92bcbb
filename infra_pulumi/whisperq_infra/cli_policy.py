"""The least a person (or a CI job) who runs the ``whisperq`` CLI against a stack needs:
``submit``, ``status`` (and ``wait``), ``results``, ``retry`` and ``dlq [--redrive]``.

Attach it to the IAM user, group or role that runs the CLI (``pulumi stack output
cliUserPolicy``). It grants nothing on the fleet but reading its size, no reading of the
uploaded audio, and no receiving of jobs: only the workers take jobs off the queue.
``tests/infra/test_rehearsal.py`` runs each of those commands with exactly this policy on an
IAM-enforcing moto server and checks every call they make against it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from whisperq.keys import BATCHES, ERROR_SUFFIX, FILES, INPUTS, RESULTS


def cli_user_policy(
    bucket_arn: str,
    queue_arn: str,
    dead_letter_arn: str,
    group_arn: str,
    ingest_queue_arns: Sequence[str] = (),
    event_bus_arn: str | None = None,
) -> dict[str, Any]:
    """The CLI user's identity policy for one stack's bucket, queues and group.

    ``group_arn`` is accepted so that every resource of the stack is named in one place;
    DescribeAutoScalingGroups has no resource-level permissions, so it is granted on "*".
    ``ingest_queue_arns``: the ingest route's queue and dead-letter queue, when the stack
    has one (status counts their messages; nothing else touches them). ``event_bus_arn``:
    the stack's whisperq:eventBus, where `status` and `wait` put "whisperq batch finished"
    when they see a batch finished before any worker did.
    """
    del group_arn  # see the docstring: Describe* cannot be narrowed to the group
    optional: list[dict[str, Any]] = []  # what this stack has
    if ingest_queue_arns:
        optional.append(
            {
                # status: S3 events waiting to become jobs, and those that kept failing.
                "Sid": "CountIngestEvents",
                "Effect": "Allow",
                "Action": ["sqs:GetQueueAttributes"],
                "Resource": list(ingest_queue_arns),
            }
        )
    if event_bus_arn:
        optional.append(
            {
                # status / wait: a finished batch's event, by whoever creates its done.json
                "Sid": "AnnounceFinishedBatches",
                "Effect": "Allow",
                "Action": ["events:PutEvents"],
                "Resource": [event_bus_arn],
            }
        )
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                # submit: the audio, in parallel (multipart uploads are PutObject too).
                "Sid": "UploadInputs",
                "Effect": "Allow",
                "Action": ["s3:PutObject"],
                "Resource": [f"{bucket_arn}/{INPUTS}/*"],
            },
            {
                # status / results / retry / submit: batch.json, file entries, transcripts,
                # error records (retry's HeadObject is authorised as GetObject).
                "Sid": "ReadBatchRecordsAndResults",
                "Effect": "Allow",
                "Action": ["s3:GetObject"],
                "Resource": [f"{bucket_arn}/{BATCHES}/*", f"{bucket_arn}/{RESULTS}/*"],
            },
            {
                # submit: batch.json (conditional create) and one entry per file.
                "Sid": "WriteBatchRecords",
                "Effect": "Allow",
                "Action": ["s3:PutObject"],
                "Resource": [f"{bucket_arn}/{BATCHES}/*"],
            },
            {
                # submit again with another duration: the file's old entry goes;
                # retry: a failed file's error record goes once its job is re-queued.
                "Sid": "ReplaceEntriesAndClearErrorRecords",
                "Effect": "Allow",
                "Action": ["s3:DeleteObject"],
                "Resource": [
                    f"{bucket_arn}/{BATCHES}/*/{FILES}/*",
                    f"{bucket_arn}/{RESULTS}/*{ERROR_SUFFIX}",
                ],
            },
            {
                # Listings of batches/ and results/. Not narrowed with an s3:prefix
                # condition: S3 answers a GET of a missing key (a new batch's batch.json,
                # which submit reads first) with 404 only to a caller with s3:ListBucket
                # on the bucket, and there is no prefix in that check, so a condition
                # turns every new batch's 404 into 403 (AccessDenied) and submit fails.
                "Sid": "ListBucket",
                "Effect": "Allow",
                "Action": ["s3:ListBucket"],
                "Resource": [bucket_arn],
            },
            {
                # submit / retry / dlq --redrive put jobs on the queue (SendMessageBatch is
                # authorised as SendMessage); status counts its messages.
                "Sid": "QueueJobs",
                "Effect": "Allow",
                "Action": ["sqs:SendMessage", "sqs:GetQueueAttributes"],
                "Resource": [queue_arn],
            },
            {
                # status counts dead letters; dlq peeks (receive, then visibility 0) and
                # --redrive / retry delete what they moved back to the queue.
                "Sid": "WorkTheDeadLetterQueue",
                "Effect": "Allow",
                "Action": [
                    "sqs:GetQueueAttributes",
                    "sqs:ReceiveMessage",
                    "sqs:ChangeMessageVisibility",
                    "sqs:DeleteMessage",
                ],
                "Resource": [dead_letter_arn],
            },
            {
                # status: the fleet's size, and why it runs fewer than it wants (the
                # scaling activities). Describe calls have no resource-level permissions.
                "Sid": "ReadFleetSize",
                "Effect": "Allow",
                "Action": [
                    "autoscaling:DescribeAutoScalingGroups",
                    "autoscaling:DescribeScalingActivities",
                ],
                "Resource": "*",
            },
            *optional,
        ],
    }
