"""What went wrong, and what to do about it: one pure classification of job errors.

Permanent: retrying cannot help (the file is not audio, the payload is invalid, the input
is gone). The job ends with an error record at once. A missing input is a 404 (the worker
role may list the bucket: without s3:ListBucket S3 answers 403 for a missing key, too);
a 403 on the input says both possible causes.
Transient: another try may work (throttling, network, S3 5xx, a worker-side hiccup). The
worker retries the *stage* that failed (download, transcription, upload, ...) with
exponential backoff and jitter, a bounded number of times, then ends the job with the same
kind of error record.
Worker: the worker itself is unfit (its model will not load). No record: the message goes
back to the queue for another worker, and to the dead-letter queue if none can run it.

What to do next depends on the failure's ``cause`` (``errors.FailureCause``), not on its
kind alone: a file that is not audio must be fixed and submitted again (a retry fails the
same way), an expired throttle is retried. ``record_reason`` ends the record's reason with
``errors.next_step``, the step ``wait`` and ``status`` print for the same cause.

How many tries a stage gets is ``allowed_tries``: the worker's ``max_attempts``, lowered by
the failure's own ``max_retries`` where one more try is unlikely to help:

- An unknown exception (the fall-through of ``classify``) is most likely a bug that will
  happen again: one retry (it may have been a hiccup), then the record carries the
  exception for a bug report. Running out of memory likewise gets one retry.
- S3 errors that botocore has already retried. Every client is made with botocore's
  standard retry mode (``whisperq.storage``: 8 retries with exponential backoff and
  jitter on throttling codes such as ``SlowDown``, on 5xx and on connection errors; up to
  about 90 s in all for throttling, a few seconds for 5xx), so a ``ClientError`` with one
  of those codes that reaches us says botocore gave up; its response says how often it
  retried (``RetryAttempts``, ``MaxAttemptsReached``). A stage retry of ours comes after
  that window and after our own backoff, so it still rides out an outage a little longer
  than botocore's -- and it is cheap now that only the failed stage runs again. But each
  of our tries is another full round of botocore's retries against a service that is
  already throttling us, so such failures get one stage retry, not ``max_attempts - 1``;
  the record then says ``kind: transient`` and ``whisperq retry BATCH`` redoes the file
  when S3 has recovered.
- Errors with no sign of botocore's retries keep the full budget: a ``ClientError`` with
  ``RetryAttempts`` 0 (botocore's retry quota ran out during a wide outage and it stopped
  retrying: exactly when a pause of our own helps) and network exceptions, which carry no
  retry count at all.
"""

from __future__ import annotations

import os
import random
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)
from pydantic import ValidationError

from whisperq.errors import (
    AudioDecodeError,
    FailureCause,
    InvalidKeyError,
    ModelError,
    OptionNotServed,
    next_step,
)

_TRANSIENT_S3_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "SlowDown",
        "RequestTimeout",
        "RequestTimeTooSkewed",
        "InternalError",
        "ServiceUnavailable",
        "RequestLimitExceeded",
    }
)
_MISSING_CODES = frozenset({"NoSuchKey", "404", "NotFound"})
_DENIED_CODES = frozenset({"AccessDenied", "403", "Forbidden", "AllAccessDisabled"})
# The S3 calls that read a job's input (download_file: HeadObject, then GetObject); a job
# makes no other S3 reads.
_INPUT_READS = frozenset({"HeadObject", "GetObject"})

UNKNOWN_MAX_RETRIES = 1  # an unexpected exception: one more try, then a record
AFTER_BOTOCORE_MAX_RETRIES = 1  # botocore already retried it with backoff (module docstring)


class Kind(StrEnum):
    PERMANENT = "permanent"  # the file's fault: record it, acknowledge, move on
    TRANSIENT = "transient"  # may pass: retry with backoff, then record it
    WORKER = "worker"  # this worker cannot run jobs: give the job back for another worker


@dataclass(frozen=True)
class Failure:
    kind: Kind
    reason: str  # for a person: what happened (``record_reason`` adds what to do)
    # Retries of the failed stage this failure deserves at most; None: as many as the
    # worker's settings allow. Only transient failures are retried at all.
    max_retries: int | None = None
    cause: FailureCause | None = None  # what to do next depends on it (errors.next_step)

    @property
    def permanent(self) -> bool:
        return self.kind is Kind.PERMANENT

    @property
    def next_cause(self) -> FailureCause | None:
        """The cause an error record carries: the failure's own, else by its kind."""
        if self.cause is None and self.kind is Kind.TRANSIENT:
            return FailureCause.TRANSIENT
        return self.cause


