"""The launch template's user data: write the worker's settings and the log agent's
configuration, start the agent and the worker; on any failure, have the group replace the
instance (ami/mark-unhealthy.sh).

On a baked image (ami/) the worker is installed and only waits for its settings. On a stock
image the image's own files come along (a gzip'd tar, base64, in the script: EC2 takes 16 KB
of user data) and the same provisioning script runs first.
"""

from __future__ import annotations

import base64
import gzip
import io
import json
import shlex
import tarfile
from collections.abc import Mapping
from pathlib import Path

ENV_FILE = "/etc/whisperq/worker.env"
SERVICE = "whisperq-worker.service"
AMI_DIR = Path(__file__).resolve().parents[2] / "ami"
# What provision.sh needs beside it (it installs the units, the mark script and the log
# rule from its folder).
BUNDLE_FILES = (
    "provision.sh",
    "system-packages.sh",
    "whisperq-worker.service",
    "whisperq-mark-unhealthy.service",
    "whisperq-gpu-devices.service",
    "mark-unhealthy.sh",
    "rsyslog-whisperq.conf",
)
# The exact versions CI tests (pip constraints): provision.sh installs with the copy beside
# it; and the cuBLAS a GPU worker adds (ami/gpu-constraints.txt).
CONSTRAINTS = AMI_DIR.parent / "constraints.txt"
GPU_CONSTRAINTS = AMI_DIR / "gpu-constraints.txt"
BUNDLE_DIR = "/root/whisperq-ami"
# EC2 takes 16 KB of user data, base64-encoded, and counts the encoding: the base64 of
# 16,384 bytes is over it, so 16,383 bytes are the most the launch template can carry.
USER_DATA_LIMIT = 16 * 1024 - 1
# Where the image has the mark script (ami/provision.sh installs it); a stock image's boot
# uses the bundle's copy, which exists before provisioning does.
BAKED_MARK = "/opt/whisperq/bin/mark-unhealthy"
STOCK_MARK = f"{BUNDLE_DIR}/mark-unhealthy.sh"
# The CloudWatch agent (ami/provision.sh installs it) and its configuration, written at boot
# from ami/cloudwatch-agent.json with the stack's log group.
AGENT_DIR = "/opt/aws/amazon-cloudwatch-agent"
AGENT_CONFIG = f"{AGENT_DIR}/etc/whisperq.json"
AGENT_CTL = f"{AGENT_DIR}/bin/amazon-cloudwatch-agent-ctl"
LOG_GROUP_PLACEHOLDER = "WHISPERQ_LOG_GROUP"


def env_lines(values: Mapping[str, str]) -> list[str]:
    return [f"WHISPERQ_{key.upper()}={shlex.quote(str(value))}" for key, value in values.items()]


def agent_config(log_group: str) -> str:
    """ami/cloudwatch-agent.json with the stack's log group in every entry (compact: user
    data is limited to 16 KB)."""
    config = json.loads((AMI_DIR / "cloudwatch-agent.json").read_text())
    entries = config["logs"]["logs_collected"]["files"]["collect_list"]
    for entry in entries:
        if entry["log_group_name"] != LOG_GROUP_PLACEHOLDER:
            raise ValueError(f"ami/cloudwatch-agent.json: {entry['file_path']} has no placeholder")
        entry["log_group_name"] = log_group
    return json.dumps(config, separators=(",", ":"))


def _heredoc(path: str, text: str) -> list[str]:
    return [f"cat > {path} <<'WHISPERQ_FILE_EOF'", text.rstrip("\n"), "WHISPERQ_FILE_EOF"]


EXECUTABLE = (".sh",)
_BUNDLE_START = "base64 -d <<'WHISPERQ_BUNDLE'"


