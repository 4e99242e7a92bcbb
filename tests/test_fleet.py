"""`whisperq status` knows the fleet: the Auto Scaling group's counts, recent throughput from
the newest results, and the backlog's ETA by the scaler's formula, against moto."""

from __future__ import annotations

import json
import os
import signal
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from whisperq import backlog, fleet, local_stack, stack_config, storage
from whisperq.cli import app
from whisperq.settings import Settings
from whisperq.tracking import JobRecord

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
    # two machines, one pool process each; an old result outside the 15-minute window
    write_result(
        cli_env, "wk", PATHS[0], duration=60, job_seconds=10, finished_at=ago(60),
        worker_id="ip-1:11", instance_type="c6a.xlarge",
    )  # fmt: skip
    write_result(
        cli_env, "wk", PATHS[1], duration=120, job_seconds=20, finished_at=ago(120),
        worker_id="ip-2:22", instance_type="c6a.xlarge",
    )  # fmt: skip
    write_result(
        cli_env, "wk", PATHS[2], duration=180, job_seconds=30, finished_at=ago(300),
        worker_id="ip-1:11", instance_type="c6a.xlarge",
    )  # fmt: skip
    write_result(
        cli_env, "wk", PATHS[3], duration=999, job_seconds=99, finished_at=ago(7200),
        worker_id="ip-2:22", instance_type="c6a.xlarge",
    )  # fmt: skip
    queue_jobs(cli_env, 10)

    data = status_json("wk")
    fleet_data = data["fleet"]
    assert fleet_data["group"] == group and fleet_data["found"] is True
    assert (fleet_data["desired"], fleet_data["in_service"], fleet_data["pending"]) == (2, 2, 0)
    assert fleet_data["max_size"] == 6
    assert fleet_data["instance_types"] == {"c6a.xlarge": 2}
    speed = fleet_data["throughput"]
    assert speed["results_read"] == 4 and speed["window_seconds"] == 900
    assert speed["jobs"] == 3
    assert speed["jobs_per_minute"] == pytest.approx(3 / 15)
    assert speed["audio_seconds_per_second"] == pytest.approx(360 / 900)
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
    assert "0.2 jobs/min" in text and "mean job 20.0 s" in text
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
    }
    expected = backlog.eta_seconds(8, 30, 2, 0, 1, 6, 10, 60, 2)
    assert fleet_data["eta_seconds"] == pytest.approx(expected, abs=0.1)


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
    speed, window = fleet.sampled_throughput(records, now=1000, window_s=900, limit=6)
    assert window == 900 and speed.jobs == 5


def test_observed_slots_is_pool_processes_per_machine():
    records = [record(0, 1, worker) for worker in ("a:1", "a:2", "b:7", "b:8", "c:9", "a:1")]
    assert fleet.observed_slots(records) == 2
    assert fleet.observed_slots([]) is None


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
        state, started = local_stack.up(settings, workers=1)
        assert started
        stack = Settings()  # the local stack's state now provides the connection
        assert stack.autoscaling_group == local_stack.GROUP
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
    finally:
        state = local_stack.read_state(settings)
        local_stack.down(settings)
        for process in local_stack.managed_processes(state or {}):
            if local_stack.is_alive(process):
                os.killpg(process.pid, signal.SIGKILL)