def record_reason(failure: Failure, batch: str, path: str) -> str:
    """An error record's reason: what happened, in words (the batch's path, not the
    worker's copy; no raw error numbers), then the one next step (``errors.next_step``,
    which ``wait`` and ``status`` print too)."""
    what = plain(failure.reason, path).rstrip()
    what = what if what.endswith(".") else what + "."
    return f"{what} Next: {next_step(failure.next_cause, batch, path)}."


def allowed_tries(failure: Failure, max_attempts: int) -> int:
    """How many tries in all (the first one included) a stage that fails this way gets,
    when the worker allows ``max_attempts`` per stage."""
    if failure.kind is not Kind.TRANSIENT:
        return 1
    if failure.max_retries is None:
        return max_attempts
    return max(1, min(max_attempts, failure.max_retries + 1))


def should_retry(failure: Failure, tries: int, max_attempts: int) -> bool:
    """Whether a stage that has failed this way on its ``tries``-th try gets another."""
    return tries < allowed_tries(failure, max_attempts)


def classify(error: BaseException, path: str = "the file") -> Failure:
    """Sort an exception raised while processing ``path`` into permanent, transient (and
    how many retries it deserves) or the worker's own fault."""
    if isinstance(error, AudioDecodeError):
        detail = _one_line(error, path).removesuffix(f": '{path}'")  # named already
        return Failure(
            Kind.PERMANENT,
            f"{path} could not be read as audio ({detail}); it must be a complete recording "
            "in a common format (wav, mp3, m4a, flac, ogg, opus).",
            cause=FailureCause.NOT_AUDIO,
        )
    if isinstance(error, OptionNotServed):
        return Failure(Kind.PERMANENT, str(error), cause=FailureCause.NOT_SERVED)
    if isinstance(error, ValidationError):
        problems = "; ".join(
            f"{'.'.join(map(str, item['loc'])) or 'payload'}: {item['msg']}"
            for item in error.errors()
        )
        return Failure(
            Kind.PERMANENT,
            f"invalid job payload ({_one_line(problems, path)})",
            cause=FailureCause.INVALID_JOB,
        )
    if isinstance(error, InvalidKeyError):
        return Failure(
            Kind.PERMANENT,
            f"invalid job payload ({_one_line(error, path)})",
            cause=FailureCause.INVALID_JOB,
        )
    if isinstance(error, ClientError):
        return _classify_client_error(error, path)
    if isinstance(
        error,
        (
            EndpointConnectionError,
            ConnectTimeoutError,
            ReadTimeoutError,
            ConnectionClosedError,
            ConnectionError,
            TimeoutError,
        ),
    ):
        return Failure(
            Kind.TRANSIENT, f"network error: {_one_line(error, path)}", cause=FailureCause.TRANSIENT
        )
    if isinstance(error, ModelError):
        return Failure(Kind.WORKER, f"the worker could not load its model: {error}")
    if isinstance(error, MemoryError):
        return Failure(
            Kind.TRANSIENT,
            "the worker ran out of memory on this file.",
            max_retries=UNKNOWN_MAX_RETRIES,
            cause=FailureCause.OUT_OF_MEMORY,
        )
    # Unknown: one retry; the record then carries the exception for a bug report.
    return Failure(
        Kind.TRANSIENT,
        f"unexpected error {type(error).__name__}: {_one_line(error, path)}",
        max_retries=UNKNOWN_MAX_RETRIES,
        cause=FailureCause.UNEXPECTED,
    )


