"""Every error whisperq raises on purpose, in one family.

Each message says what happened and what to do. The CLI catches :class:`WhisperqError`
once (``whisperq.cli.main``), prints the message on one line and exits with the error's
``exit_code``; anything else that escapes is a bug and keeps its traceback.

The built-in base next to ``WhisperqError`` is kept where callers test for it
(``AudioDecodeError`` is a ``ValueError``, as decoders raise).
"""

from __future__ import annotations

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
