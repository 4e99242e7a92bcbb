"""The Pulumi program under Pulumi's own mocks (no engine or cloud is reachable here):
what `pulumi up` would create, for compute=cpu and compute=gpu."""

from __future__ import annotations

import base64
import json
import subprocess
from collections import defaultdict
from pathlib import Path

import pulumi
import pytest
from whisperq_infra.config import ConfigError, parse_config
from whisperq_infra.iam import worker_policy
from whisperq_infra.scaling import scaler_policy
from whisperq_infra.userdata import render_user_data

ACCOUNT, REGION = "123456789012", "eu-west-1"


class Mocks(pulumi.runtime.Mocks):
    """Records every resource; answers the lookups the program makes."""

    def __init__(self, images_built: bool = True) -> None:
        self.images_built = images_built
        self.resources: dict[str, list[tuple[str, dict]]] = defaultdict(list)
        self.ami_lookups: list[dict] = []

    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        outputs = dict(args.inputs)
        kind = args.typ.split(":")[1].split("/")[0]
        outputs.setdefault("name", args.name)
        outputs.setdefault("arn", f"arn:aws:{kind}:{REGION}:{ACCOUNT}:{args.name}")
        if args.typ == "aws:s3/bucket:Bucket":
            outputs.update(bucket=f"{args.name}-bucket", arn=f"arn:aws:s3:::{args.name}-bucket")
        if args.typ == "aws:sqs/queue:Queue":
            outputs["url"] = f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/{args.name}"
        self.resources[args.typ].append((args.name, outputs))
        return [f"{args.name}-id", outputs]

    def call(self, args: pulumi.runtime.MockCallArgs):
        token, inputs = args.token, dict(args.args)
        if token == "aws:index/getRegion:getRegion":
            return {"region": REGION, "name": REGION, "id": REGION}
        if token == "aws:index/getCallerIdentity:getCallerIdentity":
            return {"accountId": ACCOUNT, "arn": f"arn:aws:iam::{ACCOUNT}:root", "id": ACCOUNT}
        if token == "aws:ec2/getVpc:getVpc":
            return {"id": "vpc-default"}
        if token == "aws:ec2/getSubnets:getSubnets":
            return {"id": "subnets", "ids": ["subnet-a", "subnet-b", "subnet-c"]}
        if token == "aws:ec2/getAmi:getAmi":
            self.ami_lookups.append(inputs)
            if inputs.get("owners") == ["self"]:
                if not self.images_built:  # as the provider answers a lookup that finds none
                    return {}, [("", "Your query returned no results.")]
                return {"id": "ami-whisperq-baked"}
            return {"id": "ami-stock"}
        return {}

    def one(self, typ: str, name: str | None = None) -> dict:
        found = [out for n, out in self.resources[typ] if name is None or n == name]
        assert len(found) == 1, (typ, name, [n for n, _ in self.resources[typ]])
        return found[0]


def deploy(raw: dict, images_built: bool = True):
    from whisperq_infra.deployment import Deployment

    mocks = Mocks(images_built)
    pulumi.runtime.set_mocks(mocks, project="whisperq", stack="test", preview=False)
    deployment = Deployment("whisperq", parse_config(raw))
    # resolved once the last resource of each component is registered
    done = pulumi.Output.all(
        deployment.fleet.group.name,
        deployment.scaler.permission.id,
        deployment.monitoring.dashboard_url,
        deployment.monitoring.stale_backlog_alarm.id,
        deployment.storage.bucket.arn,
        deployment.identity.profile.arn,
    )
    return mocks, deployment, done


def user_data_of(mocks: Mocks) -> str:
    template = mocks.one("aws:ec2/launchTemplate:LaunchTemplate")
    return base64.b64decode(template["userData"]).decode()


@pulumi.runtime.test
def test_cpu_fleet_is_spot_only_imdsv2_encrypted_and_closed():
    mocks, _, done = deploy({})

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

    return done.apply(check)


@pulumi.runtime.test
def test_gpu_tier_types_disk_and_worker_settings():
    mocks, _, done = deploy({"compute": "gpu", "maxInstances": "3"})

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
        text = user_data_of(mocks)
        assert "WHISPERQ_DEVICE=cuda" in text and "WHISPERQ_COMPUTE_TYPE=float16" in text
        assert "WHISPERQ_MODEL=large-v3" in text
        lookup = mocks.ami_lookups[0]
        assert lookup["owners"] == ["self"]
        assert {"name": "name", "values": ["whisperq-gpu-*"]} in lookup["filters"]

    return done.apply(check)


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
        assert expiring == [
            {
                "id": "expire-inputs",
                "status": "Enabled",
                "filter": {"prefix": "inputs/"},
                "expiration": {"days": 7},
            }
        ]
        assert mocks.one("aws:s3/bucketNotification:BucketNotification")["eventbridge"] is True

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
        assert "WHISPERQ_VISIBILITY_TIMEOUT=240" in user_data_of(mocks)

    return done.apply(check)


