"""Error classification and backoff: pure functions."""

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError
from pydantic import ValidationError

from whisperq.errors import (
    AudioDecodeError,
    FailureCause,
    InvalidKeyError,
    ModelError,
    next_step,
)
from whisperq.schemas import TranscriptionJob
from whisperq.worker.failures import (
    Failure,
    Kind,
    allowed_tries,
    backoff_delay,
    botocore_retries,
    classify,
    record_reason,
    should_retry,
)


def client_error(code, status=400, operation="GetObject", retried=None):
    """A ClientError as botocore raises it; ``retried``: the retries it made first, which
    it records in the response (with MaxAttemptsReached when it used them all)."""
    metadata = {"HTTPStatusCode": status}
    if retried is not None:
        metadata |= {"RetryAttempts": retried, "MaxAttemptsReached": retried >= 8}
    response = {"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": metadata}
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
        (client_error("404", 404, "HeadObject"), Kind.PERMANENT, "no longer in S3"),
        (client_error("AccessDenied", 403, "PutObject"), Kind.PERMANENT, "IAM role"),
        (client_error("AccessDenied", 403), Kind.PERMANENT, "access denied reading the input"),
        (client_error("403", 403, "HeadObject"), Kind.PERMANENT, "or the input was deleted"),
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
    failure = classify(AudioDecodeError("bad header"), "calls/x.wav")
    assert failure.reason.startswith("calls/x.wav could not be read as audio (bad header)")
    reason = record_reason(failure, "wk", "calls/x.wav")  # the step: the record's last words
    assert reason.endswith("Next: " + next_step(FailureCause.NOT_AUDIO, "wk", "calls/x.wav") + ".")
    assert "--force" in reason and "whisperq retry" not in reason


def test_a_missing_input_says_it_expired_or_was_deleted_and_how_to_resubmit():
    """The worker role may list the bucket, so S3 answers a missing input with 404
    (download_file: HeadObject first, so the code is "404"; GetObject says NoSuchKey)."""
    for error in (client_error("404", 404, "HeadObject"), client_error("NoSuchKey", 404)):
        failure = classify(error, "calls/x.wav")
        assert failure.kind is Kind.PERMANENT and failure.max_retries is None
        operation, code = error.operation_name, error.response["Error"]["Code"]
        assert failure.reason == (
            "the input of calls/x.wav is no longer in S3 (expired under the inputs lifecycle "
            f"rule, or deleted; {operation}: {code})."
        )
        assert failure.cause is FailureCause.INPUT_GONE
        step = next_step(failure.cause, "wk", "calls/x.wav")
        assert "whisperq submit calls/x.wav --batch wk --force" in step and "incoming/" in step


def test_access_denied_on_the_input_names_both_causes():
    """403 on the input download: a missing permission, or a missing input that a role
    without s3:ListBucket is not told about (S3 then says 403, not 404)."""
    for error in (client_error("403", 403, "HeadObject"), client_error("AccessDenied", 403)):
        failure = classify(error, "calls/x.wav")
        assert failure.kind is Kind.PERMANENT
        operation, code = error.operation_name, error.response["Error"]["Code"]
        assert failure.reason.startswith(
            f"access denied reading the input of calls/x.wav ({operation}: {code}): either the "
            "worker role lacks s3:GetObject/s3:ListBucket on this bucket, or the input was "
            "deleted and the role cannot list the bucket."
        )
        assert failure.cause is FailureCause.INPUT_DENIED
        step = next_step(failure.cause, "wk", "calls/x.wav")
        assert "`whisperq retry wk`" in step and "--force" in step  # which one: the step says
    # denied writing results: the role, nothing else
    put = classify(client_error("AccessDenied", 403, "PutObject"), "calls/x.wav").reason
    assert put.startswith("access denied (PutObject: AccessDenied): the worker's IAM role lacks")
    assert "input" not in put


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


# --- how many tries a failing stage gets ------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "retries"),
    [
        (RuntimeError("surprise"), 1),  # unknown: one retry, then a record
        (KeyError("segments"), 1),
        (MemoryError(), 1),
        (client_error("SlowDown", 503, "PutObject", retried=8), 1),  # botocore gave up
        (client_error("InternalError", 500, retried=3), 1),  # its quota ran out midway
        (client_error("SlowDown", 503), None),  # botocore did not retry: our full budget
        (client_error("SlowDown", 503, retried=0), None),
        (EndpointConnectionError(endpoint_url="http://x"), None),
        (ReadTimeoutError(endpoint_url="http://x"), None),
    ],
)
def test_transient_failures_say_how_many_retries_they_deserve(error, retries):
    failure = classify(error)
    assert failure.kind is Kind.TRANSIENT
    assert failure.max_retries == retries


