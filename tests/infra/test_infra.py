"""The Pulumi program under Pulumi's own mocks (no engine or cloud is reachable here):
what `pulumi up` would create, for compute=cpu and compute=gpu."""

from __future__ import annotations

import json
import re
import subprocess
from collections import defaultdict
from pathlib import Path

import pulumi
import pytest
from pulumi_mocks import ACCOUNT, REGION, ZONES, AwsMocks, auto_name, built_image
from whisperq_infra.config import ConfigError, parse_config
from whisperq_infra.iam import worker_policy
from whisperq_infra.scaling import scaler_policy
from whisperq_infra.userdata import render_user_data

from whisperq import defaults

# the bucket's and queues' names, as AWS auto-names them
BUCKET = auto_name("whisperq-data")
JOBS, DEAD_LETTERS = auto_name("whisperq-jobs"), auto_name("whisperq-jobs-dlq")
INGEST, INGEST_DEAD_LETTERS = auto_name("whisperq-ingest"), auto_name("whisperq-ingest-dlq")


def deploy(raw: dict, images_built: bool = True, **mock_options):
    from whisperq_infra.deployment import Deployment

    mocks = AwsMocks(images_built, **mock_options)
    pulumi.runtime.set_mocks(mocks, project="whisperq", stack="test", preview=False)
    deployment = Deployment("whisperq", parse_config(raw))
    # resolved once the last resource of each component is registered
    done = pulumi.Output.all(
        deployment.fleet.group.name,
        deployment.fleet.termination_hook.id,
        deployment.scaler.permission.id,
        deployment.monitoring.dashboard_url,
        deployment.monitoring.stale_backlog_alarm.id,
        deployment.monitoring.unhealthy_alarm.id,
        deployment.storage.bucket.arn,
        deployment.identity.profile.arn,
    )
    return mocks, deployment, done


@pulumi.runtime.test
def test_cpu_fleet_is_spot_only_imdsv2_encrypted_and_closed():
    mocks, deployment, done = deploy({})

    def check(_):
        group = mocks.one("aws:autoscaling/group:Group")
        assert group["name"] == "whisperq-test-workers"
        assert (group["minSize"], group["maxSize"], group["desiredCapacity"]) == (0, 10, 0)
        assert group["capacityRebalance"] is True
        assert group["vpcZoneIdentifiers"] == ["subnet-a", "subnet-b", "subnet-c"]
        assert "GroupInServiceInstances" in group["enabledMetrics"]
        policy = group["mixedInstancesPolicy"]
        distribution = policy["instancesDistribution"]
        assert distribution["onDemandBaseCapacity"] == 0
        assert distribution["onDemandPercentageAboveBaseCapacity"] == 0
        assert distribution["spotAllocationStrategy"] == "price-capacity-optimized"
        types = [o["instanceType"] for o in policy["launchTemplate"]["overrides"]]
        assert types[:4] == ["c6a.xlarge", "c6a.2xlarge", "c6i.xlarge", "c7a.xlarge"]
        assert 3 <= len(types) <= 5

        template = mocks.one("aws:ec2/launchTemplate:LaunchTemplate")
        assert template["imageId"] == "ami-whisperq-baked"
        assert template["metadataOptions"]["httpTokens"] == "required"
        assert template["metadataOptions"]["httpPutResponseHopLimit"] == 1
        (disk,) = template["blockDeviceMappings"]
        assert disk["ebs"]["encrypted"] == "true" and disk["ebs"]["volumeType"] == "gp3"
        assert disk["ebs"]["volumeSize"] == 30
        assert "keyName" not in template

        security_group = mocks.one("aws:ec2/securityGroup:SecurityGroup")
        assert not security_group.get("ingress")
        assert security_group["vpcId"] == "vpc-default"
        assert deployment.warnings == []  # a baked image of the model, every type offered

    return done.apply(check)


@pulumi.runtime.test
def test_types_are_weighted_by_what_they_run_at_once():
    """Item 8: desired capacity counts units of the smallest type, so "jobs per instance"
    holds for a c6a.2xlarge too (2 units); GPU types weigh by GPUs (one pool process each)."""
    mocks, deployment, done = deploy(
        {"instanceTypes": '["c6a.xlarge", "c6a.2xlarge", "m6a.xlarge"]'}
    )

    def check(_):
        overrides = mocks.one("aws:autoscaling/group:Group")["mixedInstancesPolicy"][
            "launchTemplate"
        ]["overrides"]
        assert [(o["instanceType"], o["weightedCapacity"]) for o in overrides] == [
            ("c6a.xlarge", "1"),
            ("c6a.2xlarge", "2"),
            ("m6a.xlarge", "1"),
        ]
        assert deployment.instance_weights == {"c6a.xlarge": 1, "c6a.2xlarge": 2, "m6a.xlarge": 1}

    return done.apply(check)


def test_capacity_weights_per_compute_kind():
    from whisperq_infra.config import capacity_weights

    assert capacity_weights(defaults.INSTANCE_TYPES["cpu"], "cpu") == {
        "c6a.xlarge": 1,
        "c6a.2xlarge": 2,
        "c6i.xlarge": 1,
        "c7a.xlarge": 1,
        "m6a.xlarge": 1,
    }
    # one GPU each: a g4dn.2xlarge's extra vCPUs do not transcribe faster
    assert set(capacity_weights(defaults.INSTANCE_TYPES["gpu"], "gpu").values()) == {1}
    assert capacity_weights(["g4dn.xlarge", "g4dn.12xlarge"], "gpu") == {
        "g4dn.xlarge": 1,
        "g4dn.12xlarge": 4,
    }
    # not in the table: by size; the unit is the smallest type
    assert capacity_weights(["c5.2xlarge", "c5.4xlarge", "c5.large"], "cpu") == {
        "c5.2xlarge": 4,
        "c5.4xlarge": 8,
        "c5.large": 1,
    }
    with pytest.raises(ConfigError, match=r"cannot weigh c5\.metal"):
        capacity_weights(["c5.metal"], "cpu")


@pulumi.runtime.test
def test_types_the_zones_do_not_offer_are_left_out_with_a_warning():
    """Item 6: a type offered in none of the subnets' zones would be a dead spot pool."""
    offered = {"c6a.xlarge", "c6i.xlarge", "m6a.xlarge"}
    mocks, deployment, done = deploy({}, offered=offered)

    def check(_):
        overrides = mocks.one("aws:autoscaling/group:Group")["mixedInstancesPolicy"][
            "launchTemplate"
        ]["overrides"]
        assert [o["instanceType"] for o in overrides] == ["c6a.xlarge", "c6i.xlarge", "m6a.xlarge"]
        (lookup,) = mocks.offering_lookups
        assert lookup["locationType"] == "availability-zone"
        assert {"name": "location", "values": sorted(ZONES.values())} in lookup["filters"]
        (warning,) = deployment.warnings
        assert "left out of the group: c6a.2xlarge, c7a.xlarge" in warning

    return done.apply(check)


def test_preview_stops_when_the_zones_offer_none_of_the_types():
    from whisperq_infra.deployment import Deployment

    pulumi.runtime.set_mocks(AwsMocks(offered=set()), project="whisperq", stack="t", preview=True)
    with pytest.raises(ConfigError, match=r"None of the instance types .* is offered"):
        Deployment("whisperq", parse_config({}))


@pulumi.runtime.test
def test_gpu_tier_types_disk_and_the_image_of_its_model():
    mocks, deployment, done = deploy({"compute": "gpu", "maxInstances": "3"})

    def check(_):
        group = mocks.one("aws:autoscaling/group:Group")
        overrides = group["mixedInstancesPolicy"]["launchTemplate"]["overrides"]
        assert [o["instanceType"] for o in overrides] == [
            "g4dn.xlarge",
            "g4dn.2xlarge",
            "g5.xlarge",
            "g6.xlarge",
        ]
        assert group["maxSize"] == 3
        template = mocks.one("aws:ec2/launchTemplate:LaunchTemplate")
        assert template["blockDeviceMappings"][0]["ebs"]["volumeSize"] == 80
        # the model, device and compute type are the image's (image.env), not worker.env's
        text = mocks.user_data()
        assert "WHISPERQ_MODEL" not in text and "WHISPERQ_DEVICE" not in text
        lookup = mocks.ami_lookups[0]
        assert lookup["owners"] == ["self"]
        assert {"name": "name", "values": ["whisperq-gpu-*"]} in lookup["filters"]
        assert {"name": "tag:model", "values": ["large-v3"]} in lookup["filters"]
        assert (deployment.image.source, deployment.image.model) == ("baked", "large-v3")

    return done.apply(check)


