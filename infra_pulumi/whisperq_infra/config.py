"""The stack's configuration (`pulumi config set whisperq:KEY VALUE`), read and checked in one
place. Bad values fail at preview with a message naming the key and what is allowed."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# Three to five types per tier: spot capacity comes from several pools.
INSTANCE_TYPES = {
    "cpu": ("c6a.xlarge", "c6a.2xlarge", "c6i.xlarge", "c7a.xlarge", "m6a.xlarge"),
    "gpu": ("g4dn.xlarge", "g4dn.2xlarge", "g5.xlarge", "g6.xlarge"),
}
ROOT_VOLUME_GB = {"cpu": 30, "gpu": 80}  # OS + venv (+ CUDA libraries) + the model
DEFAULT_MODEL = {"cpu": "distil-large-v3", "gpu": "large-v3"}
COMPUTE_TYPE = {"cpu": "int8", "gpu": "float16"}

_INSTANCE_TYPE = re.compile(r"[a-z][a-z0-9-]*\.[a-z0-9]+")


class ConfigError(ValueError):
    """A config value that cannot work; the message names the key."""


@dataclass(frozen=True)
class DeploymentConfig:
    compute: str = "cpu"
    model: str = DEFAULT_MODEL["cpu"]
    max_instances: int = 10
    jobs_per_instance: int = 4
    idle_minutes: int = 10
    instance_types: tuple[str, ...] = INSTANCE_TYPES["cpu"]
    vpc_id: str | None = None
    subnet_ids: tuple[str, ...] = ()
    ami_id: str | None = None
    retain_inputs_days: int = 14
    visibility_timeout: int = 300
    max_receive_count: int = 5

    @property
    def root_volume_gb(self) -> int:
        return ROOT_VOLUME_GB[self.compute]

    @property
    def compute_type(self) -> str:
        return COMPUTE_TYPE[self.compute]


def _int(raw: Mapping[str, Any], key: str, default: int, low: int, high: int) -> int:
    value = raw.get(key)
    if value is None:
        return default
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"whisperq:{key} must be a whole number, got {value!r}") from None
    if not low <= number <= high:
        raise ConfigError(f"whisperq:{key} must be between {low} and {high}, got {number}")
    return number


def _list(raw: Mapping[str, Any], key: str) -> tuple[str, ...]:
    value = raw.get(key)
    if value is None:
        return ()
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            value = [item.strip() for item in value.split(",") if item.strip()]
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ConfigError(f'whisperq:{key} must be a list of strings, e.g. \'["a", "b"]\'')
    return tuple(value)


def parse_config(raw: Mapping[str, Any]) -> DeploymentConfig:
    """Check raw config values (strings, as Pulumi stores them) and fill the defaults."""
    compute = raw.get("compute") or "cpu"
    if compute not in INSTANCE_TYPES:
        raise ConfigError(f"whisperq:compute must be one of: cpu, gpu (got {compute!r})")
    instance_types = _list(raw, "instanceTypes") or INSTANCE_TYPES[compute]
    bad = [name for name in instance_types if not _INSTANCE_TYPE.fullmatch(name)]
    if bad or not 1 <= len(instance_types) <= 20:
        got = bad or list(instance_types)
        raise ConfigError(
            f"whisperq:instanceTypes must list 1-20 EC2 instance types like c6a.xlarge (got {got})"
        )
    if compute == "gpu" and not all(name.startswith(("g", "p")) for name in instance_types):
        raise ConfigError("whisperq:instanceTypes must be GPU types (g*/p*) when compute is gpu")
    max_receive_count = _int(raw, "maxReceiveCount", 5, 1, 1000)
    if max_receive_count < 5:
        raise ConfigError(
            "whisperq:maxReceiveCount must be at least 5: spot interruptions redeliver good "
            f"jobs, which must not end in the dead-letter queue (got {max_receive_count})"
        )
    subnets = _list(raw, "subnetIds")
    vpc_id = raw.get("vpcId") or None
    if subnets and not vpc_id:
        raise ConfigError("whisperq:subnetIds needs whisperq:vpcId (the VPC they belong to)")
    return DeploymentConfig(
        compute=compute,
        model=raw.get("model") or DEFAULT_MODEL[compute],
        max_instances=_int(raw, "maxInstances", 10, 1, 1000),
        jobs_per_instance=_int(raw, "jobsPerInstance", 4, 1, 1000),
        idle_minutes=_int(raw, "idleMinutes", 10, 0, 24 * 60),
        instance_types=instance_types,
        vpc_id=vpc_id,
        subnet_ids=subnets,
        ami_id=raw.get("amiId") or None,
        retain_inputs_days=_int(raw, "retainInputsDays", 14, 1, 3650),
        visibility_timeout=_int(raw, "visibilityTimeout", 300, 30, 43200),
        max_receive_count=max_receive_count,
    )


KEYS = (
    "compute",
    "model",
    "maxInstances",
    "jobsPerInstance",
    "idleMinutes",
    "instanceTypes",
    "vpcId",
    "subnetIds",
    "amiId",
    "retainInputsDays",
    "visibilityTimeout",
    "maxReceiveCount",
)


def load_config(config: Any) -> DeploymentConfig:
    """From a ``pulumi.Config("whisperq")``."""
    return parse_config({key: config.get(key) for key in KEYS})