def test_the_reason_says_botocore_retried_already():
    failure = classify(client_error("SlowDown", 503, "PutObject", retried=8), "x.wav")
    assert failure.reason == (
        "S3/SQS was unavailable (PutObject: SlowDown), still after 8 retries."
    )


def test_botocore_retries_are_read_from_the_response():
    assert botocore_retries(client_error("SlowDown", 503)) == 0
    assert botocore_retries(client_error("SlowDown", 503, retried=8)) == 8
    assert botocore_retries(client_error("SlowDown", 503, retried=2)) == 2


@pytest.mark.parametrize(
    ("failure", "max_attempts", "tries"),
    [
        (Failure(Kind.TRANSIENT, "throttled"), 3, 3),  # the settings' budget
        (Failure(Kind.TRANSIENT, "throttled"), 5, 5),
        (Failure(Kind.TRANSIENT, "throttled"), 1, 1),  # max_attempts 1: never retried
        (Failure(Kind.TRANSIENT, "bug?", max_retries=1), 3, 2),  # one retry
        (Failure(Kind.TRANSIENT, "bug?", max_retries=1), 1, 1),  # settings still cap it
        (Failure(Kind.TRANSIENT, "odd", max_retries=0), 3, 1),
        (Failure(Kind.PERMANENT, "not audio"), 3, 1),  # permanent: never retried
        (Failure(Kind.WORKER, "no model"), 3, 1),  # the worker hands the job back
    ],
)
def test_allowed_tries(failure, max_attempts, tries):
    assert allowed_tries(failure, max_attempts) == tries


def test_should_retry_until_the_tries_are_used():
    unknown = classify(RuntimeError("surprise"))
    assert [should_retry(unknown, n, max_attempts=3) for n in (1, 2, 3)] == [True, False, False]
    throttled = classify(client_error("SlowDown", 503))
    assert [should_retry(throttled, n, max_attempts=3) for n in (1, 2, 3)] == [True, True, False]
    gave_up = classify(client_error("SlowDown", 503, retried=8))
    assert [should_retry(gave_up, n, max_attempts=3) for n in (1, 2)] == [True, False]
    permanent = classify(AudioDecodeError("bad header"))
    assert not should_retry(permanent, 1, max_attempts=3)


# --- reasons name the batch's path, in words -------------------------------------------------


def test_a_decode_failure_names_the_batch_path_not_the_workers_copy():
    """PyAV's message names the worker's temporary file and FFmpeg's raw error code
    (AVERROR_INVALIDDATA): neither means anything to the person reading the record."""
    import tempfile

    local = f"{tempfile.gettempdir()}/whisperq-ab12cd/calls/x.wav"
    error = AudioDecodeError(
        f"cannot decode audio: [Errno 1094995529] Invalid data found when processing input: "
        f"'{local}'"
    )
    reason = classify(error, "calls/x.wav").reason
    assert reason.startswith(
        "calls/x.wav could not be read as audio (cannot decode audio: Invalid data found "
        "when processing input)"
    )
    assert tempfile.gettempdir() not in reason and "/tmp" not in reason
    assert "Errno" not in reason and "1094995529" not in reason
    record = record_reason(classify(error, "calls/x.wav"), "wk", "calls/x.wav")
    assert tempfile.gettempdir() not in record and "Errno" not in record
    assert "--force" in record  # what to do


@pytest.mark.parametrize(
    ("message", "says"),
    [
        ("[Errno 2] No such file or directory: '{tmp}/whisperq-1/0-ab/in.wav'", "calls/in.wav"),
        ("cannot open {tmp}/whisperq-1/other.wav for writing", "the worker's copy of"),
        ("[Errno 28]", "No space left on device"),
        ("[Errno 1094995529]", "an error the decoder did not name"),
    ],
)
def test_any_reason_names_the_batch_path_and_words_for_error_numbers(message, says):
    import tempfile

    error = RuntimeError(message.format(tmp=tempfile.gettempdir()))
    reason = classify(error, "calls/in.wav").reason
    assert says in reason
    assert tempfile.gettempdir() not in reason and "Errno" not in reason
