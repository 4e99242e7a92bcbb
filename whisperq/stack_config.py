"""`whisperq config from-stack`: turn `pulumi up`'s outputs into the CLI's config file."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

# stack output -> Settings field
OUTPUT_FIELDS = {
    "bucket": "bucket",
    "queueUrl": "queue_url",
    "dlqUrl": "dlq_url",
    "region": "region",
}
# Taken when the stack exports them (stacks from before the fleet outputs do not):
# what `whisperq status` needs for its fleet lines and ETA, and `whisperq cost` to price.
OPTIONAL_OUTPUT_FIELDS = {
    "groupName": "autoscaling_group",
    "jobsPerInstance": "fleet_jobs_per_instance",
    "maxInstances": "fleet_max_instances",
    "instanceType": "fleet_instance_type",
}


class StackConfigError(RuntimeError):
    """The stack's outputs could not be read; the message says what to do."""


def read_stack_outputs(stack: str | None, project_dir: Path) -> dict[str, Any]:
    """``pulumi stack output --json`` in the Pulumi project's folder."""
    pulumi = shutil.which("pulumi")
    if pulumi is None:
        raise StackConfigError(
            "The pulumi CLI is not on PATH. Install it (pulumi.com/docs/install), or save "
            "`pulumi stack output --json` to a file and pass --outputs FILE."
        )
    command = [pulumi, "stack", "output", "--json"]
    if stack:
        command += ["--stack", stack]
    done = subprocess.run(command, cwd=project_dir, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise StackConfigError(f"`{' '.join(command[1:])}` failed: {done.stderr.strip()}")
    return json.loads(done.stdout)


def settings_from_outputs(outputs: Mapping[str, Any]) -> dict[str, str | int]:
    missing = [name for name in OUTPUT_FIELDS if not outputs.get(name)]
    if missing:
        raise StackConfigError(
            f"The stack has no output(s) {', '.join(missing)}: is it a whisperq stack "
            "(infra_pulumi/) and has `pulumi up` finished?"
        )
    values: dict[str, str | int] = {
        field: str(outputs[name]) for name, field in OUTPUT_FIELDS.items()
    }
    for name, field in OPTIONAL_OUTPUT_FIELDS.items():
        value = outputs.get(name)
        if value in (None, ""):
            continue
        values[field] = value if isinstance(value, int) else str(value)
    return values


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return json.dumps(str(value))  # a JSON string is a valid TOML basic string


def write_config(path: Path, values: Mapping[str, Any]) -> dict[str, Any]:
    """Merge ``values`` into the TOML config file at ``path`` (other keys are kept)."""
    current: dict[str, Any] = {}
    if path.exists():
        current = tomllib.loads(path.read_text(encoding="utf-8"))
    merged = {**current, **values}
    lines = ["# whisperq CLI settings (`whisperq config from-stack` writes the AWS ones)"]
    lines += [f"{key} = {_toml_value(value)}" for key, value in merged.items()]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return merged
