"""The one configuration object.

Sources, highest priority first:

1. keyword arguments (tests, the CLI's own overrides);
2. the embedded local stack, while it is up: it owns the *connection* fields (endpoint,
   bucket, queues, region, credentials) so a half-local, half-AWS mix cannot happen;
3. ``WHISPERQ_*`` environment variables;
4. a ``.env`` file in the current directory;
5. a TOML config file (``~/.config/whisperq/config.toml``, or ``WHISPERQ_CONFIG_FILE``);
6. the defaults below.
"""

from __future__ import annotations

import difflib
import json
import logging
import os
import re
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)

from whisperq import defaults, keys
from whisperq.errors import ConfigError, InvalidSettingError
from whisperq.schemas import TranscriptionOptions
from whisperq.vocabulary import compile_user_patterns

log = logging.getLogger("whisperq.settings")
ENV_PREFIX = "WHISPERQ_"
LOCAL_STACK_FILE = "stack.json"
DEFAULT_STATE_DIR = Path.home() / ".whisperq"
DEFAULT_CONFIG_FILE = Path.home() / ".config" / "whisperq" / "config.toml"

# The fields the local stack provides while it is up.
CONNECTION_FIELDS = (
    "endpoint_url",
    "bucket",
    "queue_url",
    "dlq_url",
    "region",
    "aws_access_key_id",
    "aws_secret_access_key",
    "autoscaling_group",  # the local stack's group in moto: `status` shows its workers
    "ingest_queue_url",  # the local stack's S3 events (incoming/) for `whisperq ingest`
    "ingest_dlq_url",  # and their dead-letter queue (`status` counts both)
)


