"""The launch template's user data: write the worker's settings, then start the worker.

On a baked image (ami/) the worker is installed and only waits for its settings. On a stock
image the same provisioning script the image build runs is run here first.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from pathlib import Path

ENV_FILE = "/etc/whisperq/worker.env"
SERVICE = "whisperq-worker.service"
PROVISION_SCRIPT = Path(__file__).resolve().parents[2] / "ami" / "provision.sh"


def render_user_data(settings: Mapping[str, str], provision_script: str | None = None) -> str:
    """A bash script; ``settings`` become ``WHISPERQ_*`` lines of the service's env file."""
    lines = [
        f"WHISPERQ_{name.upper()}={shlex.quote(str(value))}" for name, value in settings.items()
    ]
    parts = [
        "#!/bin/bash",
        "set -euo pipefail",
        "install -d -m 0755 /etc/whisperq",
        f"cat > {ENV_FILE} <<'WHISPERQ_ENV'",
        *lines,
        "WHISPERQ_ENV",
        f"chmod 0644 {ENV_FILE}",
    ]
    if provision_script is not None:
        parts += [
            "cat > /root/whisperq-provision.sh <<'WHISPERQ_PROVISION'",
            provision_script.rstrip("\n"),
            "WHISPERQ_PROVISION",
            "bash /root/whisperq-provision.sh",
        ]
    parts += [f"systemctl enable --now {SERVICE}", ""]
    return "\n".join(parts)
