"""The deployment's pieces against each other, across files: what Packer bakes against what
the stack looks for (region, model, compute kind, names and tags), worker.env (the launch
template's user data) against the image's image.env and the unit that reads both, and the
user data of both paths (a baked image, a stock image provisioned at boot) rendered by the
program under mocks and run in a throw-away root, with what needs a cloud machine stubbed.

Each of these pairs drifted apart once without a test noticing: the image built in
us-east-1 for a stack in eu-west-1, the image's model against the stack's GPU default."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pulumi
import pytest
from pulumi_mocks import AwsMocks
from whisperq_infra import userdata
from whisperq_infra.config import capacity_weights, instance_capacity, parse_config
from whisperq_infra.deployment import STOCK_IMAGES, build_image_command
from whisperq_infra.fleet import TERMINATION_HOOK
from whisperq_infra.iam import worker_log_group
from whisperq_infra.monitoring import UNHEALTHY_LOG_MARK
from whisperq_infra.wheel import wheel_name

import whisperq
from whisperq import defaults
from whisperq.fleet.speeds import instance_vcpus
from whisperq.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
AMI = ROOT / "ami"
TEMPLATE = AMI / "whisperq.pkr.hcl"
PROVISION = AMI / "provision.sh"
UNIT = AMI / "whisperq-worker.service"
MARK_SCRIPT = AMI / "mark-unhealthy.sh"
REGION = "eu-west-1"


def packer_inspect(compute: str, *variables: str) -> dict[str, str]:
    """Packer's own evaluation of the template's variables and locals for ``compute``:
    {"var.region": "eu-west-1", "local.model": "large-v3", ...}."""
    packer = shutil.which("packer")
    if packer is None:
        pytest.fail("packer is not installed: run `make system-deps`")
    arguments = ["-var", f"compute={compute}", "-var", f"region={REGION}"]
    for variable in variables:
        arguments += ["-var", variable]
    done = subprocess.run(
        [packer, "inspect", *arguments, str(TEMPLATE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return dict(re.findall(r"^((?:var|local)\.\w+): \"(.*)\"$", done.stdout, re.M))


# --- Packer against the stack ----------------------------------------------------------------


@pytest.mark.parametrize("compute", defaults.COMPUTE_KINDS)
def test_packer_bakes_by_default_what_the_stack_looks_for(compute):
    """Item 3: one default model per compute kind (whisperq/defaults.py), and the name and
    tags the stack's lookup filters on."""
    packer = packer_inspect(compute)
    assert (
        packer["local.model"] == defaults.MODEL[compute] == parse_config({"compute": compute}).model
    )
    assert packer["local.image"].startswith(f"whisperq-{compute}-{whisperq.__version__}-")
    assert packer["local.root_volume_gb"] == str(defaults.ROOT_VOLUME_GB[compute])
    assert packer["local.build_instance"] == defaults.INSTANCE_TYPES[compute][0]
    assert (packer["local.base_image_owner"], packer["local.base_image_name"]) == STOCK_IMAGES[
        compute
    ]
    # the image's tags, as the stack filters on them (deployment.find_image)
    tags = TEMPLATE.read_text().split("\n  tags = {", 1)[1].split("}", 1)[0]
    assert dict(re.findall(r"(\w+)\s*=\s*(\S+)", tags)) == {
        "Name": "local.image",
        "compute": "var.compute",
        "model": "local.model",
        "version": "var.whisperq_version",
    }


def test_packer_takes_another_model_and_the_stack_asks_for_it_by_name():
    assert packer_inspect("gpu", "model=distil-large-v3")["local.model"] == "distil-large-v3"
    config = parse_config({"compute": "gpu", "model": "distil-large-v3"})
    assert build_image_command(config, REGION).endswith(
        f"-var compute=gpu -var region={REGION} -var model=distil-large-v3 ami/"
    )
    assert "-var model" not in build_image_command(parse_config({"compute": "gpu"}), REGION)


def test_packer_builds_where_it_is_told_and_the_stack_says_where():
    """Item 2: images are regional; Packer has no default region, and the stack's messages
    give the command with its own region."""
    text = TEMPLATE.read_text()
    region = text.split('variable "region" {', 1)[1].split("\n}\n", 1)[0]
    assert "default" not in region
    assert packer_inspect("cpu")["var.region"] == REGION
    assert f"-var region={REGION}" in build_image_command(parse_config({}), REGION)