class _Locations(BaseSettings):
    """Where whisperq keeps its own files; read before the main settings."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    state_dir: Path = DEFAULT_STATE_DIR
    config_file: Path = DEFAULT_CONFIG_FILE


class LocalStackSource(PydanticBaseSettingsSource):
    """Connection settings from the local stack's state file, when the stack is up."""

    def __init__(self, settings_cls: type[BaseSettings], state_file: Path) -> None:
        super().__init__(settings_cls)
        self.state_file = state_file

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # unused: __call__ returns everything at once

    def __call__(self) -> dict[str, Any]:
        try:
            state = json.loads(self.state_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        settings = state.get("settings", {})
        return {name: settings[name] for name in CONNECTION_FIELDS if name in settings}


class Settings(BaseSettings):
    """Everything whisperq can be told. Every field is also ``WHISPERQ_<FIELD>``."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_file=".env", extra="ignore", validate_default=True
    )

    # --- where things are -------------------------------------------------------------
    bucket: str = Field("", description="S3 bucket for inputs, manifests and results.")
    queue_url: str = Field("", description="SQS queue the jobs go to.")
    dlq_url: str = Field("", description="Dead-letter queue of queue_url.")
    region: str = "us-east-1"
    endpoint_url: str | None = Field(None, description="S3/SQS endpoint (the local stack).")
    aws_access_key_id: str | None = None
    aws_secret_access_key: SecretStr | None = None
    state_dir: Path = DEFAULT_STATE_DIR
    config_file: Path = DEFAULT_CONFIG_FILE

    # --- submitting -------------------------------------------------------------------
    upload_concurrency: int = Field(8, ge=1, le=64)

    redact_patterns: dict[str, str] = Field(
        default_factory=dict,
        description='Your own values to redact, name -> regex: {"policy": "POL-?\\\\d{8}"}; '
        "added to every batch submitted with --redact and tagged [POLICY].",
    )

    event_bus: str = Field(
        "",
        description="EventBridge bus that gets a 'whisperq batch finished' event when a "
        "batch's done.json is written ('' = none; a deployed stack sets 'default').",
    )

    # --- S3-event ingestion (`whisperq ingest`; the ingest Lambda reads the same names) --
    ingest_queue_url: str = Field(
        "", description="SQS queue the source bucket's object-created events go to."
    )
    ingest_dlq_url: str = Field(
        "",
        description="Dead-letter queue of ingest_queue_url (events whose ingest kept "
        "failing); `status` counts it.",
    )
    ingest_prefix: str = Field(
        keys.DEFAULT_INGEST_PREFIX, description="Objects under <prefix><batch>/<path> become jobs."
    )
    ingest_source_bucket: str = Field(
        "", description="Bucket recordings land in; empty = bucket (its incoming/)."
    )
    ingest_options: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description='Batch options per ingest folder, as submit takes them: {"support": '
        '{"channels": "split", "speakers": ["agent", "customer"]}}.',
    )
    ingest_default_options: dict[str, Any] = Field(
        default_factory=dict, description="Options for other folders; {} = submit's defaults."
    )
    ingest_batch: str = Field(
        keys.DEFAULT_INGEST_BATCH,
        description="The batch an object under <prefix><folder>/ joins: {folder}, and {date} "
        "(the UTC day it was created); '{folder}-{date}' = one batch per folder per day, "
        "with the folder's options.",
    )
    ingest_claim_seconds: float = Field(
        defaults.INGEST_CLAIM_SECONDS,
        gt=0,
        description="An ingest that claimed a file and queued nothing for this long is "
        "taken to be dead; another delivery of the event takes over.",
    )

    # --- the worker -------------------------------------------------------------------
    model: str = Field("tiny.en", description="Model name, local directory or s3:// prefix.")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    compute_type: str = Field("auto", description="CTranslate2 compute type; auto picks.")
    cpu_threads: int = Field(0, ge=0, description="0 = all cores / worker_concurrency.")
    worker_concurrency: int = Field(
        0, ge=0, le=64, description="Pool processes; 0 = auto (one per core on CPU, 1 on CUDA)."
    )
    beam_size: int = Field(5, ge=1, le=20)
    vad: bool = True
    batch_size: int = Field(
        0, ge=0, le=64, description="0 = auto (1 = sequential on CPU, 16 on CUDA)."
    )
    allowed_models: list[str] = Field(
        default_factory=list,
        description="Models a batch may ask for besides `model` (loaded on first use and "
        "kept); ['*'] = any. Others fail the job with a reason.",
    )
    sqs_wait_seconds: int = Field(10, ge=0, le=20, description="SQS long-poll wait.")
    pack_max_files: int = Field(
        8,
        ge=1,
        le=32,
        description="Short files (under 30 s) a worker takes at once to share Whisper's "
        "windows (docs/operations.md: short recordings); 1 = one file at a time.",
    )
    pack_max_bytes: int = Field(
        1_000_000,
        ge=0,
        description="Only files up to this size are taken along with a short one (30 s of "
        "16 kHz 16-bit WAV is 960 kB); larger ones wait for their own delivery.",
    )

    # --- when things go wrong (docs/operations.md: "What happens when things go wrong") -----------
    visibility_timeout: int | None = Field(
        None, ge=1, le=43200, description="Seconds; None = the queue's own attribute."
    )
    max_attempts: int = Field(
        3, ge=1, le=20, description="Tries per stage of a job on transient errors."
    )
    retry_base_seconds: float = Field(2.0, ge=0)
    retry_max_seconds: float = Field(60.0, ge=0)
    shutdown_grace_seconds: float = Field(
        defaults.SHUTDOWN_GRACE_SECONDS,
        ge=0,
        description="On SIGTERM: how long a running job may go on before it is handed back.",
    )
    spot_watch: Literal["auto", "on", "off"] = Field(
        "auto", description="Watch for spot interruption notices; auto = when on EC2."
    )
    imds_endpoint: str = "http://169.254.169.254"
    spot_poll_seconds: float = Field(5.0, gt=0)
    spot_grace_seconds: float = Field(
        defaults.SPOT_GRACE_SECONDS,
        ge=0,
        description="Grace for the running job after a spot notice "
        f"(of {defaults.SPOT_NOTICE_SECONDS:g} s).",
    )
    autoscaling_group: str | None = Field(
        None, description="Set scale-in protection on this group while a job runs."
    )
    lifecycle_hook: str | None = Field(
        None,
        description="The group's termination lifecycle hook: when IMDS says the group is "
        "terminating this instance, stop as on a spot notice, then complete the hook.",
    )
    instance_id: str | None = Field(None, description="This instance; None = ask IMDS.")
    instance_type: str | None = Field(
        None, description="Recorded in each result (for cost); None = ask IMDS on EC2."
    )
    metrics_namespace: str | None = Field(
        None, description="Publish JobsCompleted/JobsFailed/AudioSeconds to CloudWatch here."
    )

    # --- fleet and cost (status's fleet lines and ETA, `whisperq cost`) ----------------
    # Defaults: whisperq/defaults.py, which the stack's defaults are too; `whisperq config
    # from-stack` fills them from the stack's outputs. autoscaling_group (above) names the group.
    fleet_jobs_per_instance: int = Field(
        defaults.JOBS_PER_INSTANCE,
        ge=1,
        le=1000,
        description="The scaler's jobs per instance (whisperq:jobsPerInstance).",
    )
    fleet_max_instances: int = Field(
        defaults.MAX_INSTANCES,
        ge=1,
        le=1000,
        description="The scaler's maximum (whisperq:maxInstances).",
    )
    fleet_boot_seconds: float = Field(
        defaults.READY_SECONDS,
        ge=0,
        description="Launch to a worker taking jobs: boot "
        f"({defaults.BOOT_SECONDS:g}) + model load ({defaults.MODEL_LOAD_SECONDS:g}).",
    )
    fleet_slots_per_instance: int = Field(
        0,
        ge=0,
        le=64,
        description="Jobs an instance runs at once (in a weighted group: an instance of weight "
        "1, the smallest type); 0 = seen in recent results.",
    )
    fleet_instance_type: str = Field(
        defaults.FLEET_INSTANCE_TYPE,
        description="Priced for results that record no instance type.",
    )
    instance_prices: dict[str, dict[str, float]] = Field(
        default_factory=dict,
        description='$ per instance-hour overrides: {"c6a.xlarge": {"spot": 0.07}}; a type '
        "not in the built-in table needs both on_demand and spot.",
    )

    @field_validator("redact_patterns")
    @classmethod
    def _patterns_compile(cls, value: dict[str, str]) -> dict[str, str]:
        compile_user_patterns(value)  # raises ValueError naming the bad one
        return value

    @field_validator("ingest_options")
    @classmethod
    def _valid_options_per_batch(cls, value: dict[str, dict[str, Any]]) -> dict[str, Any]:
        """Each folder's options validated as submit's are (kept as written; the jobs
        carry them in full: ingest_config)."""
        for batch, options in value.items():
            try:
                keys.validate_batch_name(batch)
            except ValueError:
                raise ValueError(
                    f"{batch!r} is not a batch name: name the folder under the ingest prefix "
                    "(e.g. 'support' for incoming/support/)"
                ) from None
            _full_options(options, batch)
        return value

    @field_validator("ingest_batch")
    @classmethod
    def _valid_batch_template(cls, value: str) -> str:
        return keys.check_batch_template(value)  # InvalidKeyError is a ValueError

    @field_validator("ingest_default_options")
    @classmethod
    def _valid_default_options(cls, value: dict[str, Any]) -> dict[str, Any]:
        _full_options(value, "default")
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        locations = _Locations()
        return (
            init_settings,
            LocalStackSource(settings_cls, locations.state_dir / LOCAL_STACK_FILE),
            env_settings,
            dotenv_settings,
            TomlConfigSettingsSource(settings_cls, toml_file=locations.config_file),
        )

    # --- derived ----------------------------------------------------------------------
    @property
    def queue_name(self) -> str:
        """The SQS queue's name: the last part of its URL."""
        return self.queue_url.rstrip("/").rsplit("/", 1)[-1]

    @property
    def local_stack_file(self) -> Path:
        return self.state_dir / LOCAL_STACK_FILE

    @property
    def target(self) -> str:
        """Where commands go, in words, for messages."""
        if self.endpoint_url:
            return f"local stack at {self.endpoint_url}"
        return f"AWS {self.region}"

    def require_storage(self) -> None:
        """Fail with what to do when no bucket/queue is configured."""
        missing = [name for name in ("bucket", "queue_url") if not getattr(self, name)]
        if missing:
            env = ", ".join(ENV_PREFIX + name.upper() for name in missing)
            raise ConfigError(
                f"No {' or '.join(missing)} configured. Start the embedded stack with "
                f"`whisperq local up`, or set {env} (environment, .env or {self.config_file}) "
                "to what `pulumi up` printed."
            )

    def ingest_environment(self) -> dict[str, str]:
        """The ingest step's configuration as the ingest Lambda's environment carries it
        (``whisperq.batches.ingest.IngestConfig.from_env`` reads both): one way in."""
        options_by_batch = {
            batch: _full_options(options, batch) for batch, options in self.ingest_options.items()
        }
        return {
            "WHISPERQ_BUCKET": self.bucket,
            "WHISPERQ_QUEUE_URL": self.queue_url,
            "WHISPERQ_INGEST_SOURCE_BUCKET": self.ingest_source_bucket or self.bucket,
            "WHISPERQ_INGEST_PREFIX": self.ingest_prefix,
            "WHISPERQ_INGEST_OPTIONS": json.dumps(options_by_batch),
            "WHISPERQ_INGEST_DEFAULT_OPTIONS": json.dumps(
                _full_options(self.ingest_default_options, "default")
            ),
            "WHISPERQ_INGEST_CLAIM_SECONDS": repr(self.ingest_claim_seconds),
            "WHISPERQ_INGEST_BATCH": self.ingest_batch,
            "WHISPERQ_EVENT_BUS": self.event_bus,
        }


def _full_options(options: Any, name: str) -> dict[str, Any]:
    """Transcription options as every job carries them (defaults filled in)."""
    try:
        return TranscriptionOptions.model_validate(options).model_dump(mode="json")
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(map(str, item['loc'])) or 'options'}: {item['msg']}"
            for item in error.errors()
        )
        raise ValueError(f"options for {name!r}: {problems}") from None


