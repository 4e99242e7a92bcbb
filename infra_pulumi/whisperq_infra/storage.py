"""The bucket: inputs, manifests and results (the S3 key contract in whisperq/keys.py)."""

from __future__ import annotations

import json
from collections.abc import Sequence

import pulumi
import pulumi_aws as aws

from whisperq import keys
from whisperq.keys import INCOMING, INPUTS


def deny_insecure_transport(bucket_arn: str) -> str:
    """Bucket policy: refuse any request that is not over TLS."""
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "DenyInsecureTransport",
                    "Effect": "Deny",
                    "Principal": "*",
                    "Action": "s3:*",
                    "Resource": [bucket_arn, f"{bucket_arn}/*"],
                    "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                }
            ],
        }
    )


class Storage(pulumi.ComponentResource):
    def __init__(
        self,
        name: str,
        retain_inputs_days: int,
        force_destroy: bool = False,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("whisperq:index:Storage", name, None, opts)
        self._child_name = name
        child = pulumi.ResourceOptions(parent=self)
        # whisperq:forceDestroy (default false): `pulumi destroy` refuses while the bucket
        # holds objects, since results are data; docs/deploy.md ("Taking it down") has the way out.
        self.bucket = aws.s3.Bucket(name, force_destroy=force_destroy, opts=child)
        aws.s3.BucketPublicAccessBlock(
            name,
            bucket=self.bucket.id,
            block_public_acls=True,
            block_public_policy=True,
            ignore_public_acls=True,
            restrict_public_buckets=True,
            opts=child,
        )
        aws.s3.BucketOwnershipControls(
            name,
            bucket=self.bucket.id,
            rule={"object_ownership": "BucketOwnerEnforced"},
            opts=child,
        )
        aws.s3.BucketServerSideEncryptionConfiguration(
            name,
            bucket=self.bucket.id,
            rules=[
                {
                    "apply_server_side_encryption_by_default": {"sse_algorithm": "aws:kms"},
                    "bucket_key_enabled": True,
                }
            ],
            opts=child,
        )
        aws.s3.BucketPolicy(
            name,
            bucket=self.bucket.id,
            policy=self.bucket.arn.apply(deny_insecure_transport),
            opts=child,
        )
        aws.s3.BucketLifecycleConfiguration(
            name,
            bucket=self.bucket.id,
            rules=[
                {
                    "id": "expire-inputs",
                    "status": "Enabled",
                    "filter": {"prefix": f"{INPUTS}/"},
                    "expiration": {"days": retain_inputs_days},
                },
                {
                    # ingested recordings are copied into inputs/; the originals go too
                    "id": "expire-incoming",
                    "status": "Enabled",
                    "filter": {"prefix": f"{INCOMING}/"},
                    "expiration": {"days": retain_inputs_days},
                },
                {
                    "id": "abort-incomplete-uploads",
                    "status": "Enabled",
                    "filter": {"prefix": ""},
                    "abort_incomplete_multipart_upload": {"days_after_initiation": 2},
                },
            ],
            opts=child,
        )
        self.register_outputs({"bucket": self.bucket.bucket})

    def notify(
        self,
        incoming_queue_arn: pulumi.Input[str] | None = None,
        depends_on: Sequence[pulumi.Resource] = (),
    ) -> aws.s3.BucketNotification:
        """The bucket's notification configuration (S3 keeps one per bucket, so it is
        declared once, here, when the ingest route's queue exists): every object event to
        EventBridge, so downstream systems can react to new results; and objects created
        under incoming/ to the ingest queue. S3 tests the queue when the configuration is
        written, so it depends on the queue's policy (``depends_on``)."""
        queues = []
        if incoming_queue_arn is not None:
            queues.append(
                {
                    "queue_arn": incoming_queue_arn,
                    "events": ["s3:ObjectCreated:*"],
                    "filter_prefix": keys.incoming_prefix(),
                }
            )
        self.notification = aws.s3.BucketNotification(
            self._child_name,
            bucket=self.bucket.id,
            eventbridge=True,
            queues=queues or None,
            opts=pulumi.ResourceOptions(parent=self, depends_on=list(depends_on)),
        )
        return self.notification