@pulumi.runtime.test
def test_worker_role_allows_only_what_a_worker_does():
    mocks, _, done = deploy({})

    def check(_):
        policies = {
            n: json.loads(o["policy"]) for n, o in mocks.resources["aws:iam/rolePolicy:RolePolicy"]
        }
        worker = policies["whisperq-worker"]
        for statement in worker["Statement"]:
            actions = statement["Action"]
            assert all("*" not in action for action in actions), statement
            if statement["Resource"] == "*":
                assert statement["Action"] == ["cloudwatch:PutMetricData"]
                assert statement["Condition"] == {
                    "StringEquals": {"cloudwatch:namespace": "whisperq"}
                }
        by_sid = {s["Sid"]: s for s in worker["Statement"]}
        assert by_sid["ReadInputs"]["Resource"] == ["arn:aws:s3:::whisperq-data-bucket/inputs/*"]
        assert by_sid["WriteResults"]["Resource"] == ["arn:aws:s3:::whisperq-data-bucket/results/*"]
        assert by_sid["WorkTheQueue"]["Resource"] == [
            f"arn:aws:sqs:{REGION}:{ACCOUNT}:whisperq-jobs"
        ]
        assert by_sid["ProtectOwnInstanceWhileBusy"]["Resource"] == [
            f"arn:aws:autoscaling:{REGION}:{ACCOUNT}:autoScalingGroup:*:"
            "autoScalingGroupName/whisperq-test-workers"
        ]
        assert by_sid["ShipOwnLog"]["Resource"] == [
            f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:/whisperq/workers",
            f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:/whisperq/workers:*",
        ]
        attachments = mocks.resources["aws:iam/rolePolicyAttachment:RolePolicyAttachment"]
        assert [o["policyArn"] for _, o in attachments] == [
            "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore"
        ]
        assert mocks.one("aws:iam/instanceProfile:InstanceProfile")

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
        assert variables["QUEUE_URL"].endswith("/whisperq-jobs")
        rule = mocks.one("aws:cloudwatch/eventRule:EventRule")
        assert rule["scheduleExpression"] == "rate(1 minute)"
        assert mocks.one("aws:lambda/permission:Permission")["principal"] == "events.amazonaws.com"

    return done.apply(check)


@pulumi.runtime.test
def test_alarms_and_dashboard():
    mocks, _, done = deploy({})

    def check(_):
        alarms = {n: o for n, o in mocks.resources["aws:cloudwatch/metricAlarm:MetricAlarm"]}
        dead = alarms["whisperq-monitoring-dead-letters"]
        assert (dead["metricName"], dead["threshold"], dead["comparisonOperator"]) == (
            "ApproximateNumberOfMessagesVisible",
            0,
            "GreaterThanThreshold",
        )
        assert dead["dimensions"] == {"QueueName": "whisperq-jobs-dlq"}
        stale = alarms["whisperq-monitoring-stale-backlog"]
        assert stale["metricName"] == "ApproximateAgeOfOldestMessage"
        body = json.loads(mocks.one("aws:cloudwatch/dashboard:Dashboard")["dashboardBody"])
        titles = [widget["properties"]["title"] for widget in body["widgets"]]
        assert titles == [
            "Backlog (waiting + running) and dead letters",
            "Instances",
            "Jobs per minute",
            "Audio seconds per second",
        ]

    return done.apply(check)


