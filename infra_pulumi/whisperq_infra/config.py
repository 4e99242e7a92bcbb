"""The stack's configuration (`pulumi config set whisperq:KEY VALUE`), read and checked in one
place. Bad values fail at preview with a message naming the key and what is allowed."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from whisperq import defaults, keys
from whisperq.errors import InvalidKeyError
from whisperq.schemas import TranscriptionOptions

# The defaults (model, instance types, scaler, queue per compute kind) are whisperq's own
# (whisperq/defaults.py), shared with the CLI, the local stack and the simulator.

_INSTANCE_TYPE = re.compile(r"[a-z][a-z0-9-]*\.[a-z0-9]+")
_ROUTE_TABLE = re.compile(r"rtb-[0-9a-f]{8,17}")
# An address SNS can mail (a local part, an @, a domain with a dot): typos fail at preview,
# not in a subscription that never confirms.
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[A-Za-z]{2,}")


class ConfigError(ValueError):
    """A config value that cannot work; the message names the key."""


def full_options(given: Mapping[str, Any]) -> dict[str, Any]:
    """Every option of a batch (``whisperq submit``'s), defaults filled in, as JSON values."""
    return TranscriptionOptions.model_validate(given).model_dump(mode="json")


@dataclass(frozen=True)
class IngestSettings:
    """The S3-event ingest route: ``incoming/<batch>/<path>`` (and the external bucket's
    ``<externalPrefix><batch>/<path>``) becomes a job of ``<batch>``."""

    enabled: bool = True
    # batch name -> FULL options (defaults filled in): the Lambda needs no pydantic
    options_by_batch: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    default_options: Mapping[str, Any] = field(default_factory=lambda: full_options({}))
    external_bucket: str | None = None
    external_prefix: str = ""  # "" = the whole bucket; else ends in "/"
    external_kms_key: str | None = None  # the external bucket's CMK, if it uses one
    batch_template: str = keys.DEFAULT_INGEST_BATCH  # ingestBatch: {folder}, {date}


@dataclass(frozen=True)
class DeploymentConfig:
    compute: str = defaults.COMPUTE
    model: str = defaults.MODEL[defaults.COMPUTE]
    max_instances: int = defaults.MAX_INSTANCES
    jobs_per_instance: int = defaults.JOBS_PER_INSTANCE
    idle_minutes: int = defaults.IDLE_MINUTES
    instance_types: tuple[str, ...] = defaults.INSTANCE_TYPES[defaults.COMPUTE]
    vpc_id: str | None = None
    subnet_ids: tuple[str, ...] = ()
    # False: workers get no public IPv4 address (AWS bills each one by the hour); their
    # subnets (subnetIds) then reach S3, SQS, ... through a NAT gateway or VPC endpoints.
    # True: as the subnets decide (the default VPC's give every worker one).
    associate_public_ip: bool = True
    # Route tables of the workers' subnets to give an S3 gateway endpoint (free; S3 traffic
    # then stays off the internet and the NAT gateway): none = no endpoint.
    s3_endpoint_route_tables: tuple[str, ...] = ()
    # Where the alarms go: an SNS e-mail subscription (confirmed from the mail SNS sends).
    alert_email: str | None = None
    ami_id: str | None = None
    retain_inputs_days: int = 14
    visibility_timeout: int = defaults.VISIBILITY_TIMEOUT_SECONDS
    max_receive_count: int = defaults.MAX_RECEIVE_COUNT
    # `pulumi destroy` deletes the bucket with everything in it (else it refuses while the
    # bucket holds objects: results are data). Takes effect after a `pulumi up`.
    force_destroy: bool = False
    # The EventBridge bus that gets "whisperq batch finished" (worker.env's event_bus, and
    # the worker role's events:PutEvents on it); None: no event (whisperq:eventBus "none").
    event_bus: str | None = "default"
    ingest: IngestSettings = IngestSettings()

    @property
    def root_volume_gb(self) -> int:
        return defaults.ROOT_VOLUME_GB[self.compute]

    @property
    def compute_type(self) -> str:
        return defaults.COMPUTE_TYPE[self.compute]


_DEFAULT = DeploymentConfig()
# Spot interruptions redeliver good jobs: fewer deliveries would dead-letter them.
MIN_RECEIVE_COUNT = 5


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
    compute = raw.get("compute") or _DEFAULT.compute
    if compute not in defaults.COMPUTE_KINDS:
        kinds = ", ".join(defaults.COMPUTE_KINDS)
        raise ConfigError(f"whisperq:compute must be one of: {kinds} (got {compute!r})")
    instance_types = _list(raw, "instanceTypes") or defaults.INSTANCE_TYPES[compute]
    bad = [name for name in instance_types if not _INSTANCE_TYPE.fullmatch(name)]
    if bad or not 1 <= len(instance_types) <= 20:
        got = bad or list(instance_types)
        raise ConfigError(
            f"whisperq:instanceTypes must list 1-20 EC2 instance types like c6a.xlarge (got {got})"
        )
    if compute == "gpu" and not all(name.startswith(("g", "p")) for name in instance_types):
        raise ConfigError("whisperq:instanceTypes must be GPU types (g*/p*) when compute is gpu")
    max_receive_count = _int(raw, "maxReceiveCount", _DEFAULT.max_receive_count, 1, 1000)
    if max_receive_count < MIN_RECEIVE_COUNT:
        raise ConfigError(
            f"whisperq:maxReceiveCount must be at least {MIN_RECEIVE_COUNT}: spot interruptions "
            "redeliver good jobs, which must not end in the dead-letter queue "
            f"(got {max_receive_count})"
        )
    subnets = _list(raw, "subnetIds")
    vpc_id = raw.get("vpcId") or None
    if subnets and not vpc_id:
        raise ConfigError("whisperq:subnetIds needs whisperq:vpcId (the VPC they belong to)")
    associate_public_ip = _bool(raw, "associatePublicIp", True)
    if not associate_public_ip and not subnets:
        raise ConfigError(
            "whisperq:associatePublicIp false needs whisperq:vpcId and whisperq:subnetIds: "
            "private subnets that reach S3, SQS, CloudWatch and Auto Scaling through a NAT "
            'gateway or VPC endpoints (docs/deploy.md, "Network"); in the default VPC\'s '
            "subnets a worker without a public address reaches nothing"
        )
    route_tables = _list(raw, "s3EndpointRouteTableIds")
    bad_tables = [name for name in route_tables if not _ROUTE_TABLE.fullmatch(name)]
    if bad_tables:
        raise ConfigError(
            "whisperq:s3EndpointRouteTableIds must list route table ids like "
            f"rtb-0123456789abcdef0 (got {bad_tables})"
        )
    if route_tables and not vpc_id:
        raise ConfigError(
            "whisperq:s3EndpointRouteTableIds needs whisperq:vpcId (the VPC of the route tables)"
        )
    alert_email = raw.get("alertEmail") or None
    if alert_email is not None and not _EMAIL.fullmatch(str(alert_email)):
        raise ConfigError(
            "whisperq:alertEmail must be one e-mail address, e.g. ops@example.com "
            f"(got {alert_email!r})"
        )
    model = raw.get("model") or defaults.MODEL[compute]
    if model.startswith("s3://"):
        raise ConfigError(
            f"whisperq:model: s3:// model prefixes are not supported (got {model!r}): the "
            "worker cannot load them yet. Use a Hugging Face name (baked into the image by "
            "`packer build -var model=NAME`), or tiny.en."
        )
    return DeploymentConfig(
        compute=compute,
        model=model,
        max_instances=_int(raw, "maxInstances", _DEFAULT.max_instances, 1, 1000),
        jobs_per_instance=_int(raw, "jobsPerInstance", _DEFAULT.jobs_per_instance, 1, 1000),
        idle_minutes=_int(raw, "idleMinutes", _DEFAULT.idle_minutes, 0, 24 * 60),
        instance_types=instance_types,
        vpc_id=vpc_id,
        subnet_ids=subnets,
        associate_public_ip=associate_public_ip,
        s3_endpoint_route_tables=route_tables,
        alert_email=alert_email,
        ami_id=raw.get("amiId") or None,
        retain_inputs_days=_int(raw, "retainInputsDays", _DEFAULT.retain_inputs_days, 1, 3650),
        visibility_timeout=_int(raw, "visibilityTimeout", _DEFAULT.visibility_timeout, 30, 43200),
        max_receive_count=max_receive_count,
        force_destroy=_bool(raw, "forceDestroy", False),
        event_bus=_event_bus(raw.get("eventBus")),
        ingest=parse_ingest(raw),
    )


_EVENT_BUS = re.compile(r"[A-Za-z0-9._\-/]{1,256}")


def _event_bus(value: Any) -> str | None:
    """whisperq:eventBus: a bus name in this account and region ("default" unless set),
    or "none"."""
    if value in (None, ""):
        return _DEFAULT.event_bus
    if str(value) == "none":
        return None
    if not _EVENT_BUS.fullmatch(str(value)):
        raise ConfigError(
            f"whisperq:eventBus must be an EventBridge bus name of the stack's account and "
            f'region (e.g. "default"), or "none"; got {value!r}'
        )
    return str(value)


# --- capacity weights ----------------------------------------------------------------------

_SIZE = re.compile(r"[a-z][a-z0-9-]*\.(\d*)(large|xlarge)")


def instance_capacity(instance_type: str, compute: str) -> int:
    """What one instance of the type runs at once: its GPUs on a GPU fleet (one pool process
    per GPU), its vCPUs on a CPU fleet. From whisperq/defaults.py's tables, else from the
    size (large = 2 vCPUs, xlarge = 4, Nxlarge = 4N; a GPU type not listed: one GPU)."""
    if compute == "gpu":
        return defaults.INSTANCE_GPUS.get(instance_type, 1)
    known = defaults.INSTANCE_VCPUS.get(instance_type)
    if known is not None:
        return known
    match = _SIZE.fullmatch(instance_type)
    if match is None or (match.group(1) and match.group(2) != "xlarge"):
        raise ConfigError(
            f"whisperq:instanceTypes: cannot weigh {instance_type} (how many vCPUs?): use "
            ".large, .xlarge or .Nxlarge sizes, or add it to INSTANCE_VCPUS in "
            "whisperq/defaults.py"
        )
    multiple, size = match.groups()
    return (4 if size == "xlarge" else 2) * int(multiple or 1)


def capacity_weights(instance_types: Sequence[str], compute: str) -> dict[str, int]:
    """type -> the group's weighted capacity: its capacity in units of the smallest type's,
    so that the scaler's "jobs per instance" holds whichever types the group launches (a
    c6a.2xlarge counts as two c6a.xlarge). Auto Scaling takes whole numbers from 1 to 999."""
    capacity = {name: instance_capacity(name, compute) for name in instance_types}
    unit = min(capacity.values())
    return {name: max(1, min(999, round(value / unit))) for name, value in capacity.items()}


# --- the ingest route ---------------------------------------------------------------------

# The Lambda's environment holds 4 KB in all; the rest (bucket, queue URL, prefix) fits in 1 KB.
INGEST_OPTIONS_BYTES = 3072
_BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_KMS_KEY_ARN = re.compile(r"arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:key/[A-Za-z0-9-]+")


def _bool(raw: Mapping[str, Any], key: str, default: bool) -> bool:
    value = raw.get(key)
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        return value
    if str(value).lower() in ("true", "false"):
        return str(value).lower() == "true"
    raise ConfigError(f"whisperq:{key} must be true or false, got {value!r}")


def _json_object(raw: Mapping[str, Any], key: str) -> dict[str, Any]:
    value = raw.get(key)
    if value is None or value == "":
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            value = None
    if not isinstance(value, dict):
        raise ConfigError(
            f"whisperq:{key} must be a JSON object, e.g. "
            '\'{"support": {"channels": "split", "speakers": "agent,customer"}}\''
        )
    return value


def _submit_options(key: str, where: str, given: Any) -> dict[str, Any]:
    """Options as `whisperq submit` takes them (camelCase or snake_case names; speakers and
    formats as a list or "a,b") -> TranscriptionOptions' field names, checked."""
    if not isinstance(given, dict):
        raise ConfigError(f"whisperq:{key}{where} must be an object of options, got {given!r}")
    options: dict[str, Any] = {}
    for name, value in given.items():
        field_name = re.sub(r"(?<=[a-z])(?=[A-Z])", "_", str(name)).replace("-", "_").lower()
        if field_name in ("speakers", "formats") and isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        options[field_name] = value
    try:
        full_options(options)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in item['loc']) or 'options'}: {item['msg']}"
            for item in error.errors()
        )
        raise ConfigError(f"whisperq:{key}{where}: {problems}") from None
    return options


