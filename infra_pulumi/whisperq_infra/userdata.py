"""The launch template's user data: write the worker's settings, then start the worker.

On a baked image (ami/) the worker is installed and only waits for its settings. On a stock
image the image's own files come along and the same provisioning script runs first.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from pathlib import Path

ENV_FILE = "/etc/whisperq/worker.env"
SERVICE = "whisperq-worker.service"
AMI_DIR = Path(__file__).resolve().parents[2] / "ami"
# What provision.sh needs beside it (it installs the unit and log configs from its folder).
BUNDLE_FILES = (
    "provision.sh",
    "whisperq-worker.service",
    "rsyslog-whisperq.conf",
    "cloudwatch-agent.json",
)
# The exact versions CI tests (pip constraints): provision.sh installs with the copy beside it.
CONSTRAINTS = AMI_DIR.parent / "constraints.txt"
BUNDLE_DIR = "/root/whisperq-ami"
USER_DATA_LIMIT = 16 * 1024  # EC2's limit, before base64


def env_lines(values: Mapping[str, str]) -> list[str]:
    return [f"WHISPERQ_{key.upper()}={shlex.quote(str(value))}" for key, value in values.items()]


def render_user_data(
    settings: Mapping[str, str],
    bundle: Mapping[str, str] | None = None,
    provision_env: Mapping[str, str] | None = None,
) -> str:
    """A bash script: ``settings`` become the service's env file; with a ``bundle`` (file
    name -> text) the provisioning script runs first with ``provision_env``."""
    parts = [
        "#!/bin/bash",
        "set -euo pipefail",
        "install -d -m 0755 /etc/whisperq",
        f"cat > {ENV_FILE} <<'WHISPERQ_ENV'",
        *env_lines(settings),
        "WHISPERQ_ENV",
        f"chmod 0644 {ENV_FILE}",
    ]
    if bundle is not None:
        parts.append(f"install -d -m 0700 {BUNDLE_DIR}")
        for name, text in bundle.items():
            parts += [
                f"cat > {BUNDLE_DIR}/{name} <<'WHISPERQ_FILE_EOF'",
                text.rstrip("\n"),
                "WHISPERQ_FILE_EOF",
            ]
        assignments = " ".join(env_lines(provision_env or {}))
        parts.append(f"env {assignments} bash {BUNDLE_DIR}/provision.sh")
    parts += [f"systemctl enable --now {SERVICE}", ""]
    text = "\n".join(parts)
    if len(text.encode()) > USER_DATA_LIMIT:
        raise ValueError(f"user data is {len(text.encode())} bytes; EC2 takes {USER_DATA_LIMIT}")
    return text


def read_bundle() -> dict[str, str]:
    """provision.sh and its files, and constraints.txt without its comments (user data is
    limited to 16 KB; the pins are what counts)."""
    bundle = {name: (AMI_DIR / name).read_text() for name in BUNDLE_FILES}
    pins = [line for line in CONSTRAINTS.read_text().splitlines() if line and line[0] != "#"]
    bundle["constraints.txt"] = "\n".join(pins) + "\n"
    return bundle