def test_an_image_of_another_model_stops_preview():
    """Item 3: the GPU default is large-v3; an image baking distil-large-v3 would have
    every GPU boot download ~3 GB (or run another model)."""
    from whisperq_infra.deployment import Deployment

    images = [built_image("gpu", "distil-large-v3", "ami-distil")]
    pulumi.runtime.set_mocks(AwsMocks(images=images), project="whisperq", stack="t", preview=True)
    with pytest.raises(ConfigError) as error:
        Deployment("whisperq", parse_config({"compute": "gpu"}))
    message = str(error.value)
    assert "ami-distil: 'distil-large-v3'" in message and "whisperq:model 'large-v3'" in message
    assert "packer build -var compute=gpu -var region=eu-west-1 ami/" in message
    # the stack's model named explicitly when it is not the default
    pulumi.runtime.set_mocks(AwsMocks(images=images), project="whisperq", stack="t", preview=True)
    with pytest.raises(
        ConfigError, match=re.escape("-var region=eu-west-1 -var model=tiny.en ami/")
    ):
        Deployment("whisperq", parse_config({"compute": "gpu", "model": "tiny.en"}))


@pulumi.runtime.test
def test_the_image_of_the_configured_model_is_picked():
    images = [built_image("cpu", "tiny.en", "ami-tiny"), built_image("cpu", image_id="ami-distil")]
    mocks, deployment, done = deploy({"model": "tiny.en"}, images=images)

    def check(_):
        assert mocks.one("aws:ec2/launchTemplate:LaunchTemplate")["imageId"] == "ami-tiny"
        assert deployment.image.model == "tiny.en"

    return done.apply(check)


@pulumi.runtime.test
def test_of_two_builds_of_the_model_the_newest_image_is_picked():
    """A rebuilt image does not replace the old one: the lookup must ask for the most recent
    (without it, the provider fails on a query with more than one result)."""
    images = [
        built_image("cpu", image_id="ami-older", created="2026-01-01T00:00:00.000Z"),
        built_image("cpu", image_id="ami-newer", created="2026-03-01T00:00:00.000Z"),
    ]
    mocks, deployment, done = deploy({}, images=images)

    def check(_):
        assert mocks.one("aws:ec2/launchTemplate:LaunchTemplate")["imageId"] == "ami-newer"
        assert (deployment.image.id, deployment.image.source) == ("ami-newer", "baked")

    return done.apply(check)


def test_a_configured_image_is_checked_by_its_model_tag():
    from whisperq_infra.deployment import Deployment

    images = [built_image("cpu", "tiny.en", "ami-0123")]
    pulumi.runtime.set_mocks(AwsMocks(images=images), project="whisperq", stack="t", preview=True)
    with pytest.raises(
        ConfigError, match=re.escape("whisperq:amiId ami-0123 bakes model 'tiny.en'")
    ):
        Deployment("whisperq", parse_config({"amiId": "ami-0123"}))
    pulumi.runtime.set_mocks(AwsMocks(images=images), project="whisperq", stack="t", preview=True)
    with pytest.raises(ConfigError, match=r"is a cpu image .* but whisperq:compute is gpu"):
        Deployment("whisperq", parse_config({"amiId": "ami-0123", "compute": "gpu"}))
    untagged = [{"id": "ami-mine", "name": "my-image", "tags": {}}]
    pulumi.runtime.set_mocks(AwsMocks(images=untagged), project="whisperq", stack="t", preview=True)
    deployment = Deployment("whisperq", parse_config({"amiId": "ami-mine"}))
    assert (deployment.image.id, deployment.image.source) == ("ami-mine", "configured")
    assert deployment.warnings == [
        "whisperq:amiId ami-mine has no `model` tag: cannot check that it bakes "
        "'small' (images built by ami/ have one)"
    ]


@pulumi.runtime.test
def test_bucket_is_private_encrypted_tls_only_and_expires_inputs_only():
    mocks, _, done = deploy({"retainInputsDays": "7"})

    def check(_):
        block = mocks.one("aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock")
        assert all(
            block[key]
            for key in (
                "blockPublicAcls",
                "blockPublicPolicy",
                "ignorePublicAcls",
                "restrictPublicBuckets",
            )
        )
        ownership = mocks.one("aws:s3/bucketOwnershipControls:BucketOwnershipControls")
        assert ownership["rule"]["objectOwnership"] == "BucketOwnerEnforced"
        sse = mocks.one(
            "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration"
        )
        assert sse["rules"][0]["applyServerSideEncryptionByDefault"]["sseAlgorithm"] == "aws:kms"
        (statement,) = json.loads(mocks.one("aws:s3/bucketPolicy:BucketPolicy")["policy"])[
            "Statement"
        ]
        assert statement["Effect"] == "Deny"
        assert statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
        rules = mocks.one("aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration")[
            "rules"
        ]
        expiring = [rule for rule in rules if "expiration" in rule]
        # uploaded audio and ingested originals expire; results, batches, artifacts do not
        assert expiring == [
            {
                "id": "expire-inputs",
                "status": "Enabled",
                "filter": {"prefix": "inputs/"},
                "expiration": {"days": 7},
            },
            {
                "id": "expire-incoming",
                "status": "Enabled",
                "filter": {"prefix": "incoming/"},
                "expiration": {"days": 7},
            },
        ]
        assert mocks.one("aws:s3/bucketNotification:BucketNotification")["eventbridge"] is True
        # item 14: destroy keeps a non-empty bucket unless asked
        assert mocks.one("aws:s3/bucket:Bucket")["forceDestroy"] is False

    return done.apply(check)


@pulumi.runtime.test
def test_force_destroy_is_an_explicit_choice():
    mocks, _, done = deploy({"forceDestroy": "true"})
    assert parse_config({}).force_destroy is False

    def check(_):
        assert mocks.one("aws:s3/bucket:Bucket")["forceDestroy"] is True

    return done.apply(check)


@pulumi.runtime.test
def test_queue_has_sse_long_polling_and_a_redrive_policy():
    mocks, _, done = deploy({"visibilityTimeout": "240", "maxReceiveCount": "8"})

    def check(_):
        queue = mocks.one("aws:sqs/queue:Queue", "whisperq-jobs")
        dead = mocks.one("aws:sqs/queue:Queue", "whisperq-jobs-dlq")
        assert queue["visibilityTimeoutSeconds"] == 240
        assert queue["receiveWaitTimeSeconds"] == 20
        assert queue["sqsManagedSseEnabled"] and dead["sqsManagedSseEnabled"]
        assert json.loads(queue["redrivePolicy"]) == {
            "deadLetterTargetArn": dead["arn"],
            "maxReceiveCount": 8,
        }
        assert "WHISPERQ_VISIBILITY_TIMEOUT=240" in mocks.user_data()
        # item 13: SQS keeps a dead letter's first enqueue time, so the dead-letter queue
        # must keep messages longer than the job queue (14 days is SQS's maximum)
        assert (queue["messageRetentionSeconds"], dead["messageRetentionSeconds"]) == (
            4 * 24 * 3600,
            14 * 24 * 3600,
        )

    return done.apply(check)


def worker_statements(mocks: AwsMocks) -> dict[str, dict]:
    return {s["Sid"]: s for s in mocks.policy("whisperq-worker")["Statement"]}


