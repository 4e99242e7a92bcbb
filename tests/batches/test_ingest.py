"""S3-event ingestion: objects under incoming/<batch>/<path> become jobs, once each.

Pure parts (events, WAV headers, options), then whisperq.batches.ingest against moto server (no
workers: the jobs are read back from the queue), then the local stack end to end.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import struct
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from typer.testing import CliRunner

from whisperq import keys, storage
from whisperq.batches import ingest, tracking
from whisperq.batches import records as batch_records
from whisperq.cli import app
from whisperq.errors import ConfigError, InvalidKeyError
from whisperq.schemas import BatchInfo, ErrorRecord, FileEntry, TranscriptionJob
from whisperq.settings import Settings
from whisperq.stacks import local as local_stack

from helpers import drain_jobs, run_cli, s3_notification, settle, silent_wav, wait_for

runner = CliRunner()

# --- objects_in_event ------------------------------------------------------------------


def test_s3_notification_keys_are_decoded():
    body = {
        "Records": [
            {
                "eventName": "ObjectCreated:Put",
                "s3": {
                    "bucket": {"name": "calls"},
                    "object": {
                        "key": "incoming%2Fsupport%2Fa+b%2FZo%C3%AB+%2B+x.wav",
                        "size": 5,
                        "eTag": "abc",
                    },
                },
            },
            {  # removals are not ingested
                "eventName": "ObjectRemoved:Delete",
                "s3": {"bucket": {"name": "calls"}, "object": {"key": "incoming/x/y.wav"}},
            },
            {
                "eventName": "ObjectCreated:CompleteMultipartUpload",
                "s3": {
                    "bucket": {"name": "calls"},
                    "object": {"key": "incoming/support/caf%C3%A9/2024+01.wav"},
                },
            },
        ]
    }
    assert ingest.objects_in_event(body) == [
        ingest.ObjectRef("calls", "incoming/support/a b/Zoë + x.wav", 5, "abc"),
        ingest.ObjectRef("calls", "incoming/support/café/2024 01.wav"),
    ]


def test_eventbridge_keys_are_decoded_once_as_s3_notifications_are():
    event = {
        "version": "0",
        "detail-type": "Object Created",
        "source": "aws.s3",
        "detail": {
            "bucket": {"name": "telephony"},
            "object": {"key": "calls/support/a+b%2Bc+Zo%C3%AB.wav", "size": 1234, "etag": "e1"},
            "reason": "PutObject",
        },
    }
    assert ingest.objects_in_event(event) == [
        ingest.ObjectRef("telephony", "calls/support/a b+c Zoë.wav", 1234, "e1")
    ]
    deleted = dict(event, **{"detail-type": "Object Deleted"})
    assert ingest.objects_in_event(deleted) == []


def test_test_events_sns_envelopes_and_strangers():
    test_event = {"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": "calls"}
    assert ingest.objects_in_event(test_event) == []
    inner = json.loads(s3_notification("calls", ("incoming/b/x y.wav", 3)))
    sns = {"Type": "Notification", "Message": json.dumps(inner)}
    assert ingest.objects_in_event(sns) == [ingest.ObjectRef("calls", "incoming/b/x y.wav", 3)]
    with pytest.raises(ValueError):
        ingest.objects_in_event({"hello": "world"})
    with pytest.raises(ValueError):
        ingest.objects_in_event({"detail-type": "Object Created", "source": "aws.ec2"})


# --- where an object goes --------------------------------------------------------------

CONFIG = ingest.IngestConfig(bucket="own", queue_url="http://q/jobs", source_bucket="own")


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("incoming/support/2024/call 1.WAV", ("support", "2024/call 1.WAV")),
        ("incoming/support/./x.mp3", ("support", "x.mp3")),
        ("incoming/support/call.json", "not audio (.json)"),
        ("incoming/support/notes.txt", "not audio (.txt)"),
        ("incoming/support/", "Not a usable relative path"),  # a console "folder"
        ("incoming/x.wav", "no batch folder"),
        ("incoming/bad name/x.wav", "Invalid batch name"),
        ("incoming/b/../x.wav", "Not a usable relative path"),
        ("elsewhere/b/x.wav", "is not under 'incoming/'"),
    ],
)
def test_place(key, expected):
    placed = ingest.place(CONFIG, ingest.ObjectRef("own", key))
    if isinstance(expected, tuple):
        assert placed == expected
    else:
        assert isinstance(placed, str) and expected in placed


def test_own_objects_and_other_buckets_are_never_ingested():
    root = dataclasses.replace(CONFIG, source_prefix="")  # the whole bucket is the source
    assert ingest.place(root, ingest.ObjectRef("own", "calls/x.wav")) == ("calls", "x.wav")
    for key in ("inputs/b/x.wav", "results/b/x.wav", "batches/b/files/x.wav"):
        assert "whisperq's own" in ingest.place(root, ingest.ObjectRef("own", key))
    assert "source bucket" in ingest.place(CONFIG, ingest.ObjectRef("other", "incoming/b/x.wav"))


# --- options ---------------------------------------------------------------------------


def test_options_per_batch_and_the_default():
    config = dataclasses.replace(
        CONFIG, options_by_batch={"support": {"channels": "split"}}, default_options={"x": 1}
    )
    assert config.options_for("support") == {"channels": "split"}
    assert config.options_for("sales") == {"x": 1}


def test_config_from_the_lambda_environment():
    env = {
        "WHISPERQ_BUCKET": "own",
        "WHISPERQ_QUEUE_URL": "http://q/jobs",
        "WHISPERQ_INGEST_PREFIX": "recordings",
        "WHISPERQ_INGEST_OPTIONS": '{"support": {"channels": "split"}}',
        "WHISPERQ_INGEST_DEFAULT_OPTIONS": '{"language": "en"}',
    }
    config = ingest.IngestConfig.from_env(env)
    assert (config.bucket, config.source_bucket, config.source_prefix) == (
        "own",
        "own",
        "recordings/",
    )
    assert config.options_for("support") == {"channels": "split"}
    assert config.options_for("other") == {"language": "en"}
    assert config.claim_seconds == ingest.DEFAULT_CLAIM_SECONDS
    assert ingest.IngestConfig.from_env(
        {**env, "WHISPERQ_INGEST_SOURCE_BUCKET": "telephony"}
    ).source_bucket == ("telephony")
    with pytest.raises(ConfigError, match="WHISPERQ_QUEUE_URL"):
        ingest.IngestConfig.from_env({"WHISPERQ_BUCKET": "own"})
    with pytest.raises(ConfigError, match="WHISPERQ_INGEST_OPTIONS is not valid JSON"):
        ingest.IngestConfig.from_env({**env, "WHISPERQ_INGEST_OPTIONS": "{bad"})
    with pytest.raises(ConfigError, match="map batch names"):
        ingest.IngestConfig.from_env({**env, "WHISPERQ_INGEST_OPTIONS": '{"a": 1}'})


def test_settings_give_full_options_validated_as_submit_validates_them(monkeypatch):
    monkeypatch.setenv(
        "WHISPERQ_INGEST_OPTIONS",
        '{"support": {"channels": "split", "speakers": ["agent", "customer"]}}',
    )
    monkeypatch.setenv("WHISPERQ_INGEST_PREFIX", "calls")
    settings = Settings(bucket="own", queue_url="http://q/jobs")
    config = ingest.IngestConfig.from_env(settings.ingest_environment())
    assert config.source_bucket == "own" and config.source_prefix == "calls/"
    support = config.options_for("support")
    assert support["channels"] == "split" and support["speakers"] == ["agent", "customer"]
    assert support["formats"] == ["srt", "vtt", "txt"]  # defaults filled in: full options
    assert config.options_for("other")["channels"] == "auto"

    monkeypatch.setenv("WHISPERQ_INGEST_OPTIONS", '{"support": {"channels": "stereo"}}')
    result = runner.invoke(app, ["status"])
    assert result.exit_code == 2
    assert "WHISPERQ_INGEST_OPTIONS" in result.output and "channels" in result.output
    monkeypatch.setenv("WHISPERQ_INGEST_OPTIONS", '{"in coming": {}}')
    result = runner.invoke(app, ["status"])
    assert result.exit_code == 2 and "not a batch name" in result.output


# --- the batch's name: WHISPERQ_INGEST_BATCH ------------------------------------------


@pytest.mark.parametrize("template", ["{folder}", "{folder}-{date}", "daily-{date}", "calls"])
def test_batch_templates_that_make_batch_names(template):
    assert keys.check_batch_template(template) == template
    day = datetime(2026, 12, 4, tzinfo=UTC).date()
    name = keys.ingest_batch_name(template, "support", day)
    assert keys.validate_batch_name(name) == name


@pytest.mark.parametrize(
    ("template", "why"),
    [
        ("{folder}-{day}", "{day} is not a field"),
        ("{}", "{} is not a field"),
        ("{0}-{date}", "{0} is not a field"),
        ("{folder!r}", "is not a field"),
        ("{date:%Y}", "is not a field"),
        ("{folder", "Invalid batch template"),
        ("{folder}/{date}", "does not make a batch name"),
        ("{folder} {date}", "does not make a batch name"),
        ("-{folder}", "does not make a batch name"),
        ("", "does not make a batch name"),
    ],
)
def test_batch_templates_that_do_not(template, why):
    with pytest.raises(InvalidKeyError, match=re.escape(why)):
        keys.check_batch_template(template)


def test_the_batch_template_is_checked_where_settings_load(monkeypatch):
    env = {"WHISPERQ_BUCKET": "own", "WHISPERQ_QUEUE_URL": "http://q/jobs"}
    assert ingest.IngestConfig.from_env(env).batch_template == "{folder}"  # the default
    daily = ingest.IngestConfig.from_env({**env, "WHISPERQ_INGEST_BATCH": "{folder}-{date}"})
    day = datetime(2026, 12, 4, 23, 59, tzinfo=UTC)
    assert daily.batch_for("support", day) == "support-2026-12-04"
    # the UTC day: 01:30 in UTC+2 is the day before in UTC
    plus_two = timezone(timedelta(hours=2))
    assert daily.batch_for("support", datetime(2026, 12, 5, 1, 30, tzinfo=plus_two)) == (
        "support-2026-12-04"
    )
    with pytest.raises(ConfigError, match=r"WHISPERQ_INGEST_BATCH: .*\{when\} is not a field"):
        ingest.IngestConfig.from_env({**env, "WHISPERQ_INGEST_BATCH": "{folder}-{when}"})

    monkeypatch.setenv("WHISPERQ_INGEST_BATCH", "{folder}-{date}")
    settings = Settings(bucket="own", queue_url="http://q/jobs")
    assert settings.ingest_environment()["WHISPERQ_INGEST_BATCH"] == "{folder}-{date}"
    config = ingest.IngestConfig.from_env(settings.ingest_environment())
    assert config.batch_template == "{folder}-{date}"
    monkeypatch.setenv("WHISPERQ_INGEST_BATCH", "{folder}/{date}")
    result = runner.invoke(app, ["status"])
    assert result.exit_code == 2
    assert "WHISPERQ_INGEST_BATCH" in result.output and "does not make a batch name" in (
        " ".join(result.output.split())
    )


def test_the_folder_is_the_first_folder_and_the_path_the_rest_of_the_key():
    ref = ingest.ObjectRef("own", "incoming/support/2026-12-04/call.wav")
    assert ingest.place(CONFIG, ref) == ("support", "2026-12-04/call.wav")
    assert ingest.locate(CONFIG, ingest.ObjectRef("own", "incoming/support/call.wav.json")) == (
        "support",
        "call.wav.json",
    )
    assert ingest.is_sidecar("a/call-0001.wav.json") and ingest.is_sidecar("x.MP3.JSON")
    assert not ingest.is_sidecar("notes.json") and not ingest.is_sidecar("call.wav")


def test_event_times_are_read_but_do_not_make_objects_differ():
    body = json.loads(s3_notification("calls", ("incoming/b/x.wav", 3)))
    body["Records"][0]["eventTime"] = "2026-12-04T23:59:58.123Z"
    (ref,) = ingest.objects_in_event(body)
    assert ref.event_time == datetime(2026, 12, 4, 23, 59, 58, 123000, tzinfo=UTC)
    assert ref == ingest.ObjectRef("calls", "incoming/b/x.wav", 3)
    bridge = {
        "detail-type": "Object Created",
        "source": "aws.s3",
        "time": "2026-12-05T00:00:01Z",
        "detail": {"bucket": {"name": "t"}, "object": {"key": "calls/b/x.wav"}},
    }
    (ref,) = ingest.objects_in_event(bridge)
    assert ref.event_time == datetime(2026, 12, 5, 0, 0, 1, tzinfo=UTC)


# --- WAV durations ---------------------------------------------------------------------


def _soxi(path: Path) -> float:
    return float(subprocess.run(["soxi", "-D", str(path)], capture_output=True).stdout)


@pytest.mark.parametrize(
    "encoding",
    [
        ["-e", "signed", "-b", "16"],
        ["-e", "mu-law"],
        ["-e", "a-law"],
        ["-e", "gsm-full-rate"],
        ["-e", "ima-adpcm"],
        ["-e", "ms-adpcm"],
        ["-e", "floating-point", "-b", "32"],
        ["-e", "signed", "-b", "24", "-c", "2", "-r", "16000"],
    ],
    ids=lambda encoding: "-".join(encoding).replace("-e-", "").strip("-"),
)
def test_wav_duration_of_several_encodings(make_speech, tmp_path, encoding):
    speech = make_speech(tmp_path / "speech.wav", "Your call is important to us.")
    encoded = tmp_path / "encoded.wav"
    subprocess.run(["sox", str(speech), "-r", "8000", *encoding, str(encoded)], check=True)
    expected = _soxi(speech)
    assert batch_records.file_duration(encoded) == pytest.approx(expected, abs=0.05)
    # the header alone is enough; compressed formats count samples in their fact chunk
    header = encoded.read_bytes()[:4096]
    assert batch_records.wav_duration(header) == pytest.approx(expected, abs=0.05)


def test_wav_duration_of_streamed_and_unusual_headers():
    data = silent_wav(2.5)
    assert batch_records.wav_duration(data) == 2.5
    # a recorder that streamed the file left the sizes unset: the file's length tells
    streamed = data[:40] + struct.pack("<I", 0xFFFFFFFF) + data[44:]
    assert batch_records.wav_duration(streamed[:44]) is None
    assert batch_records.wav_duration(streamed[:44], total_size=len(data)) == 2.5
    # a chunk before fmt (LIST/INFO) and an odd-sized one (padded) are skipped
    extra = b"LIST" + struct.pack("<I", 5) + b"INFOx\0"
    assert batch_records.wav_duration(data[:12] + extra + data[12:]) == 2.5
    # not WAV, or cut short before the data chunk
    assert batch_records.wav_duration(b"fLaC\0\0\0\x22" + b"\0" * 40) is None
    assert batch_records.wav_duration(data[:30]) is None
    assert batch_records.wav_duration(b"") is None


# --- against moto: helpers -------------------------------------------------------------


def _config(aws: Settings, **changes) -> ingest.IngestConfig:
    return dataclasses.replace(ingest.IngestConfig.from_env(aws.ingest_environment()), **changes)


_CLIENTS: dict[tuple[str, str], object] = {}


def _client(aws: Settings, service: str):
    """One client per test bucket and service (creating one costs a fifth of a second)."""
    key = (aws.bucket, service)
    if key not in _CLIENTS:
        _CLIENTS[key] = storage.client(aws, service)
    return _CLIENTS[key]


def _put(aws: Settings, key: str, body: bytes) -> ingest.ObjectRef:
    _client(aws, "s3").put_object(Bucket=aws.bucket, Key=key, Body=body)
    return ingest.ObjectRef(aws.bucket, key, len(body))


def _ingest(aws: Settings, ref: ingest.ObjectRef, **changes) -> ingest.Outcome:
    s3, sqs = _client(aws, "s3"), _client(aws, "sqs")
    return ingest.ingest_object(s3, sqs, _config(aws, **changes), ref)


def _keys(aws: Settings, prefix: str = "") -> set[str]:
    s3 = _client(aws, "s3")
    return {item.key for item in storage.list_objects(s3, aws.bucket, prefix)}


def _status(aws: Settings, batch: str) -> tracking.BatchStatus:
    found = tracking.batch_status(aws, storage.client(aws, "s3"), batch)
    assert found is not None
    return found


# --- against moto: once per object -----------------------------------------------------


def test_the_same_object_twice_gives_one_job_and_one_entry(aws):
    ref = _put(aws, "incoming/calls/a b/Zoë 1.wav", silent_wav(1.5))
    first = _ingest(aws, ref)
    assert (first.status, first.batch, first.path) == ("queued", "calls", "a b/Zoë 1.wav")
    again = _ingest(aws, ref)
    assert again.status == "duplicate" and "same content" in again.reason

    (job,) = drain_jobs(aws)
    TranscriptionJob.model_validate(job)  # what a worker accepts
    assert (job["batch"], job["path"], job["input_key"]) == (
        "calls",
        "a b/Zoë 1.wav",
        "inputs/calls/a b/Zoë 1.wav",
    )
    s3 = storage.client(aws, "s3")
    (listed,) = batch_records.list_entries(s3, aws.bucket, "calls").values()
    assert listed.duration == 1.5  # from the WAV header
    entry = FileEntry.model_validate(batch_records.read_entry(s3, aws.bucket, listed.key))
    assert (entry.source, entry.origin) == ("ingest", f"s3://{aws.bucket}/{ref.key}")
    assert entry.sha256 == job["sha256"] == first.sha256
    info = BatchInfo.model_validate(batch_records.read_batch_document(s3, aws.bucket, "calls"))
    assert info.source == "ingest:incoming/"
    stored = s3.get_object(Bucket=aws.bucket, Key=job["input_key"])
    assert stored["Body"].read() == silent_wav(1.5)
    assert stored["Metadata"]["sha256"] == entry.sha256  # as submit writes it
    status = _status(aws, "calls")
    assert (status.submitted, status.pending, status.audio_seconds_submitted) == (1, 1, 1.5)


def test_a_multipart_uploads_two_events_give_one_job(aws, tmp_path):
    """moto (like S3 on a retried upload) sends Put and CompleteMultipartUpload events."""
    s3, sqs = storage.client(aws, "s3"), storage.client(aws, "sqs")
    events = sqs.create_queue(QueueName=f"{aws.queue_name}-ingest")["QueueUrl"]
    local_stack.route_bucket_events(s3, sqs, aws.bucket, events, "incoming/")
    big = tmp_path / "long call.wav"
    big.write_bytes(silent_wav(400))  # 6.4 MB: a multipart upload
    from boto3.s3.transfer import TransferConfig

    s3.upload_file(
        str(big),
        aws.bucket,
        "incoming/calls/long call.wav",
        Config=TransferConfig(multipart_threshold=5 * 1024 * 1024),
    )
    bodies: list[str] = []

    def both_events() -> bool:
        answer = sqs.receive_message(QueueUrl=events, MaxNumberOfMessages=10, WaitTimeSeconds=1)
        bodies.extend(message["Body"] for message in answer.get("Messages", []))
        return sum(len(ingest.objects_in_event(json.loads(body))) for body in bodies) >= 2

    wait_for(both_events, 20, "the Put and CompleteMultipartUpload events")
    outcomes = []
    for body in bodies:
        handled = ingest.handle_event(s3, sqs, _config(aws), body)
        assert handled.done
        outcomes += handled.outcomes
    assert sorted(o.status for o in outcomes) == ["duplicate", "queued"]
    (job,) = drain_jobs(aws)
    assert job["path"] == "long call.wav" and job["size"] == big.stat().st_size
    assert _status(aws, "calls").audio_seconds_submitted == 400


def test_a_sidecar_is_ignored_with_a_reason_and_nothing_is_written(aws):
    before = _keys(aws)
    for key in ("incoming/calls/a.json", "incoming/calls/a.txt", "incoming/x.wav"):
        ref = _put(aws, key, b"{}")
        outcome = _ingest(aws, ref)
        assert outcome.status == "ignored" and outcome.reason, key
    assert _keys(aws) - before == {
        "incoming/calls/a.json",
        "incoming/calls/a.txt",
        "incoming/x.wav",
    }
    assert drain_jobs(aws) == []


def test_a_deleted_object_fails_alone_with_a_reason(aws):
    s3, sqs = storage.client(aws, "s3"), storage.client(aws, "sqs")
    kept = _put(aws, "incoming/calls/kept.wav", silent_wav(1))
    gone = _put(aws, "incoming/calls/gone.wav", silent_wav(1))
    s3.delete_object(Bucket=aws.bucket, Key=gone.key)
    body = s3_notification(
        aws.bucket,
        (gone.key, gone.size),
        ("incoming/calls/notes.json", 2),
        (kept.key, kept.size),
    )
    handled = ingest.handle_event(s3, sqs, _config(aws), body)
    assert handled.done  # every object came to an end: the event is not retried
    statuses = {o.ref.key: o.status for o in handled.outcomes}
    assert statuses == {
        gone.key: "failed",
        "incoming/calls/notes.json": "ignored",
        kept.key: "queued",
    }
    failed = next(o for o in handled.outcomes if o.status == "failed")
    assert "deleted before it could be ingested" in failed.reason

    (job,) = drain_jobs(aws)
    assert job["path"] == "kept.wav"  # no job for the deleted one
    record = ErrorRecord.model_validate(
        storage.get_json(s3, aws.bucket, keys.error_key("calls", "gone.wav"))
    )
    assert record.reason == failed.reason and record.kind == "permanent"
    status = _status(aws, "calls")
    assert (status.submitted, status.failed, status.pending) == (2, 1, 1)
    assert status.failed_paths == ["gone.wav"]
    assert "inputs/calls/gone.wav" not in _keys(aws, "inputs/")

    # the event again (at least once): still one failure, no job
    again = ingest.handle_event(s3, sqs, _config(aws), body)
    assert sorted(o.status for o in again.outcomes) == ["duplicate", "duplicate", "ignored"]
    assert drain_jobs(aws) == []


def test_a_batch_whose_last_file_was_gone_is_finished_by_ingest(aws):
    """No job, so no worker would look: ingest writes done.json itself when the gone file
    was the batch's last, once however often the event comes."""
    s3, sqs = storage.client(aws, "s3"), storage.client(aws, "sqs")
    kept = _put(aws, "incoming/calls/kept.wav", silent_wav(1))
    assert (
        ingest.handle_event(
            s3, sqs, _config(aws), s3_notification(aws.bucket, (kept.key, kept.size))
        )
        .outcomes[0]
        .status
        == "queued"
    )
    (job,) = drain_jobs(aws)
    settle(aws, "calls", [job["path"]])  # what its worker leaves
    assert storage.get_json(s3, aws.bucket, keys.done_key("calls")) is None  # not yet
    gone = _put(aws, "incoming/calls/gone.wav", silent_wav(1))
    s3.delete_object(Bucket=aws.bucket, Key=gone.key)
    body = s3_notification(aws.bucket, (gone.key, gone.size))
    for _ in range(2):
        ingest.handle_event(s3, sqs, _config(aws), body)
    done = storage.get_json(s3, aws.bucket, keys.done_key("calls"))
    assert done is not None
    assert (done["submitted"], done["done"], done["failed"]) == (2, 1, 1)
    assert done["failed_paths"] == ["gone.wav"]


