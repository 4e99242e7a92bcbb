"""`whisperq config from-stack`: turn `pulumi up`'s outputs into the CLI's config file."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import tomlkit
import tomlkit.exceptions

from whisperq.errors import StackConfigError

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
    # the ingest route (whisperq:ingest, on by default): status counts its queues
    "ingestQueueUrl": "ingest_queue_url",
    "ingestDlqUrl": "ingest_dlq_url",
    # where "whisperq batch finished" goes when status or wait finish a batch first
    "eventBus": "event_bus",
}


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


def read_outputs_file(path: Path) -> dict[str, Any]:
    """Outputs saved with ``pulumi stack output --json > FILE``."""
    try:
        outputs = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise StackConfigError(f"Cannot read the stack outputs from {path}: {error}") from None
    if not isinstance(outputs, dict):
        raise StackConfigError(f"{path} is not `pulumi stack output --json` (not an object).")
    return outputs


def write_config(path: Path, values: Mapping[str, Any]) -> dict[str, Any]:
    """Merge ``values`` into the TOML config file at ``path``: other keys, tables (e.g.
    ``instance_prices``), lists and the user's comments are kept as they are."""
    document = tomlkit.document()
    if path.exists():
        try:
            document = tomlkit.parse(path.read_text(encoding="utf-8"))
        except tomlkit.exceptions.ParseError as error:
            raise StackConfigError(
                f"{path} is not valid TOML ({error}); fix or remove it, then run this again."
            ) from None
    else:
        document.add(
            tomlkit.comment(
                "whisperq CLI settings (`whisperq config from-stack` writes the AWS ones)"
            )
        )
    for key, value in values.items():
        document[key] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    # Written whole to a temporary file, then renamed: a crash never leaves half a config.
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(tomlkit.dumps(document), encoding="utf-8")
    temporary.replace(path)
    return document.unwrap()
