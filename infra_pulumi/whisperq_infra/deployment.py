"""Everything `pulumi up` creates, composed from the components, and what preview checks
against the account first: which image the workers boot (and that it bakes the configured
model), which instance types the subnets' zones offer."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pulumi
import pulumi_aws as aws
from whisperq_infra.config import ConfigError, DeploymentConfig, capacity_weights
from whisperq_infra.fleet import TERMINATION_HOOK, Fleet
from whisperq_infra.iam import METRICS_NAMESPACE, WorkerIdentity, worker_log_group
from whisperq_infra.ingest import IngestRoute
from whisperq_infra.monitoring import Monitoring
from whisperq_infra.queues import Queues
from whisperq_infra.scaling import QueueScaler
from whisperq_infra.storage import Storage
from whisperq_infra.userdata import read_bundle, render_user_data
from whisperq_infra.wheel import WheelError, ensure_wheel

from whisperq import defaults, keys

DIST_DIR = Path(__file__).resolve().parents[2] / "dist"  # `make wheel` writes here
# Stock images when no whisperq image was built (the provisioning script runs at boot).
STOCK_IMAGES = {
    "cpu": ("099720109477", "ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-amd64-server-*"),
    "gpu": ("amazon", "Deep Learning Base OSS Nvidia Driver GPU AMI (Ubuntu 24.04) *"),
}
# What the EC2 provider answers when a lookup matches no image (anything else is an error).
NO_IMAGE = "returned no results"


@dataclass(frozen=True)
class WorkerImage:
    """The image the workers boot: ``source`` is "baked" (a whisperq image built by ami/ in
    this account and region), "configured" (whisperq:amiId) or "stock" (Ubuntu / Deep
    Learning Base: ami/provision.sh installs everything at every boot); ``model`` what it
    bakes (its `model` tag; the stack's model on a stock image)."""

    id: str
    source: str
    model: str | None

    @property
    def baked(self) -> bool:
        return self.source != "stock"


def _newest_image(owners: list[str], filters: list[dict]) -> aws.ec2.AwaitableGetAmiResult | None:
    try:
        return aws.ec2.get_ami(most_recent=True, owners=owners, filters=filters)
    except Exception as error:  # the provider's invoke error carries its message only
        if NO_IMAGE in str(error):
            return None
        raise


def build_image_command(config: DeploymentConfig, region: str) -> str:
    """The commands that build the image this stack looks for (docs/deploy.md, "Build the worker
    image"); Packer's model defaults to the stack's per compute kind."""
    default = config.model == defaults.MODEL[config.compute]
    model = "" if default else f" -var model={config.model}"
    return (
        f"make wheel && packer init ami/ && packer build -var compute={config.compute} "
        f"-var region={region}{model} ami/"
    )


def find_image(config: DeploymentConfig, region: str, warnings: list[str]) -> WorkerImage:
    """The configured image; else the newest whisperq image of this compute kind and model
    built by ami/ in this account and region; else a stock image that is provisioned at
    every boot (with a warning). An image of another model stops preview: every boot would
    download the configured one, or the workers would run another."""
    if config.ami_id:
        image = aws.ec2.get_ami(filters=[{"name": "image-id", "values": [config.ami_id]}])
        compute = (image.tags or {}).get("compute", config.compute)
        if compute != config.compute:
            raise ConfigError(
                f"whisperq:amiId {config.ami_id} is a {compute} image (its compute tag), but "
                f"whisperq:compute is {config.compute}"
            )
        tagged = (image.tags or {}).get("model")
        if tagged is not None and tagged != config.model:
            raise ConfigError(
                f"whisperq:amiId {config.ami_id} bakes model {tagged!r} (its model tag), but "
                f"whisperq:model is {config.model!r}: set whisperq:model to {tagged!r}, or "
                f"build an image of {config.model!r}: {build_image_command(config, region)}"
            )
        if tagged is None:
            warnings.append(
                f"whisperq:amiId {config.ami_id} has no `model` tag: cannot check that it "
                f"bakes {config.model!r} (images built by ami/ have one)"
            )
        return WorkerImage(config.ami_id, "configured", tagged)
    name = {"name": "name", "values": [f"whisperq-{config.compute}-*"]}
    compute = {"name": "tag:compute", "values": [config.compute]}
    model = {"name": "tag:model", "values": [config.model]}
    baked = _newest_image(["self"], [name, compute, model])
    if baked is not None:
        return WorkerImage(baked.id, "baked", config.model)
    other = _newest_image(["self"], [name, compute])
    if other is not None:
        tagged = (other.tags or {}).get("model", "?")
        raise ConfigError(
            f"The whisperq-{config.compute}-* images in {region} bake another model "
            f"(the newest, {other.id}: {tagged!r}) than whisperq:model {config.model!r}: "
            f"workers would download {config.model!r} at every boot. Build one: "
            f"{build_image_command(config, region)} - or set whisperq:model to {tagged!r}."
        )
    owner, pattern = STOCK_IMAGES[config.compute]
    stock = aws.ec2.get_ami(
        most_recent=True, owners=[owner], filters=[{"name": "name", "values": [pattern]}]
    )
    warnings.append(
        f"No whisperq-{config.compute}-* image of model {config.model!r} in {region}: workers "
        f"boot the stock image {stock.id} and run ami/provision.sh at every boot (minutes, "
        f"not about 90 s: apt, the Python environment, the model from the Hugging Face hub). "
        f"Images are regional: build one here with {build_image_command(config, region)}"
    )
    return WorkerImage(stock.id, "stock", config.model)


def offered_instance_types(
    types: Sequence[str], subnet_ids: Sequence[str], warnings: list[str]
) -> list[str]:
    """The configured types that the subnets' availability zones offer, in order; those
    dropped are named in a warning (a type offered nowhere would be a dead spot pool).
    Preview stops when none is left."""
    found = {aws.ec2.get_subnet(id=subnet).availability_zone for subnet in subnet_ids}
    zones = sorted(zone for zone in found if zone)
    offerings = aws.ec2.get_instance_type_offerings(
        location_type="availability-zone",
        filters=[
            {"name": "instance-type", "values": list(types)},
            {"name": "location", "values": zones},
        ],
    )
    offered = set(offerings.instance_types or [])
    kept = [name for name in types if name in offered]
    dropped = [name for name in types if name not in offered]
    if not kept:
        raise ConfigError(
            f"None of the instance types ({', '.join(types)}) is offered in the subnets' "
            f"zones ({', '.join(zones)}): set whisperq:instanceTypes to types this region "
            "offers (aws ec2 describe-instance-type-offerings --location-type "
            "availability-zone)"
        )
    if dropped:
        warnings.append(
            f"Instance types not offered in the subnets' zones ({', '.join(zones)}), left out "
            f"of the group: {', '.join(dropped)}"
        )
    return kept


class Deployment(pulumi.ComponentResource):
    def __init__(
        self, name: str, config: DeploymentConfig, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("whisperq:index:Deployment", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.config = config
        self.warnings: list[str] = []  # also logged: `pulumi preview` shows them
        self.region = aws.get_region().region
        account = aws.get_caller_identity().account_id
        stack = pulumi.get_stack()
        group_name = f"{name}-{stack}-workers"
        self.group_arn = group_arn = (
            f"arn:aws:autoscaling:{self.region}:{account}:autoScalingGroup:*:"
            f"autoScalingGroupName/{group_name}"
        )
        self.log_group_name = worker_log_group(stack, name)
        # whisperq:eventBus, where workers and the CLI put "whisperq batch finished"
        self.event_bus_arn = (
            f"arn:aws:events:{self.region}:{account}:event-bus/{config.event_bus}"
            if config.event_bus
            else None
        )

        self.storage = Storage(
            f"{name}-data", config.retain_inputs_days, config.force_destroy, opts=child
        )
        self.queues = Queues(
            f"{name}-jobs", config.visibility_timeout, config.max_receive_count, opts=child
        )
        self.identity = WorkerIdentity(
            f"{name}-worker",
            bucket_arn=self.storage.bucket.arn,
            queue_arn=self.queues.queue.arn,
            group_arn=group_arn,
            log_group_arn=f"arn:aws:logs:{self.region}:{account}:log-group:{self.log_group_name}",
            region=self.region,
            account=account,
            event_bus=config.event_bus,
            opts=child,
        )

        vpc_id = config.vpc_id or aws.ec2.get_vpc(default=True).id
        subnet_ids = (
            list(config.subnet_ids)
            or aws.ec2.get_subnets(filters=[{"name": "vpc-id", "values": [vpc_id]}]).ids
        )
        if not subnet_ids:
            raise ConfigError(f"VPC {vpc_id} has no subnets: set whisperq:subnetIds")
        # Private subnets (whisperq:associatePublicIp false): S3 through a gateway endpoint
        # on their route tables, free and off the NAT gateway (docs/deploy.md, "Network").
        self.s3_endpoint: aws.ec2.VpcEndpoint | None = None
        if config.s3_endpoint_route_tables:
            self.s3_endpoint = aws.ec2.VpcEndpoint(
                f"{name}-s3",
                vpc_id=vpc_id,
                service_name=f"com.amazonaws.{self.region}.s3",
                vpc_endpoint_type="Gateway",
                route_table_ids=list(config.s3_endpoint_route_tables),
                opts=child,
            )
        self.instance_types = offered_instance_types(
            config.instance_types, subnet_ids, self.warnings
        )
        self.instance_weights = capacity_weights(self.instance_types, config.compute)
        self.image = find_image(config, self.region, self.warnings)
        bundle, wheel_uri = None, pulumi.Output.from_input("")
        if not self.image.baked:
            # A stock image: bring the wheel and the image's files, provision at boot.
            try:
                wheel, built = ensure_wheel(DIST_DIR)
            except WheelError as error:
                raise ConfigError(
                    f"No whisperq-{config.compute}-* image in this account and region, and "
                    f"no wheel to install at boot: {error} (boots then take minutes), or "
                    f"build an image with ami/, or set whisperq:amiId."
                ) from None
            if built:
                self.warnings.append(f"Built {wheel.name} for the stock image's boot")
            if not config.associate_public_ip:
                self.warnings.append(
                    "whisperq:associatePublicIp is false and workers boot a stock image: "
                    "every boot downloads packages (apt, PyPI, the Hugging Face hub), which "
                    "private subnets reach only through a NAT gateway. Build an image "
                    f"instead: {build_image_command(config, self.region)}"
                )
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
        for warning in self.warnings:
            pulumi.log.warn(warning, resource=self)

        # worker.env: where the deployment is; what the image is (model, device, compute
        # type, graces) is the image's own /etc/whisperq/image.env, which comes first in
        # the unit: the two share no name (tests/infra/test_deploy_consistency.py).
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
                    "visibility_timeout": str(config.visibility_timeout),
                    "autoscaling_group": group_name,
                    "lifecycle_hook": TERMINATION_HOOK,
                    "metrics_namespace": METRICS_NAMESPACE,
                    "sqs_wait_seconds": "20",
                }
                # "whisperq batch finished" goes there (whisperq:eventBus)
                | ({"event_bus": config.event_bus} if config.event_bus else {}),
                bundle,
                {"compute": config.compute, "model": config.model, "wheel": values[3]},
                log_group=self.log_group_name,
            )
        )
        self.fleet = Fleet(
            f"{name}-fleet",
            config,
            group_name=group_name,
            image_id=self.image.id,
            instance_weights=self.instance_weights,
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
            worker_log_group=self.log_group_name,
            alert_email=config.alert_email,
            opts=child,
        )
        # S3 events -> ingest queue -> ingest Lambda -> jobs (whisperq:ingest, default on).
        self.ingest: IngestRoute | None = None
        if config.ingest.enabled:
            self.ingest = IngestRoute(
                f"{name}-ingest",
                config.ingest,
                function_name=f"{name}-{stack}-ingest",
                bucket=self.storage.bucket,
                job_queue=self.queues.queue,
                account=account,
                region=self.region,
                alarm_topic_arn=self.monitoring.topic.arn,
                event_bus=config.event_bus,
                event_bus_arn=self.event_bus_arn,
                opts=child,
            )
            self.storage.notify(self.ingest.queue.arn, depends_on=[self.ingest.queue_policy])
            self.monitoring.add_dashboard((self.ingest.queue.name, self.ingest.dead_letter.name))
        else:
            self.storage.notify()
            self.monitoring.add_dashboard()
        self.register_outputs({})