def test_a_new_path_is_queued_without_a_listing_and_a_failed_one_put_again_runs(aws):
    """A path the batch has no input at is queued with no listing of its entries (one S3
    LIST fewer a file: at 25,000 ingested calls a day, 25,000). A path whose object was
    deleted before it could be read has a failed entry but no input: put there again, it
    is queued, and its new entry is what status counts."""
    from collections import Counter

    s3, sqs = storage.client(aws, "s3"), storage.client(aws, "sqs")
    calls: Counter[str] = Counter()
    s3.meta.events.register("before-call.s3", lambda model, **_: calls.update([model.name]))
    fresh = _put(aws, "incoming/calls/fresh.wav", silent_wav(1))
    assert ingest.ingest_object(s3, sqs, _config(aws), fresh).status == "queued"
    assert calls["ListObjectsV2"] == 0, calls

    gone = _put(aws, "incoming/calls/gone.wav", silent_wav(1))
    s3.delete_object(Bucket=aws.bucket, Key=gone.key)
    assert ingest.ingest_object(s3, sqs, _config(aws), gone).status == "failed"
    assert _status(aws, "calls").failed_paths == ["gone.wav"]
    time.sleep(1.1)  # S3 keeps whole seconds: the new entry is the newer
    back = _put(aws, "incoming/calls/gone.wav", silent_wav(2))
    assert ingest.ingest_object(s3, sqs, _config(aws), back).status == "queued"
    status = _status(aws, "calls")
    assert (status.submitted, status.failed, status.pending) == (2, 0, 2)
    assert sorted(job["path"] for job in drain_jobs(aws)) == ["fresh.wav", "gone.wav"]
    settle(aws, "calls", ["gone.wav", "fresh.wav"])
    status = _status(aws, "calls")
    assert (status.done, status.failed, status.pending) == (2, 0, 0)