def load_settings(**overrides: Any) -> Settings:
    """The settings from every source; a value that is not allowed raises
    :class:`InvalidSettingError` naming where it was set, and what is allowed. A key of the
    config file that is no setting is logged (once) with the closest setting's name."""
    for warning in unknown_config_keys(_Locations().config_file):
        if warning not in _warned:
            _warned.add(warning)
            log.warning("warning: %s", warning)
    try:
        return Settings(**overrides)
    except ValidationError as error:
        raise InvalidSettingError(describe_invalid(error)) from None
    except SettingsError as error:
        # A value its source could not even parse (e.g. JSON for a list or a dict).
        field = re.search(r'field "(\w+)"', str(error))
        name = field.group(1) if field else "?"
        raise InvalidSettingError(
            f"{_where(name)}: cannot be parsed ({error.__cause__ or error}); lists and tables "
            "are JSON in the environment, e.g. WHISPERQ_ALLOWED_MODELS='[\"base\"]'."
        ) from None
    except tomllib.TOMLDecodeError as error:
        raise InvalidSettingError(
            f"{_Locations().config_file} is not valid TOML: {error}."
        ) from None


def describe_invalid(error: ValidationError) -> str:
    """One line for a settings ValidationError: each bad field, where it is set, what is
    allowed and what was given (never a secret's value)."""
    problems = []
    for item in error.errors():
        name = str(item["loc"][0]) if item["loc"] else "?"
        given = "" if "secret" in name else f" (got {item.get('input')!r})"
        problems.append(f"{_where(name)}: {item['msg']}{given}")
    return "Invalid setting: " + "; ".join(problems) + "."