def bundle_archive(bundle: Mapping[str, str]) -> bytes:
    """The bundle as a .tar.gz, byte for byte the same for the same files (no times, owners
    or order of its own): the launch template changes only when a file does."""
    tar_bytes = io.BytesIO()
    with tarfile.open(fileobj=tar_bytes, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name in sorted(bundle):
            data = bundle[name].encode()
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 0
            info.mode = 0o755 if name.endswith(EXECUTABLE) else 0o644
            tar.addfile(info, io.BytesIO(data))
    return gzip.compress(tar_bytes.getvalue(), compresslevel=9, mtime=0)


def read_archive(archive: bytes) -> dict[str, str]:
    """The files of a ``bundle_archive`` (tests, and to read a launch template's)."""
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        return {
            member.name: tar.extractfile(member).read().decode()  # type: ignore[union-attr]
            for member in tar.getmembers()
        }


def bundle_in(user_data: str) -> dict[str, str]:
    """The bundle a stock image's user data carries ({} on a baked image's)."""
    lines = user_data.splitlines()
    starts = [n for n, line in enumerate(lines) if line.startswith(_BUNDLE_START)]
    if not starts:
        return {}
    body = lines[starts[0] + 1 : lines.index("WHISPERQ_BUNDLE", starts[0])]
    return read_archive(base64.b64decode("".join(body)))


def render_user_data(
    settings: Mapping[str, str],
    bundle: Mapping[str, str] | None = None,
    provision_env: Mapping[str, str] | None = None,
    log_group: str | None = None,
) -> str:
    """A bash script: ``settings`` become the service's env file; ``log_group`` the log
    agent's destination; with a ``bundle`` (file name -> text) the provisioning script runs
    first with ``provision_env``. Any failure marks the instance unhealthy."""
    mark = BAKED_MARK if bundle is None else STOCK_MARK
    parts = [
        "#!/bin/bash",
        "# whisperq worker boot (infra_pulumi/whisperq_infra/userdata.py). A failure has the",
        "# Auto Scaling group replace this instance (mark-unhealthy, else power off).",
        "set -euo pipefail",
        "boot_failed() {",
        "  local status=$?",
        f'  [ "$status" -eq 0 ] || {mark} "boot failed (exit $status)" || systemctl poweroff',
        "}",
        "trap boot_failed EXIT",
        "install -d -m 0755 /etc/whisperq",
        f"cat > {ENV_FILE} <<'WHISPERQ_ENV'",
        *env_lines(settings),
        "WHISPERQ_ENV",
        f"chmod 0644 {ENV_FILE}",
    ]
    if log_group is not None:
        # Written before provisioning: a boot that fails still ships its log (the mark
        # script starts the agent if it is installed).
        parts.append(f"install -d -m 0755 {AGENT_DIR}/etc")
        parts += _heredoc(AGENT_CONFIG, agent_config(log_group))
    if bundle is not None:
        # gzip'd (user data is limited to 16 KB): tests/infra/test_infra.py reads it back
        encoded = base64.encodebytes(bundle_archive(bundle)).decode().rstrip("\n")
        parts += [
            f"install -d -m 0700 {BUNDLE_DIR}",
            f"{_BUNDLE_START} | tar -xz --no-same-owner -C {BUNDLE_DIR}",
            encoded,
            "WHISPERQ_BUNDLE",
        ]
        assignments = " ".join(
            [*env_lines(provision_env or {}), f"WHISPERQ_ON_FAILURE={STOCK_MARK}"]
        )
        parts.append(f"env {assignments} bash {BUNDLE_DIR}/provision.sh")
    if log_group is not None:
        parts.append(
            f"{AGENT_CTL} -a fetch-config -m ec2 -s -c file:{AGENT_CONFIG}"
            " || echo 'whisperq: the CloudWatch agent did not start: the worker log stays on"
            " the instance (journalctl -u whisperq-worker)' >&2"
        )
    parts += [f"systemctl enable --now {SERVICE}", ""]
    text = "\n".join(parts)
    if len(text.encode()) > USER_DATA_LIMIT:
        raise ValueError(
            f"user data is {len(text.encode())} bytes; EC2 takes {USER_DATA_LIMIT} (16 KB "
            "once base64-encoded)"
        )
    return text


def _pins(path: Path) -> str:
    lines = [line for line in path.read_text().splitlines() if line and line[0] != "#"]
    return "\n".join(lines) + "\n"


def read_bundle() -> dict[str, str]:
    """provision.sh and its files, and the constraints files without their comments (user
    data is limited to 16 KB; the pins are what counts)."""
    bundle = {name: (AMI_DIR / name).read_text() for name in BUNDLE_FILES}
    bundle["constraints.txt"] = _pins(CONSTRAINTS)
    bundle[GPU_CONSTRAINTS.name] = _pins(GPU_CONSTRAINTS)
    return bundle
