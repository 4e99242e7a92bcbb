"""The bucket: inputs, manifests and results (the S3 key contract in whisperq/keys.py)."""

from __future__ import annotations

import json

import pulumi
import pulumi_aws as aws

from whisperq.keys import INPUTS


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
        self, name: str, retain_inputs_days: int, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("whisperq:index:Storage", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.bucket = aws.s3.Bucket(name, force_destroy=False, opts=child)
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
                    "id": "abort-incomplete-uploads",
                    "status": "Enabled",
                    "filter": {"prefix": ""},
                    "abort_incomplete_multipart_upload": {"days_after_initiation": 2},
                },
            ],
            opts=child,
        )
        # Object events to EventBridge, so downstream systems can react to new results.
        aws.s3.BucketNotification(name, bucket=self.bucket.id, eventbridge=True, opts=child)
        self.register_outputs({"bucket": self.bucket.bucket})