def test_an_object_deleted_after_it_was_ingested_stays_done(aws):
    s3 = storage.client(aws, "s3")
    ref = _put(aws, "incoming/calls/x.wav", silent_wav(1))
    assert _ingest(aws, ref).status == "queued"
    s3.delete_object(Bucket=aws.bucket, Key=ref.key)  # a lifecycle rule cleaned incoming/
    late = _ingest(aws, ref)
    assert late.status == "duplicate" and "already has a job" in late.reason
    assert keys.error_key("calls", "x.wav") not in _keys(aws, "results/")
    assert len(drain_jobs(aws)) == 1


def test_a_new_recording_under_the_same_key_is_a_new_job(aws):
    s3 = storage.client(aws, "s3")
    first = _ingest(aws, _put(aws, "incoming/calls/x.wav", silent_wav(1)))
    second = _ingest(aws, _put(aws, "incoming/calls/x.wav", silent_wav(2)))
    assert (first.status, second.status) == ("queued", "queued")
    assert first.sha256 != second.sha256
    jobs = drain_jobs(aws)
    assert [job["sha256"] for job in jobs] == [first.sha256, second.sha256]
    (listed,) = batch_records.list_entries(s3, aws.bucket, "calls").values()
    assert listed.duration == 2  # the old entry (1 s) was replaced
    assert len([k for k in _keys(aws, "batches/calls/files/")]) == 1