def test_packer_knows_the_stacks_compute_kinds_and_version():
    text = TEMPLATE.read_text()
    (kinds,) = re.findall(r"contains\(\[(.*?)\], var\.compute\)", text)
    assert tuple(re.findall(r'"(\w+)"', kinds)) == defaults.COMPUTE_KINDS
    packer = packer_inspect("cpu")
    assert packer["var.whisperq_version"] == whisperq.__version__
    assert packer["var.whisperq_wheel"] == f"dist/{wheel_name()}"  # what `make wheel` builds


def test_packer_uploads_what_the_stock_image_boot_brings():
    """Both paths install the same files: Packer's uploads beside provision.sh and the user
    data's bundle; Packer also brings the image's check (and its clip) and the cleanup."""
    text = TEMPLATE.read_text()
    uploads = set(re.findall(r'"\$\{path\.root\}/([\w./-]+)"', text))
    beside = {*userdata.BUNDLE_FILES, "../constraints.txt", "gpu-constraints.txt"}
    checks = {"check-image.sh", "../examples/calls/support/call-0001.wav", "cleanup.sh"}
    assert uploads == beside | checks
    first = text.split('provisioner "file" {', 1)[1].split("destination", 1)[0]
    assert set(re.findall(r'"\$\{path\.root\}/([\w./-]+)"', first)) == beside
    assert set(userdata.read_bundle()) == {Path(name).name for name in beside}
    assert "cloudwatch-agent.json" not in uploads  # rendered at boot with the stack's group
    assert (ROOT / "examples/calls/support/call-0001.wav").is_file()


# --- worker.env against image.env and the units ----------------------------------------------


def image_env_names() -> set[str]:
    """The names provision.sh writes into /etc/whisperq/image.env."""
    body = PROVISION.read_text().split('cat > "$etc/image.env" <<ENV\n', 1)[1].split("\nENV\n")[0]
    return {line.split("=", 1)[0] for line in body.splitlines()}


def worker_env(text: str) -> dict[str, str]:
    body = text.split("<<'WHISPERQ_ENV'\n", 1)[1].split("\nWHISPERQ_ENV", 1)[0]
    return {
        name: shlex.split(value)[0] if value else ""
        for name, value in (line.split("=", 1) for line in body.splitlines())
    }


def run_program(compute: str, image: str, tmp_path: Path, monkeypatch) -> AwsMocks:
    import whisperq_infra.deployment as deployment_module
    from whisperq_infra.deployment import Deployment

    (tmp_path / wheel_name()).write_bytes(b"wheel")
    monkeypatch.setattr(deployment_module, "DIST_DIR", tmp_path)
    mocks = AwsMocks(images_built=image == "baked")
    pulumi.runtime.set_mocks(mocks, project="whisperq", stack="consistency", preview=False)

    @pulumi.runtime.test
    def program():
        return Deployment("whisperq", parse_config({"compute": compute})).fleet.group.name

    program()
    return mocks


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> dict[tuple[str, str], str]:
    """The user data of every (compute, image) pair, as the program renders it."""
    found = {}
    with pytest.MonkeyPatch.context() as patch:
        for compute in defaults.COMPUTE_KINDS:
            for image in ("baked", "stock"):
                mocks = run_program(compute, image, tmp_path_factory.mktemp("dist"), patch)
                found[compute, image] = mocks.user_data()
    return found


PATHS = [(compute, image) for compute in defaults.COMPUTE_KINDS for image in ("baked", "stock")]


@pytest.mark.parametrize(("compute", "image"), PATHS)
def test_worker_env_and_image_env_share_no_name(rendered, compute, image):
    """The unit reads image.env, then worker.env: a name in both would have the deployment
    override what the image is (once: the model path the image baked, with an s3:// URI).
    worker.env says where the deployment is; image.env what the image is."""
    names = set(worker_env(rendered[compute, image]))
    assert names and not names & image_env_names()
    assert {"WHISPERQ_MODEL", "WHISPERQ_DEVICE", "WHISPERQ_COMPUTE_TYPE"} <= image_env_names()
    env = worker_env(rendered[compute, image])
    assert env["WHISPERQ_AUTOSCALING_GROUP"] == "whisperq-consistency-workers"
    assert env["WHISPERQ_LIFECYCLE_HOOK"] == TERMINATION_HOOK


