"""The CLI's contract: output, --json and exit codes, against moto."""

import itertools
import json
from collections import Counter

import pytest
from typer.testing import CliRunner

from whisperq import entry_states, keys, storage
from whisperq.batches.download import MARKER
from whisperq.celery_app import decode_job_message
from whisperq.cli import app

from helpers import put_as_worker, queued_jobs, write_batch

runner = CliRunner()


@pytest.fixture
def batch_of_three(cli_env, tmp_path):
    for name in ("a.wav", "b.wav", "c.wav"):
        (tmp_path / "calls" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "calls" / name).write_bytes(name.encode())
    result = runner.invoke(app, ["submit", str(tmp_path / "calls"), "--batch", "wk", "--json"])
    assert result.exit_code == 0, result.output
    return ["calls/a.wav", "calls/b.wav", "calls/c.wav"]  # keys keep the named directory


def put(settings, key):
    put_as_worker(settings, key)


def test_submit_prints_the_batch_id_and_a_report(batch_of_three, cli_env, tmp_path):
    (tmp_path / "more.wav").write_bytes(b"more")
    result = runner.invoke(app, ["submit", str(tmp_path / "more.wav"), str(tmp_path / "calls")])
    assert result.exit_code == 0, result.output
    batch = result.stdout.strip()
    assert keys.validate_batch_name(batch) == batch
    assert "Queued 4 file(s)" in result.output


def test_submit_json_report(cli_env, tmp_path):
    (tmp_path / "x.wav").write_bytes(b"x")
    result = runner.invoke(app, ["submit", str(tmp_path / "x.wav"), "-b", "j", "--json"])
    report = json.loads(result.stdout)
    assert report["batch"] == "j" and report["queued"] == 1 and report["duplicates"] == []


def test_submit_of_a_missing_path_fails_before_uploading(cli_env, tmp_path):
    (tmp_path / "x.wav").write_bytes(b"x")
    result = runner.invoke(app, ["submit", str(tmp_path / "x.wav"), str(tmp_path / "nope.wav")])
    assert result.exit_code == 1
    assert "No such file or directory" in result.output and "nope.wav" in result.output
    assert list(storage.list_objects(storage.client(cli_env, "s3"), cli_env.bucket, "")) == []


def test_a_file_name_s3_cannot_list_fails_alone_and_the_rest_is_queued(cli_env, tmp_path):
    for name in ["a.wav", "b\nc.wav", "d.wav"]:
        (tmp_path / "calls").mkdir(exist_ok=True)
        (tmp_path / "calls" / name).write_bytes(name.encode())
    result = runner.invoke(app, ["submit", str(tmp_path / "calls"), "-b", "nl", "--json"])
    assert result.exit_code == 1  # not everything was submitted
    report = json.loads(result.stdout)
    assert report["queued"] == 2
    (unusable,) = report["unusable"]
    assert unusable["path"].endswith("b\nc.wav") and "control character" in unusable["reason"]
    inputs = storage.list_objects(storage.client(cli_env, "s3"), cli_env.bucket, "inputs/nl/")
    assert sorted(obj.key for obj in inputs) == [
        "inputs/nl/calls/a.wav",
        "inputs/nl/calls/d.wav",
    ]
    assert sorted(job.path for job in queued_jobs(cli_env)) == ["calls/a.wav", "calls/d.wav"]

    plain = runner.invoke(app, ["submit", str(tmp_path / "calls"), "-b", "nl2"])
    assert plain.exit_code == 1
    said = " ".join(plain.output.split())
    assert "not submitted" in said and "b\\nc.wav" in said and "rename the file" in said


def test_submit_rejects_a_bad_batch_name(cli_env, tmp_path):
    (tmp_path / "x.wav").write_bytes(b"x")
    result = runner.invoke(app, ["submit", str(tmp_path / "x.wav"), "--batch", "no/slashes"])
    assert result.exit_code == 2 and "Invalid batch name" in result.output  # bad usage
    assert list(storage.list_objects(storage.client(cli_env, "s3"), cli_env.bucket, "")) == []