def test_an_old_versions_late_event_never_replaces_a_newer_input(aws, tmp_path):
    s3 = storage.client(aws, "s3")
    newer = _ingest(aws, _put(aws, "incoming/calls/x.wav", silent_wav(2)))
    assert newer.status == "queued"
    old = tmp_path / "old.wav"
    old.write_bytes(silent_wav(1))
    import hashlib

    fetched = ingest.Fetched(
        old,
        hashlib.sha256(old.read_bytes()).hexdigest(),
        old.stat().st_size,
        datetime.now(UTC) - timedelta(minutes=5),  # the object's earlier version
    )
    refused, _ = ingest.claim(s3, _config(aws), "calls", "x.wav", fetched)
    assert refused is not None and "newer version" in refused
    stored = s3.head_object(Bucket=aws.bucket, Key="inputs/calls/x.wav")
    assert stored["Metadata"]["sha256"] == newer.sha256


def test_try_later_while_a_fresh_claim_has_no_entry_then_take_over(aws):
    """Another delivery wrote the input (its claim) and has not queued the job yet."""
    s3 = storage.client(aws, "s3")
    data = silent_wav(1)
    ref = _put(aws, "incoming/calls/x.wav", data)
    import hashlib

    s3.put_object(
        Bucket=aws.bucket,
        Key="inputs/calls/x.wav",
        Body=data,
        Metadata={"sha256": hashlib.sha256(data).hexdigest()},
    )
    with pytest.raises(ingest.TryLater, match="being ingested by another") as raised:
        _ingest(aws, ref)
    assert 100 < raised.value.retry_after <= ingest.DEFAULT_CLAIM_SECONDS + 1
    assert drain_jobs(aws) == []
    # the claimer died: once its claim is older than claim_seconds, a delivery takes over
    taken = _ingest(aws, ref, claim_seconds=0.0)
    assert taken.status == "queued"
    assert len(drain_jobs(aws)) == 1
    assert _ingest(aws, ref).status == "duplicate"