@pytest.mark.parametrize(("compute", "image"), PATHS)
def test_every_worker_env_name_is_a_worker_setting(rendered, compute, image):
    """worker.env holds nothing the worker would ignore (WHISPERQ_LIFECYCLE_HOOK included:
    the worker completes the termination hook by that name), and every value parses."""
    env = {
        name.removeprefix("WHISPERQ_").lower(): value
        for name, value in worker_env(rendered[compute, image]).items()
    }
    assert set(env) <= set(Settings.model_fields), set(env) - set(Settings.model_fields)
    assert Settings(**env).lifecycle_hook == TERMINATION_HOOK


def test_the_unit_reads_image_env_first_and_worker_env_last():
    files = [
        line.split("=", 1)[1]
        for line in UNIT.read_text().splitlines()
        if line.startswith("EnvironmentFile=")
    ]
    assert files == ["/etc/whisperq/image.env", "/etc/whisperq/worker.env"]
    # the mark script reads them the same way
    script = MARK_SCRIPT.read_text()
    assert 'for file in "$etc/image.env" "$etc/worker.env"; do' in script


@pytest.mark.parametrize("compute", defaults.COMPUTE_KINDS)
def test_the_image_tells_the_engine_the_stacks_compute_type(compute):
    text = PROVISION.read_text()
    cpu = dict(re.findall(r'^(device|compute_type)="(\w+)"$', text, re.M))
    gpu = dict(re.findall(r'^  (device|compute_type)="(\w+)"$', text, re.M))
    found = gpu if compute == "gpu" else cpu
    assert found["compute_type"] == defaults.COMPUTE_TYPE[compute]
    assert found["device"] == ("cuda" if compute == "gpu" else "cpu")


@pytest.mark.parametrize(("compute", "image"), PATHS)
def test_one_grace_the_image_the_deployment_and_the_simulator_agree_on(rendered, compute, image):
    """Issue 26, item 9: the image once granted 90 s of shutdown grace (image.env) while the
    settings and the simulator assumed 60. Neither env file sets a grace now: the worker
    takes whisperq/defaults.py's, as the simulator does, and the termination hook outlasts
    it within a spot notice."""
    names = image_env_names() | set(worker_env(rendered[compute, image]))
    assert not [name for name in names if "GRACE" in name], names
    env = {
        name.removeprefix("WHISPERQ_").lower(): value
        for name, value in worker_env(rendered[compute, image]).items()
    }
    settings = Settings(**env)
    assert settings.shutdown_grace_seconds == defaults.SHUTDOWN_GRACE_SECONDS
    assert settings.spot_grace_seconds == defaults.SPOT_GRACE_SECONDS
    from whisperq.fleet.simulation import SimConfig

    # a spot notice or the hook stops the worker with the smaller of the two graces
    grace = min(settings.shutdown_grace_seconds, settings.spot_grace_seconds)
    assert SimConfig().spot_grace_s == grace
    assert settings.spot_grace_seconds < defaults.TERMINATION_HOOK_SECONDS
    assert defaults.TERMINATION_HOOK_SECONDS <= defaults.SPOT_NOTICE_SECONDS
    # the unit gives SIGTERM's grace its time, within a spot notice
    stop = int(re.findall(r"^TimeoutStopSec=(\d+)$", UNIT.read_text(), re.M)[0])
    assert settings.shutdown_grace_seconds < stop < defaults.SPOT_NOTICE_SECONDS


def test_only_the_image_build_upgrades_the_os():
    """Issue 26, item 5: WHISPERQ_BAKE=1 (system-packages.sh: upgrade, hold the GPU stack)
    comes from Packer only; a stock image's boot does not set it."""
    assert '"WHISPERQ_BAKE=1",' in TEMPLATE.read_text()
    text = userdata.render_user_data(
        {"autoscaling_group": "g"},
        userdata.read_bundle(),
        {"compute": "gpu", "model": "large-v3", "wheel": "s3://b/w.whl"},
    )
    assert "WHISPERQ_BAKE" not in text  # (the bundle itself is gzip'd)
    assert "env WHISPERQ_COMPUTE=gpu WHISPERQ_MODEL=large-v3" in text