def _classify_client_error(error: ClientError, path: str) -> Failure:
    code = str(error.response.get("Error", {}).get("Code", ""))
    metadata: dict[str, Any] = error.response.get("ResponseMetadata", {})
    status = int(metadata.get("HTTPStatusCode") or 0)
    operation = getattr(error, "operation_name", "S3 call")
    if code in _MISSING_CODES:
        # The worker role may list the bucket (s3:ListBucket), so S3 says 404 for a
        # missing key. The only reads of a job are its input's (HeadObject, GetObject).
        return Failure(
            Kind.PERMANENT,
            f"the input of {path} is no longer in S3 (expired under the inputs lifecycle "
            f"rule, or deleted; {operation}: {code}).",
            cause=FailureCause.INPUT_GONE,
        )
    if code in _TRANSIENT_S3_CODES or status >= 500:
        retried = botocore_retries(error)
        if not retried:
            return Failure(
                Kind.TRANSIENT,
                f"S3/SQS was unavailable ({operation}: {code}).",
                cause=FailureCause.TRANSIENT,
            )
        return Failure(
            Kind.TRANSIENT,
            f"S3/SQS was unavailable ({operation}: {code}), still after {retried} retries.",
            max_retries=AFTER_BOTOCORE_MAX_RETRIES,
            cause=FailureCause.TRANSIENT,
        )
    if code in _DENIED_CODES and operation in _INPUT_READS:
        # 403 on the input: S3 also answers a missing key so to a caller that may not
        # list the bucket, so both causes are possible.
        return Failure(
            Kind.PERMANENT,
            f"access denied reading the input of {path} ({operation}: {code}): either the "
            "worker role lacks s3:GetObject/s3:ListBucket on this bucket, or the input was "
            "deleted and the role cannot list the bucket.",
            cause=FailureCause.INPUT_DENIED,
        )
    if code in _DENIED_CODES:
        return Failure(
            Kind.PERMANENT,
            f"access denied ({operation}: {code}): the worker's IAM role lacks a permission.",
            cause=FailureCause.ACCESS_DENIED,
        )
    return Failure(
        Kind.PERMANENT,
        f"{operation} failed: {code}: {_one_line(error, path)}",
        cause=FailureCause.S3_REFUSED,
    )


def botocore_retries(error: ClientError) -> int:
    """How many times botocore retried the call before raising ``error`` (0: not at all,
    e.g. because its retry quota ran out, or the error never reached its retry layer)."""
    metadata = error.response.get("ResponseMetadata", {})
    retries = int(metadata.get("RetryAttempts") or 0)
    return max(retries, 1) if metadata.get("MaxAttemptsReached") else retries


def backoff_delay(
    attempt: int, base: float, cap: float, rng: Callable[[], float] = random.random
) -> float:
    """Seconds to wait before retry number ``attempt`` (1, 2, ...): exponential with
    "equal jitter" -- half fixed, half random -- so workers hit by the same outage do not
    retry in lockstep, and no retry comes immediately."""
    ceiling = min(cap, base * 2 ** (attempt - 1))
    return ceiling / 2 + rng() * ceiling / 2


def _one_line(error: BaseException | str, path: str | None = None) -> str:
    text = " ".join(plain(str(error), path).split())
    return text if len(text) <= 300 else text[:297] + "..."


# "[Errno 1094995529] Invalid data ...": Python's and PyAV's errors start with their code.
_ERRNO = re.compile(r"\[Errno (-?\d+)\]\s*(?=(\S?))")


def _local_path(path: str | None) -> re.Pattern[str]:
    """A path inside the worker's temporary folder, quoted (may hold spaces) or not."""
    root = re.escape(tempfile.gettempdir().rstrip("/"))
    return re.compile(rf"'{root}/[^']*'|\"{root}/[^\"]*\"|{root}/\S*")


def _errno_words(match: re.Match[str]) -> str:
    if match.group(2):  # words follow the number: they say it
        return ""
    number = abs(int(match.group(1)))
    if 0 < number < 4096:
        return os.strerror(number)
    return "an error the decoder did not name"  # FFmpeg's codes are four-letter tags


def plain(text: str, path: str | None = None) -> str:
    """``text`` for a person: a path inside the worker's temporary folder becomes the
    batch's ``path`` (or "the worker's copy of PATH" when it is another file), and raw
    error numbers ("[Errno 1094995529]", PyAV's AVERROR) become words."""
    named = path or "the file"

    def batch_path(match: re.Match[str]) -> str:
        local = match.group().strip("'\"")
        quote = "'" if match.group().startswith("'") else ""
        if path and os.path.basename(local) == os.path.basename(path):
            return f"{quote}{path}{quote}"
        return f"{quote}the worker's copy of {named}{quote}"

    text = _local_path(path).sub(batch_path, text)
    return _ERRNO.sub(_errno_words, text)