@pulumi.runtime.test
def test_worker_role_allows_only_what_a_worker_does():
    mocks, _, done = deploy({})
    bucket = f"arn:aws:s3:::{BUCKET}"
    group = (
        f"arn:aws:autoscaling:{REGION}:{ACCOUNT}:autoScalingGroup:*:"
        "autoScalingGroupName/whisperq-test-workers"
    )

    def check(_):
        by_sid = worker_statements(mocks)
        for statement in by_sid.values():
            actions = statement["Action"]
            assert all("*" not in action for action in actions), statement
            if statement["Resource"] == "*":
                assert statement["Sid"] in ("PublishOwnMetrics", "SessionManager"), statement
        assert by_sid["PublishOwnMetrics"]["Condition"] == {
            "StringEquals": {"cloudwatch:namespace": "whisperq"}
        }
        assert by_sid["ReadInputs"]["Resource"] == [f"{bucket}/inputs/*"]
        assert by_sid["WriteResults"]["Resource"] == [f"{bucket}/results/*"]
        assert by_sid["WorkTheQueue"]["Resource"] == [f"arn:aws:sqs:{REGION}:{ACCOUNT}:{JOBS}"]
        # issue 26, item 4: packing hands a job it cannot pack on as a new message (a
        # hand-back would count a receive towards the dead-letter queue): its queue only
        assert by_sid["HandOnJobsItCannotPack"] == {
            "Sid": "HandOnJobsItCannotPack",
            "Effect": "Allow",
            "Action": ["sqs:SendMessage"],
            "Resource": [f"arn:aws:sqs:{REGION}:{ACCOUNT}:{JOBS}"],
        }
        assert by_sid["ProtectOwnInstanceWhileBusy"]["Resource"] == [group]
        log_group = f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:/whisperq/test/workers"
        assert by_sid["ShipOwnLog"]["Resource"] == [log_group, f"{log_group}:*"]
        # item 12: the stack creates the log group and its retention, not the agent
        assert "logs:CreateLogGroup" not in by_sid["ShipOwnLog"]["Action"]
        assert "logs:PutRetentionPolicy" not in by_sid["ShipOwnLog"]["Action"]
        assert by_sid["AgentFindsLogGroups"] == {
            "Sid": "AgentFindsLogGroups",
            "Effect": "Allow",
            "Action": ["logs:DescribeLogGroups"],
            "Resource": [f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:*"],
        }
        # item 7 and 9: on its own group only
        assert by_sid["MarkOwnInstanceUnhealthy"]["Action"] == ["autoscaling:SetInstanceHealth"]
        assert by_sid["MarkOwnInstanceUnhealthy"]["Resource"] == [group]
        assert by_sid["CompleteOwnTerminationHook"]["Action"] == [
            "autoscaling:CompleteLifecycleAction"
        ]
        assert by_sid["CompleteOwnTerminationHook"]["Resource"] == [group]
        # item 11: unconditioned ListBucket on the bucket (S3's 404-vs-403 rule)
        assert by_sid["TellMissingInputsFromDenied"] == {
            "Sid": "TellMissingInputsFromDenied",
            "Effect": "Allow",
            "Action": ["s3:ListBucket"],
            "Resource": [bucket],
        }
        # item 10: Session Manager's minimal actions, no managed policy (which would read
        # every SSM parameter of the account)
        assert by_sid["SessionManager"]["Action"] == [
            "ssm:UpdateInstanceInformation",
            "ssmmessages:CreateControlChannel",
            "ssmmessages:CreateDataChannel",
            "ssmmessages:OpenControlChannel",
            "ssmmessages:OpenDataChannel",
        ]
        granted = {a for s in by_sid.values() for a in s["Action"]}
        assert not any(a.startswith("ssm:Get") for a in granted)
        assert not mocks.of_type("aws:iam/rolePolicyAttachment:RolePolicyAttachment")
        assert mocks.one("aws:iam/instanceProfile:InstanceProfile")

    return done.apply(check)


@pulumi.runtime.test
def test_workers_mark_finished_batches_and_announce_them_on_the_stacks_bus():
    """Issue 28: a worker reads a batch's done.json and batch.json (not its entries), creates
    done.json, and puts the "batch finished" event on whisperq:eventBus ("default" unless
    set; the user data tells the worker)."""
    bucket = f"arn:aws:s3:::{BUCKET}"
    mocks, _, done = deploy({})

    def check(_):
        by_sid = worker_statements(mocks)
        assert by_sid["ReadBatchEnds"]["Resource"] == [
            f"{bucket}/batches/*/done.json",
            f"{bucket}/batches/*/batch.json",
            f"{bucket}/batches/*/manifest.json",
        ]
        assert by_sid["MarkFinishedBatches"]["Action"] == ["s3:PutObject"]
        assert by_sid["MarkFinishedBatches"]["Resource"] == [f"{bucket}/batches/*/done.json"]
        assert by_sid["AnnounceFinishedBatches"] == {
            "Sid": "AnnounceFinishedBatches",
            "Effect": "Allow",
            "Action": ["events:PutEvents"],
            "Resource": [f"arn:aws:events:{REGION}:{ACCOUNT}:event-bus/default"],
        }
        assert "WHISPERQ_EVENT_BUS=default" in mocks.user_data().splitlines()

    return done.apply(check)


@pulumi.runtime.test
def test_without_an_event_bus_workers_put_no_events():
    mocks, _, done = deploy({"eventBus": "none"})

    def check(_):
        assert "AnnounceFinishedBatches" not in worker_statements(mocks)
        assert "MarkFinishedBatches" in worker_statements(mocks)  # done.json all the same
        assert "WHISPERQ_EVENT_BUS" not in mocks.user_data()

    return done.apply(check)


@pytest.mark.parametrize("value", ["arn:aws:events:eu-west-1:1:event-bus/x", "a b", "x" * 257])
def test_an_event_bus_that_is_no_bus_name_stops_preview(value):
    with pytest.raises(ConfigError, match="whisperq:eventBus must be an EventBridge bus name"):
        parse_config({"eventBus": value})


def test_the_worker_policys_actions_exist_in_aws():
    """Every action of the worker's policy is an API of its service (botocore's models),
    but Session Manager's: the SSM agent's own APIs (UpdateInstanceInformation, the
    ssmmessages channels) are in no SDK; they are AWS's documented minimal policy."""
    import botocore.session
    from whisperq_infra.iam import SESSION_MANAGER_ACTIONS, worker_policy

    session = botocore.session.get_session()
    prefixes = {"cloudwatch": "cloudwatch", "logs": "logs", "autoscaling": "autoscaling"}
    prefixes |= {"s3": "s3", "sqs": "sqs", "events": "events"}
    policy = worker_policy("arn:aws:s3:::b", "q", "g", "lg", "eu-west-1", ACCOUNT, "default")
    for statement in policy["Statement"]:
        for action in statement["Action"]:
            service, _, operation = action.partition(":")
            if action in SESSION_MANAGER_ACTIONS:
                continue
            model = session.get_service_model(prefixes[service])
            if action == "s3:ListBucket":
                operation = "ListObjectsV2"  # the permission ListObjects(V2) needs
            assert operation in model.operation_names, action


@pulumi.runtime.test
def test_termination_hook_waits_for_the_worker_to_hand_back():
    """Item 9: capacity rebalancing and scale-in go through a termination lifecycle hook
    the worker sees (IMDS target-lifecycle-state) and completes; its name is in worker.env."""
    mocks, _, done = deploy({})

    def check(_):
        hook = mocks.one("aws:autoscaling/lifecycleHook:LifecycleHook")
        assert hook["autoscalingGroupName"] == "whisperq-test-workers"
        assert hook["lifecycleTransition"] == "autoscaling:EC2_INSTANCE_TERMINATING"
        assert hook["defaultResult"] == "CONTINUE"
        # time for the running job's grace after a notice, within a spot notice's two minutes
        assert hook["heartbeatTimeout"] > defaults.SPOT_GRACE_SECONDS
        assert hook["heartbeatTimeout"] <= defaults.SPOT_NOTICE_SECONDS
        assert f"WHISPERQ_LIFECYCLE_HOOK={hook['name']}" in mocks.user_data().splitlines()

    return done.apply(check)


@pulumi.runtime.test
def test_scaler_lambda_runs_the_formula_every_minute():
    mocks, _, done = deploy({"jobsPerInstance": "6", "maxInstances": "20", "idleMinutes": "15"})

    def check(_):
        function = mocks.one("aws:lambda/function:Function", "whisperq-scaler")
        assert function["handler"] == "handler.handler"
        variables = function["environment"]["variables"]
        assert variables["JOBS_PER_INSTANCE"] == "6"
        assert variables["MAX_INSTANCES"] == "20"
        assert variables["IDLE_MINUTES"] == "15"
        assert variables["GROUP_NAME"] == "whisperq-test-workers"
        assert variables["QUEUE_URL"].endswith(f"/{JOBS}")
        rule = mocks.one("aws:cloudwatch/eventRule:EventRule")
        assert rule["scheduleExpression"] == "rate(1 minute)"
        assert mocks.one("aws:lambda/permission:Permission")["principal"] == "events.amazonaws.com"

    return done.apply(check)


@pulumi.runtime.test
def test_alarms_and_dashboard():
    mocks, _, done = deploy({})

    def check(_):
        alarms = mocks.by_name("aws:cloudwatch/metricAlarm:MetricAlarm")
        dead = alarms["whisperq-monitoring-dead-letters"]
        assert (dead["metricName"], dead["threshold"], dead["comparisonOperator"]) == (
            "ApproximateNumberOfMessagesVisible",
            0,
            "GreaterThanThreshold",
        )
        assert dead["dimensions"] == {"QueueName": DEAD_LETTERS}
        stale = alarms["whisperq-monitoring-stale-backlog"]
        assert stale["metricName"] == "ApproximateAgeOfOldestMessage"
        body = json.loads(mocks.one("aws:cloudwatch/dashboard:Dashboard")["dashboardBody"])
        titles = [widget["properties"]["title"] for widget in body["widgets"]]
        assert titles == [
            "Backlog (waiting + running) and dead letters",
            "Instances",
            "Jobs per minute",
            "Audio seconds per second",
            "Ingest: S3 events waiting, in flight and dead-lettered",
        ]
        # issue 26, item 9: the ingest queue and its dead-letter queue are on it
        ingest = body["widgets"][-1]["properties"]["metrics"]
        assert [metric[1:] for metric in ingest] == [
            ["ApproximateNumberOfMessagesVisible", "QueueName", INGEST],
            ["ApproximateNumberOfMessagesNotVisible", "QueueName", INGEST],
            ["ApproximateNumberOfMessagesVisible", "QueueName", INGEST_DEAD_LETTERS],
        ]
        # no alertEmail: the topic has no subscriber (docs/deploy.md says to set one)
        assert not mocks.of_type("aws:sns/topicSubscription:TopicSubscription")

    return done.apply(check)


@pulumi.runtime.test
def test_without_the_ingest_route_the_dashboard_has_no_ingest_widget():
    mocks, _, done = deploy({"ingest": "false"})

    def check(_):
        body = json.loads(mocks.one("aws:cloudwatch/dashboard:Dashboard")["dashboardBody"])
        assert not [w for w in body["widgets"] if "Ingest" in w["properties"]["title"]]

    return done.apply(check)


@pulumi.runtime.test
def test_the_alert_email_subscribes_to_the_alarm_topic():
    """Issue 26, item 8: without a subscriber a replacement loop goes unnoticed."""
    mocks, _, done = deploy({"alertEmail": "ops@example.com"})

    def check(_):
        subscription = mocks.one("aws:sns/topicSubscription:TopicSubscription")
        topic = mocks.one("aws:sns/topic:Topic")
        assert (subscription["protocol"], subscription["endpoint"]) == ("email", "ops@example.com")
        assert subscription["topic"] == topic["arn"]
        alarms = mocks.by_name("aws:cloudwatch/metricAlarm:MetricAlarm")
        assert {alarm["alarmActions"][0] for alarm in alarms.values()} == {topic["arn"]}

    return done.apply(check)


@pulumi.runtime.test
def test_workers_in_private_subnets_get_no_public_address_and_s3_a_gateway_endpoint():
    """Issue 26, item 8: a public IPv4 address is billed by the hour; in private subnets
    the workers reach S3 through a gateway endpoint on the route tables given."""
    subnets = {"subnet-p1": "eu-west-1a", "subnet-p2": "eu-west-1b"}
    mocks, deployment, done = deploy(
        {
            "vpcId": "vpc-private",
            "subnetIds": '["subnet-p1", "subnet-p2"]',
            "associatePublicIp": "false",
            "s3EndpointRouteTableIds": '["rtb-0123456789abcdef0"]',
        },
        zones=subnets,
    )

    def check(_):
        template = mocks.one("aws:ec2/launchTemplate:LaunchTemplate")
        (security_group,) = mocks.by_name("aws:ec2/securityGroup:SecurityGroup")
        (interface,) = template["networkInterfaces"]
        assert interface["associatePublicIpAddress"] == "false"
        assert interface["deviceIndex"] == 0
        assert interface["securityGroups"] == [f"{security_group}-id"]  # the mocks' ids
        # EC2 takes the security groups on the interface or the template, not both
        assert not template.get("vpcSecurityGroupIds")
        group = mocks.one("aws:autoscaling/group:Group")
        assert group["vpcZoneIdentifiers"] == ["subnet-p1", "subnet-p2"]
        endpoint = mocks.one("aws:ec2/vpcEndpoint:VpcEndpoint")
        assert endpoint["vpcId"] == "vpc-private"
        assert endpoint["serviceName"] == f"com.amazonaws.{REGION}.s3"
        assert endpoint["vpcEndpointType"] == "Gateway"
        assert endpoint["routeTableIds"] == ["rtb-0123456789abcdef0"]
        assert deployment.warnings == []

    return done.apply(check)


@pulumi.runtime.test
def test_by_default_the_subnets_decide_the_address_and_no_endpoint_is_made():
    mocks, _, done = deploy({})

    def check(_):
        template = mocks.one("aws:ec2/launchTemplate:LaunchTemplate")
        assert template["vpcSecurityGroupIds"] and not template.get("networkInterfaces")
        assert not mocks.of_type("aws:ec2/vpcEndpoint:VpcEndpoint")

    return done.apply(check)


def test_private_subnets_on_a_stock_image_warn_that_boots_need_a_nat_gateway(tmp_path, monkeypatch):
    import whisperq_infra.deployment as deployment_module

    (tmp_path / "whisperq-0.1.0-py3-none-any.whl").write_bytes(b"wheel")
    monkeypatch.setattr(deployment_module, "DIST_DIR", tmp_path)
    pulumi.runtime.set_mocks(
        AwsMocks(images_built=False), project="whisperq", stack="t", preview=True
    )
    deployment = deployment_module.Deployment(
        "whisperq",
        parse_config({"vpcId": "vpc-1", "subnetIds": '["subnet-a"]', "associatePublicIp": "false"}),
    )
    (warning,) = [w for w in deployment.warnings if "associatePublicIp" in w]
    assert "NAT gateway" in warning and "packer build -var compute=cpu" in warning


@pulumi.runtime.test
def test_the_workers_log_group_is_the_stacks_and_instances_that_cannot_work_alarm():
    """Items 7 and 12: /whisperq/<stack>/workers with retention (destroy removes it; two
    stacks keep theirs apart), and an alarm on the mark script's line in it."""
    from whisperq_infra.monitoring import UNHEALTHY_LOG_MARK

    mocks, _, done = deploy({})

    def check(_):
        logs = mocks.by_name("aws:cloudwatch/logGroup:LogGroup")
        workers = logs["whisperq-monitoring-workers"]
        assert (workers["name"], workers["retentionInDays"]) == ("/whisperq/test/workers", 14)
        log_filter = mocks.one("aws:cloudwatch/logMetricFilter:LogMetricFilter")
        assert log_filter["logGroupName"] == "/whisperq/test/workers"
        assert log_filter["pattern"] == f'"{UNHEALTHY_LOG_MARK}"'
        metric = log_filter["metricTransformation"]
        alarms = mocks.by_name("aws:cloudwatch/metricAlarm:MetricAlarm")
        alarm = alarms["whisperq-monitoring-marked-unhealthy"]
        assert (alarm["namespace"], alarm["metricName"]) == (metric["namespace"], metric["name"])
        assert (alarm["statistic"], alarm["threshold"]) == ("Sum", 0)
        assert alarm["comparisonOperator"] == "GreaterThanThreshold"
        assert alarm["alarmActions"] == alarms["whisperq-monitoring-dead-letters"]["alarmActions"]
        # the agent ships to the same group (its configuration is in the user data)
        text = mocks.user_data()
        agent = json.loads(text.split("whisperq.json <<'WHISPERQ_FILE_EOF'\n")[1].split("\n")[0])
        entries = agent["logs"]["logs_collected"]["files"]["collect_list"]
        assert {entry["log_group_name"] for entry in entries} == {"/whisperq/test/workers"}
        assert all("retention_in_days" not in entry for entry in entries)

    return done.apply(check)


@pulumi.runtime.test
def test_without_a_baked_image_a_stock_image_is_provisioned_at_boot(tmp_path, monkeypatch):
    import whisperq_infra.deployment as deployment_module
    from whisperq_infra.userdata import bundle_in, read_bundle

    (tmp_path / "whisperq-0.1.0-py3-none-any.whl").write_bytes(b"wheel")
    monkeypatch.setattr(deployment_module, "DIST_DIR", tmp_path)
    mocks, deployment, done = deploy({}, images_built=False)

    def check(_):
        template = mocks.one("aws:ec2/launchTemplate:LaunchTemplate")
        assert template["imageId"] == "ami-stock"
        assert [lookup["owners"] for lookup in mocks.ami_lookups] == [
            ["self"],  # this model's image
            ["self"],  # any whisperq image of this compute kind (another model: an error)
            ["099720109477"],  # Canonical's Ubuntu
        ]
        artifact = mocks.one("aws:s3/bucketObject:BucketObject")
        assert artifact["key"] == "artifacts/whisperq-0.1.0-py3-none-any.whl"
        text = mocks.user_data()
        assert bundle_in(text) == read_bundle()  # provision.sh, the units, ...: as in ami/
        assert (
            "env WHISPERQ_COMPUTE=cpu WHISPERQ_MODEL=small "
            f"WHISPERQ_WHEEL=s3://{BUCKET}/artifacts/whisperq-0.1.0-py3-none-any.whl "
            "WHISPERQ_ON_FAILURE=/root/whisperq-ami/mark-unhealthy.sh "
            "bash /root/whisperq-ami/provision.sh"
        ) in text
        order = [text.index(part) for part in ("worker.env", "provision.sh", "systemctl enable")]
        assert order == sorted(order)
        # item 2: loud, at preview and in the outputs
        assert deployment.image.source == "stock"
        (warning,) = deployment.warnings
        assert "No whisperq-cpu-* image of model 'small' in eu-west-1" in warning
        assert "packer build -var compute=cpu -var region=eu-west-1 ami/" in warning

    return done.apply(check)


def test_without_an_image_the_program_builds_the_wheel_itself(monkeypatch, tmp_path):
    """Item 1: on a new checkout `pulumi up` works as README says: no image and no wheel,
    so the program runs `make wheel`'s command (here a stand-in) and ships what it built."""
    import whisperq_infra.deployment as deployment_module
    import whisperq_infra.wheel as wheel_module

    built = []

    def fake_build(dist, root):
        built.append((dist, root))
        (dist / "whisperq-0.1.0-py3-none-any.whl").write_bytes(b"fresh")

    monkeypatch.setattr(deployment_module, "DIST_DIR", tmp_path)
    monkeypatch.setattr(wheel_module, "run_build", fake_build)
    monkeypatch.setattr(
        deployment_module,
        "ensure_wheel",
        lambda dist: wheel_module.ensure_wheel(dist, build=fake_build),
    )
    pulumi.runtime.set_mocks(
        AwsMocks(images_built=False), project="whisperq", stack="t", preview=True
    )
    deployment = deployment_module.Deployment("whisperq", parse_config({}))
    assert built == [(tmp_path, wheel_module.REPO)]
    assert (
        deployment.warnings[-1]
        == "Built whisperq-0.1.0-py3-none-any.whl for the stock image's boot"
    )


def test_a_wheel_older_than_the_code_is_built_again(tmp_path):
    import os

    from whisperq_infra.wheel import ensure_wheel, newest_source, wheel_name

    (tmp_path / "pyproject.toml").write_text("")
    (tmp_path / "whisperq").mkdir()
    (tmp_path / "whisperq" / "keys.py").write_text("")
    dist = tmp_path / "dist"
    dist.mkdir()
    calls = []

    def build(out, root):
        calls.append(root)
        (out / wheel_name()).write_bytes(b"new")

    wheel, fresh = ensure_wheel(dist, tmp_path, build)  # none yet
    assert fresh and calls == [tmp_path]
    assert ensure_wheel(dist, tmp_path, build) == (wheel, False)  # up to date: kept
    old = newest_source(tmp_path) - 60
    os.utime(wheel, (old, old))  # the code changed after the build
    assert ensure_wheel(dist, tmp_path, build) == (wheel, True) and len(calls) == 2


def test_the_wheel_is_built_with_make_wheels_command():
    import sys

    from whisperq_infra.wheel import build_command

    makefile = (Path(__file__).parents[2] / "Makefile").read_text()
    assert "-m pip wheel --quiet --no-deps -w dist ." in makefile
    assert build_command(Path("dist"), Path("."))[1:] == [
        "-m",
        "pip",
        "wheel",
        "--quiet",
        "--no-deps",
        "-w",
        "dist",
        ".",
    ]
    assert build_command(Path("d"), Path("."))[0] == sys.executable  # the venv's


def test_without_image_and_no_buildable_wheel_preview_says_what_to_do(monkeypatch, tmp_path):
    import whisperq_infra.deployment as deployment_module
    from whisperq_infra.wheel import WheelError, ensure_wheel

    def failing_build(dist, root):
        raise WheelError("pip: no network")

    monkeypatch.setattr(deployment_module, "DIST_DIR", tmp_path)  # no wheel built
    monkeypatch.setattr(
        deployment_module, "ensure_wheel", lambda dist: ensure_wheel(dist, build=failing_build)
    )
    pulumi.runtime.set_mocks(
        AwsMocks(images_built=False), project="whisperq", stack="t", preview=True
    )
    with pytest.raises(ConfigError, match=r"pip: no network\): run `make wheel`"):
        deployment_module.Deployment("whisperq", parse_config({}))


# --- pure pieces -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"compute": "tpu"}, "whisperq:compute must be one of: cpu, gpu (got 'tpu')"),
        ({"maxInstances": "lots"}, "whisperq:maxInstances must be a whole number"),
        ({"maxInstances": "0"}, "whisperq:maxInstances must be between 1 and 1000"),
        ({"maxReceiveCount": "2"}, "whisperq:maxReceiveCount must be at least 5"),
        ({"instanceTypes": '["c6a xlarge"]'}, "whisperq:instanceTypes must list"),
        ({"compute": "gpu", "instanceTypes": "c6a.xlarge"}, "must be GPU types"),
        ({"subnetIds": '["subnet-1"]'}, "whisperq:subnetIds needs whisperq:vpcId"),
        ({"visibilityTimeout": "5"}, "whisperq:visibilityTimeout must be between 30"),
        ({"model": "s3://models/large-v3/"}, "whisperq:model: s3:// model prefixes are not"),
        ({"forceDestroy": "yes"}, "whisperq:forceDestroy must be true or false"),
        # issue 26, item 8
        ({"associatePublicIp": "no"}, "whisperq:associatePublicIp must be true or false"),
        (
            {"associatePublicIp": "false"},
            "whisperq:associatePublicIp false needs whisperq:vpcId and whisperq:subnetIds",
        ),
        (
            {"vpcId": "vpc-1", "s3EndpointRouteTableIds": '["rtb-1"]'},
            "whisperq:s3EndpointRouteTableIds must list route table ids",
        ),
        (
            {"s3EndpointRouteTableIds": '["rtb-0123456789abcdef0"]'},
            "whisperq:s3EndpointRouteTableIds needs whisperq:vpcId",
        ),
        ({"alertEmail": "ops"}, "whisperq:alertEmail must be one e-mail address"),
        ({"alertEmail": "a@b.com, c@d.com"}, "whisperq:alertEmail must be one e-mail address"),
    ],
)
def test_bad_config_names_the_key_and_what_is_allowed(raw, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_config(raw)


def test_config_defaults_and_overrides():
    config = parse_config({"compute": "cpu", "instanceTypes": "c7a.xlarge, c6a.xlarge"})
    assert config.instance_types == ("c7a.xlarge", "c6a.xlarge")
    assert (config.max_instances, config.jobs_per_instance, config.max_receive_count) == (10, 4, 5)
    assert parse_config({}).compute == "cpu"
    config = parse_config({})
    assert (config.associate_public_ip, config.s3_endpoint_route_tables) == (True, ())
    assert config.alert_email is None
    assert parse_config({"alertEmail": "ops+whisperq@example.co.uk"}).alert_email == (
        "ops+whisperq@example.co.uk"
    )


def test_every_config_key_is_read_from_the_stack():
    """A key parse_config knows but load_config does not ask Pulumi for would be ignored."""
    import inspect

    from whisperq_infra import config as config_module

    source = inspect.getsource(config_module.parse_config) + inspect.getsource(
        config_module.parse_ingest
    )
    used = set(re.findall(r'\(raw, "(\w+)"', source))
    used |= set(re.findall(r'raw\.get\("(\w+)"\)', source))
    assert used == set(config_module.KEYS)


def test_user_data_is_valid_bash_and_quotes_values(tmp_path):
    from whisperq_infra.userdata import read_bundle

    text = render_user_data(
        {"bucket": "b", "autoscaling_group": "it's; rm -rf /"},
        read_bundle(),
        {"wheel": "s3://b/w.whl"},
        log_group="/whisperq/t/workers",
    )
    script = tmp_path / "user-data.sh"
    script.write_text(text)
    subprocess.run(["bash", "-n", str(script)], check=True)
    subprocess.run(["shellcheck", str(script)], check=True)
    env_lines = text.split("<<'WHISPERQ_ENV'\n")[1].split("\nWHISPERQ_ENV")[0].splitlines()
    assert env_lines == ["WHISPERQ_BUCKET=b", "WHISPERQ_AUTOSCALING_GROUP='it'\"'\"'s; rm -rf /'"]
    assert text.rstrip().endswith("systemctl enable --now whisperq-worker.service")
    assert len(text.encode()) < 16 * 1024  # EC2's user data limit


def test_the_user_data_limit_is_16383_bytes_raw():
    """Issue 26, item 9: EC2 takes 16 KB of base64-encoded user data: base64 of 16,384 bytes
    is 21,848 characters, over the API's limit; 16,383 bytes (21,844) fit."""
    import base64

    from whisperq_infra.userdata import USER_DATA_LIMIT

    assert USER_DATA_LIMIT == 16_383
    assert len(base64.b64encode(b"x" * USER_DATA_LIMIT)) <= 21_847
    assert len(base64.b64encode(b"x" * (USER_DATA_LIMIT + 1))) > 21_847
    base = len(render_user_data({"bucket": "b"}).encode()) - 1  # all but the value
    fits = render_user_data({"bucket": "b" * (USER_DATA_LIMIT - base)})
    assert len(fits.encode()) == USER_DATA_LIMIT
    with pytest.raises(ValueError, match=r"user data is 16384 bytes; EC2 takes 16383"):
        render_user_data({"bucket": "b" * (USER_DATA_LIMIT - base + 1)})


def test_policies_have_no_wildcard_actions():
    for policy in (
        worker_policy(
            "arn:aws:s3:::b", "arn:aws:sqs:r:1:q", "arn:aws:autoscaling:r:1:g", "arn:aws:logs:r:1:g"
        ),
        scaler_policy("arn:aws:sqs:r:1:q", "arn:aws:autoscaling:r:1:g", "arn:aws:logs:r:1:lg"),
    ):
        for statement in policy["Statement"]:
            assert all("*" not in action for action in statement["Action"])


@pulumi.runtime.test
def test_the_program_reads_stack_config_and_exports_what_the_cli_needs():
    import runpy

    mocks = AwsMocks()
    pulumi.runtime.set_mocks(mocks, project="whisperq", stack="dev", preview=False)
    pulumi.runtime.set_all_config({"whisperq:compute": "gpu", "whisperq:maxInstances": "2"})
    try:
        program = runpy.run_path(str(Path(__file__).parents[2] / "infra_pulumi" / "__main__.py"))
    finally:
        pulumi.runtime.set_all_config({})
    deployment = program["deployment"]
    assert deployment.config.compute == "gpu" and deployment.config.max_instances == 2
    assert (deployment.image.source, deployment.log_group_name) == (
        "baked",
        "/whisperq/dev/workers",
    )

    def check(values):
        queue_url, dlq_url, group, ingest_prefix = values
        assert queue_url.endswith(f"/{JOBS}") and dlq_url.endswith(f"/{DEAD_LETTERS}")
        assert group == "whisperq-dev-workers"
        assert ingest_prefix.startswith("s3://") and ingest_prefix.endswith("/incoming/")

    return pulumi.Output.all(
        deployment.queues.queue.url,
        deployment.queues.dead_letter.url,
        deployment.fleet.group.name,
        deployment.ingest.ingest_prefix,
    ).apply(check)


def run_main(config: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict:
    """infra_pulumi/__main__.py under the mocks: its stack outputs, by name (values or
    Outputs, as `pulumi.export` was given them)."""
    import runpy

    exports: dict = {}
    monkeypatch.setattr(pulumi, "export", lambda name, value: exports.__setitem__(name, value))
    pulumi.runtime.set_mocks(AwsMocks(), project="whisperq", stack="dev", preview=False)
    pulumi.runtime.set_all_config(config)
    try:
        runpy.run_path(str(Path(__file__).parents[2] / "infra_pulumi" / "__main__.py"))
    finally:
        pulumi.runtime.set_all_config({})
    return exports


@pulumi.runtime.test
def test_config_from_stack_takes_the_ingest_queues_and_the_cli_policy_counts_them(monkeypatch):
    """Issue 26, item 9: `status` shows the ingest queue and its dead letters: the stack
    exports both URLs, `config from-stack` maps them to settings, and the CLI policy may
    read their attributes (and only that)."""
    from whisperq.settings import Settings
    from whisperq.stacks.from_stack import settings_from_outputs

    exports = run_main({}, monkeypatch)

    def check(outputs):
        settings = settings_from_outputs(outputs)
        assert settings["ingest_queue_url"].endswith(f"/{INGEST}")
        assert settings["ingest_dlq_url"].endswith(f"/{INGEST_DEAD_LETTERS}")
        assert settings["dlq_url"].endswith(f"/{DEAD_LETTERS}")
        Settings.model_validate(settings)  # every value is a setting's
        policy = json.loads(outputs["cliUserPolicy"])
        (ingest,) = [st for st in policy["Statement"] if st["Sid"] == "CountIngestEvents"]
        assert ingest["Action"] == ["sqs:GetQueueAttributes"]
        queues = [f"arn:aws:sqs:{REGION}:{ACCOUNT}:{n}" for n in (INGEST, INGEST_DEAD_LETTERS)]
        assert ingest["Resource"] == queues
        named = [r for st in policy["Statement"] for r in _as_list(st["Resource"])]
        assert sum(r in queues for r in named) == 2  # nothing else on the ingest queues

    return pulumi.Output.from_input(exports).apply(check)


@pulumi.runtime.test
def test_a_stack_without_the_ingest_route_exports_no_ingest_queues(monkeypatch):
    from whisperq.stacks.from_stack import settings_from_outputs

    exports = run_main({"whisperq:ingest": "false"}, monkeypatch)
    assert "ingestQueueUrl" not in exports and "ingestDlqUrl" not in exports

    def check(outputs):
        assert "ingest_dlq_url" not in settings_from_outputs(outputs)
        policy = json.loads(outputs["cliUserPolicy"])
        assert "CountIngestEvents" not in [st["Sid"] for st in policy["Statement"]]

    return pulumi.Output.from_input(exports).apply(check)


def _as_list(value):
    return value if isinstance(value, list) else [value]


# --- the S3-event ingest route -------------------------------------------------------------

INGEST_PREFIXES = {
    "support": {"channels": "split", "speakers": "agent,customer", "wordTimestamps": True},
    "sales": {"language": "de", "formats": ["txt"], "beamSize": 3},
}
EXTERNAL = {"externalBucket": "telephony-recordings", "externalPrefix": "calls/"}
KMS_KEY = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"


def deploy_ingest(raw: dict):
    """deploy(), resolved once the ingest route's last resources are registered too."""
    mocks, deployment, done = deploy(raw)
    ingest = deployment.ingest
    parts = [done, deployment.storage.notification.id]
    if ingest is not None:
        parts += [ingest.mapping.id, ingest.dead_letter_alarm.id, ingest.queue_policy.id]
        if ingest.target is not None:
            parts.append(ingest.target.id)
        if ingest.close_days_permission is not None:
            parts.append(ingest.close_days_permission.id)
    return mocks, deployment, pulumi.Output.all(*parts)


def ingest_statements(mocks: AwsMocks) -> list[dict]:
    return mocks.policy("whisperq-ingest")["Statement"]


@pytest.mark.parametrize("raw", [{}, EXTERNAL])
@pulumi.runtime.test
def test_ingest_route_own_bucket_notification_queue_lambda_and_alarm(raw):
    mocks, _, done = deploy_ingest(raw)
    queue_arn = f"arn:aws:sqs:{REGION}:{ACCOUNT}:{INGEST}"

    def check(_):
        notification = mocks.one("aws:s3/bucketNotification:BucketNotification")
        assert notification["eventbridge"] is True  # one configuration: both kept
        assert notification["queues"] == [
            {"queueArn": queue_arn, "events": ["s3:ObjectCreated:*"], "filterPrefix": "incoming/"}
        ]
        queue = mocks.one("aws:sqs/queue:Queue", "whisperq-ingest")
        dead = mocks.one("aws:sqs/queue:Queue", "whisperq-ingest-dlq")
        function = mocks.one("aws:lambda/function:Function", "whisperq-ingest")
        assert queue["sqsManagedSseEnabled"] and dead["sqsManagedSseEnabled"]
        assert dead["messageRetentionSeconds"] == 14 * 24 * 3600
        assert queue["messageRetentionSeconds"] < dead["messageRetentionSeconds"]
        assert json.loads(queue["redrivePolicy"]) == {
            "deadLetterTargetArn": dead["arn"],
            "maxReceiveCount": 5,
        }
        assert queue["visibilityTimeoutSeconds"] >= 6 * function["timeout"]  # AWS's advice

        (own, *external) = json.loads(mocks.one("aws:sqs/queuePolicy:QueuePolicy")["policy"])[
            "Statement"
        ]
        assert own["Principal"] == {"Service": "s3.amazonaws.com"}
        assert (own["Action"], own["Resource"]) == ("sqs:SendMessage", queue_arn)
        assert own["Condition"] == {
            "ArnEquals": {"aws:SourceArn": f"arn:aws:s3:::{BUCKET}"},
            "StringEquals": {"aws:SourceAccount": ACCOUNT},
        }
        assert len(external) == (1 if raw else 0)

        assert (function["runtime"], function["handler"]) == ("python3.12", "handler.handler")
        assert function["name"] == "whisperq-test-ingest"
        assert function["timeout"] == 120 and 512 <= function["memorySize"] <= 1024
        assert function["ephemeralStorage"] == {"size": 2048}
        # Issue 26, item 1: no reservation (a new account's limit is often 10, and Lambda
        # refuses one that leaves fewer than 10 unreserved: `pulumi up` would fail)
        assert "reservedConcurrentExecutions" not in function
        variables = function["environment"]["variables"]
        assert variables["WHISPERQ_BUCKET"] == BUCKET
        assert variables["WHISPERQ_QUEUE_URL"].endswith(f"/{JOBS}")
        assert variables["WHISPERQ_INGEST_QUEUE_URL"].endswith(f"/{INGEST}")
        source = (raw["externalBucket"], raw["externalPrefix"]) if raw else None
        assert (
            variables["WHISPERQ_INGEST_SOURCE_BUCKET"],
            variables["WHISPERQ_INGEST_PREFIX"],
        ) == (source or (BUCKET, "incoming/"))

        mapping = mocks.one("aws:lambda/eventSourceMapping:EventSourceMapping")
        assert mapping["eventSourceArn"] == queue_arn
        assert mapping["functionName"] == function["arn"]
        assert mapping["batchSize"] == 10
        assert mapping["functionResponseTypes"] == ["ReportBatchItemFailures"]
        # the event source limits concurrency instead (SQS: 2 to 1000)
        assert 2 <= mapping["scalingConfig"]["maximumConcurrency"] <= 10

        logs = mocks.by_name("aws:cloudwatch/logGroup:LogGroup")
        assert logs["whisperq-ingest"]["name"] == "/aws/lambda/whisperq-test-ingest"
        assert logs["whisperq-ingest"]["retentionInDays"] == 14
        alarms = mocks.by_name("aws:cloudwatch/metricAlarm:MetricAlarm")
        alarm = alarms["whisperq-ingest-dead-letters"]
        assert alarm["dimensions"] == {"QueueName": INGEST_DEAD_LETTERS}
        assert alarm["alarmActions"] == [
            alarms["whisperq-monitoring-dead-letters"]["alarmActions"][0]
        ]

    return done.apply(check)


@pulumi.runtime.test
def test_external_bucket_events_arrive_by_an_eventbridge_rule_and_are_only_read():
    mocks, deployment, done = deploy_ingest({**EXTERNAL, "externalKmsKey": KMS_KEY})
    queue_arn = f"arn:aws:sqs:{REGION}:{ACCOUNT}:{INGEST}"
    assert deployment.ingest.external_source == "s3://telephony-recordings/calls/"

    def check(_):
        rules = mocks.by_name("aws:cloudwatch/eventRule:EventRule")
        rule = rules["whisperq-ingest-external"]
        assert json.loads(rule["eventPattern"]) == {
            "source": ["aws.s3"],
            "detail-type": ["Object Created"],
            "detail": {
                "bucket": {"name": ["telephony-recordings"]},
                "object": {"key": [{"prefix": "calls/"}]},
            },
        }
        targets = mocks.by_name("aws:cloudwatch/eventTarget:EventTarget")
        target = targets["whisperq-ingest-external"]
        assert (target["rule"], target["arn"]) == (rule["name"], queue_arn)
        statements = json.loads(mocks.one("aws:sqs/queuePolicy:QueuePolicy")["policy"])["Statement"]
        events = statements[1]
        assert events["Principal"] == {"Service": "events.amazonaws.com"}
        assert events["Action"] == "sqs:SendMessage"
        assert events["Condition"] == {"ArnEquals": {"aws:SourceArn": rule["arn"]}}

        # Nothing on the external bucket but reading objects under its prefix.
        external = [
            s
            for s in ingest_statements(mocks)
            if any("telephony-recordings" in r for r in s["Resource"])
        ]
        assert external == [
            {
                "Sid": "ReadExternalSource",
                "Effect": "Allow",
                "Action": ["s3:GetObject"],
                "Resource": ["arn:aws:s3:::telephony-recordings/calls/*"],
            }
        ]
        (kms,) = [s for s in ingest_statements(mocks) if s["Action"] == ["kms:Decrypt"]]
        assert kms["Resource"] == [KMS_KEY]
        assert kms["Condition"] == {
            "StringEquals": {"kms:ViaService": f"s3.{REGION}.amazonaws.com"}
        }

    return done.apply(check)


@pulumi.runtime.test
def test_ingest_role_is_its_own_and_least_privilege():
    mocks, _, done = deploy_ingest({})
    bucket = f"arn:aws:s3:::{BUCKET}"

    def check(_):
        statements = ingest_statements(mocks)
        roles = [n for n, _ in mocks.of_type("aws:iam/role:Role")]
        assert "whisperq-ingest" in roles and "whisperq-worker" in roles
        granted: dict[str, set[str]] = defaultdict(set)
        for statement in statements:
            assert statement["Effect"] == "Allow"
            assert statement["Resource"] != "*" and "*" not in statement["Resource"]
            for action in statement["Action"]:
                assert "*" not in action, statement
                granted[action].update(statement["Resource"])
        assert granted["s3:GetObject"] == {
            f"{bucket}/incoming/*",
            f"{bucket}/inputs/*",
            f"{bucket}/batches/*",
        }
        assert granted["s3:PutObject"] == {
            f"{bucket}/inputs/*",
            f"{bucket}/batches/*",
            f"{bucket}/results/*.error.json",
        }
        assert granted["s3:DeleteObject"] == {f"{bucket}/batches/*/files/*"}
        assert granted["s3:ListBucket"] == {bucket}
        jobs = f"arn:aws:sqs:{REGION}:{ACCOUNT}:{JOBS}"
        assert [a for a, resources in granted.items() if jobs in resources] == ["sqs:SendMessage"]
        assert granted["sqs:ReceiveMessage"] == {f"arn:aws:sqs:{REGION}:{ACCOUNT}:{INGEST}"}
        log_group = f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:/aws/lambda/whisperq-test-ingest"
        assert granted["logs:PutLogEvents"] == {f"{log_group}:*"}
        assert set(granted) == {
            "s3:GetObject",
            "s3:PutObject",
            "s3:DeleteObject",
            "s3:ListBucket",
            "sqs:SendMessage",
            "sqs:ReceiveMessage",
            "sqs:DeleteMessage",
            "sqs:GetQueueAttributes",
            "sqs:ChangeMessageVisibility",
            "logs:CreateLogStream",
            "logs:PutLogEvents",
            # "whisperq batch finished" when a batch's last file was gone before ingest
            "events:PutEvents",
        }
        bus = f"arn:aws:events:{REGION}:{ACCOUNT}:event-bus/default"
        assert granted["events:PutEvents"] == {bus}
        function = mocks.one("aws:lambda/function:Function", "whisperq-ingest")
        assert function["environment"]["variables"]["WHISPERQ_EVENT_BUS"] == "default"
        # batches named {folder} never close by the clock: no schedule, no open marks
        rules = [n for n, _ in mocks.of_type("aws:cloudwatch/eventRule:EventRule")]
        assert not [n for n in rules if "close-days" in n]

    return done.apply(check)


@pulumi.runtime.test
def test_daily_batches_are_closed_by_a_schedule_of_the_ingest_lambda():
    """whisperq:ingestBatch with {date}: every 5 minutes EventBridge invokes the ingest
    Lambda, which closes the daily batches whose day is over (done.json, the event on the
    stack's bus), also once the fleet has scaled in; its role may write and remove the
    open marks and put that event, nothing more. Without {date}: no schedule."""
    mocks, _, done = deploy_ingest({"ingestBatch": "{folder}-{date}"})
    bucket = f"arn:aws:s3:::{BUCKET}"

    def check(_):
        (rule_name, rule), *others = [
            (n, r)
            for n, r in mocks.of_type("aws:cloudwatch/eventRule:EventRule")
            if "scheduleExpression" in r and "close-days" in n
        ]
        assert not others and rule["scheduleExpression"] == "rate(5 minutes)"
        (target,) = [
            t for n, t in mocks.of_type("aws:cloudwatch/eventTarget:EventTarget") if n == rule_name
        ]
        function = mocks.one("aws:lambda/function:Function", "whisperq-ingest")
        assert target["arn"] == function["arn"]
        permission = mocks.one("aws:lambda/permission:Permission", rule_name)
        assert permission["principal"] == "events.amazonaws.com"
        assert permission["sourceArn"] == rule["arn"]
        assert function["environment"]["variables"]["WHISPERQ_EVENT_BUS"] == "default"
        assert function["environment"]["variables"]["WHISPERQ_INGEST_BATCH"] == "{folder}-{date}"
        granted: dict[str, set[str]] = defaultdict(set)
        for statement in ingest_statements(mocks):
            for action in statement["Action"]:
                granted[action].update(statement["Resource"])
        assert f"{bucket}/open/*" in granted["s3:PutObject"]
        assert granted["s3:DeleteObject"] == {f"{bucket}/batches/*/files/*", f"{bucket}/open/*"}
        bus = f"arn:aws:events:{REGION}:{ACCOUNT}:event-bus/default"
        assert granted["events:PutEvents"] == {bus}

    return done.apply(check)


@pulumi.runtime.test
def test_ingest_prefixes_reach_the_lambda_as_full_option_dicts():
    from whisperq.schemas import TranscriptionOptions

    mocks, _, done = deploy_ingest(
        {"ingestPrefixes": json.dumps(INGEST_PREFIXES), "ingestDefaults": '{"vad": false}'}
    )

    def check(_):
        function = mocks.one("aws:lambda/function:Function", "whisperq-ingest")
        variables = function["environment"]["variables"]
        by_batch = json.loads(variables["WHISPERQ_INGEST_OPTIONS"])
        defaults = json.loads(variables["WHISPERQ_INGEST_DEFAULT_OPTIONS"])
        # every option (those a batch without rules or a vocabulary filter leaves out aside)
        everything = set(TranscriptionOptions().model_dump(mode="json"))
        assert set(by_batch) == {"support", "sales"}
        assert all(set(options) == everything for options in by_batch.values())
        assert set(defaults) == everything
        assert by_batch["support"] == TranscriptionOptions(
            channels="split", speakers=("agent", "customer"), word_timestamps=True, vad=False
        ).model_dump(mode="json")
        assert by_batch["sales"] == TranscriptionOptions(
            language="de", formats=("txt",), beam_size=3, vad=False
        ).model_dump(mode="json")
        assert defaults == TranscriptionOptions(vad=False).model_dump(mode="json")
        size = sum(len(k) + len(v) for k, v in variables.items())
        assert size < 4096  # Lambda's limit for the whole environment

    return done.apply(check)


@pulumi.runtime.test
def test_ingest_can_be_turned_off():
    mocks, deployment, done = deploy_ingest({"ingest": "false"})
    assert deployment.ingest is None

    def check(_):
        notification = mocks.one("aws:s3/bucketNotification:BucketNotification")
        assert notification["eventbridge"] is True and not notification.get("queues")
        assert [n for n, _ in mocks.of_type("aws:lambda/function:Function")] == ["whisperq-scaler"]
        assert "whisperq-ingest" not in [n for n, _ in mocks.of_type("aws:sqs/queue:Queue")]

    return done.apply(check)


def _imports(path: Path) -> set[str]:
    """Every module a file imports (absolute names), outside `if TYPE_CHECKING:` blocks."""
    import ast

    tree = ast.parse(path.read_text())
    skipped = {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for statement in node.body
        for inner in ast.walk(statement)
    }
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:  # inside whisperq/
                module = "whisperq" + (f".{module}" if module else "")
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


@pulumi.runtime.test
def test_the_ingest_zip_holds_every_module_its_code_imports_and_nothing_else_is_needed():
    import sys

    mocks, _, done = deploy_ingest({})
    repo = Path(__file__).parents[2]

    def check(_):
        code = mocks.one("aws:lambda/function:Function", "whisperq-ingest")["code"]
        assets = code.assets
        assert Path(assets["handler.py"].path) == repo / "infra_pulumi/ingest/handler.py"
        for name, asset in assets.items():
            assert Path(asset.path) == repo / name or name == "handler.py"
        assert {"whisperq/__init__.py", "whisperq/batches/ingest.py", "whisperq/keys.py"} <= set(
            assets
        )
        for name in assets:
            for module in _imports(Path(assets[name].path)):
                top = module.split(".")[0]
                if top == "whisperq":
                    as_file = module.replace(".", "/") + ".py"
                    if (repo / as_file).is_file():  # a module, not a name in one
                        assert as_file in assets, (name, module)
                else:
                    assert top in sys.stdlib_module_names or top in ("boto3", "botocore"), (
                        name,
                        module,
                    )
        assert "whisperq/schemas.py" not in assets  # pydantic is not in the Lambda

    return done.apply(check)


def test_the_zip_builder_refuses_imports_the_lambda_cannot_satisfy(tmp_path):
    from whisperq_infra.ingest import lambda_modules

    package = tmp_path / "whisperq"
    package.mkdir()
    (package / "__init__.py").write_text('__version__ = "0"\n')
    (package / "keys.py").write_text("from __future__ import annotations\nimport re\n")
    (package / "ingest.py").write_text(
        "from typing import TYPE_CHECKING\nfrom . import keys\nif TYPE_CHECKING:\n"
        "    import pydantic\n"
    )
    handler = tmp_path / "handler.py"
    handler.write_text("import boto3\nfrom whisperq import ingest, __version__\n")
    assert lambda_modules(handler, tmp_path) == [
        "whisperq",
        "whisperq.ingest",
        "whisperq.keys",
    ]

    (package / "keys.py").write_text("import pydantic\n")
    with pytest.raises(ConfigError, match=r"whisperq/keys.py imports 'pydantic'"):
        lambda_modules(handler, tmp_path)
    handler.write_text("from whisperq import missing\n")
    with pytest.raises(ConfigError, match="imports 'missing' from 'whisperq'"):
        lambda_modules(handler, tmp_path)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"ingestPrefixes": '{"support": {"channels": "stereo"}}'}, "ingestPrefixes['support']"),
        ({"ingestPrefixes": '{"support": {"speakers": "agent,agent"}}'}, "must differ"),
        ({"ingestPrefixes": '{"support": {"colour": "blue"}}'}, "colour"),
        ({"ingestPrefixes": '{"a/b": {}}'}, "ingestPrefixes: Invalid batch name 'a/b'"),
        ({"ingestPrefixes": '["support"]'}, "ingestPrefixes must be a JSON object"),
        ({"ingestPrefixes": '{"support": "split"}'}, "must be an object of options"),
        ({"ingestDefaults": '{"task": "summarise"}'}, "whisperq:ingestDefaults: task"),
        (
            {"ingestPrefixes": json.dumps({f"b{i}": {"hotwords": "x" * 900} for i in range(4)})},
            "whisperq:ingestPrefixes: the options of 4 prefixes take",
        ),
        ({"ingest": "maybe"}, "whisperq:ingest must be true or false"),
        ({"ingest": "false", **EXTERNAL}, "whisperq:ingest is false"),
        ({"externalBucket": "s3://telephony/calls/"}, "whisperq:externalBucket must be"),
        ({"externalBucket": "tel", "externalPrefix": "calls"}, "ending in '/'"),
        ({"externalBucket": "tel", "externalPrefix": "calls/*/"}, "without a leading"),
        ({"externalPrefix": "calls/"}, "need whisperq:externalBucket"),
        ({"externalBucket": "tel", "externalKmsKey": "alias/x"}, "must be a KMS key ARN"),
    ],
)
def test_bad_ingest_config_fails_preview_naming_the_key(raw, message):
    import re

    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_config(raw)


