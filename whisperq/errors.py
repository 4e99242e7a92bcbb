"""Every error whisperq raises on purpose, in one family.

Each message says what happened and what to do. The CLI catches :class:`WhisperqError`
once (``whisperq.cli.main``), prints the message on one line and exits with the error's
``exit_code``; anything else that escapes is a bug and keeps its traceback.

The built-in base next to ``WhisperqError`` is kept where callers test for it
(``AudioDecodeError`` is a ``ValueError``, as decoders raise).
"""

from __future__ import annotations

from enum import StrEnum

EXIT_ERROR = 1
EXIT_USAGE = 2


class WhisperqError(Exception):
    """Base of whisperq's own errors; the message is for a person."""

    exit_code: int = EXIT_ERROR


class ConfigError(WhisperqError):
    """Configuration is missing or wrong; the message says what to do."""


class InvalidSettingError(ConfigError):
    """A setting's value is not allowed (names the variable or key, and what is allowed)."""

    exit_code = EXIT_USAGE


class PriceError(ConfigError, ValueError):
    """An instance type has no price, or an instance_prices override is malformed; the
    message names the type and how to set its price."""


class UsageError(WhisperqError):
    """A command was called with options that do not fit together or are out of range."""

    exit_code = EXIT_USAGE


class StackConfigError(WhisperqError):
    """The Pulumi stack's outputs could not be read."""


class LocalStackError(WhisperqError):
    """The embedded local stack could not be started or reached."""


class SubmitError(WhisperqError):
    """Nothing (more) can be submitted: a path is missing, no audio was found, ..."""


class InvalidKeyError(WhisperqError, ValueError):
    """A batch name or path cannot become an S3 key under the layout's rules."""


class ModelError(WhisperqError):
    """The model cannot be found, verified or loaded."""


class AudioDecodeError(WhisperqError, ValueError):
    """The input cannot be decoded as audio."""


class OptionNotServed(WhisperqError, ValueError):
    """The batch asks for something this worker will not do (e.g. another model)."""


class WorkerUnfit(WhisperqError):
    """This worker cannot run the job (e.g. its model will not load): give it back."""


# --- what to do about a failed file ---------------------------------------------------------


class FailureCause(StrEnum):
    """Why a file failed, as far as what to do next goes. Error records carry it
    (``cause``); ``next_step`` turns it into the one thing to do, for the record's reason
    and for ``wait`` and ``status`` alike."""

    NOT_AUDIO = "not_audio"  # not audio, corrupt or empty: the same bytes fail again
    INPUT_GONE = "input_gone"  # the input left S3 (lifecycle rule, deleted)
    ACCESS_DENIED = "access_denied"  # the workers' IAM role lacks a permission
    INPUT_DENIED = "input_denied"  # 403 on the input: a permission, or a deleted input
    NOT_SERVED = "not_served"  # the batch asks for a model or option the workers refuse
    INVALID_JOB = "invalid_job"  # the job does not validate: submitter and workers differ
    OUT_OF_MEMORY = "out_of_memory"  # the worker ran out of memory on this file
    TRANSIENT = "transient"  # S3/SQS or the network failed, and the retries ran out
    UNEXPECTED = "unexpected"  # an exception nobody foresaw, twice: likely a bug
    S3_REFUSED = "s3_refused"  # another S3 error that retrying as it is cannot fix
    DEAD_LETTERED = "dead_lettered"  # SQS gave up on the job after every delivery failed


def next_step(cause: FailureCause | str | None, batch: str, path: str) -> str:
    """The one next step for ``path`` of ``batch`` that failed for ``cause`` (None: a
    record that names no cause). Retry only where running the same job again can work:
    a file that is not audio fails again until the file itself changes."""
    submit_again = f"`whisperq submit {path} --batch {batch} --force`"
    retry = f"`whisperq retry {batch}`"
    steps = {
        FailureCause.NOT_AUDIO: "fix or replace the file (retrying the same bytes fails "
        f"again), then submit it again from the folder its path is relative to: {submit_again}",
        FailureCause.INPUT_GONE: f"submit the file again: {submit_again} (or put it in "
        "incoming/ again)",
        FailureCause.ACCESS_DENIED: "give the workers' IAM role the permission the reason "
        f"names (redeploy), then {retry}",
        FailureCause.INPUT_DENIED: "give the workers' IAM role s3:GetObject and "
        f"s3:ListBucket on the bucket, then {retry}; if it has them, the input was deleted: "
        f"{submit_again}",
        FailureCause.NOT_SERVED: "let the workers serve what the batch asks for (the reason "
        f"says how), then {retry}; or submit the file to a new batch without that option",
        FailureCause.INVALID_JOB: "run the same whisperq version on the workers as where "
        f"you submit, then {retry}",
        FailureCause.OUT_OF_MEMORY: "give the workers more memory (a larger instance type, "
        f"or fewer of them per machine: WHISPERQ_WORKER_CONCURRENCY), then {retry}",
        FailureCause.TRANSIENT: f"{retry} once the cause has passed",
        FailureCause.UNEXPECTED: f"{retry}; if it fails again, report a bug with the error record",
        FailureCause.S3_REFUSED: f"fix what the reason names, then {retry}",
        FailureCause.DEAD_LETTERED: f"{retry} puts its job back on the queue",
    }
    if cause in steps:
        return steps[FailureCause(cause)]
    return f"read the reason in its error record (`whisperq status {batch} --failed`)"


def record_cause(cause: str | None, kind: str, error_type: str) -> FailureCause | None:
    """The cause of an error record: its own, or for a record written before records had
    one (and by ingest), what its kind and error type say, where they say it."""
    if cause in {item.value for item in FailureCause}:
        return FailureCause(cause)
    if kind == "transient":
        return FailureCause.TRANSIENT
    return {
        "AudioDecodeError": FailureCause.NOT_AUDIO,
        "NoSuchKey": FailureCause.INPUT_GONE,
        "OptionNotServed": FailureCause.NOT_SERVED,
        "ValidationError": FailureCause.INVALID_JOB,
        "InvalidKeyError": FailureCause.INVALID_JOB,
    }.get(error_type)