def test_options_per_batch_end_up_in_the_jobs(aws):
    settings = aws.model_copy(
        update={
            "ingest_options": {"support": {"channels": "split", "speakers": ["agent", "customer"]}},
            "ingest_default_options": {"language": "en"},
        }
    )
    s3, sqs = storage.client(aws, "s3"), storage.client(aws, "sqs")
    for key in ("incoming/support/a.wav", "incoming/sales/b.wav"):
        ref = _put(aws, key, silent_wav(1))
        assert (
            ingest.ingest_object(
                s3, sqs, ingest.IngestConfig.from_env(settings.ingest_environment()), ref
            ).status
            == "queued"
        )
    jobs = {job["batch"]: TranscriptionJob.model_validate(job) for job in drain_jobs(aws)}
    assert jobs["support"].options.channels == "split"
    assert jobs["support"].options.speakers == ("agent", "customer")
    assert (jobs["sales"].options.channels, jobs["sales"].options.language) == ("auto", "en")
    assert tracking.load_batch(aws, s3, "support").options.speakers == ("agent", "customer")


def test_a_dated_folder_stays_in_its_folders_batch_by_default(aws):
    settings = aws.model_copy(update={"ingest_options": {"support": {"channels": "split"}}})
    s3, sqs = _client(aws, "s3"), _client(aws, "sqs")
    config = ingest.IngestConfig.from_env(settings.ingest_environment())
    ref = _put(aws, "incoming/support/2026-12-04/call.wav", silent_wav(1))
    outcome = ingest.ingest_object(s3, sqs, config, ref)
    assert (outcome.status, outcome.batch, outcome.path) == (
        "queued",
        "support",
        "2026-12-04/call.wav",
    )
    (job,) = drain_jobs(aws)
    assert job["options"]["channels"] == "split"


def test_folder_and_date_give_one_batch_per_folder_per_day_with_the_folders_options(aws):
    settings = aws.model_copy(
        update={
            "ingest_options": {"support": {"channels": "split", "speakers": ["agent", "customer"]}},
            "ingest_default_options": {"language": "en"},
            "ingest_batch": "{folder}-{date}",
        }
    )
    s3, sqs = _client(aws, "s3"), _client(aws, "sqs")
    config = ingest.IngestConfig.from_env(settings.ingest_environment())
    today = datetime.now(UTC).date().isoformat()  # moto's Last-Modified: now
    outcomes = [
        ingest.ingest_object(s3, sqs, config, _put(aws, key, silent_wav(1)))
        for key in (
            "incoming/support/2026-12-04/call.wav",
            "incoming/support/call-2.wav",
            "incoming/sales/call-3.wav",
        )
    ]
    assert [(o.status, o.batch, o.path) for o in outcomes] == [
        ("queued", f"support-{today}", "2026-12-04/call.wav"),
        ("queued", f"support-{today}", "call-2.wav"),
        ("queued", f"sales-{today}", "call-3.wav"),
    ]
    jobs = {job["path"]: TranscriptionJob.model_validate(job) for job in drain_jobs(aws)}
    assert jobs["call-2.wav"].input_key == f"inputs/support-{today}/call-2.wav"
    assert jobs["call-2.wav"].options.speakers == ("agent", "customer")
    assert jobs["call-3.wav"].options.language == "en"
    support = tracking.load_batch(aws, s3, f"support-{today}")
    assert support is not None and support.options.channels == "split"
    assert _status(aws, f"support-{today}").submitted == 2
    assert tracking.load_batch(aws, s3, "support") is None  # no undated batch