@pulumi.runtime.test
def test_without_a_baked_image_a_stock_image_is_provisioned_at_boot(tmp_path, monkeypatch):
    import whisperq_infra.deployment as deployment_module

    (tmp_path / "whisperq-0.1.0-py3-none-any.whl").write_bytes(b"wheel")
    monkeypatch.setattr(deployment_module, "DIST_DIR", tmp_path)
    mocks, _, done = deploy({}, images_built=False)

    def check(_):
        template = mocks.one("aws:ec2/launchTemplate:LaunchTemplate")
        assert template["imageId"] == "ami-stock"
        assert mocks.ami_lookups[1]["owners"] == ["099720109477"]
        artifact = mocks.one("aws:s3/bucketObject:BucketObject")
        assert artifact["key"] == "artifacts/whisperq-0.1.0-py3-none-any.whl"
        text = user_data_of(mocks)
        ami = Path(__file__).parents[1] / "ami"
        for name in ("provision.sh", "whisperq-worker.service", "cloudwatch-agent.json"):
            assert (ami / name).read_text().rstrip("\n") in text, name
        assert (
            "env WHISPERQ_COMPUTE=cpu WHISPERQ_MODEL=distil-large-v3 "
            "WHISPERQ_WHEEL=s3://whisperq-data-bucket/artifacts/whisperq-0.1.0-py3-none-any.whl "
            "bash /root/whisperq-ami/provision.sh"
        ) in text
        assert text.index("worker.env") < text.index("provision.sh") < text.index("systemctl")

    return done.apply(check)


def test_without_image_or_wheel_preview_says_what_to_do(monkeypatch, tmp_path):
    import whisperq_infra.deployment as deployment_module

    monkeypatch.setattr(deployment_module, "DIST_DIR", tmp_path)  # no wheel built
    pulumi.runtime.set_mocks(Mocks(images_built=False), project="whisperq", stack="t", preview=True)
    with pytest.raises(ConfigError, match="run `make wheel`"):
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


def test_user_data_is_valid_bash_and_quotes_values(tmp_path):
    from whisperq_infra.userdata import read_bundle

    text = render_user_data(
        {"bucket": "b", "model": "it's; rm -rf /"}, read_bundle(), {"wheel": "s3://b/w.whl"}
    )
    script = tmp_path / "user-data.sh"
    script.write_text(text)
    subprocess.run(["bash", "-n", str(script)], check=True)
    subprocess.run(["shellcheck", "-S", "error", str(script)], check=True)
    env_lines = text.split("<<'WHISPERQ_ENV'\n")[1].split("\nWHISPERQ_ENV")[0].splitlines()
    assert env_lines == ["WHISPERQ_BUCKET=b", "WHISPERQ_MODEL='it'\"'\"'s; rm -rf /'"]
    assert text.rstrip().endswith("systemctl enable --now whisperq-worker.service")
    assert len(text.encode()) < 16 * 1024  # EC2's user data limit


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

    mocks = Mocks()
    pulumi.runtime.set_mocks(mocks, project="whisperq", stack="dev", preview=False)
    pulumi.runtime.set_all_config({"whisperq:compute": "gpu", "whisperq:maxInstances": "2"})
    try:
        program = runpy.run_path(str(Path(__file__).parents[1] / "infra_pulumi" / "__main__.py"))
    finally:
        pulumi.runtime.set_all_config({})
    deployment = program["deployment"]
    assert deployment.config.compute == "gpu" and deployment.config.max_instances == 2

    def check(values):
        queue_url, dlq_url, group, ingest_prefix = values
        assert queue_url.endswith("/whisperq-jobs") and dlq_url.endswith("/whisperq-jobs-dlq")
        assert group == "whisperq-dev-workers"
        assert ingest_prefix.startswith("s3://") and ingest_prefix.endswith("/incoming/")

    return pulumi.Output.all(
        deployment.queues.queue.url,
        deployment.queues.dead_letter.url,
        deployment.fleet.group.name,
        deployment.ingest.ingest_prefix,
    ).apply(check)


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
    return mocks, deployment, pulumi.Output.all(*parts)


def ingest_statements(mocks: Mocks) -> list[dict]:
    policies = {
        n: json.loads(o["policy"]) for n, o in mocks.resources["aws:iam/rolePolicy:RolePolicy"]
    }
    return policies["whisperq-ingest"]["Statement"]


