"""A batch says when it is finished (done.json, once; an EventBridge event), and jobs that
vanished from the queues are found and queued again, each once (issue 28)."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

from typer.testing import CliRunner

from whisperq import keys, storage
from whisperq.batches import completion, tracking
from whisperq.cli import app
from whisperq.messages import job_payload_of

from helpers import put_as_worker, run_cli, write_batch

runner = CliRunner()
PATHS = ["calls/a.wav", "calls/b.wav", "calls/c.wav"]


def _put(settings, key, body=b"{}"):
    put_as_worker(settings, key, body)


def _finish(settings, batch, paths, failed=()):
    for path in paths:
        if path in failed:
            _put(settings, keys.error_key(batch, path), json.dumps({"reason": "x"}).encode())
        else:
            _put(settings, keys.result_key(batch, path, "json"))


def _status(settings, batch):
    return tracking.batch_status(settings, storage.client(settings, "s3"), batch)


def _drain(settings) -> list[str]:
    """The paths of every job on the queue (received and deleted)."""
    sqs = storage.client(settings, "sqs")
    paths = []
    for _ in range(100):  # bounded
        messages = sqs.receive_message(QueueUrl=settings.queue_url, MaxNumberOfMessages=10)
        if not messages.get("Messages"):
            return paths
        for message in messages["Messages"]:
            paths.append(job_payload_of(message["Body"])["path"])
            sqs.delete_message(QueueUrl=settings.queue_url, ReceiptHandle=message["ReceiptHandle"])
    raise AssertionError("the queue did not run dry")


# --- done.json ------------------------------------------------------------------------------


def test_a_finished_batch_gets_done_json_once_however_many_see_it_at_once(aws):
    write_batch(aws, "day", PATHS, duration=30)
    _finish(aws, "day", PATHS[:2])
    s3 = storage.client(aws, "s3")
    assert completion.mark_finished(aws, s3, _status(aws, "day")) is False  # one pending
    assert completion.read_done(aws, s3, "day") is None

    _finish(aws, "day", PATHS[2:], failed=PATHS[2:])
    status = _status(aws, "day")
    with ThreadPoolExecutor(max_workers=8) as pool:
        wrote = list(pool.map(lambda _: completion.mark_finished(aws, s3, status), range(8)))
    assert wrote.count(True) == 1
    done = completion.read_done(aws, s3, "day")
    assert done is not None
    assert (done["batch"], done["submitted"], done["done"], done["failed"]) == ("day", 3, 2, 1)
    assert done["failed_paths"] == ["calls/c.wav"] and done["audio_seconds"] == 60
    assert datetime.fromisoformat(done["finished_at"]) <= datetime.now(UTC)


def test_a_batch_open_until_its_day_ends_is_not_finished_before(aws):
    write_batch(aws, "support-2026-12-04", PATHS[:1])
    s3 = storage.client(aws, "s3")
    document = json.loads(
        s3.get_object(Bucket=aws.bucket, Key=keys.batch_info_key("support-2026-12-04"))[
            "Body"
        ].read()
    )
    closes = datetime(2026, 12, 5, tzinfo=UTC)
    document["open_until"] = closes.isoformat()
    _put(aws, keys.batch_info_key("support-2026-12-04"), json.dumps(document).encode())
    _finish(aws, "support-2026-12-04", PATHS[:1])
    status = _status(aws, "support-2026-12-04")
    before = closes - timedelta(minutes=1)
    assert not completion.mark_finished(aws, s3, status, now=before)
    assert completion.mark_finished(aws, s3, status, now=closes)


def test_the_finished_event_reaches_a_rule_on_the_bus(aws):
    events = storage.client(aws, "events")
    sqs = storage.client(aws, "sqs")
    target = sqs.create_queue(QueueName=f"{aws.queue_name}-events")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=target, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    pattern = {"source": [completion.EVENT_SOURCE], "detail-type": [completion.EVENT_DETAIL_TYPE]}
    events.put_rule(Name=f"{aws.queue_name}-finished", EventPattern=json.dumps(pattern))
    events.put_targets(Rule=f"{aws.queue_name}-finished", Targets=[{"Id": "q", "Arn": arn}])
    settings = aws.model_copy(update={"event_bus": "default"})
    write_batch(settings, "evt", PATHS[:2])
    _finish(settings, "evt", PATHS[:2])

    assert completion.mark_finished(settings, storage.client(settings, "s3"), _status(aws, "evt"))
    (message,) = sqs.receive_message(QueueUrl=target, WaitTimeSeconds=1)["Messages"]
    event = json.loads(message["Body"])
    assert event["detail-type"] == "whisperq batch finished"
    assert event["detail"]["batch"] == "evt" and event["detail"]["done"] == 2


def test_wait_and_status_use_done_json_and_old_batches_leave_plain_status(cli_env):
    write_batch(cli_env, "fresh", PATHS[:1])
    write_batch(cli_env, "old", PATHS[:1])
    for batch in ("fresh", "old"):
        _finish(cli_env, batch, PATHS[:1])
    assert runner.invoke(app, ["wait", "fresh", "--timeout", "30"]).exit_code == 0
    s3 = storage.client(cli_env, "s3")
    assert completion.read_done(cli_env, s3, "fresh") is not None  # wait wrote it

    long_ago = datetime.now(UTC) - timedelta(days=30)
    done = completion.done_document(_status(cli_env, "old"), long_ago)
    _put(cli_env, keys.done_key("old"), json.dumps(done).encode())
    # the marker is what status reads now: a result written later does not change it
    shown = runner.invoke(app, ["status", "--json"])
    names = [item["batch"] for item in json.loads(shown.stdout)["batches"]]
    assert names == ["fresh"] and json.loads(shown.stdout)["finished_batches_not_shown"] == 1
    everything = runner.invoke(app, ["status", "--all", "--json"])
    assert [item["batch"] for item in json.loads(everything.stdout)["batches"]] == ["fresh", "old"]
    named = runner.invoke(app, ["status", "old", "--json"])  # a batch named is always shown
    assert json.loads(named.stdout)["batches"][0]["done"] == 1


# --- stale paths ----------------------------------------------------------------------------


def test_a_purged_queue_is_recovered_by_retry_stale_each_path_once(cli_env):
    write_batch(cli_env, "lost", PATHS)  # entries, but their jobs are gone (a purge)
    _finish(cli_env, "lost", PATHS[:1])

    shown = runner.invoke(app, ["status", "lost", "--json"])
    assert json.loads(shown.stdout)["batches"][0]["stale"] == 2
    said = " ".join(runner.invoke(app, ["status", "lost"]).output.split())
    assert "2 pending file(s) whose jobs are gone" in said and "retry lost --stale" in said

    def retry(_):  # a process of its own, as people and cron jobs run it
        result = run_cli("retry", "lost", "--stale", "--json")
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)["stale"]

    with ThreadPoolExecutor(max_workers=4) as pool:  # four runs at once
        queued = [path for run in pool.map(retry, range(4)) for path in run]
    assert sorted(queued) == PATHS[1:]
    assert sorted(_drain(cli_env)) == PATHS[1:]  # each exactly once on the queue
    again = runner.invoke(app, ["retry", "lost", "--stale", "--json"])  # later the same day
    assert json.loads(again.stdout)["stale"] == []
    assert _drain(cli_env) == []


def test_with_jobs_on_the_queue_only_entries_older_than_its_retention_are_stale(aws):
    write_batch(aws, "big", PATHS)
    s3 = storage.client(aws, "s3")
    view = tracking.load_batch(aws, s3, "big")
    assert view is not None
    status = _status(aws, "big")
    busy = completion.QueueState(empty=False, retention_seconds=4 * 86400)
    now = datetime.now(UTC)
    assert completion.stale_paths(view, status, busy, now) == []  # their jobs may be queued
    later = now + timedelta(days=4, minutes=1)
    assert completion.stale_paths(view, status, busy, later) == PATHS
    assert completion.stale_paths(view, status, busy, later, dead_lettered={PATHS[0]}) == PATHS[1:]
    idle = completion.QueueState(empty=True, retention_seconds=4 * 86400)
    assert completion.stale_paths(view, status, idle, now) == PATHS
