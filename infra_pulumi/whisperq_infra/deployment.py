"""Everything `pulumi up` creates, composed from the components."""

from __future__ import annotations

from pathlib import Path

import pulumi
import pulumi_aws as aws
from whisperq_infra.config import ConfigError, DeploymentConfig
from whisperq_infra.fleet import Fleet
from whisperq_infra.iam import METRICS_NAMESPACE, WORKER_LOG_GROUP, WorkerIdentity
from whisperq_infra.ingest import IngestRoute
from whisperq_infra.monitoring import Monitoring
from whisperq_infra.queues import Queues
from whisperq_infra.scaling import QueueScaler
from whisperq_infra.storage import Storage
from whisperq_infra.userdata import read_bundle, render_user_data

from whisperq import keys

DIST_DIR = Path(__file__).resolve().parents[2] / "dist"  # `make wheel` writes here
# Stock images when no whisperq image was built (the provisioning script runs at boot).
STOCK_IMAGES = {
    "cpu": ("099720109477", "ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-amd64-server-*"),
    "gpu": ("amazon", "Deep Learning Base OSS Nvidia Driver GPU AMI (Ubuntu 24.04) *"),
}


def find_image(config: DeploymentConfig) -> tuple[str, bool]:
    """(image id, baked): the configured image, else the newest whisperq image built by
    ami/ in this account, else a stock image that needs provisioning at boot."""
    if config.ami_id:
        return config.ami_id, True
    try:
        baked = aws.ec2.get_ami(
            most_recent=True,
            owners=["self"],
            filters=[
                {"name": "name", "values": [f"whisperq-{config.compute}-*"]},
                {"name": "tag:compute", "values": [config.compute]},
            ],
        )
        return baked.id, True
    except Exception:
        owner, pattern = STOCK_IMAGES[config.compute]
        stock = aws.ec2.get_ami(
            most_recent=True, owners=[owner], filters=[{"name": "name", "values": [pattern]}]
        )
        return stock.id, False


class Deployment(pulumi.ComponentResource):
    def __init__(
        self, name: str, config: DeploymentConfig, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("whisperq:index:Deployment", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.config = config
        self.region = aws.get_region().region
        account = aws.get_caller_identity().account_id
        group_name = f"{name}-{pulumi.get_stack()}-workers"
        group_arn = (
            f"arn:aws:autoscaling:{self.region}:{account}:autoScalingGroup:*:"
            f"autoScalingGroupName/{group_name}"
        )

        self.storage = Storage(f"{name}-data", config.retain_inputs_days, opts=child)
        self.queues = Queues(
            f"{name}-jobs", config.visibility_timeout, config.max_receive_count, opts=child
        )
        self.identity = WorkerIdentity(
            f"{name}-worker",
            bucket_arn=self.storage.bucket.arn,
            queue_arn=self.queues.queue.arn,
            group_arn=group_arn,
            log_group_arn=f"arn:aws:logs:{self.region}:{account}:log-group:{WORKER_LOG_GROUP}",
            opts=child,
        )

        vpc_id = config.vpc_id or aws.ec2.get_vpc(default=True).id
        subnet_ids = (
            list(config.subnet_ids)
            or aws.ec2.get_subnets(filters=[{"name": "vpc-id", "values": [vpc_id]}]).ids
        )
        if not subnet_ids:
            raise ConfigError(f"VPC {vpc_id} has no subnets: set whisperq:subnetIds")
        image_id, baked = find_image(config)
        bundle, wheel_uri = None, pulumi.Output.from_input("")
        if not baked:
            # A stock image: bring the wheel and the image's files, provision at boot.
            wheels = sorted(DIST_DIR.glob("whisperq-*.whl"), key=lambda path: path.stat().st_mtime)
            if not wheels:
                raise ConfigError(
                    f"No whisperq-{config.compute}-* image in this account, and no wheel to "
                    "install at boot: run `make wheel` (boots then take minutes), or build an "
                    "image with ami/, or set whisperq:amiId."
                )
            wheel = wheels[-1]
            self.wheel = aws.s3.BucketObject(
                f"{name}-wheel",
                bucket=self.storage.bucket.id,
                key=keys.artifact_key(wheel.name),
                source=pulumi.FileAsset(str(wheel)),
                opts=child,
            )
            bundle = read_bundle()
            wheel_uri = pulumi.Output.concat(
                "s3://", self.storage.bucket.bucket, "/", self.wheel.key
            )

        user_data = pulumi.Output.all(
            self.storage.bucket.bucket,
            self.queues.queue.url,
            self.queues.dead_letter.url,
            wheel_uri,
        ).apply(
            lambda values: render_user_data(
                {
                    "bucket": values[0],
                    "queue_url": values[1],
                    "dlq_url": values[2],
                    "region": self.region,
                    "model": config.model,
                    "device": "cuda" if config.compute == "gpu" else "cpu",
                    "compute_type": config.compute_type,
                    "visibility_timeout": str(config.visibility_timeout),
                    "autoscaling_group": group_name,
                    "metrics_namespace": METRICS_NAMESPACE,
                    "sqs_wait_seconds": "20",
                },
                bundle,
                {"compute": config.compute, "model": config.model, "wheel": values[3]},
            )
        )
        self.fleet = Fleet(
            f"{name}-fleet",
            config,
            group_name=group_name,
            image_id=image_id,
            vpc_id=vpc_id,
            subnet_ids=subnet_ids,
            instance_profile_arn=self.identity.profile.arn,
            user_data=user_data,
            opts=child,
        )
        self.scaler = QueueScaler(
            f"{name}-scaler",
            config,
            queue_url=self.queues.queue.url,
            queue_arn=self.queues.queue.arn,
            group_name=group_name,
            group_arn=group_arn,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.fleet]),
        )
        self.monitoring = Monitoring(
            f"{name}-monitoring",
            self.region,
            queue_name=self.queues.queue.name,
            dead_letter_name=self.queues.dead_letter.name,
            group_name=group_name,
            opts=child,
        )
        # S3 events -> ingest queue -> ingest Lambda -> jobs (whisperq:ingest, default on).
        self.ingest: IngestRoute | None = None
        if config.ingest.enabled:
            self.ingest = IngestRoute(
                f"{name}-ingest",
                config.ingest,
                function_name=f"{name}-{pulumi.get_stack()}-ingest",
                bucket=self.storage.bucket,
                job_queue=self.queues.queue,
                account=account,
                region=self.region,
                alarm_topic_arn=self.monitoring.topic.arn,
                opts=child,
            )
            self.storage.notify(self.ingest.queue.arn, depends_on=[self.ingest.queue_policy])
        else:
            self.storage.notify()
        self.register_outputs({})
