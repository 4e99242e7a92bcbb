"""`whisperq status` knows the fleet: the Auto Scaling group's counts, recent throughput from
the newest results, and the backlog's ETA by the scaler's formula, against moto."""

from __future__ import annotations

import json
import os
import signal
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from whisperq import storage
from whisperq.batches.tracking import JobRecord
from whisperq.cli import app
from whisperq.fleet import backlog
from whisperq.fleet import group_status as fleet
from whisperq.settings import Settings
from whisperq.stacks import from_stack as stack_config
from whisperq.stacks import local as local_stack

from helpers import create_group, write_batch, write_result

runner = CliRunner()
PATHS = [f"calls/{n}.wav" for n in range(4)]


@pytest.fixture
def group(cli_env, monkeypatch) -> str:
    """An Auto Scaling group of two c6a.xlarge in moto, named in the CLI's settings."""
    name = f"{cli_env.bucket}-workers"
    create_group(storage.client(cli_env, "autoscaling"), name, desired=2, max_size=6)
    monkeypatch.setenv("WHISPERQ_AUTOSCALING_GROUP", name)
    return name


def ago(seconds: float) -> datetime:
    return datetime.now(UTC) - timedelta(seconds=seconds)


def queue_jobs(settings: Settings, count: int) -> None:
    sqs = storage.client(settings, "sqs")
    for n in range(count):
        sqs.send_message(QueueUrl=settings.queue_url, MessageBody=f"job {n}")