def test_the_paths_the_boot_and_the_image_share():
    """The user data writes and calls what provision.sh installs, at the same paths."""
    provision = PROVISION.read_text()
    assert 'install -m 0755 "$here/mark-unhealthy.sh" "$home/bin/mark-unhealthy"' in provision
    assert userdata.BAKED_MARK == "/opt/whisperq/bin/mark-unhealthy"  # $home/bin/...
    assert (
        f"ExecStart={userdata.BAKED_MARK} --if-failed"
        in (AMI / "whisperq-mark-unhealthy.service").read_text()
    )
    packages = (AMI / "system-packages.sh").read_text()
    # the agent provision.sh installs (through system-packages.sh)
    assert userdata.AGENT_CTL.removeprefix("/") in packages
    assert 'bash "$here/system-packages.sh"' in provision
    mark = MARK_SCRIPT.read_text()
    assert 'agent="$prefix/opt/aws/amazon-cloudwatch-agent"' in mark
    assert userdata.AGENT_CONFIG == "/opt/aws/amazon-cloudwatch-agent/etc/whisperq.json"
    assert '"$agent/etc/whisperq.json"' in mark
    # the line the alarm's metric filter counts, the only place it is written
    assert mark.count(f'"{UNHEALTHY_LOG_MARK}: $reason') == 2
    # the log the agent ships is the one rsyslog writes the worker's lines to
    rsyslog = (AMI / "rsyslog-whisperq.conf").read_text()
    assert '"whisperq-worker" /var/log/whisperq/worker.log' in rsyslog
    assert "/var/log/whisperq/worker.log" in userdata.agent_config("/g")
    assert mark.count("logger -t whisperq-worker") == 2


# --- the user data of both paths, run --------------------------------------------------------