_warned: set[str] = set()


def unknown_config_keys(config_file: Path) -> list[str]:
    """A message for each top-level key of ``config_file`` that is no setting (a typo is
    otherwise silently ignored), naming the closest setting."""
    try:
        with config_file.open("rb") as handle:
            table = tomllib.load(handle)
    except (OSError, tomllib.TOMLDecodeError):
        return []  # a broken file is reported when the settings are read
    known = list(Settings.model_fields)
    messages = []
    for key in table:
        if key in Settings.model_fields:
            continue
        close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        messages.append(f"{config_file}: {key!r} is not a whisperq setting, ignored{hint}")
    return messages


def _where(name: str) -> str:
    """Where a field was set, in words: the environment, the .env file or the config file
    (the first that has it, as the sources' priority goes), else where it can be set."""
    variable = f"{ENV_PREFIX}{name.upper()}"
    config_file = _Locations().config_file
    if variable in os.environ:
        return f"{variable} (environment)"
    if _dotenv_names(Path(".env")) & {variable}:
        return f"{variable} in {Path('.env').resolve()}"
    if name in _config_keys(config_file):
        return f"{name} in {config_file}"
    return f"{variable} (or {name} in {config_file})"


def _dotenv_names(path: Path) -> set[str]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return set()
    names = (line.split("=", 1)[0].strip() for line in lines if "=" in line)
    return {name.removeprefix("export ").strip() for name in names}


def _config_keys(path: Path) -> set[str]:
    try:
        with path.open("rb") as handle:
            return set(tomllib.load(handle))
    except (OSError, tomllib.TOMLDecodeError):
        return set()