def status_json(*args: str) -> dict:
    result = runner.invoke(app, ["status", *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_status_shows_the_group_throughput_and_an_eta_for_the_backlog(group, cli_env):
    write_batch(cli_env, "wk", PATHS)
    base = datetime.now(UTC)  # one clock reading: the span is exact

    def at(seconds_ago: float) -> datetime:
        return base - timedelta(seconds=seconds_ago)

    # two machines, one pool process each; an old result outside the 15-minute window
    write_result(
        cli_env, "wk", PATHS[0], duration=60, job_seconds=10, finished_at=at(60),
        worker_id="ip-1:11", instance_type="c6a.xlarge",
    )  # fmt: skip
    write_result(
        cli_env, "wk", PATHS[1], duration=120, job_seconds=20, finished_at=at(120),
        worker_id="ip-2:22", instance_type="c6a.xlarge",
    )  # fmt: skip
    write_result(
        cli_env, "wk", PATHS[2], duration=180, job_seconds=30, finished_at=at(300),
        worker_id="ip-1:11", instance_type="c6a.xlarge",
    )  # fmt: skip
    write_result(
        cli_env, "wk", PATHS[3], duration=999, job_seconds=99, finished_at=at(7200),
        worker_id="ip-2:22", instance_type="c6a.xlarge",
    )  # fmt: skip
    queue_jobs(cli_env, 10)

    data = status_json("wk")
    fleet_data = data["fleet"]
    assert fleet_data["group"] == group and fleet_data["found"] is True
    assert (fleet_data["desired"], fleet_data["in_service"], fleet_data["pending"]) == (2, 2, 0)
    assert fleet_data["max_size"] == 6
    assert fleet_data["instance_types"] == {"c6a.xlarge": 2}
    assert fleet_data["short"] is False and fleet_data["launch_problem"] is None
    speed = fleet_data["throughput"]
    assert speed["results_read"] == 4 and speed["window_seconds"] == 900
    assert speed["jobs"] == 3
    # over the span the three cover: from the first one's start (300 s + its 30 s ago) to
    # the last one's finish (60 s ago), not over the whole 15 minutes
    assert speed["span_seconds"] == 270
    assert speed["jobs_per_minute"] == pytest.approx(3 / 4.5, abs=1e-3)
    assert speed["audio_seconds_per_second"] == pytest.approx(360 / 270, abs=1e-3)
    assert speed["mean_job_seconds"] == pytest.approx(20)
    assert fleet_data["backlog"] == 10
    # the scaler's formula: 10 jobs / 4 per instance -> 3 instances, max min(10, 6)
    expected = backlog.eta_seconds(
        backlog_jobs=10,
        mean_job_seconds=20,
        in_service=2,
        pending=0,
        jobs_per_instance=4,
        max_instances=6,
        boot_seconds=95,
        scaler_period_seconds=60,
        slots_per_instance=1,
    )
    assert fleet_data["eta_seconds"] == pytest.approx(expected, abs=0.1)
    assert fleet_data["eta_assumes"]["slots_per_instance"] == 1

    result = runner.invoke(app, ["status", "wk"])
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert f"fleet {group}: 2 desired, 2 in service, 0 pending (max 6); c6a.xlarge x2" in text
    assert "throughput: 0.667 jobs/min, 1.33 audio s per wall s (3 job(s) in 4 min, of the " in text
    assert "newest 4 results, last 15 min); mean job 20.0 s" in text
    assert "backlog 10 job(s): done in about" in text and "(estimate, by the scaler" in text


def test_status_eta_follows_the_stack_settings(group, cli_env, monkeypatch):
    write_batch(cli_env, "wk", PATHS[:1])
    write_result(cli_env, "wk", PATHS[0], duration=60, job_seconds=30, finished_at=ago(30))
    queue_jobs(cli_env, 8)
    monkeypatch.setenv("WHISPERQ_FLEET_JOBS_PER_INSTANCE", "1")
    monkeypatch.setenv("WHISPERQ_FLEET_BOOT_SECONDS", "10")
    monkeypatch.setenv("WHISPERQ_FLEET_SLOTS_PER_INSTANCE", "2")
    fleet_data = status_json()["fleet"]
    assert fleet_data["eta_assumes"] == {
        "jobs_per_instance": 1,
        "max_instances": 6,
        "boot_seconds": 10.0,
        "scaler_period_seconds": 60.0,
        "slots_per_instance": 2,
        "per": "instance",  # an unweighted group
    }
    expected = backlog.eta_seconds(8, 30, 2, 0, 1, 6, 10, 60, 2)
    assert fleet_data["eta_seconds"] == pytest.approx(expected, abs=0.1)


def test_status_throughput_right_after_a_batch_is_over_the_time_it_ran(group, cli_env):
    """4 jobs of 3 s on two pool processes, done 4 s ago: 40 jobs/min, not 0.267 (4 jobs
    over a 15-minute window they did not run for)."""
    write_batch(cli_env, "quick", PATHS)
    base = datetime.now(UTC)  # one clock reading: the spans are exact
    for path, finished in zip(PATHS, (7, 7, 4, 4), strict=True):
        finished_at = base - timedelta(seconds=finished)
        write_result(cli_env, "quick", path, duration=30, job_seconds=3, finished_at=finished_at)
    speed = status_json("quick")["fleet"]["throughput"]
    assert speed["jobs"] == 4 and speed["span_seconds"] == 6
    assert speed["jobs_per_minute"] == 40  # not 0.267
    assert speed["audio_seconds_per_second"] == 20
    text = runner.invoke(app, ["status", "quick"]).stdout
    assert "throughput: 40 jobs/min, 20 audio s per wall s (4 job(s) in 6 s, of the" in text


def test_status_reads_only_the_newest_results(group, cli_env):
    paths = [f"f{n:03d}.wav" for n in range(fleet.RECENT_RESULTS + 10)]
    write_batch(cli_env, "big", paths)
    for n, path in enumerate(paths):
        write_result(cli_env, "big", path, duration=60, job_seconds=6, finished_at=ago(1 + n))
    speed = status_json("big")["fleet"]["throughput"]
    assert speed["results_read"] == fleet.RECENT_RESULTS
    # a full sample inside the window: the window shrinks to the sample's span
    assert speed["window_seconds"] < 900 and speed["jobs_per_minute"] > 30


def test_status_without_results_or_backlog_says_so(group, cli_env):
    write_batch(cli_env, "wk", PATHS[:1])
    data = status_json("wk")["fleet"]
    assert data["backlog"] == 0 and data["eta_seconds"] == 0
    queue_jobs(cli_env, 3)
    data = status_json("wk")["fleet"]
    assert data["backlog"] == 3 and data["eta_seconds"] is None
    assert data["throughput"]["results_read"] == 0
    text = runner.invoke(app, ["status", "wk"]).stdout
    assert "throughput: no finished jobs yet" in text
    assert "backlog 3 job(s): no estimate yet (no finished job yet to time)" in text


def test_status_names_a_missing_group_and_still_shows_batches(cli_env, monkeypatch):
    monkeypatch.setenv("WHISPERQ_AUTOSCALING_GROUP", "no-such-group")
    write_batch(cli_env, "wk", PATHS[:1])
    data = status_json("wk")
    assert data["batches"][0]["submitted"] == 1
    assert data["fleet"]["found"] is False and data["fleet"]["eta_seconds"] is None
    result = runner.invoke(app, ["status", "wk"])
    assert result.exit_code == 0
    assert "no Auto Scaling group named 'no-such-group'" in result.stdout


def test_status_without_a_group_has_no_fleet(cli_env):
    write_batch(cli_env, "wk", PATHS[:1])
    assert status_json("wk")["fleet"] is None
    assert "fleet" not in runner.invoke(app, ["status", "wk"]).stdout


def record(finished: float, job_seconds: float, worker_id: str) -> JobRecord:
    return JobRecord(
        duration=60,
        timings={"download": 0, "transcribe": job_seconds, "upload": 0},
        finished_at=datetime.fromtimestamp(finished, UTC),
        worker_id=worker_id,
    )


def test_sampled_throughput_shrinks_the_window_for_a_full_sample():
    records = [record(1000 - n * 10, 5, "h:1") for n in range(5)]  # 1000, 990, ..., 960
    speed, window = fleet.sampled_throughput(records, now=1000, window_s=900, limit=5)
    assert window == 40 and speed.jobs == 4  # the oldest marks the window's start
    assert speed.span_seconds == 35  # from the first counted job's start (970 - 5)
    assert speed.jobs_per_minute == pytest.approx(4 / 35 * 60)
    speed, window = fleet.sampled_throughput(records, now=1000, window_s=900, limit=6)
    assert window == 900 and speed.jobs == 5
    assert speed.span_seconds == 45  # all of them: from 960 - 5 to 1000


def test_observed_slots_is_pool_processes_per_machine():
    records = [record(0, 1, worker) for worker in ("a:1", "a:2", "b:7", "b:8", "c:9", "a:1")]
    assert fleet.observed_slots(records) == 2
    assert fleet.observed_slots([]) is None


# --- a weighted group: desired capacity counts units, not instances -----------------------


def test_capacity_units_count_each_instance_as_its_weight():
    big, small = ("c6a.4xlarge", None), ("c6a.xlarge", None)
    assert fleet.capacity_units([big, big], {"c6a.4xlarge": 4}) == 8
    assert fleet.capacity_units([big, big, small], {"c6a.4xlarge": 4}) == 9  # 1: no weight
    assert fleet.capacity_units([small] * 3, {}) == 3  # unweighted: one each
    assert fleet.capacity_units([], {"c6a.xlarge": 1}) == 0
    # an instance's own weight (AWS reports the one it was launched with) comes first
    assert fleet.capacity_units([("c6a.4xlarge", "2"), big], {"c6a.4xlarge": 4}) == 6


def test_observed_slots_are_per_capacity_unit_in_a_weighted_group():
    big = [record(0, 1, f"big:{pid}") for pid in range(16)]  # a c6a.4xlarge: 16 at once
    big = [r.model_copy(update={"instance_type": "c6a.4xlarge"}) for r in big]
    small = [record(0, 1, f"small:{pid}") for pid in range(4)]
    small = [r.model_copy(update={"instance_type": "c6a.xlarge"}) for r in small]
    weights = {"c6a.4xlarge": 4, "c6a.xlarge": 1}
    assert fleet.observed_slots(big + small, weights) == 4
    assert fleet.observed_slots(big, {}) == 16  # unweighted: per instance


class FakeAutoScaling:
    """DescribeAutoScalingGroups as AWS answers it for a weighted group: each instance
    with its WeightedCapacity (moto leaves it out)."""

    def __init__(self, group: dict) -> None:
        self.group = group

    def describe_auto_scaling_groups(self, AutoScalingGroupNames):
        return {"AutoScalingGroups": [self.group]}


def test_describe_group_counts_the_units_aws_gives_each_instance():
    overrides = [
        {"InstanceType": "c6a.xlarge", "WeightedCapacity": "1"},
        {"InstanceType": "c6a.2xlarge", "WeightedCapacity": "2"},
    ]
    instances = [
        {"InstanceType": "c6a.2xlarge", "WeightedCapacity": "2", "LifecycleState": "InService"},
        {"InstanceType": "c6a.2xlarge", "WeightedCapacity": "2", "LifecycleState": "InService"},
        {"InstanceType": "c6a.xlarge", "WeightedCapacity": "1", "LifecycleState": "Pending"},
        {"InstanceType": "c6a.2xlarge", "LifecycleState": "Terminating"},
    ]
    aws_group = {
        "DesiredCapacity": 6,
        "MinSize": 0,
        "MaxSize": 10,
        "Instances": instances,
        "MixedInstancesPolicy": {"LaunchTemplate": {"Overrides": overrides}},
    }
    found = fleet.describe_group(None, "g", FakeAutoScaling(aws_group))
    assert (found.in_service, found.pending) == (2, 1)  # instances
    assert (found.in_service_capacity, found.pending_capacity) == (4, 1)  # units
    assert found.running == 5 and found.short and found.weighted
    assert found.weights == {"c6a.xlarge": 1, "c6a.2xlarge": 2}


@pytest.fixture
def weighted_group(cli_env, monkeypatch) -> str:
    """A weighted group in moto: desired 8 units of c6a.4xlarge (weight 4) = 2 instances."""
    name = f"{cli_env.bucket}-weighted"
    storage.client(cli_env, "ec2").create_launch_template(
        LaunchTemplateName=name,
        LaunchTemplateData={"ImageId": "ami-12c6146b", "InstanceType": "c6a.4xlarge"},
    )
    storage.client(cli_env, "autoscaling").create_auto_scaling_group(
        AutoScalingGroupName=name,
        MinSize=0,
        MaxSize=40,
        DesiredCapacity=8,
        AvailabilityZones=["us-east-1a"],
        MixedInstancesPolicy={
            "LaunchTemplate": {
                "LaunchTemplateSpecification": {"LaunchTemplateName": name, "Version": "$Latest"},
                "Overrides": [
                    {"InstanceType": "c6a.4xlarge", "WeightedCapacity": "4"},
                    {"InstanceType": "c6a.xlarge", "WeightedCapacity": "1"},
                ],
            },
            "InstancesDistribution": {"OnDemandPercentageAboveBaseCapacity": 0},
        },
    )
    monkeypatch.setenv("WHISPERQ_AUTOSCALING_GROUP", name)
    return name


def test_status_eta_counts_capacity_units_in_a_weighted_group(weighted_group, cli_env):
    """Issue 26, item 9: desired capacity is in units; 2 instances of weight 4 are 8 of
    them, and the scaler's jobs per instance are jobs per unit."""
    write_batch(cli_env, "wk", PATHS[:1])
    write_result(
        cli_env, "wk", PATHS[0], duration=60, job_seconds=30, finished_at=ago(30),
        worker_id="ip-1:11", instance_type="c6a.4xlarge",
    )  # fmt: skip
    queue_jobs(cli_env, 64)
    data = status_json()["fleet"]
    assert (data["desired"], data["max_size"]) == (8, 40)
    assert (data["in_service"], data["in_service_units"]) == (2, 8)
    assert data["short"] is False and data["weighted"] is True
    assert data["eta_assumes"]["per"] == "capacity unit"
    # one pool process seen on a machine of weight 4: a quarter of a job at once per unit
    assert data["eta_assumes"]["slots_per_instance"] == 0.25
    in_units = backlog.eta_seconds(64, 30, 8, 0, 4, 10, 95, 60, 0.25)
    as_instances = backlog.eta_seconds(64, 30, 2, 0, 4, 10, 95, 60, 1)
    assert data["eta_seconds"] == pytest.approx(in_units, abs=0.1)
    assert in_units != pytest.approx(as_instances, abs=1)

    text = runner.invoke(app, ["status"]).stdout
    assert (
        f"fleet {weighted_group}: 8 units desired (max 40), 2 instance(s) in service (8 "
        "units), 0 pending; c6a.4xlarge x2 (weight 4)"
    ) in text
    assert "assumes 4 jobs per unit, max 10 unit(s), 95 s boot, 0.25 job(s) at once per unit" in (
        text
    )


def test_config_from_stack_fills_the_fleet_settings(isolated_settings, tmp_path):
    outputs = {
        "bucket": "b",
        "queueUrl": "https://sqs.eu-west-1.amazonaws.com/1/q",
        "dlqUrl": "https://sqs.eu-west-1.amazonaws.com/1/q-dlq",
        "region": "eu-west-1",
        "groupName": "whisperq-dev-workers",
        "jobsPerInstance": 3,
        "maxInstances": 25,
        "instanceType": "g4dn.xlarge",
    }
    (tmp_path / "outputs.json").write_text(json.dumps(outputs))
    result = runner.invoke(
        app, ["config", "from-stack", "--outputs", str(tmp_path / "outputs.json")]
    )
    assert result.exit_code == 0, result.output
    settings = Settings()
    assert settings.autoscaling_group == "whisperq-dev-workers"
    assert (settings.fleet_jobs_per_instance, settings.fleet_max_instances) == (3, 25)
    assert settings.fleet_instance_type == "g4dn.xlarge"
    # a stack from before these outputs: the rest still works, the defaults stay
    older = {key: outputs[key] for key in ("bucket", "queueUrl", "dlqUrl", "region")}
    assert set(stack_config.settings_from_outputs(older)) == {
        "bucket",
        "queue_url",
        "dlq_url",
        "region",
    }


def test_local_up_creates_the_group_of_its_workers(isolated_settings):
    settings = Settings()
    try:
        result = local_stack.up(settings, workers=1)
        state = result.state
        assert result.started
        stack = Settings()  # the local stack's state now provides the connection
        assert stack.autoscaling_group == local_stack.GROUP
        # the ingest queue and its dead letters, which status counts
        assert stack.ingest_queue_url.endswith(f"/{local_stack.INGEST_QUEUE}")
        assert stack.ingest_dlq_url.endswith(f"/{local_stack.INGEST_DEAD_LETTER_QUEUE}")
        found = fleet.describe_group(stack, local_stack.GROUP)
        assert found is not None and (found.desired, found.in_service) == (1, 1)
        assert found.instance_types == {local_stack.GROUP_INSTANCE_TYPE: 1}
        # each worker is told its own instance of the group
        (worker,) = [p for p in local_stack.managed_processes(state) if p.name.startswith("worker")]
        autoscaling = storage.client(stack, "autoscaling")
        (described,) = autoscaling.describe_auto_scaling_groups(
            AutoScalingGroupNames=[local_stack.GROUP]
        )["AutoScalingGroups"]
        assert worker.instance == described["Instances"][0]["InstanceId"]
        environ = Path(f"/proc/{worker.pid}/environ").read_bytes().split(b"\0")
        assert f"WHISPERQ_INSTANCE_ID={worker.instance}".encode() in environ
        # one more worker: the group grows by one, with an instance of its own
        second = local_stack.start_worker(settings)
        found = fleet.describe_group(stack, local_stack.GROUP)
        assert (found.desired, found.in_service) == (2, 2)
        assert second.instance not in (None, worker.instance)

        result = runner.invoke(app, ["status", "--json"])
        assert result.exit_code == 0, result.output
        data = json.loads(result.stdout)["fleet"]
        assert (data["group"], data["in_service"]) == (local_stack.GROUP, 2)
        ingest = json.loads(result.stdout)["ingest_queue"]
        assert ingest == {"visible": 0, "in_flight": 0, "dead_lettered": 0}
    finally:
        state = local_stack.read_state(settings)
        local_stack.down(settings)
        for process in local_stack.managed_processes(state or {}):
            if local_stack.is_alive(process):
                os.killpg(process.pid, signal.SIGKILL)


# --- a group short of its desired capacity: why -------------------------------------------

SPOT_QUOTA_MESSAGE = (
    "Could not launch Spot Instances. MaxSpotInstanceCountExceeded - Max spot instance count "
    "exceeded. Launching EC2 instance failed."
)
VCPU_MESSAGE = (
    "Could not launch Spot Instances. VcpuLimitExceeded - You have requested more vCPU "
    "capacity than your current vCPU limit of 0 allows for the instance bucket that the "
    "specified instance type belongs to. Please visit http://aws.amazon.com/contact-us/"
    "ec2-request to request an adjustment to this limit. Launching EC2 instance failed."
)


@pytest.mark.parametrize(
    ("instance_type", "quota"),
    [
        ("g4dn.xlarge", "'All G and VT Spot Instance Requests'"),
        ("g5.2xlarge", "'All G and VT Spot Instance Requests'"),
        ("vt1.3xlarge", "'All G and VT Spot Instance Requests'"),
        ("c6a.xlarge", "'All Standard (A, C, D, H, I, M, R, T, Z) Spot Instance Requests'"),
        ("m6a.xlarge", "'All Standard (A, C, D, H, I, M, R, T, Z) Spot Instance Requests'"),
        ("im4gn.large", "'All Standard (A, C, D, H, I, M, R, T, Z) Spot Instance Requests'"),
        ("p4d.24xlarge", "Spot Instance Requests (P family)"),
        ("inf2.xlarge", "Spot Instance Requests (INF family)"),
    ],
)
def test_spot_quota_names_the_quota_a_type_counts_against(instance_type, quota):
    assert fleet.spot_quota(instance_type) == quota


@pytest.mark.parametrize(
    ("message", "types", "code", "says"),
    [
        (
            SPOT_QUOTA_MESSAGE,
            ["g4dn.xlarge", "g5.xlarge"],
            "MaxSpotInstanceCountExceeded",
            "request a higher 'All G and VT Spot Instance Requests' quota in Service Quotas",
        ),
        (
            VCPU_MESSAGE,
            ["c6a.xlarge", "c6a.2xlarge", "m6a.xlarge"],
            "VcpuLimitExceeded",
            "request a higher 'All Standard (A, C, D, H, I, M, R, T, Z) Spot Instance "
            "Requests' quota in Service Quotas",
        ),
        (
            SPOT_QUOTA_MESSAGE,
            ["c6a.xlarge", "g4dn.xlarge"],
            "MaxSpotInstanceCountExceeded",
            "'All Standard (A, C, D, H, I, M, R, T, Z) Spot Instance Requests' and "
            "'All G and VT Spot Instance Requests'",
        ),
        (
            "Could not launch Spot Instances. InsufficientInstanceCapacity - There is no Spot "
            "capacity available that matches your request. Launching EC2 instance failed.",
            ["g4dn.xlarge"],
            "InsufficientInstanceCapacity",
            "more instance types (whisperq:instanceTypes) or subnets in more zones help",
        ),
        (
            "Could not launch Spot Instances. UnfulfillableCapacity - Unable to fulfill "
            "capacity due to your request configuration. Please adjust your request and try "
            "again. Launching EC2 instance failed.",
            ["g4dn.xlarge"],
            "UnfulfillableCapacity",
            "check the 'All G and VT Spot Instance Requests' quota in Service Quotas",
        ),
        (
            "Could not launch Spot Instances. SpotMaxPriceTooLow - Your Spot request price of "
            "0.1 is lower than the minimum required Spot request fulfillment price of 0.2. "
            "Launching EC2 instance failed.",
            ["c6a.xlarge"],
            "SpotMaxPriceTooLow",
            "remove the maximum",
        ),
        (
            "Your request for accessing resources in this region is being validated, and you "
            "will not be able to launch additional resources in this region until the "
            "validation is complete.",
            ["c6a.xlarge"],
            "PendingVerification",
            "still verifying the account",
        ),
        (SPOT_QUOTA_MESSAGE, [], "MaxSpotInstanceCountExceeded", "the instance family's"),
    ],
)
def test_launch_hint_maps_a_failed_launch_to_what_to_do(message, types, code, says):
    found, hint = fleet.launch_hint(message, types)
    assert found == code
    assert says in hint


def test_launch_hint_of_other_failures_names_the_code_only():
    message = "Could not launch On-Demand Instances. InvalidParameterValue - Bad AMI."
    assert fleet.launch_hint(message, ["c6a.xlarge"]) == ("InvalidParameterValue", None)
    assert fleet.launch_hint("something else", ["c6a.xlarge"]) == (None, None)


def activity(status, message, minutes_ago, description="Launching a new EC2 instance."):
    return {
        "ActivityId": f"a-{minutes_ago}",
        "AutoScalingGroupName": "g",
        "Description": description,
        "Cause": "At 2026-11-22T00:00:00Z a user request update of AutoScalingGroup ...",
        "StartTime": datetime.now(UTC) - timedelta(minutes=minutes_ago),
        "StatusCode": status,
        "StatusMessage": message,
        "Progress": 100,
    }


def test_failed_launch_is_the_newest_failed_launch():
    activities = [
        activity("Successful", "", 1),
        activity("Failed", "a termination failed", 2, "Terminating EC2 instance: i-1"),
        activity("Failed", VCPU_MESSAGE, 30),
        activity("Failed", SPOT_QUOTA_MESSAGE + "\n  again", 3),
    ]
    problem = fleet.failed_launch(activities, ["g4dn.xlarge"])
    assert problem is not None
    assert problem.message == SPOT_QUOTA_MESSAGE + " again"  # one line
    assert problem.code == "MaxSpotInstanceCountExceeded"
    assert "'All G and VT Spot Instance Requests'" in problem.hint
    assert problem.started_at == activities[3]["StartTime"].isoformat()
    assert fleet.failed_launch([activity("Successful", "", 1)], ["g4dn.xlarge"]) is None
    assert fleet.failed_launch([], []) is None


def group_state(desired, in_service, pending=0, **more):
    values = dict(
        name="g",
        desired=desired,
        min_size=0,
        max_size=10,
        in_service=in_service,
        pending=pending,
        instance_types={},
    )
    return fleet.GroupState(**(values | more))


def test_a_group_is_short_by_capacity_units():
    assert group_state(2, 0).short and group_state(2, 1).short
    assert not group_state(2, 1, pending=1).short  # booting counts
    assert not group_state(0, 0).short
    # a weighted group: one c6a.2xlarge (2 units) fills a desired capacity of 2
    assert not group_state(2, 1, in_service_units=2).short
    assert group_state(4, 1, in_service_units=2).running == 2
    assert group_state(4, 1, pending=1, in_service_units=2, pending_units=2).running == 4


def test_read_launch_problem_asks_only_when_the_group_is_short(aws):
    from botocore.stub import Stubber

    autoscaling = storage.client(aws, "autoscaling")
    with Stubber(autoscaling) as stubber:  # no responses: any call fails the test
        assert fleet.read_launch_problem(autoscaling, group_state(2, 2)) is None
        stubber.add_response(
            "describe_scaling_activities",
            {"Activities": [activity("Failed", SPOT_QUOTA_MESSAGE, 2)]},
            expected_params={"AutoScalingGroupName": "g", "MaxRecords": fleet.SCALING_ACTIVITIES},
        )
        problem = fleet.read_launch_problem(autoscaling, group_state(2, 0), "g4dn.xlarge")
        stubber.assert_no_pending_responses()
    assert problem is not None and problem.code == "MaxSpotInstanceCountExceeded"
    assert "'All G and VT Spot Instance Requests'" in problem.hint  # from the fallback type

    with Stubber(autoscaling) as stubber:  # a CLI role without the right: status goes on
        stubber.add_client_error(
            "describe_scaling_activities", "AccessDenied", "not authorized", http_status_code=403
        )
        denied = fleet.read_launch_problem(autoscaling, group_state(2, 0))
    assert denied is not None and denied.code == "AccessDenied"
    assert denied.hint == "the CLI's role needs autoscaling:DescribeScalingActivities"


def test_status_says_why_the_group_runs_fewer_than_it_wants(cli_env, monkeypatch):
    """moto launches whatever a group wants at once and records no scaling activities; on
    AWS a group whose spot quota is 0 launches nothing. So moto's answers are changed on
    the way: the group wants 2 (it has none), and its activities say why."""
    name = f"{cli_env.bucket}-gpu"
    create_group(storage.client(cli_env, "autoscaling"), name, desired=0, max_size=4)
    monkeypatch.setenv("WHISPERQ_AUTOSCALING_GROUP", name)
    monkeypatch.setenv("WHISPERQ_FLEET_INSTANCE_TYPE", "g4dn.xlarge")
    asked = []

    def wants_two(parsed, **_):
        parsed["AutoScalingGroups"][0]["DesiredCapacity"] = 2

    def activities(params, **_):
        asked.append({k: params["body"][k] for k in ("AutoScalingGroupName", "MaxRecords")})
        reply = {"Activities": [activity("Failed", SPOT_QUOTA_MESSAGE, 3)]}
        return SimpleNamespace(status_code=200), reply

    real_client = storage.client

    def client(settings, service):
        made = real_client(settings, service)
        if service == "autoscaling":
            events = made.meta.events
            events.register("after-call.autoscaling.DescribeAutoScalingGroups", wants_two)
            events.register("before-call.autoscaling.DescribeScalingActivities", activities)
        return made

    monkeypatch.setattr(storage, "client", client)
    write_batch(cli_env, "wk", PATHS[:1])
    queue_jobs(cli_env, 3)

    data = status_json("wk")["fleet"]
    assert (data["desired"], data["in_service"], data["pending"]) == (2, 0, 0)
    assert data["short"] is True and data["running_units"] == 0
    problem = data["launch_problem"]
    assert problem["code"] == "MaxSpotInstanceCountExceeded"
    assert problem["message"] == SPOT_QUOTA_MESSAGE
    assert problem["hint"].startswith(
        "request a higher 'All G and VT Spot Instance Requests' quota in Service Quotas"
    )
    assert asked == [{"AutoScalingGroupName": name, "MaxRecords": fleet.SCALING_ACTIVITIES}]

    text = runner.invoke(app, ["status", "wk"]).stdout
    assert (
        f"fleet: 0 of 2 desired running (a launch failed 3 min ago): {SPOT_QUOTA_MESSAGE} "
        "(request a higher 'All G and VT Spot Instance Requests' quota in Service Quotas"
    ) in text