@pytest.mark.parametrize(("compute", "image"), PATHS)
def test_the_user_data_is_valid_bash(rendered, compute, image, tmp_path):
    script = tmp_path / "user-data.sh"
    script.write_text(rendered[compute, image])
    subprocess.run(["bash", "-n", str(script)], check=True)
    done = subprocess.run(["shellcheck", str(script)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout
    text = rendered[compute, image]
    assert len(text.encode()) <= userdata.USER_DATA_LIMIT
    assert (userdata.bundle_in(text) == userdata.read_bundle()) == (image == "stock")
    log_group = worker_log_group("consistency")
    assert f'"log_group_name":"{log_group}"' in text


class Boot:
    """Runs rendered user data in a throw-away root: its absolute paths moved under it, the
    tools that need a cloud machine (systemctl, logger, sleep, the log agent) stubbed, each
    call recorded."""

    def __init__(self, root: Path) -> None:
        self.root, self.calls = root, root / "calls.txt"
        self.bin = root / "bin"
        for tool in ("systemctl", "logger", "sleep"):
            self.stub(
                self.bin / tool,
                f'echo "{tool} $*" >> {self.calls}\n'
                'if [ "$*" = "enable --now whisperq-worker.service" ]; then\n'
                '  exit "${STUB_ENABLE:-0}"\n'
                "fi\n",
            )
        self.stub(Path(self.path(userdata.AGENT_CTL)), f'echo "agent $*" >> {self.calls}\n')

    def stub(self, path: Path, body: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("#!/usr/bin/env bash\n" + body)
        path.chmod(0o755)

    def path(self, absolute: str) -> str:
        return f"{self.root}{absolute}"

    def run(self, text: str, **env: str) -> tuple[int, list[str]]:
        for absolute in ("/etc/whisperq", "/root/whisperq-ami", "/opt/aws", "/opt/whisperq"):
            # where a path starts (not /etc/whisperq inside .../amazon-cloudwatch-agent/etc/)
            text = re.sub(rf"(?<![\w/.-]){re.escape(absolute)}", self.path(absolute), text)
        script = self.root / "user-data.sh"
        script.write_text(text)
        done = subprocess.run(
            ["bash", str(script)],
            env={
                "PATH": f"{self.bin}:/usr/bin:/bin",
                "HOME": str(self.root),
                "WHISPERQ_PREFIX": str(self.root),  # provision.sh and the mark script
                "WHISPERQ_SKIP_CLOUD": "1",
                **env,
            },
            capture_output=True,
            text=True,
            timeout=120,
        )
        calls = self.calls.read_text().splitlines() if self.calls.exists() else []
        return done.returncode, calls


@pytest.mark.parametrize("compute", defaults.COMPUTE_KINDS)
def test_a_baked_image_boots_its_worker_and_ships_its_log(rendered, compute, tmp_path):
    boot = Boot(tmp_path)
    boot.stub(Path(boot.path(userdata.BAKED_MARK)), f'echo "mark $*" >> {boot.calls}\n')
    status, calls = boot.run(rendered[compute, "baked"])
    assert status == 0
    config = userdata.AGENT_CONFIG
    assert calls == [
        f"agent -a fetch-config -m ec2 -s -c file:{boot.path(config)}",
        "systemctl enable --now whisperq-worker.service",
    ]
    env = (tmp_path / "etc/whisperq/worker.env").read_text()
    assert f"WHISPERQ_LIFECYCLE_HOOK={TERMINATION_HOOK}" in env.splitlines()
    agent = Path(boot.path(config)).read_text()
    assert worker_log_group("consistency") in agent


def test_a_baked_image_that_cannot_start_its_worker_is_marked(rendered, tmp_path):
    boot = Boot(tmp_path)
    boot.stub(Path(boot.path(userdata.BAKED_MARK)), f'echo "mark $*" >> {boot.calls}\n')
    status, calls = boot.run(rendered["cpu", "baked"], STUB_ENABLE="1")
    assert status == 1
    assert calls[-2:] == [
        "systemctl enable --now whisperq-worker.service",
        "mark boot failed (exit 1)",
    ]


def test_a_stock_image_whose_provisioning_fails_is_marked_once(tmp_path):
    """The real bundle (provision.sh and the mark script) from the user data: provisioning
    fails (here: an s3:// model), provision.sh's on-failure hook runs the bundle's mark
    script, which, with no whisperq installed yet, logs the line the alarm counts and
    powers off; the user data's own trap then finds it done."""
    text = userdata.render_user_data(
        {"autoscaling_group": "g"},
        userdata.read_bundle(),
        {"compute": "cpu", "model": "s3://models/x/", "wheel": "s3://b/w.whl"},
        log_group="/whisperq/t/workers",
    )
    status, calls = Boot(tmp_path).run(text)
    assert status == 2
    line = f"{UNHEALTHY_LOG_MARK}: provisioning failed (exit 2) (by powering off)"
    assert f"logger -t whisperq-worker -- {line}" in calls
    assert calls[-2:] == ["sleep 30", "systemctl poweroff"]
    assert sum(call.startswith("logger") for call in calls) == 1  # once per boot
    assert (tmp_path / "run/whisperq/marked-unhealthy").exists()


# --- the instance size tables --------------------------------------------------------------


def test_the_size_tables_agree_with_the_type_names():
    """Item 8: whisperq/defaults.py's vCPUs against each name's size (large = 2, xlarge = 4,
    Nxlarge = 4N: EC2's rule for these families), covering every type the stack and the
    prices name; GPUs for every GPU type."""
    for name, vcpus in defaults.INSTANCE_VCPUS.items():
        assert instance_vcpus(name) == vcpus, name
    named = {
        *defaults.INSTANCE_PRICES,
        *defaults.INSTANCE_TYPES["cpu"],
        *defaults.INSTANCE_TYPES["gpu"],
    }
    assert named <= set(defaults.INSTANCE_VCPUS)
    assert set(defaults.INSTANCE_TYPES["gpu"]) <= set(defaults.INSTANCE_GPUS)
    assert set(defaults.INSTANCE_GPUS) <= set(defaults.INSTANCE_VCPUS)
    assert all(name.startswith(("g", "p")) for name in defaults.INSTANCE_GPUS)
    for name in defaults.INSTANCE_TYPES["cpu"]:
        assert instance_capacity(name, "cpu") == defaults.INSTANCE_VCPUS[name]
    # the default fleets' weights: a CPU 2xlarge counts two, GPU types one GPU each
    assert capacity_weights(defaults.INSTANCE_TYPES["cpu"], "cpu")["c6a.2xlarge"] == 2
    assert set(capacity_weights(defaults.INSTANCE_TYPES["gpu"], "gpu").values()) == {1}


def test_the_makefile_deploys_with_a_fresh_wheel():
    """Item 1: `make deploy STACK=...` builds the wheel, then runs `pulumi up` in the
    program's folder, where Pulumi.yaml points at the repository's virtualenv."""
    makefile = (ROOT / "Makefile").read_text()
    (rule,) = re.findall(r"^deploy: (.*)\n\t(.*)$", makefile, re.M)
    assert rule[0].startswith("wheel ")
    assert rule[1] == "cd infra_pulumi && pulumi up --stack $(STACK)"
    assert "virtualenv: ../.venv" in (ROOT / "infra_pulumi" / "Pulumi.yaml").read_text()
    assert os.path.isfile(ROOT / "infra_pulumi" / "__main__.py")


# --- the deploy docs against the program ---------------------------------------------------

DEPLOY_DOCS = (ROOT / "docs" / "deploy.md").read_text()
# EC2 quota codes by what they cover (Service Quotas' names): spot and on-demand, per family
QUOTAS = {
    ("spot", "standard"): "L-34B43A08",  # All Standard (A, C, D, H, I, M, R, T, Z) Spot ...
    ("spot", "gpu"): "L-3819A6DF",  # All G and VT Spot Instance Requests
    ("on-demand", "standard"): "L-1216C47A",  # Running On-Demand Standard (...) instances
    ("on-demand", "gpu"): "L-DB2E81BA",  # Running On-Demand G and VT instances
}
LAMBDA_CONCURRENCY = "L-B99A9384"


def quota_family(instance_type: str) -> str:
    return "gpu" if instance_type.startswith(("g", "vt")) else "standard"


@pytest.mark.parametrize("compute", defaults.COMPUTE_KINDS)
def test_the_deploy_path_names_every_quota_it_needs(compute):
    """Issue 26, item 2: the fleet runs spot, Packer's build instance on-demand (a g4dn for
    the GPU image: 0 vCPUs on a new account); each quota is named and checked in step 1."""
    steps = DEPLOY_DOCS.split("```bash\n", 1)[1].split("```", 1)[0]  # the deploy path
    quotas = DEPLOY_DOCS.split("### Quotas", 1)[1].split("\n### ", 1)[0]
    fleet = {quota_family(name) for name in defaults.INSTANCE_TYPES[compute]}
    build = quota_family(packer_inspect(compute)["local.build_instance"])
    needed = {QUOTAS["spot", family] for family in fleet} | {QUOTAS["on-demand", build]}
    for code in needed | {LAMBDA_CONCURRENCY}:
        assert code in steps and code in quotas, code
    # the GPU build's quota is the one new accounts lack: said in the image's section too
    image = DEPLOY_DOCS.split("## Build the worker image", 1)[1]
    assert QUOTAS["on-demand", "gpu"] in image and "on-demand" in image


def test_the_cli_permission_list_names_every_action_of_the_cli_policy():
    """Issue 26, item 9: the docs' list omitted DescribeScalingActivities."""
    from whisperq_infra.cli_policy import cli_user_policy

    paragraph = DEPLOY_DOCS.split("**A CLI user**", 1)[1].split("**Whoever runs", 1)[0]
    policy = cli_user_policy("arn:aws:s3:::b", "q", "d", "g")
    actions = {a.split(":", 1)[1] for st in policy["Statement"] for a in st["Action"]}
    assert "DescribeScalingActivities" in actions
    assert sorted(a for a in actions if a not in paragraph) == []


def test_every_config_key_is_documented_and_in_the_example_stack():
    from whisperq_infra.config import KEYS

    table = DEPLOY_DOCS.split("| key | default | meaning |", 1)[1].split("\n\n", 1)[0]
    documented = set(re.findall(r"`(\w+)`", table))
    assert sorted(set(KEYS) - documented) == []
    example = (ROOT / "infra_pulumi" / "Pulumi.dev.yaml").read_text()
    named = set(re.findall(r"whisperq:(\w+):", example))
    new_in_issue_26 = {"associatePublicIp", "s3EndpointRouteTableIds", "alertEmail"}
    assert new_in_issue_26 | {"ingestBatch"} <= named


def test_a_worker_stopped_for_its_instance_leaving_is_not_restarted():
    """After a spot notice or the group's scale-in the worker exits with a status of its
    own; systemd's Restart=always must not start it again on an instance going away."""
    from whisperq import defaults

    lines = UNIT.read_text().splitlines()
    assert "Restart=always" in lines
    (prevent,) = [line for line in lines if line.startswith("RestartPreventExitStatus=")]
    assert prevent.split("=", 1)[1].split() == [str(defaults.WORKER_EXIT_INSTANCE_LEAVING)]
    # ...and it is no failure: with OnFailure=, a failed unit marks the instance unhealthy
    # (ami/mark-unhealthy.sh --if-failed), and the stack's alarm counts that line
    assert "OnFailure=whisperq-mark-unhealthy.service" in lines
    (success,) = [line for line in lines if line.startswith("SuccessExitStatus=")]
    assert success.split("=", 1)[1].split() == [str(defaults.WORKER_EXIT_INSTANCE_LEAVING)]
    # tests/worker/test_exit_status.py: the worker process really exits with it
