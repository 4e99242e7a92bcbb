"""Error classification and backoff: pure functions."""

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError
from pydantic import ValidationError

from whisperq.engine import AudioDecodeError, ModelError
from whisperq.failures import Kind, backoff_delay, classify
from whisperq.keys import InvalidKeyError
from whisperq.schemas import TranscriptionJob


def client_error(code, status=400, operation="GetObject"):
    response = {
        "Error": {"Code": code, "Message": "m"},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    return ClientError(response, operation)


def validation_error():
    try:
        TranscriptionJob.model_validate({"batch": "b"})
    except ValidationError as error:
        return error
    raise AssertionError("expected a ValidationError")


@pytest.mark.parametrize(
    ("error", "kind", "says"),
    [
        (
            AudioDecodeError("cannot decode audio: EOF"),
            Kind.PERMANENT,
            "could not be read as audio",
        ),
        (validation_error(), Kind.PERMANENT, "invalid job payload (path: Field required"),
        (InvalidKeyError("bad"), Kind.PERMANENT, "invalid job payload"),
        (client_error("NoSuchKey", 404), Kind.PERMANENT, "no longer in S3"),
        (client_error("AccessDenied", 403, "PutObject"), Kind.PERMANENT, "IAM role"),
        (client_error("InvalidArgument"), Kind.PERMANENT, "GetObject failed: InvalidArgument"),
        (client_error("SlowDown", 503), Kind.TRANSIENT, "unavailable"),
        (client_error("Throttling"), Kind.TRANSIENT, "unavailable"),
        (client_error("WeirdNewCode", 502), Kind.TRANSIENT, "unavailable"),
        (EndpointConnectionError(endpoint_url="http://x"), Kind.TRANSIENT, "network error"),
        (ReadTimeoutError(endpoint_url="http://x"), Kind.TRANSIENT, "network error"),
        (ConnectionResetError("reset"), Kind.TRANSIENT, "network error"),
        (MemoryError(), Kind.TRANSIENT, "out of memory"),
        (RuntimeError("surprise"), Kind.TRANSIENT, "unexpected error RuntimeError: surprise"),
        (ModelError("no model"), Kind.WORKER, "could not load its model"),
    ],
)
def test_classify(error, kind, says):
    failure = classify(error, "calls/x.wav")
    assert failure.kind is kind
    assert says in failure.reason


def test_decode_failures_name_the_file_and_the_fix():
    reason = classify(AudioDecodeError("bad header"), "calls/x.wav").reason
    assert reason.startswith("calls/x.wav could not be read as audio (bad header)")
    assert "--force" in reason


def test_reasons_stay_one_readable_line():
    reason = classify(RuntimeError("x\n" * 500)).reason
    assert "\n" not in reason and len(reason) < 400


def test_backoff_grows_exponentially_with_jitter_and_a_cap():
    low, high = (lambda: 0.0), (lambda: 1.0)
    assert [backoff_delay(n, 2, 60, low) for n in (1, 2, 3, 4)] == [1, 2, 4, 8]
    assert [backoff_delay(n, 2, 60, high) for n in (1, 2, 3, 4)] == [2, 4, 8, 16]
    assert backoff_delay(10, 2, 60, high) == 60  # capped
    assert backoff_delay(10, 2, 60, low) == 30  # never immediate
    delays = {round(backoff_delay(3, 2, 60), 6) for _ in range(50)}
    assert len(delays) > 10 and all(4 <= d <= 8 for d in delays)