def test_ingest_config_defaults_and_spellings():
    config = parse_config({})
    assert config.ingest.enabled and not config.ingest.options_by_batch
    assert config.ingest.external_bucket is None and config.ingest.external_prefix == ""
    assert config.ingest.default_options["channels"] == "auto"
    # as `pulumi config set --path` stores it, snake_case or camelCase, lists or "a,b"
    spelled = parse_config(
        {
            "ingestPrefixes": json.dumps(
                {"support": {"word_timestamps": True, "speakers": ["agent", "customer"]}}
            ),
            "externalBucket": "telephony-recordings",
        }
    )
    support = spelled.ingest.options_by_batch["support"]
    assert support["word_timestamps"] is True and support["speakers"] == ["agent", "customer"]
    assert spelled.ingest.external_prefix == ""  # the whole bucket


@pulumi.runtime.test
def test_the_cli_puts_the_batch_finished_event_on_the_stacks_bus(monkeypatch):
    """Issue 28: `status` / `wait` that see a batch finished before any worker did put its
    event on the same bus: the stack exports it, `config from-stack` sets event_bus, and
    the CLI policy may put events there, nowhere else."""
    from whisperq.stacks.from_stack import settings_from_outputs

    exports = run_main({}, monkeypatch)

    def check(outputs):
        assert settings_from_outputs(outputs)["event_bus"] == "default"
        policy = json.loads(outputs["cliUserPolicy"])
        (put,) = [st for st in policy["Statement"] if "events:PutEvents" in st["Action"]]
        assert put["Resource"] == [f"arn:aws:events:{REGION}:{ACCOUNT}:event-bus/default"]

    return pulumi.Output.from_input(exports).apply(check)


@pulumi.runtime.test
def test_without_an_event_bus_the_cli_puts_no_events(monkeypatch):
    from whisperq.stacks.from_stack import settings_from_outputs

    exports = run_main({"whisperq:eventBus": "none"}, monkeypatch)
    assert "eventBus" not in exports

    def check(outputs):
        assert "event_bus" not in settings_from_outputs(outputs)
        statements = json.loads(outputs["cliUserPolicy"])["Statement"]
        assert not [st for st in statements if "events:PutEvents" in st["Action"]]

    return pulumi.Output.from_input(exports).apply(check)
