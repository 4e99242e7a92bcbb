"""What went wrong, and what to do about it: one pure classification of job errors.

Permanent: retrying cannot help (the file is not audio, the payload is invalid, the input
is gone). The job ends with an error record at once.
Transient: another try may work (throttling, network, S3 5xx, a worker-side hiccup). The
job is retried with exponential backoff and jitter, a bounded number of times, then ends
with the same kind of error record.
Worker: the worker itself is unfit (its model will not load). No record: the message goes
back to the queue for another worker, and to the dead-letter queue if none can run it.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)
from pydantic import ValidationError

from whisperq.engine import AudioDecodeError, ModelError, OptionNotServed
from whisperq.keys import InvalidKeyError

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


class Kind(str, Enum):
    PERMANENT = "permanent"  # the file's fault: record it, acknowledge, move on
    TRANSIENT = "transient"  # may pass: retry with backoff, then record it
    WORKER = "worker"  # this worker cannot run jobs: give the job back for another worker


@dataclass(frozen=True)
class Failure:
    kind: Kind
    reason: str  # for a person: what happened and what to do

    @property
    def permanent(self) -> bool:
        return self.kind is Kind.PERMANENT


def classify(error: BaseException, path: str = "the file") -> Failure:
    """Sort an exception raised while processing ``path`` into permanent or transient."""
    if isinstance(error, AudioDecodeError):
        return Failure(
            Kind.PERMANENT,
            f"{path} could not be read as audio ({error}). Check that it is a complete "
            "recording in a common format (wav, mp3, m4a, flac, ogg, opus), then submit it "
            "again with --force.",
        )
    if isinstance(error, OptionNotServed):
        return Failure(Kind.PERMANENT, str(error))
    if isinstance(error, ValidationError):
        problems = "; ".join(
            f"{'.'.join(map(str, item['loc'])) or 'payload'}: {item['msg']}"
            for item in error.errors()
        )
        return Failure(Kind.PERMANENT, f"invalid job payload ({_one_line(problems)})")
    if isinstance(error, InvalidKeyError):
        return Failure(Kind.PERMANENT, f"invalid job payload ({_one_line(error)})")
    if isinstance(error, ClientError):
        code = str(error.response.get("Error", {}).get("Code", ""))
        status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        operation = getattr(error, "operation_name", "S3 call")
        if code in _MISSING_CODES:
            return Failure(
                Kind.PERMANENT,
                f"the input of {path} is no longer in S3 ({operation}: {code}); it may have "
                "expired under the inputs lifecycle rule. Submit it again with --force.",
            )
        if code in _TRANSIENT_S3_CODES or status >= 500:
            return Failure(Kind.TRANSIENT, f"S3/SQS was unavailable ({operation}: {code}).")
        if code in _DENIED_CODES:
            return Failure(
                Kind.PERMANENT,
                f"access denied ({operation}: {code}): the worker's IAM role lacks a "
                "permission; fix the deployment, then `whisperq retry BATCH`.",
            )
        return Failure(Kind.PERMANENT, f"{operation} failed: {code}: {_one_line(error)}")
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
        return Failure(Kind.TRANSIENT, f"network error: {_one_line(error)}")
    if isinstance(error, ModelError):
        return Failure(Kind.WORKER, f"the worker could not load its model: {error}")
    if isinstance(error, MemoryError):
        return Failure(
            Kind.TRANSIENT, "the worker ran out of memory; a larger instance type may be needed."
        )
    # Unknown: worth a bounded retry; the record then carries the exception for a bug report.
    return Failure(Kind.TRANSIENT, f"unexpected error {type(error).__name__}: {_one_line(error)}")


def backoff_delay(
    attempt: int, base: float, cap: float, rng: Callable[[], float] = random.random
) -> float:
    """Seconds to wait before retry number ``attempt`` (1, 2, ...): exponential with
    "equal jitter" -- half fixed, half random -- so workers hit by the same outage do not
    retry in lockstep, and no retry comes immediately."""
    ceiling = min(cap, base * 2 ** (attempt - 1))
    return ceiling / 2 + rng() * ceiling / 2


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return text if len(text) <= 300 else text[:297] + "..."