def test_without_configuration_commands_say_what_to_do():
    result = runner.invoke(app, ["status"])
    assert result.exit_code == 1
    assert "whisperq local up" in result.output and "WHISPERQ_BUCKET" in result.output


def test_status_json_counts_batch_and_queue(batch_of_three, cli_env):
    a, b, _ = batch_of_three
    put(cli_env, keys.result_key("wk", a, "json"))
    put(cli_env, keys.error_key("wk", b))
    result = runner.invoke(app, ["status", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    (batch,) = data["batches"]
    counts = [batch[name] for name in ("batch", "submitted", "done", "failed", "pending")]
    assert counts == ["wk", 3, 1, 1, 1]
    assert batch["failed_paths"] == ["calls/b.wav"]
    assert data["queue"] == {"visible": 3, "in_flight": 0, "dead_lettered": 0}


def test_status_counts_the_ingest_queue_and_its_dead_letters(batch_of_three, cli_env, monkeypatch):
    """Issue 26, item 9: S3 events waiting to become jobs, and those whose ingest kept
    failing, are in status (plain and --json) once an ingest queue is configured."""
    assert json.loads(runner.invoke(app, ["status", "--json"]).stdout)["ingest_queue"] is None
    sqs = storage.client(cli_env, "sqs")
    ingest = sqs.create_queue(QueueName=f"{cli_env.bucket}-ingest")["QueueUrl"]
    ingest_dlq = sqs.create_queue(QueueName=f"{cli_env.bucket}-ingest-dlq")["QueueUrl"]
    for n in range(2):
        sqs.send_message(QueueUrl=ingest, MessageBody=f"event {n}")
    sqs.send_message(QueueUrl=ingest_dlq, MessageBody="event that kept failing")
    monkeypatch.setenv("WHISPERQ_INGEST_QUEUE_URL", ingest)
    monkeypatch.setenv("WHISPERQ_INGEST_DLQ_URL", ingest_dlq)

    data = json.loads(runner.invoke(app, ["status", "--json"]).stdout)
    assert data["ingest_queue"] == {"visible": 2, "in_flight": 0, "dead_lettered": 1}
    assert data["queue"]["visible"] == 3  # the job queue's own counts, apart
    text = runner.invoke(app, ["status"]).stdout
    assert "ingest queue (S3 events): 2 waiting, 0 in flight, 1 dead-lettered" in text
    assert "Dead-lettered S3 events" in text

    # a queue the CLI cannot read (e.g. a policy from before these queues): said, and the
    # batches still shown
    monkeypatch.setenv("WHISPERQ_INGEST_QUEUE_URL", ingest + "-gone")
    result = runner.invoke(app, ["status", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["batches"][0]["batch"] == "wk" and "error" in data["ingest_queue"]
    result = runner.invoke(app, ["status"])
    assert result.exit_code == 0 and "ingest queue: cannot read it" in result.output


def test_status_table_and_unknown_batch(batch_of_three):
    table = runner.invoke(app, ["status", "wk"])
    assert table.exit_code == 0 and "wk" in table.stdout and "3 waiting" in table.stdout
    missing = runner.invoke(app, ["status", "nope"])
    assert missing.exit_code == 1 and "No batch named 'nope'" in missing.output


def test_wait_exits_0_when_all_succeeded(batch_of_three, cli_env):
    for path in batch_of_three:
        put(cli_env, keys.result_key("wk", path, "json"))
    result = runner.invoke(app, ["wait", "wk", "--timeout", "10", "--interval", "0.2"])
    assert result.exit_code == 0, result.output
    assert "All 3 done" in result.output


def test_wait_exits_1_naming_the_failures(batch_of_three, cli_env):
    a, b, c = batch_of_three
    put(cli_env, keys.result_key("wk", a, "json"))
    put(cli_env, keys.error_key("wk", b))
    put(cli_env, keys.error_key("wk", c))
    result = runner.invoke(app, ["wait", "wk", "--timeout", "10", "--interval", "0.2"])
    assert result.exit_code == 1
    assert "2 of 3 failed" in result.output
    assert "calls/b.wav" in result.output and "results/wk/calls/c.wav.error.json" in result.output


def test_wait_sees_a_dead_lettered_job_and_exits_1(batch_of_three, cli_env):
    """wait used to poll until --timeout for a job SQS had given up on."""
    sqs = storage.client(cli_env, "sqs")
    reply = sqs.receive_message(QueueUrl=cli_env.queue_url, MaxNumberOfMessages=1)
    (message,) = reply["Messages"]  # what SQS does after maxReceiveCount:
    sqs.send_message(QueueUrl=cli_env.dlq_url, MessageBody=message["Body"])
    sqs.delete_message(QueueUrl=cli_env.queue_url, ReceiptHandle=message["ReceiptHandle"])
    dead = decode_job_message(message["Body"]).path
    for path in batch_of_three:
        if path != dead:
            put(cli_env, keys.result_key("wk", path, "json"))

    result = runner.invoke(app, ["wait", "wk", "--timeout", "30", "--interval", "0.2"])
    assert result.exit_code == 1, result.output
    assert "1 of 3 failed" in result.output
    assert f"{dead}  (dead-lettered" in result.output and "whisperq retry wk" in result.output
    assert storage.queue_counts(cli_env).dead_lettered == 1  # looked at, left there


def test_wait_exits_2_on_timeout(batch_of_three, cli_env):
    put(cli_env, keys.result_key("wk", batch_of_three[0], "json"))
    result = runner.invoke(app, ["wait", "wk", "--timeout", "0.5", "--interval", "0.2"])
    assert result.exit_code == 2
    assert "2 of 3 still pending" in result.output


def test_wait_never_sleeps_past_its_timeout(batch_of_three, cli_env, monkeypatch):
    import whisperq.cli.results as batches_cli

    now = [1000.0]  # a clock that moves only when wait sleeps
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    monkeypatch.setattr(batches_cli, "_clock", lambda: now[0])
    monkeypatch.setattr(batches_cli, "_sleep", sleep)
    result = runner.invoke(app, ["wait", "wk", "--timeout", "3", "--interval", "30"])
    assert result.exit_code == 2 and "Timed out after 3s" in result.output
    assert slept == [3.0]  # one poll, then the rest of the timeout: not a 30 s interval


def test_results_mirror_paths_and_filter_formats(batch_of_three, cli_env, tmp_path):
    for fmt in keys.RESULT_FORMATS:
        put(cli_env, keys.result_key("wk", "sub dir/a.wav", fmt))
    put(cli_env, keys.error_key("wk", "b.wav"))
    out = tmp_path / "out"
    only_srt = runner.invoke(app, ["results", "wk", "--out", str(out), "--format", "srt"])
    assert only_srt.exit_code == 0, only_srt.output
    assert _written(out) == ["sub dir/a.wav.srt"]

    everything = runner.invoke(app, ["results", "wk", "--out", str(out)])
    assert everything.exit_code == 0
    assert _written(out) == [
        "b.wav.error.json",
        "sub dir/a.wav.json",
        "sub dir/a.wav.srt",
        "sub dir/a.wav.txt",
        "sub dir/a.wav.vtt",
    ]
    assert "1 failure record" in everything.output


def _written(out):
    return sorted(p.relative_to(out).as_posix() for p in out.rglob("*.*") if p.name != MARKER)


def test_results_of_another_batch_never_silently_replace_files(batch_of_three, cli_env, tmp_path):
    write_batch(cli_env, "other", ["a.wav"])
    for batch in ("wk", "other"):
        put(cli_env, keys.result_key(batch, "a.wav", "json"))
    out = tmp_path / "out"
    assert runner.invoke(app, ["results", "wk", "--out", str(out)]).exit_code == 0
    assert json.loads((out / MARKER).read_text()) == {"batch": "wk"}
    again = runner.invoke(app, ["results", "wk", "--out", str(out)])  # a refresh: fine
    assert again.exit_code == 0

    mixed = runner.invoke(app, ["results", "other", "--out", str(out)])
    said = " ".join(mixed.output.split())
    assert mixed.exit_code == 2
    assert "holds the results of batch 'wk'" in said and "--overwrite" in said

    forced = runner.invoke(app, ["results", "other", "--out", str(out), "--overwrite"])
    assert forced.exit_code == 0
    assert json.loads((out / MARKER).read_text()) == {"batch": "other"}

    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "a.wav.json").write_text("my own notes")
    unmarked = runner.invoke(app, ["results", "wk", "--out", str(tmp_path / "mine")])
    assert unmarked.exit_code == 2 and "would be replaced" in " ".join(unmarked.output.split())
    assert (tmp_path / "mine" / "a.wav.json").read_text() == "my own notes"


def test_results_say_when_there_is_nothing_to_download(batch_of_three, cli_env, tmp_path):
    out = tmp_path / "out"
    none_yet = runner.invoke(app, ["results", "wk", "--out", str(out)])
    assert none_yet.exit_code == 0 and "no results yet" in none_yet.output
    put(cli_env, keys.result_key("wk", "a.wav", "json"))
    put(cli_env, keys.result_key("wk", "a.wav", "srt"))
    vtt = runner.invoke(app, ["results", "wk", "--out", str(out), "--formats", "vtt"])
    said = " ".join(vtt.output.split())
    assert vtt.exit_code == 1
    assert "has no vtt results; it has: json, srt" in said
    assert not out.exists()


def test_submit_and_results_take_format_and_formats_alike(cli_env, tmp_path):
    (tmp_path / "x.wav").write_bytes(b"x")
    for flag in ("--format", "--formats"):
        submitted = runner.invoke(app, ["submit", str(tmp_path / "x.wav"), "-b", "f", flag, "srt"])
        assert submitted.exit_code == 0, submitted.output
        put(cli_env, keys.result_key("f", "x.wav", "srt"))
        fetched = runner.invoke(app, ["results", "f", "--out", str(tmp_path / flag), flag, "srt"])
        assert fetched.exit_code == 0, fetched.output


def test_results_rejects_unknown_formats(cli_env):
    result = runner.invoke(app, ["results", "wk", "--format", "srt,docx"])
    assert result.exit_code == 2 and "docx" in result.output


def test_help_explains_every_command():
    result = runner.invoke(app, ["--help"])
    for command in ("submit", "status", "wait", "results", "worker", "local"):
        assert command in result.output
    local = runner.invoke(app, ["local", "--help"])
    for command in ("up", "down", "logs"):
        assert command in local.output


def run_main(monkeypatch, *args):
    from whisperq.cli import main

    monkeypatch.setattr("sys.argv", ["whisperq", *args])
    with pytest.raises(SystemExit) as exited:
        main()
    return exited.value.code


def test_aws_errors_become_one_actionable_line(cli_env, monkeypatch, capsys):
    monkeypatch.setenv("WHISPERQ_BUCKET", "no-such-bucket")
    assert run_main(monkeypatch, "status") == 1
    captured = capsys.readouterr()
    assert "Bucket 'no-such-bucket' does not exist on local stack at http://127.0.0.1:" in (
        captured.err.replace("\n", "")
    )
    assert "Traceback" not in captured.err


def test_a_stale_local_stack_is_reported_not_retried(isolated_settings):
    state_dir = isolated_settings / "state"
    state_dir.mkdir()
    dead = {"name": "moto", "pid": 2**22 + 1, "started": 1, "log": "moto.log"}
    connection = {"endpoint_url": "http://127.0.0.1:9", "bucket": "b", "queue_url": "http://x/q"}
    (state_dir / "stack.json").write_text(json.dumps({"settings": connection, "processes": [dead]}))
    result = runner.invoke(app, ["status"])
    assert result.exit_code == 1
    said = " ".join(result.output.split())
    assert "no longer running" in said and "whisperq local reset" in said
    assert (state_dir / "stack.json").exists()  # nothing wiped: the user chooses


def test_a_submit_only_install_needs_no_worker_packages(cli_env, tmp_path):
    """The base install (no [worker] extra) submits: faster-whisper is never imported."""
    import os
    import subprocess
    import sys

    (tmp_path / "x.wav").write_bytes(b"x")
    code = (
        "import sys\n"
        "for name in ('faster_whisper', 'ctranslate2', 'onnxruntime', 'moto', 'pulumi'):\n"
        "    sys.modules[name] = None  # importing any of them now fails\n"
        "from whisperq.cli import main\n"
        f"sys.argv = ['whisperq', 'submit', {str(tmp_path / 'x.wav')!r}, '-b', 'lite']\n"
        "main()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=os.environ, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "lite"


def test_a_worker_with_a_wrong_model_stops_with_a_message(cli_env):
    result = runner.invoke(app, ["worker", "--model", "/no/such/model"])
    assert result.exit_code == 1
    assert "Model directory '/no/such/model' does not exist" in result.output


def test_results_of_an_unknown_batch_is_an_error(cli_env, tmp_path):
    result = runner.invoke(app, ["results", "nope", "--out", str(tmp_path / "out")])
    assert result.exit_code == 1 and "No batch named 'nope'" in result.output
    assert not (tmp_path / "out").exists()


def error_record(path, reason):
    return json.dumps(
        {
            "schema_version": 1,
            "batch": "wk",
            "path": path,
            "input_key": keys.input_key("wk", path),
            "reason": reason,
            "kind": "permanent",
            "error_type": "AudioDecodeError",
            "attempts": 1,
            "receive_count": 1,
            "worker_id": "host:1",
            "failed_at": "2026-11-22T00:00:00Z",
        }
    )


def test_status_failed_lists_reasons(batch_of_three, cli_env):
    b = batch_of_three[1]
    put_as_worker(cli_env, keys.error_key("wk", b), error_record(b, "b is not audio"))
    table = runner.invoke(app, ["status", "wk", "--failed"])
    assert table.exit_code == 0
    assert "calls/b.wav" in table.stdout and "b is not audio" in table.stdout
    data = json.loads(runner.invoke(app, ["status", "wk", "--failed", "--json"]).stdout)
    (failure,) = data["batches"][0]["failures"]
    assert (failure["path"], failure["reason"]) == (b, "b is not audio")


def test_wait_status_and_the_record_give_one_next_step_per_failed_file(batch_of_three, cli_env):
    """Issue 34: `wait` said `whisperq retry` while the record said to submit again with
    --force, and retrying a file that is not audio fails again. Records written by the
    worker's own code; wait and status print the step each record ends with."""
    import tempfile

    from botocore.exceptions import ClientError

    from whisperq.errors import AudioDecodeError
    from whisperq.schemas import TranscriptionJob
    from whisperq.worker.clients import ProcessClients
    from whisperq.worker.failures import classify
    from whisperq.worker.results import ResultStore

    a, b, c = batch_of_three
    put(cli_env, keys.result_key("wk", a, "json"))
    store = ResultStore(cli_env, ProcessClients(cli_env))
    local = f"{tempfile.gettempdir()}/whisperq-1a2b/0-b/b.wav"
    not_audio = AudioDecodeError(
        f"cannot decode audio: [Errno 1094995529] Invalid data found when processing input: "
        f"'{local}'"
    )
    throttled = ClientError({"Error": {"Code": "SlowDown"}}, "PutObject")
    for path, error in ((b, not_audio), (c, throttled)):
        job = TranscriptionJob(
            batch="wk", path=path, input_key=keys.input_key("wk", path), sha256="0" * 64, size=1
        )
        store.write_error(job, classify(error, path), error, 3, None)
        # and, as the worker's BatchEnds.settled does after it, the entry renamed
        entry_states.mark(storage.client(cli_env, "s3"), cli_env.bucket, "wk", path, "failed")
    s3 = storage.client(cli_env, "s3")
    reasons = {
        path: storage.get_json(s3, cli_env.bucket, keys.error_key("wk", path))["reason"]
        for path in (b, c)
    }
    steps = {
        path: reason.rsplit(" Next: ", 1)[1].removesuffix(".") for path, reason in reasons.items()
    }
    assert f"whisperq submit {b} --batch wk --force" in steps[b]
    assert "whisperq retry" not in steps[b] and "whisperq retry wk" in steps[c]
    assert tempfile.gettempdir() not in reasons[b] and "Errno" not in reasons[b]

    result = runner.invoke(app, ["wait", "wk", "--timeout", "10", "--interval", "0.2"])
    assert result.exit_code == 1, result.output
    lines = result.output.splitlines()
    for path in (b, c):
        (at,) = [n for n, line in enumerate(lines) if line.startswith(f"  {path}  ")]
        assert lines[at + 1] == f"    next: {steps[path]}"  # the record's step, word for word
    assert result.output.count("whisperq retry wk") == 1  # only for the file it can help

    data = json.loads(runner.invoke(app, ["status", "wk", "--failed", "--json"]).stdout)
    failures = {item["path"]: item for item in data["batches"][0]["failures"]}
    assert {path: failures[path]["next_step"] for path in (b, c)} == steps
    assert failures[b]["cause"] == "not_audio" and failures[c]["cause"] == "transient"


def test_retry_requeues_failed_files_and_clears_their_records(batch_of_three, cli_env):
    _, b, c = batch_of_three
    queued_jobs(cli_env)  # drain what submit queued
    s3 = storage.client(cli_env, "s3")
    for path in (b, c):
        s3.put_object(
            Bucket=cli_env.bucket, Key=keys.error_key("wk", path), Body=error_record(path, "x")
        )
    result = runner.invoke(app, ["retry", "wk", "--json"])
    assert result.exit_code == 0, result.output
    expected = {"batch": "wk", "failed": [b, c], "dead_lettered": [], "stale": []}
    assert json.loads(result.stdout) == expected
    assert sorted(job.path for job in queued_jobs(cli_env)) == [b, c]
    assert runner.invoke(app, ["status", "wk", "--json"]).stdout.count('"failed": 0') == 1


def test_dlq_redrive_moves_jobs_back_and_leaves_strangers(batch_of_three, cli_env):
    sqs = storage.client(cli_env, "sqs")
    # what SQS does after maxReceiveCount: the job's message, body unchanged, on the DLQ
    reply = sqs.receive_message(QueueUrl=cli_env.queue_url, MaxNumberOfMessages=1)
    (message,) = reply["Messages"]
    sqs.send_message(QueueUrl=cli_env.dlq_url, MessageBody=message["Body"])
    sqs.delete_message(QueueUrl=cli_env.queue_url, ReceiptHandle=message["ReceiptHandle"])
    sqs.send_message(QueueUrl=cli_env.dlq_url, MessageBody="not a whisperq job")
    queued_jobs(cli_env)  # the other two

    job_path = decode_job_message(message["Body"]).path
    listed = json.loads(runner.invoke(app, ["dlq", "--json"]).stdout)["messages"]
    assert [(m["batch"], m["path"]) for m in listed if m["path"]] == [("wk", job_path)]
    (stranger,) = [m for m in listed if m["path"] is None]
    assert stranger["problem"].startswith("not a whisperq job")

    moved = runner.invoke(app, ["dlq", "--redrive"])
    assert moved.exit_code == 0
    assert "Moved 1 job(s) back to the queue; 1 other message(s) left." in moved.output
    assert [job.path for job in queued_jobs(cli_env)] == [job_path]
    assert storage.queue_counts(cli_env).dead_lettered == 1


def test_config_from_stack_writes_what_submit_needs(isolated_settings, tmp_path):
    from whisperq.settings import Settings

    config_file = isolated_settings / "config.toml"
    config_file.write_text(
        'model = "base"\nbucket = "old"\nallowed_models = ["base"]\n'
        '[instance_prices]\n"c6a.xlarge" = { spot = 0.061 }\n'
    )
    outputs = {
        "bucket": "whisperq-data-bucket-1a2b",
        "queueUrl": "https://sqs.eu-west-1.amazonaws.com/123456789012/whisperq-jobs-9f",
        "dlqUrl": "https://sqs.eu-west-1.amazonaws.com/123456789012/whisperq-jobs-dlq-3c",
        "region": "eu-west-1",
        "groupName": "whisperq-dev-workers",
        "dashboardUrl": "https://eu-west-1.console.aws.amazon.com/cloudwatch/home",
    }
    (tmp_path / "outputs.json").write_text(json.dumps(outputs))
    result = runner.invoke(
        app, ["config", "from-stack", "--outputs", str(tmp_path / "outputs.json")]
    )
    assert result.exit_code == 0, result.output
    settings = Settings()
    assert settings.bucket == "whisperq-data-bucket-1a2b"
    assert settings.queue_url.endswith("/whisperq-jobs-9f")
    assert settings.dlq_url.endswith("/whisperq-jobs-dlq-3c")
    assert settings.region == "eu-west-1"
    assert settings.model == "base"  # other settings are kept, as their own types
    assert settings.allowed_models == ["base"]
    assert settings.instance_prices == {"c6a.xlarge": {"spot": 0.061}}
    settings.require_storage()


def test_config_from_stack_explains_missing_outputs_and_cli(
    isolated_settings, tmp_path, monkeypatch
):
    (tmp_path / "outputs.json").write_text(json.dumps({"bucket": "b"}))
    result = runner.invoke(
        app, ["config", "from-stack", "--outputs", str(tmp_path / "outputs.json")]
    )
    assert result.exit_code == 1 and "no output(s) queueUrl, dlqUrl, region" in result.output
    monkeypatch.setenv("PATH", str(tmp_path))  # no pulumi CLI here
    result = runner.invoke(app, ["config", "from-stack"])
    assert result.exit_code == 1 and "pulumi CLI is not on PATH" in result.output


def test_submit_stores_the_options_with_the_batch_and_every_job(cli_env, tmp_path):
    (tmp_path / "call.wav").write_bytes(b"x")
    flags = ["--channels", "split", "--speakers", "agent, customer", "--word-timestamps"]
    flags += ["--formats", "json,txt", "--hotwords", "Acme Fibre", "--language", "en"]
    flags += ["--beam-size", "3", "--no-vad", "--task", "transcribe"]
    result = runner.invoke(app, ["submit", str(tmp_path / "call.wav"), "-b", "opts", *flags])
    assert result.exit_code == 0, result.output

    s3 = storage.client(cli_env, "s3")
    stored = storage.get_json(s3, cli_env.bucket, keys.batch_info_key("opts"))["options"]
    expected = {
        "channels": "split",
        "speakers": ["agent", "customer"],
        "word_timestamps": True,
        "formats": ["txt"],  # the JSON is always written
        "hotwords": "Acme Fibre",
        "language": "en",
        "beam_size": 3,
        "vad": False,
        "task": "transcribe",
    }
    assert {name: stored[name] for name in expected} == expected
    sqs = storage.client(cli_env, "sqs")
    (message,) = sqs.receive_message(QueueUrl=cli_env.queue_url)["Messages"]
    job = decode_job_message(message["Body"]).model_dump(mode="json")
    assert {name: job["options"][name] for name in expected} == expected


def test_submit_rejects_bad_options_before_uploading(cli_env, tmp_path):
    (tmp_path / "call.wav").write_bytes(b"x")
    for flags, says in [
        (["--channels", "left"], "--channels"),
        (["--speakers", "agent"], "--speakers"),
        (["--formats", "srt,pdf"], "--formats"),
        (["--beam-size", "0"], "--beam-size"),
    ]:
        result = runner.invoke(app, ["submit", str(tmp_path / "call.wav"), "-b", "bad", *flags])
        assert result.exit_code == 2, (flags, result.output)
        assert "Invalid transcription options" in result.output and says in result.output
    s3 = storage.client(cli_env, "s3")
    assert storage.get_json(s3, cli_env.bucket, keys.batch_info_key("bad")) is None


HELP_COMMANDS = [
    [],
    *[[name] for name in ("submit", "status", "wait", "results", "retry", "dlq", "cost")],
    *[[name] for name in ("simulate", "worker", "local", "config")],
    ["local", "up"],
    ["local", "down"],
    ["local", "logs"],
    ["config", "from-stack"],
]


def _wrapped_badly(lines: list[str], width: int) -> list[str]:
    """Lines broken before they were full: the next line's first word would have fitted
    (what docstrings' own line breaks looked like in --help)."""
    return [
        f"{line.rstrip()!r} / {following.strip()!r}"
        for line, following in itertools.pairwise(lines)
        if line.strip()
        and following.strip()
        and not following.lstrip().startswith(("•", "-"))
        and len(line.rstrip()) + 1 + len(following.split()[0]) <= width
    ]


@pytest.mark.parametrize("command", HELP_COMMANDS, ids=lambda words: " ".join(words) or "top")
def test_help_reads_well_at_80_columns(command):
    result = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert max(len(line) for line in lines) <= 80
    description = [line for line in lines if not line.startswith(("│", "╭", "╰", " Usage"))]
    assert not _wrapped_badly(description, 78)
    # The commands' table: each command's description, wrapped as one paragraph.
    if "╭─ Commands" in result.output:
        box = result.output.split("╭─ Commands", 1)[1].split("╰", 1)[0].splitlines()[1:]
        cells = [line[2:-1].rstrip() for line in box]
        width = max(len(cell) for cell in cells)
        column = min(len(cell) - len(cell.lstrip()) for cell in cells if cell.startswith(" "))
        rows: list[list[str]] = []
        for cell in cells:
            if not cell.startswith(" "):
                rows.append([])
            rows[-1].append(cell[column:])
        for row in rows:
            assert not _wrapped_badly(row, width - column)


def test_results_get_each_file_once_without_a_head(batch_of_three, cli_env, tmp_path, monkeypatch):
    """The listing gives each result's size and ETag: the download GETs it at once (the
    transfer manager would HEAD it first), and writes what the worker wrote."""
    for path in batch_of_three:
        put(cli_env, keys.result_key("wk", path, "json"))
    calls: Counter[str] = Counter()
    got: list[str] = []
    make_client = storage.client

    def counted(settings, service):
        client = make_client(settings, service)
        client.meta.events.register("before-call.s3", lambda model, **_: calls.update([model.name]))
        client.meta.events.register(
            "before-call.s3.GetObject", lambda params, **_: got.append(params["url_path"])
        )
        return client

    monkeypatch.setattr(storage, "client", counted)
    out = tmp_path / "out"
    result = runner.invoke(app, ["results", "wk", "--out", str(out), "--format", "json"])
    assert result.exit_code == 0, result.output
    assert _written(out) == ["calls/a.wav.json", "calls/b.wav.json", "calls/c.wav.json"]
    assert all((out / f"{path}.json").read_bytes() == b"{}" for path in batch_of_three)
    assert calls["HeadObject"] == 0, calls
    assert sorted(got) == ["/batches/wk/batch.json"] + [
        f"/results/wk/{p}.json" for p in batch_of_three
    ]


def test_status_of_a_batch_reads_each_queue_s_counts_once(batch_of_three, cli_env, monkeypatch):
    """The job queue and its dead-letter queue are asked once each (their counts and the
    queue's retention in one request), however many checks use them: the pending
    files' recount, the stale check, the summary (it was 7 requests)."""
    put(cli_env, keys.result_key("wk", "calls/a.wav", "json"))
    asked: list[str] = []
    make_client = storage.client

    def counted(settings, service):
        client = make_client(settings, service)
        client.meta.events.register(
            "before-parameter-build.sqs.GetQueueAttributes",
            lambda params, **_: asked.append(params["QueueUrl"]),
        )
        return client

    monkeypatch.setattr(storage, "client", counted)
    result = runner.invoke(app, ["status", "wk", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    (batch,) = report["batches"]
    assert (batch["done"], batch["pending"]) == (1, 2)
    assert sorted(asked) == sorted([cli_env.queue_url, cli_env.dlq_url])