def test_a_day_s_batch_is_closed_by_the_clock_once_nothing_is_pending(aws):
    """Ingest marks each daily batch it creates open (``open/<closes>/<batch>.json``);
    ``close_open_batches`` (the ingest Lambda's schedule, ``whisperq ingest`` locally)
    looks only at the marks that are due: pending files keep the mark, and once every file
    is settled done.json is written once and the mark goes. No worker takes part: this is
    what closes a day whose last job ended before the day did."""
    from collections import Counter

    from whisperq import finished

    s3, sqs = _client(aws, "s3"), _client(aws, "sqs")
    daily = _config(aws, batch_template="{folder}-{date}")
    outcome = ingest.ingest_object(
        s3, sqs, daily, _put(aws, "incoming/support/a.wav", silent_wav(1))
    )
    batch = outcome.batch
    assert batch is not None and outcome.status == "queued"
    ingest.ingest_object(s3, sqs, daily, _put(aws, "incoming/support/b.wav", silent_wav(1)))
    document = json.loads(
        s3.get_object(Bucket=aws.bucket, Key=keys.batch_info_key(batch))["Body"].read()
    )
    closes = finished.open_until(document)
    assert closes is not None
    assert _keys(aws, "open/") == {keys.open_batch_key(batch, closes)}  # once, not per file

    calls: Counter[str] = Counter()
    counted = storage.client(aws, "s3")
    counted.meta.events.register("before-call.s3", lambda model, **_: calls.update([model.name]))
    early = closes - timedelta(minutes=1)
    assert finished.close_open_batches(daily, counted, now=early) == {}
    assert calls == Counter({"ListObjectsV2": 1})  # not due: nothing read
    assert finished.close_open_batches(daily, counted, now=closes) == {batch: "pending"}
    settle(aws, batch, ["a.wav"])
    settle(aws, batch, ["b.wav"], "failed")
    assert finished.close_open_batches(daily, s3, now=closes) == {batch: "written"}
    done = json.loads(s3.get_object(Bucket=aws.bucket, Key=keys.done_key(batch))["Body"].read())
    assert (done["submitted"], done["done"], done["failed_paths"]) == (2, 1, ["b.wav"])
    assert _keys(aws, "open/") == set()
    assert finished.close_open_batches(daily, s3, now=closes) == {}
    # a batch named without {date} is never marked open
    ingest.ingest_object(s3, sqs, _config(aws), _put(aws, "incoming/plain/a.wav", silent_wav(1)))
    assert _keys(aws, "open/") == set()


def test_the_local_ingest_loop_closes_days_as_the_lambda_s_schedule_does(aws):
    """`whisperq ingest` (what `whisperq local up` runs) closes due daily batches itself,
    at most once a minute: the local stack needs no schedule."""
    from whisperq.cli.ingest import Consumer

    sqs = _client(aws, "sqs")
    queue = sqs.create_queue(QueueName=f"{aws.bucket}-events")["QueueUrl"]
    settings = aws.model_copy(update={"ingest_queue_url": queue, "ingest_batch": "{folder}-{date}"})
    consumer = Consumer(settings, probe=None)
    body = json.loads(s3_notification(aws.bucket, ("incoming/support/gone.wav", 10)))
    body["Records"][0]["eventTime"] = "2026-12-01T12:00:00.000Z"  # a day long over
    (outcome,) = ingest.handle_event(consumer.s3, sqs, consumer.config, json.dumps(body)).outcomes
    assert outcome.batch == "support-2026-12-01"
    consumer.close_days()
    assert keys.done_key("support-2026-12-01") in _keys(aws, "batches/")
    assert _keys(aws, "open/") == set()
    # and not again within the minute: a second day's mark waits for the next round
    body["Records"][0]["eventTime"] = "2026-12-02T12:00:00.000Z"
    ingest.handle_event(consumer.s3, sqs, consumer.config, json.dumps(body))
    consumer.close_days()
    assert keys.done_key("support-2026-12-02") not in _keys(aws, "batches/")
    consumer.days_closed_at = None
    consumer.close_days()
    assert keys.done_key("support-2026-12-02") in _keys(aws, "batches/")


def test_open_marks_name_their_batch_and_when_it_closes():
    closes = datetime(2026, 12, 5, 2, tzinfo=UTC)
    key = keys.open_batch_key("support-2026-12-04", closes)
    assert key == "open/20261205T020000Z/support-2026-12-04.json"
    assert keys.parse_open_batch_key(key) == ("support-2026-12-04", closes)
    for other in (
        "open/x.json",
        "open/2026/support.json",
        "batches/b/done.json",
        "open/20261205T020000Z/../x.json",
    ):
        assert keys.parse_open_batch_key(other) is None


def test_a_deleted_objects_day_is_its_events(aws):
    s3, sqs = _client(aws, "s3"), _client(aws, "sqs")
    config = _config(aws, batch_template="{folder}-{date}")
    body = json.loads(s3_notification(aws.bucket, ("incoming/support/gone.wav", 10)))
    body["Records"][0]["eventTime"] = "2026-12-04T23:59:59.000Z"
    handled = ingest.handle_event(s3, sqs, config, json.dumps(body))
    (outcome,) = handled.outcomes
    assert (outcome.status, outcome.batch) == ("failed", "support-2026-12-04")
    assert keys.error_key("support-2026-12-04", "gone.wav") in _keys(aws, "results/")


