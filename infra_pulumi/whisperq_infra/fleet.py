"""The worker fleet: a launch template and a 100% spot Auto Scaling group, min 0, its types
weighted by what they run at once, and a termination lifecycle hook."""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence

import pulumi
import pulumi_aws as aws
from whisperq_infra.config import DeploymentConfig

from whisperq import defaults

# The group's termination hook (worker.env: WHISPERQ_LIFECYCLE_HOOK). Scale-in and capacity
# rebalancing wait in Terminating:Wait until the worker, which sees the instance's
# target-lifecycle-state in IMDS, has handed back its job and completed the action, or
# until the heartbeat runs out: then the group goes on (CONTINUE).
TERMINATION_HOOK = "whisperq-terminating"

# AutoScaling group metrics the dashboard and `whisperq status` read.
GROUP_METRICS = [
    "GroupDesiredCapacity",
    "GroupInServiceInstances",
    "GroupPendingInstances",
    "GroupTerminatingInstances",
    "GroupTotalInstances",
]


class Fleet(pulumi.ComponentResource):
    def __init__(
        self,
        name: str,
        config: DeploymentConfig,
        group_name: str,
        image_id: pulumi.Input[str],
        instance_weights: Mapping[str, int],
        vpc_id: pulumi.Input[str],
        subnet_ids: pulumi.Input[Sequence[str]],
        instance_profile_arn: pulumi.Input[str],
        user_data: pulumi.Input[str],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("whisperq:index:Fleet", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        # Workers only call out (S3, SQS, SSM); nothing calls in.
        self.security_group = aws.ec2.SecurityGroup(
            name,
            vpc_id=vpc_id,
            description="whisperq workers: no ingress",
            egress=[
                {
                    "protocol": "-1",
                    "from_port": 0,
                    "to_port": 0,
                    "cidr_blocks": ["0.0.0.0/0"],
                    "ipv6_cidr_blocks": ["::/0"],
                }
            ],
            opts=child,
        )
        # Where the workers' address comes from: the subnets' own setting (the default VPC
        # gives each a public IPv4 address, billed by the hour), or none
        # (whisperq:associatePublicIp false: private subnets with a NAT gateway or VPC
        # endpoints). The security group then rides on the interface, as EC2 requires.
        network: dict[str, object] = {"vpc_security_group_ids": [self.security_group.id]}
        if not config.associate_public_ip:
            network = {
                "network_interfaces": [
                    {
                        "device_index": 0,
                        "associate_public_ip_address": "false",
                        "security_groups": [self.security_group.id],
                        "delete_on_termination": "true",
                    }
                ]
            }
        self.launch_template = aws.ec2.LaunchTemplate(
            name,
            image_id=image_id,
            iam_instance_profile={"arn": instance_profile_arn},
            **network,  # type: ignore[arg-type]
            # IMDSv2 only; hop limit 1: the worker runs on the host, not in a container.
            metadata_options={
                "http_endpoint": "enabled",
                "http_tokens": "required",
                "http_put_response_hop_limit": 1,
            },
            block_device_mappings=[
                {
                    "device_name": "/dev/sda1",
                    "ebs": {
                        "volume_size": config.root_volume_gb,
                        "volume_type": "gp3",
                        "encrypted": "true",
                        "delete_on_termination": "true",
                    },
                }
            ],
            user_data=pulumi.Output.from_input(user_data).apply(
                lambda text: base64.b64encode(text.encode()).decode()
            ),
            tag_specifications=[
                {"resource_type": "instance", "tags": {"Name": f"{group_name}-worker"}},
                {"resource_type": "volume", "tags": {"Name": f"{group_name}-worker"}},
            ],
            update_default_version=True,
            opts=child,
        )
        self.group = aws.autoscaling.Group(
            name,
            name=group_name,
            min_size=0,
            max_size=config.max_instances,
            desired_capacity=0,
            vpc_zone_identifiers=subnet_ids,
            capacity_rebalance=True,
            enabled_metrics=GROUP_METRICS,
            metrics_granularity="1Minute",
            mixed_instances_policy={
                "instances_distribution": {
                    "on_demand_base_capacity": 0,
                    "on_demand_percentage_above_base_capacity": 0,  # 100% spot
                    "spot_allocation_strategy": "price-capacity-optimized",
                },
                "launch_template": {
                    "launch_template_specification": {
                        "launch_template_id": self.launch_template.id,
                        "version": "$Latest",
                    },
                    # Weighted: desired capacity counts units of the smallest type, so the
                    # scaler's jobs per instance hold for a c6a.2xlarge (2 units) too.
                    "overrides": [
                        {"instance_type": kind, "weighted_capacity": str(weight)}
                        for kind, weight in instance_weights.items()
                    ],
                },
            },
            # The scaler owns the desired capacity; `pulumi up` must not reset it.
            opts=pulumi.ResourceOptions(parent=self, ignore_changes=["desiredCapacity"]),
        )
        self.termination_hook = aws.autoscaling.LifecycleHook(
            f"{name}-terminating",
            name=TERMINATION_HOOK,
            autoscaling_group_name=self.group.name,
            lifecycle_transition="autoscaling:EC2_INSTANCE_TERMINATING",
            heartbeat_timeout=defaults.TERMINATION_HOOK_SECONDS,
            default_result="CONTINUE",
            opts=child,
        )
        self.register_outputs({"group": self.group.name})