@pytest.mark.parametrize("raw", [{}, EXTERNAL])
@pulumi.runtime.test
def test_ingest_route_own_bucket_notification_queue_lambda_and_alarm(raw):
    mocks, _, done = deploy_ingest(raw)
    queue_arn = f"arn:aws:sqs:{REGION}:{ACCOUNT}:whisperq-ingest"

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
            "ArnEquals": {"aws:SourceArn": "arn:aws:s3:::whisperq-data-bucket"},
            "StringEquals": {"aws:SourceAccount": ACCOUNT},
        }
        assert len(external) == (1 if raw else 0)

        assert (function["runtime"], function["handler"]) == ("python3.12", "handler.handler")
        assert function["name"] == "whisperq-test-ingest"
        assert function["timeout"] == 120 and 512 <= function["memorySize"] <= 1024
        assert function["ephemeralStorage"] == {"size": 2048}
        assert 0 < function["reservedConcurrentExecutions"] <= 10
        variables = function["environment"]["variables"]
        assert variables["WHISPERQ_BUCKET"] == "whisperq-data-bucket"
        assert variables["WHISPERQ_QUEUE_URL"].endswith("/whisperq-jobs")
        assert variables["WHISPERQ_INGEST_QUEUE_URL"].endswith("/whisperq-ingest")
        source = (raw["externalBucket"], raw["externalPrefix"]) if raw else None
        assert (
            variables["WHISPERQ_INGEST_SOURCE_BUCKET"],
            variables["WHISPERQ_INGEST_PREFIX"],
        ) == (source or ("whisperq-data-bucket", "incoming/"))

        mapping = mocks.one("aws:lambda/eventSourceMapping:EventSourceMapping")
        assert mapping["eventSourceArn"] == queue_arn
        assert mapping["functionName"] == function["arn"]
        assert mapping["batchSize"] == 10
        assert mapping["functionResponseTypes"] == ["ReportBatchItemFailures"]
        assert (
            mapping["scalingConfig"]["maximumConcurrency"]
            <= function["reservedConcurrentExecutions"]
        )

        logs = {n: o for n, o in mocks.resources["aws:cloudwatch/logGroup:LogGroup"]}
        assert logs["whisperq-ingest"]["name"] == "/aws/lambda/whisperq-test-ingest"
        assert logs["whisperq-ingest"]["retentionInDays"] == 14
        alarms = {n: o for n, o in mocks.resources["aws:cloudwatch/metricAlarm:MetricAlarm"]}
        alarm = alarms["whisperq-ingest-dead-letters"]
        assert alarm["dimensions"] == {"QueueName": "whisperq-ingest-dlq"}
        assert alarm["alarmActions"] == [
            alarms["whisperq-monitoring-dead-letters"]["alarmActions"][0]
        ]

    return done.apply(check)


@pulumi.runtime.test
def test_external_bucket_events_arrive_by_an_eventbridge_rule_and_are_only_read():
    mocks, deployment, done = deploy_ingest({**EXTERNAL, "externalKmsKey": KMS_KEY})
    queue_arn = f"arn:aws:sqs:{REGION}:{ACCOUNT}:whisperq-ingest"
    assert deployment.ingest.external_source == "s3://telephony-recordings/calls/"

    def check(_):
        rules = {n: o for n, o in mocks.resources["aws:cloudwatch/eventRule:EventRule"]}
        rule = rules["whisperq-ingest-external"]
        assert json.loads(rule["eventPattern"]) == {
            "source": ["aws.s3"],
            "detail-type": ["Object Created"],
            "detail": {
                "bucket": {"name": ["telephony-recordings"]},
                "object": {"key": [{"prefix": "calls/"}]},
            },
        }
        targets = {n: o for n, o in mocks.resources["aws:cloudwatch/eventTarget:EventTarget"]}
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
    bucket = "arn:aws:s3:::whisperq-data-bucket"

    def check(_):
        statements = ingest_statements(mocks)
        roles = [n for n, _ in mocks.resources["aws:iam/role:Role"]]
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
        jobs = f"arn:aws:sqs:{REGION}:{ACCOUNT}:whisperq-jobs"
        assert [a for a, resources in granted.items() if jobs in resources] == ["sqs:SendMessage"]
        assert granted["sqs:ReceiveMessage"] == {f"arn:aws:sqs:{REGION}:{ACCOUNT}:whisperq-ingest"}
        log_group = f"arn:aws:cloudwatch:{REGION}:{ACCOUNT}:whisperq-ingest"
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
        }

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
        everything = set(TranscriptionOptions.model_fields)
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
        assert [n for n, _ in mocks.resources["aws:lambda/function:Function"]] == [
            "whisperq-scaler"
        ]
        assert "whisperq-ingest" not in [n for n, _ in mocks.resources["aws:sqs/queue:Queue"]]

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
    repo = Path(__file__).parents[1]

    def check(_):
        code = mocks.one("aws:lambda/function:Function", "whisperq-ingest")["code"]
        assets = code.assets
        assert Path(assets["handler.py"].path) == repo / "infra_pulumi/ingest/handler.py"
        for name, asset in assets.items():
            assert Path(asset.path) == repo / name or name == "handler.py"
        assert {"whisperq/__init__.py", "whisperq/ingest.py", "whisperq/keys.py"} <= set(assets)
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
    assert lambda_modules(handler, tmp_path) == ["whisperq", "whisperq.ingest", "whisperq.keys"]

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