def test_a_daily_batch_is_open_until_its_day_is_over_plus_the_grace_then_finished(aws):
    """open_until (batch.json): the end of the object's UTC day plus the grace; the batch
    is not finished before it, however done its files are, and is finished after."""
    from whisperq import defaults, finished

    s3, sqs = _client(aws, "s3"), _client(aws, "sqs")
    body = json.loads(s3_notification(aws.bucket, ("incoming/support/gone.wav", 10)))
    body["Records"][0]["eventTime"] = "2026-12-04T23:59:59.000Z"
    daily = _config(aws, batch_template="{folder}-{date}")
    (outcome,) = ingest.handle_event(s3, sqs, daily, json.dumps(body)).outcomes
    assert (outcome.status, outcome.batch) == ("failed", "support-2026-12-04")  # error record
    document = json.loads(
        s3.get_object(Bucket=aws.bucket, Key=keys.batch_info_key("support-2026-12-04"))[
            "Body"
        ].read()
    )
    closes = datetime(2026, 12, 5, tzinfo=UTC) + timedelta(
        seconds=defaults.DAILY_BATCH_GRACE_SECONDS
    )
    assert BatchInfo.model_validate(document).open_until == closes
    assert finished.open_until(document) == closes
    assert (
        finished.finish_if_done(aws, s3, "support-2026-12-04", now=closes - timedelta(minutes=1))
        == "open"
    )
    assert finished.finish_if_done(aws, s3, "support-2026-12-04", now=closes) == "written"
    done = json.loads(
        s3.get_object(Bucket=aws.bucket, Key=keys.done_key("support-2026-12-04"))["Body"].read()
    )
    assert (done["submitted"], done["failed_paths"]) == (1, ["gone.wav"])

    # A batch named without {date} is never open that way: no open_until.
    ingest.ingest_object(s3, sqs, _config(aws), _put(aws, "incoming/plain/a.wav", silent_wav(1)))
    plain = json.loads(
        s3.get_object(Bucket=aws.bucket, Key=keys.batch_info_key("plain"))["Body"].read()
    )
    assert "open_until" not in plain and BatchInfo.model_validate(plain).open_until is None
    drain_jobs(aws)


def test_a_folder_too_long_for_the_template_is_ignored_with_the_reason(aws):
    s3, sqs = _client(aws, "s3"), _client(aws, "sqs")
    ref = _put(aws, f"incoming/{'f' * 128}/x.wav", silent_wav(1))
    outcome = ingest.ingest_object(s3, sqs, _config(aws, batch_template="{folder}-{date}"), ref)
    assert outcome.status == "ignored" and "Invalid batch name" in outcome.reason
    assert drain_jobs(aws) == []


def test_a_batch_that_exists_keeps_its_options(aws):
    """ingest adds to a submitted batch with the batch's own options, as submit does."""
    from helpers import write_batch

    write_batch(aws, "calls", ["submitted.wav"])  # created by submit, default options
    settings = aws.model_copy(update={"ingest_options": {"calls": {"channels": "split"}}})
    s3, sqs = storage.client(aws, "s3"), storage.client(aws, "sqs")
    ref = _put(aws, "incoming/calls/ingested.wav", silent_wav(1))
    assert (
        ingest.ingest_object(
            s3, sqs, ingest.IngestConfig.from_env(settings.ingest_environment()), ref
        ).status
        == "queued"
    )
    (job,) = drain_jobs(aws)
    assert job["options"]["channels"] == "auto"
    assert _status(aws, "calls").submitted == 2


def test_concurrent_ingest_into_one_batch_counts_every_file_once(aws):
    """4 threads x 25 files, every event delivered twice from two threads at once; events
    told to try later come again afterwards (as SQS redelivers them)."""
    s3, sqs = storage.client(aws, "s3"), storage.client(aws, "sqs")
    config = _config(aws)
    paths = [f"line-{t}/call {n:02d}.wav" for t in range(4) for n in range(25)]

    def upload(index: int) -> str:
        # distinct content (its own length), written by the "telephony platform"
        key = f"incoming/busy/{paths[index]}"
        s3.put_object(Bucket=aws.bucket, Key=key, Body=silent_wav(1 + index / 100))
        return s3_notification(aws.bucket, (key, None))

    with ThreadPoolExecutor(max_workers=4) as pool:
        events = list(pool.map(upload, range(len(paths))))

    outcomes: list[ingest.Outcome] = []
    retry: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(4)

    def deliver(thread: int) -> None:
        mine = events[thread * 25 : (thread + 1) * 25]
        neighbours = events[((thread + 1) % 4) * 25 : ((thread + 1) % 4 + 1) * 25]
        start.wait()
        for body in [item for pair in zip(mine, neighbours, strict=True) for item in pair]:
            handled = ingest.handle_event(s3, sqs, config, body)
            with lock:
                outcomes.extend(handled.outcomes)
                if not handled.done:
                    retry.append(body)
                    assert all("another" in why for _, why in handled.retry), handled.retry

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(deliver, range(4)))
    print(f"{len(retry)} of 200 deliveries were told to try later")
    for body in retry:  # redelivered after the visibility timeout
        handled = ingest.handle_event(s3, sqs, config, body)
        assert handled.done
        outcomes.extend(handled.outcomes)

    assert len(outcomes) == 200
    queued = sorted(o.path for o in outcomes if o.status == "queued")
    assert queued == sorted(paths)  # each file queued exactly once
    assert sum(o.status == "duplicate" for o in outcomes) == 100
    jobs = drain_jobs(aws)
    assert sorted(job["path"] for job in jobs) == sorted(paths)  # exactly 100 jobs
    status = _status(aws, "busy")
    assert (status.submitted, status.pending, status.unknown_durations) == (100, 100, 0)

    result = runner.invoke(app, ["status", "busy", "--json"], env=_cli_env(aws))
    assert result.exit_code == 0, result.output
    (shown,) = json.loads(result.stdout)["batches"]
    assert (shown["batch"], shown["submitted"]) == ("busy", 100)


def _cli_env(aws: Settings, **more: str) -> dict[str, str]:
    env = {
        f"WHISPERQ_{name.upper()}": str(getattr(aws, name))
        for name in (
            "endpoint_url",
            "bucket",
            "queue_url",
            "dlq_url",
            "region",
            "aws_access_key_id",
        )
    }
    return env | {"WHISPERQ_AWS_SECRET_ACCESS_KEY": "testing", "COLUMNS": "200"} | more