def parse_ingest(raw: Mapping[str, Any]) -> IngestSettings:
    """The ingest route's keys. Options given for a batch (a folder of ``incoming/``)
    override ``ingestDefaults``, which override whisperq's defaults."""
    enabled = _bool(raw, "ingest", True)
    defaults_given = _submit_options("ingestDefaults", "", _json_object(raw, "ingestDefaults"))
    by_batch: dict[str, dict[str, Any]] = {}
    for batch, given in _json_object(raw, "ingestPrefixes").items():
        try:
            keys.validate_batch_name(batch)
        except InvalidKeyError as error:
            raise ConfigError(f"whisperq:ingestPrefixes: {error}") from None
        options = _submit_options("ingestPrefixes", f"[{batch!r}]", given)
        by_batch[batch] = full_options({**defaults_given, **options})
    default_options = full_options(defaults_given)
    size = len(json.dumps(by_batch, separators=(",", ":"))) + len(
        json.dumps(default_options, separators=(",", ":"))
    )
    if size > INGEST_OPTIONS_BYTES:
        raise ConfigError(
            f"whisperq:ingestPrefixes: the options of {len(by_batch)} prefixes take {size} "
            f"bytes, over the {INGEST_OPTIONS_BYTES} the ingest Lambda's environment (4 KB in "
            "all) has room for: fewer prefixes, or shorter hotwords / initial prompts"
        )
    batch_template = raw.get("ingestBatch") or keys.DEFAULT_INGEST_BATCH
    try:
        keys.check_batch_template(batch_template)
    except InvalidKeyError as error:
        raise ConfigError(f"whisperq:ingestBatch: {error}") from None
    bucket = raw.get("externalBucket") or None
    prefix = raw.get("externalPrefix") or ""
    kms_key = raw.get("externalKmsKey") or None
    if bucket is not None and not (_BUCKET_NAME.fullmatch(bucket) and ".." not in bucket):
        raise ConfigError(
            f"whisperq:externalBucket must be an S3 bucket name (no s3://, no prefix: that is "
            f"whisperq:externalPrefix), got {bucket!r}"
        )
    if prefix and (
        not prefix.endswith("/") or prefix.startswith("/") or any(c in prefix for c in "*?")
    ):
        raise ConfigError(
            "whisperq:externalPrefix must be a folder ending in '/', without a leading '/' "
            f"or wildcards, e.g. 'recordings/' (empty: the whole bucket), got {prefix!r}"
        )
    if (prefix or kms_key) and bucket is None:
        raise ConfigError("whisperq:externalPrefix and externalKmsKey need whisperq:externalBucket")
    if kms_key and not _KMS_KEY_ARN.fullmatch(kms_key):
        raise ConfigError(
            "whisperq:externalKmsKey must be a KMS key ARN "
            f"(arn:aws:kms:REGION:ACCOUNT:key/ID), got {kms_key!r}"
        )
    if not enabled and (bucket or by_batch):
        raise ConfigError(
            "whisperq:ingest is false, but whisperq:externalBucket or whisperq:ingestPrefixes "
            "is set: remove them, or turn the route on"
        )
    return IngestSettings(
        enabled=enabled,
        options_by_batch=by_batch,
        default_options=default_options,
        external_bucket=bucket,
        external_prefix=prefix,
        external_kms_key=kms_key,
        batch_template=batch_template,
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
    "associatePublicIp",
    "s3EndpointRouteTableIds",
    "alertEmail",
    "amiId",
    "retainInputsDays",
    "visibilityTimeout",
    "maxReceiveCount",
    "forceDestroy",
    "eventBus",
    "ingest",
    "ingestPrefixes",
    "ingestDefaults",
    "ingestBatch",
    "externalBucket",
    "externalPrefix",
    "externalKmsKey",
)


def load_config(config: Any) -> DeploymentConfig:
    """From a ``pulumi.Config("whisperq")``."""
    return parse_config({key: config.get(key) for key in KEYS})
