"""One next step per failure cause (errors.next_step): the error record ends its reason with
it and `wait` / `status --failed` print it, so a failed file never gets two different steps;
and a step never says to retry what would fail again the same way (issue 34, item 5)."""

import tempfile

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from whisperq.errors import (
    AudioDecodeError,
    FailureCause,
    InvalidKeyError,
    OptionNotServed,
    next_step,
    record_cause,
)
from whisperq.schemas import ErrorRecord
from whisperq.worker.failures import Kind, classify, record_reason

RETRY = "`whisperq retry wk`"
SUBMIT_AGAIN = "`whisperq submit calls/x.wav --batch wk --force`"
# Running the same job again fails the same way: the file must change (or come back).
RESUBMIT = {FailureCause.NOT_AUDIO, FailureCause.INPUT_GONE}


def client_error(code, status, operation="GetObject"):
    response = {"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {}}
    response["ResponseMetadata"]["HTTPStatusCode"] = status
    return ClientError(response, operation)


@pytest.mark.parametrize("cause", list(FailureCause))
def test_every_cause_has_its_own_step_naming_the_batch(cause):
    step = next_step(cause, "wk", "calls/x.wav")
    assert step != next_step(None, "wk", "calls/x.wav")  # not the fallback
    assert "BATCH" not in step and "PATH" not in step  # filled in, copy-pasteable
    if cause in RESUBMIT:
        assert SUBMIT_AGAIN in step and "whisperq retry" not in step
    else:
        assert step.startswith(RETRY) or f"then {RETRY}" in step


def test_steps_differ_where_the_causes_need_different_things():
    steps = {cause: next_step(cause, "wk", "calls/x.wav") for cause in FailureCause}
    assert len(set(steps.values())) == len(FailureCause)
    assert next_step("not_audio", "wk", "calls/x.wav") == steps[FailureCause.NOT_AUDIO]


def test_a_record_without_a_cause_points_at_its_reason():
    assert "whisperq status wk --failed" in next_step(None, "wk", "calls/x.wav")
    assert "whisperq status wk --failed" in next_step("from-a-newer-version", "wk", "x")


@pytest.mark.parametrize(
    ("error", "cause"),
    [
        (AudioDecodeError("the file holds no audio samples"), FailureCause.NOT_AUDIO),
        (client_error("NoSuchKey", 404), FailureCause.INPUT_GONE),
        (client_error("403", 403, "HeadObject"), FailureCause.INPUT_DENIED),
        (client_error("AccessDenied", 403, "PutObject"), FailureCause.ACCESS_DENIED),
        (OptionNotServed("the batch asks for model 'base'"), FailureCause.NOT_SERVED),
        (InvalidKeyError("bad"), FailureCause.INVALID_JOB),
        (MemoryError(), FailureCause.OUT_OF_MEMORY),
        (client_error("SlowDown", 503), FailureCause.TRANSIENT),
        (EndpointConnectionError(endpoint_url="http://x"), FailureCause.TRANSIENT),
        (RuntimeError("surprise"), FailureCause.UNEXPECTED),
        (client_error("InvalidObjectState", 400), FailureCause.S3_REFUSED),
    ],
)
def test_the_worker_gives_every_recorded_failure_a_cause(error, cause):
    failure = classify(error, "calls/x.wav")
    assert failure.kind is not Kind.WORKER and failure.next_cause is cause
    reason = record_reason(failure, "wk", "calls/x.wav")
    assert reason.endswith(f" Next: {next_step(cause, 'wk', 'calls/x.wav')}.")
    assert reason.count("Next:") == 1  # one step, not one in the reason and one after it
    assert "retry BATCH" not in reason and "submit ..." not in reason


def test_a_not_audio_record_says_to_replace_the_file_not_to_retry_it():
    local = f"{tempfile.gettempdir()}/whisperq-ab12cd/0-x/x.wav"
    error = AudioDecodeError(
        f"cannot decode audio: [Errno 1094995529] Invalid data found when processing input: "
        f"'{local}'"
    )
    reason = record_reason(classify(error, "calls/x.wav"), "wk", "calls/x.wav")
    assert SUBMIT_AGAIN in reason and "fix or replace the file" in reason
    assert "whisperq retry" not in reason
    assert tempfile.gettempdir() not in reason and "Errno" not in reason
    assert "1094995529" not in reason


@pytest.mark.parametrize(
    ("cause", "kind", "error_type", "expected"),
    [
        ("not_audio", "permanent", "ClientError", FailureCause.NOT_AUDIO),  # its own first
        (None, "transient", "ClientError", FailureCause.TRANSIENT),
        (None, "permanent", "AudioDecodeError", FailureCause.NOT_AUDIO),  # an older record
        (None, "permanent", "NoSuchKey", FailureCause.INPUT_GONE),  # ingest's
        (None, "permanent", "OptionNotServed", FailureCause.NOT_SERVED),
        (None, "permanent", "ClientError", None),  # 404, 403 or else: the reason says
    ],
)
def test_the_cause_of_a_record(cause, kind, error_type, expected):
    assert record_cause(cause, kind, error_type) == expected


def test_a_record_from_a_newer_worker_is_still_read():
    """Records are written strictly and read leniently: a field a later version adds does
    not stop an older CLI from reading the record (status --failed, wait)."""
    record = {
        "batch": "wk",
        "path": "calls/x.wav",
        "input_key": "inputs/wk/calls/x.wav",
        "reason": "could not decode",
        "kind": "permanent",
        "cause": "not_audio",
        "error_type": "AudioDecodeError",
        "attempts": 1,
        "worker_id": "host:1",
        "failed_at": "2026-12-04T00:00:00Z",
        "added_by_a_later_version": {"anything": 1},
    }
    read = ErrorRecord.read(record)
    assert (read.path, read.cause) == ("calls/x.wav", "not_audio")
    assert "--force" in read.next_step()
    with pytest.raises(ValueError, match="added_by_a_later_version"):
        ErrorRecord.model_validate(record)  # writing stays strict