# --- `whisperq ingest` against moto: the route as the local stack wires it ---------------


def test_whisperq_ingest_drains_the_bucket_events(aws):
    s3, sqs = storage.client(aws, "s3"), storage.client(aws, "sqs")
    events = sqs.create_queue(QueueName=f"{aws.queue_name}-events")["QueueUrl"]
    # moto sends an s3:TestEvent now: consumed like any other event
    local_stack.route_bucket_events(s3, sqs, aws.bucket, events, "incoming/")
    for key in ("incoming/demo/a b/Zoë + 1.wav", "incoming/demo/2.wav", "incoming/demo/2.json"):
        s3.put_object(Bucket=aws.bucket, Key=key, Body=silent_wav(1 + len(key) / 100))
    s3.put_object(Bucket=aws.bucket, Key="elsewhere/3.wav", Body=b"x")  # not an event

    env = _cli_env(aws, WHISPERQ_INGEST_QUEUE_URL=events)
    handlers = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    result = runner.invoke(app, ["ingest", "--once"], env=env)
    assert result.exit_code == 0, result.output
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == handlers
    assert sorted(job["path"] for job in drain_jobs(aws)) == ["2.wav", "a b/Zoë + 1.wav"]
    left = sqs.get_queue_attributes(
        QueueUrl=events,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    assert left == {
        "ApproximateNumberOfMessages": "0",
        "ApproximateNumberOfMessagesNotVisible": "0",
    }  # every event ended: deleted

    status = runner.invoke(app, ["status", "demo", "--json"], env=env)
    (shown,) = json.loads(status.stdout)["batches"]
    assert (shown["submitted"], shown["pending"]) == (2, 2)


def test_whisperq_ingest_without_a_queue_says_what_to_set(aws):
    result = runner.invoke(app, ["ingest", "--once"], env=_cli_env(aws))
    assert result.exit_code == 1
    assert "WHISPERQ_INGEST_QUEUE_URL" in result.output


# --- the local stack, end to end --------------------------------------------------------

SHORT_SENTENCES = [
    "Hello there.",
    "Good morning.",
    "Thank you.",
    "Please hold.",
    "One moment.",
    "Goodbye now.",
]


@pytest.mark.e2e
def test_local_stack_ingests_dropped_files_beside_concurrent_submits(
    isolated_settings, make_speech, tmp_path, monkeypatch
):
    """12 files copied into incoming/mixed/ by a plain S3 client from 4 threads at once,
    plus 2 concurrent `whisperq submit`s into the same batch: one result each."""
    monkeypatch.setenv("WHISPERQ_WORKER_CONCURRENCY", "2")  # both cores, one worker
    drops = [
        make_speech(tmp_path / f"drop/line-{t}/call-{n}.wav", SHORT_SENTENCES[(t + n) % 6])
        for t in range(4)
        for n in range(3)
    ]
    for name in ("desk-a", "desk-b"):
        for n in range(3):
            make_speech(Path.cwd() / name / f"call-{n}.wav", SHORT_SENTENCES[n + 3])
    started = time.monotonic()
    up = run_cli("local", "up", "--workers", "1")
    state = local_stack.read_state(Settings())
    try:
        assert up.returncode == 0, up.stderr + up.stdout
        assert "s3://whisperq-local/incoming/<batch>/" in up.stderr
        names = sorted(p.name for p in local_stack.managed_processes(state))
        assert names == ["ingest", "moto", "worker-1"]
        settings = Settings()
        assert settings.ingest_queue_url.endswith("/whisperq-local-ingest")

        # a plain S3 client, as a telephony platform would be: nothing of whisperq's
        import boto3

        client = boto3.client(
            "s3",
            endpoint_url=state["settings"]["endpoint_url"],
            region_name="us-east-1",
            aws_access_key_id="any",
            aws_secret_access_key="any",
        )

        def copy(thread: int) -> None:
            for path in drops[thread * 3 : (thread + 1) * 3]:
                relative = path.relative_to(tmp_path / "drop").as_posix()
                client.upload_file(str(path), "whisperq-local", f"incoming/mixed/{relative}")

        def submit(name: str):
            return run_cli("submit", name, "--batch", "mixed")

        with ThreadPoolExecutor(max_workers=6) as pool:
            copies = [pool.submit(copy, thread) for thread in range(4)]
            submits = [pool.submit(submit, name) for name in ("desk-a", "desk-b")]
            for future in copies:
                future.result()
            for future in submits:
                done = future.result()
                assert done.returncode == 0, done.stderr

        expected = sorted(
            [f"line-{t}/call-{n}.wav" for t in range(4) for n in range(3)]
            + [f"{name}/call-{n}.wav" for name in ("desk-a", "desk-b") for n in range(3)]
        )
        s3 = storage.client(settings, "s3")
        # `wait` knows the files that have entries: let the ingest step write them all
        wait_for(
            lambda: len(batch_records.list_entries(s3, settings.bucket, "mixed")) == 18,
            60,
            "18 entries",
            interval=0.5,
        )
        waited = run_cli("wait", "mixed", "--timeout", "300", "--interval", "1", timeout=330)
        assert waited.returncode == 0, waited.stderr + run_cli("local", "logs").stdout

        status = json.loads(run_cli("status", "mixed", "--json").stdout)
        (batch,) = status["batches"]
        assert (batch["submitted"], batch["done"], batch["failed"], batch["pending"]) == (
            18,
            18,
            0,
            0,
        )
        results = sorted(
            parsed[0]
            for item in storage.list_objects(s3, settings.bucket, keys.results_prefix("mixed"))
            if (parsed := keys.parse_result_key("mixed", item.key)) and parsed[1] == "json"
        )
        assert results == expected  # one result JSON per file
        logs = settings.state_dir / "logs"
        worker_log = (logs / "worker-1.log").read_text()
        assert worker_log.count("done mixed/") == 18  # each file transcribed by one job
        ingest_log = (logs / "ingest.log").read_text()
        assert ingest_log.count("queued mixed/") == 12
        print(f"ingest e2e: {time.monotonic() - started:.1f} s from `local up` to 18 results")
    finally:
        down = run_cli("local", "down", timeout=60)
        for process in local_stack.managed_processes(state or {}):
            if local_stack.is_alive(process):
                os.killpg(process.pid, signal.SIGKILL)
    assert down.returncode == 0 and "Stopped 3 process(es)" in down.stderr
