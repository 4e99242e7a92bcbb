"""A batch says it is finished without anyone running `wait` (issue 28): the worker that
settles a batch's last file, once its queue has run dry, writes ``done.json`` -- once,
with one EventBridge event, however many workers finish the last files at once.

In process (``BatchEnds`` in threads, each with its own clients, as pool processes have),
and with two real `whisperq worker` processes finishing a batch's last two files at the
same moment (held at their transcription stage until the test releases both,
``JobHolds``): one done.json, one event, one writer."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from whisperq import finished, keys, storage
from whisperq.batches import tracking
from whisperq.messages import send_jobs
from whisperq.stacks.local import READY_MARK
from whisperq.worker.batch_end import BatchEnds
from whisperq.worker.clients import ProcessClients

from helpers import (
    CLEAR_SENTENCE,
    JobHolds,
    put_as_worker,
    settle,
    upload_job,
    wait_for,
    worker_environment,
    write_batch,
)

PATHS = ["calls/a.wav", "calls/b.wav", "calls/c.wav"]
WROTE = "is finished: done.json written"


def _put(settings, key: str, body: bytes = b"{}") -> None:
    storage.client(settings, "s3").put_object(Bucket=settings.bucket, Key=key, Body=body)


def _settle(settings, batch: str, path: str, failed: bool = False) -> None:
    """A file's result (or error record) and its entry renamed, as a worker leaves them."""
    if failed:
        put_as_worker(settings, keys.error_key(batch, path), json.dumps({"reason": "x"}).encode())
    else:
        put_as_worker(settings, keys.result_key(batch, path, "json"))


def _event_queue(settings) -> str:
    """An SQS queue that a rule on the default bus sends every "batch finished" event to."""
    sqs, events = storage.client(settings, "sqs"), storage.client(settings, "events")
    url = sqs.create_queue(QueueName=f"{settings.queue_name}-finished")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    pattern = {"source": [finished.EVENT_SOURCE], "detail-type": [finished.EVENT_DETAIL_TYPE]}
    rule = f"{settings.queue_name}-finished"
    events.put_rule(Name=rule, EventPattern=json.dumps(pattern))
    events.put_targets(Rule=rule, Targets=[{"Id": "q", "Arn": arn}])
    return url


def _events(settings, url: str) -> list[dict]:
    """Every event on the queue (read until it stays empty)."""
    sqs = storage.client(settings, "sqs")
    found = []
    while True:
        reply = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
        if not reply.get("Messages"):
            return found
        for message in reply["Messages"]:
            found.append(json.loads(message["Body"]))
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])


def _done(settings, batch: str) -> dict | None:
    return storage.get_json(storage.client(settings, "s3"), settings.bucket, keys.done_key(batch))


# --- in process -----------------------------------------------------------------------------


def test_workers_finishing_the_last_files_at_once_write_done_json_once_with_one_event(aws):
    settings = aws.model_copy(update={"event_bus": "default"})
    events = _event_queue(settings)
    write_batch(settings, "day", PATHS, duration=30)
    _settle(settings, "day", PATHS[0])
    early = BatchEnds(settings, ProcessClients(settings), recheck_seconds=0)
    early.settled("day")
    assert early.after_job() == {"day": "pending"}  # the queue is dry, two files are not
    assert early.noted == set()  # forgotten: whoever settles the last file checks
    _settle(settings, "day", PATHS[1])
    _settle(settings, "day", PATHS[2], failed=True)

    ends = [BatchEnds(settings, ProcessClients(settings), recheck_seconds=0) for _ in range(8)]
    for end in ends:
        end.settled("day")
    with ThreadPoolExecutor(max_workers=8) as pool:
        outcomes = list(pool.map(lambda end: end.after_job()["day"], ends))
    assert sorted(outcomes) == ["finished"] * 7 + ["written"]
    assert all(end.noted == set() for end in ends)
    done = _done(settings, "day")
    assert done is not None
    assert (done["submitted"], done["done"], done["failed"]) == (3, 2, 1)
    assert (done["failed_paths"], done["audio_seconds"]) == (["calls/c.wav"], 60)
    (event,) = _events(settings, events)
    assert event["detail-type"] == "whisperq batch finished"
    assert event["detail"] == done


def test_a_settled_file_s_entry_is_renamed_also_when_it_came_after_the_job(aws):
    """Submit queues the jobs, then writes the entries: a fast worker settles a file whose
    entry is not there yet. It is renamed at the worker's next check instead."""
    write_batch(aws, "fast", PATHS[:1])
    end = BatchEnds(aws, ProcessClients(aws), recheck_seconds=0)
    _settle(aws, "fast", PATHS[0])
    end.settled("fast", PATHS[0], "done")
    _settle(aws, "fast", PATHS[1])
    end.settled("fast", PATHS[1], "done")  # its entry comes later
    s3 = storage.client(aws, "s3")
    assert tracking.batch_status(aws, s3, "fast").done == 1
    write_batch(aws, "fast", PATHS[1:2])
    send_jobs(storage.client(aws, "sqs"), aws.queue_url, [{"batch": "other", "path": "x"}])
    end.after_job()  # jobs wait: no batch is checked, but the entry is renamed
    status = tracking.batch_status(aws, s3, "fast")
    assert (status.submitted, status.done, status.pending) == (2, 2, 0)


def test_nothing_is_checked_while_jobs_wait_on_the_queue(aws):
    write_batch(aws, "busy", PATHS[:1])
    _settle(aws, "busy", PATHS[0])
    send_jobs(storage.client(aws, "sqs"), aws.queue_url, [{"batch": "other", "path": "x"}])
    end = BatchEnds(aws, ProcessClients(aws), recheck_seconds=0)
    end.settled("busy")
    assert end.after_job() == {} and end.noted == {"busy"}  # kept for the next dry queue
    assert _done(aws, "busy") is None
    storage.client(aws, "sqs").purge_queue(QueueUrl=aws.queue_url)
    assert end.after_job() == {"busy": "written"} and end.noted == set()


def test_a_long_queue_is_not_asked_after_every_job(aws, monkeypatch):
    """With BUSY_WAITING jobs or more waiting, the next jobs' checks do not ask SQS again
    for BUSY_QUIET_SECONDS (a 50,000-job backlog cost a request per job); after that it
    is asked again, and a dry queue lets the batch be marked."""
    from whisperq.worker import batch_end

    write_batch(aws, "long", PATHS[:1])
    _settle(aws, "long", PATHS[0])
    sqs = storage.client(aws, "sqs")
    waiting = [{"batch": "other", "path": f"{n}"} for n in range(batch_end.BUSY_WAITING)]
    send_jobs(sqs, aws.queue_url, waiting)
    clients = ProcessClients(aws)
    asked: list[str] = []
    clients.client("sqs").meta.events.register(
        "before-call.sqs.GetQueueAttributes", lambda **_: asked.append("asked")
    )
    end = BatchEnds(aws, clients, recheck_seconds=0)
    end.settled("long")
    for _ in range(5):
        assert end.after_job() == {}
    assert len(asked) == 1
    sqs.purge_queue(QueueUrl=aws.queue_url)
    assert end.after_job() == {} and len(asked) == 1  # still quiet: not asked
    now = batch_end.time.monotonic()
    monkeypatch.setattr(batch_end.time, "monotonic", lambda: now + batch_end.BUSY_QUIET_SECONDS)
    assert end.after_job() == {"long": "written"} and len(asked) == 2


def test_a_batch_left_noted_is_looked_at_again_when_no_job_comes_any_more(aws):
    """The last job saw a job waiting (another batch's, or SQS's counts lagging): the
    pool process's timer asks again, and marks the batch once the queue has run dry."""
    write_batch(aws, "last", PATHS[:1])
    _settle(aws, "last", PATHS[0])
    sqs = storage.client(aws, "sqs")
    send_jobs(sqs, aws.queue_url, [{"batch": "other", "path": "x"}])
    end = BatchEnds(aws, ProcessClients(aws), recheck_seconds=0.2)
    end.settled("last")
    assert end.after_job() == {}  # not dry: nothing checked, a timer set
    sqs.purge_queue(QueueUrl=aws.queue_url)  # ... and no job comes any more
    wait_for(lambda: _done(aws, "last"), 30, "the timer to write done.json")
    wait_for(lambda: not end.noted, 10, "the batch to be forgotten")


def test_a_daily_batch_stays_noted_until_its_day_is_over(aws):
    write_batch(aws, "support-2026-12-04", PATHS[:1])
    s3 = storage.client(aws, "s3")
    document = finished.read_batch_document(aws, s3, "support-2026-12-04")
    closes = datetime(2026, 12, 5, 1, tzinfo=UTC)
    document["open_until"] = closes.isoformat()
    _put(aws, keys.batch_info_key("support-2026-12-04"), json.dumps(document).encode())
    _settle(aws, "support-2026-12-04", PATHS[0])
    end = BatchEnds(aws, ProcessClients(aws), recheck_seconds=0)
    end.settled("support-2026-12-04")
    assert end.after_job(now=closes - timedelta(seconds=1)) == {"support-2026-12-04": "open"}
    assert end.noted == {"support-2026-12-04"}
    assert end.after_job(now=closes) == {"support-2026-12-04": "written"}
    assert end.noted == set()


def test_a_failed_check_is_logged_and_never_the_jobs_failure(aws, caplog):
    broken = aws.model_copy(update={"bucket": "no-such-bucket"})
    end = BatchEnds(broken, ProcessClients(broken), recheck_seconds=0)
    end.settled("day")
    assert end.after_job() == {}
    assert "could not check whether it is finished" in caplog.text
    assert end.noted == {"day"}  # tried again at the next dry queue


def test_the_event_names_a_hundred_failed_paths_and_done_json_all_of_them(aws):
    """EventBridge takes 256 KB an event: a batch with thousands of failures still gets
    its event (the first failed paths, and how many more); done.json lists them all."""
    settings = aws.model_copy(update={"event_bus": "default"})
    events = _event_queue(settings)
    paths = [f"calls/{n:04d}-{'x' * 150}.wav" for n in range(1500)]  # ~250 KB of paths
    write_batch(settings, "bad-day", paths)
    s3 = storage.client(settings, "s3")
    settle(settings, "bad-day", paths, state="failed")
    events_client = storage.client(settings, "events")
    assert finished.finish_if_done(settings, s3, "bad-day", events=events_client) == "written"
    assert len(_done(settings, "bad-day")["failed_paths"]) == 1500
    (event,) = _events(settings, events)
    assert event["detail"]["failed"] == 1500
    assert event["detail"]["failed_paths"] == paths[: finished.EVENT_FAILED_PATHS]
    assert event["detail"]["failed_paths_not_shown"] == 1500 - finished.EVENT_FAILED_PATHS


def test_an_event_eventbridge_refuses_is_logged_and_the_marker_stays(aws, caplog):
    settings = aws.model_copy(update={"event_bus": "no-such-bus"})
    write_batch(settings, "lonely", PATHS[:1])
    _settle(settings, "lonely", PATHS[0])
    s3 = storage.client(settings, "s3")
    events_client = storage.client(settings, "events")  # moto's: it has no such bus
    assert finished.finish_if_done(settings, s3, "lonely", events=events_client) == "written"
    assert _done(settings, "lonely") is not None
    assert "done.json written, but its event was not put" in caplog.text
    assert finished.finish_if_done(settings, s3, "lonely") == "finished"  # never again


def test_a_batch_from_before_per_file_entries_is_counted_from_its_manifest(aws):
    from helpers import write_legacy_manifest

    write_legacy_manifest(aws, "old", PATHS[:2], duration=10)
    for path in PATHS[:2]:
        _settle(aws, "old", path)
    assert finished.finish_if_done(aws, storage.client(aws, "s3"), "old") == "written"
    assert _done(aws, "old")["audio_seconds"] == 20
    assert finished.finish_if_done(aws, storage.client(aws, "s3"), "nothing") == "unknown"


# --- two real workers -----------------------------------------------------------------------


@pytest.fixture
def start_worker(aws, tmp_path):
    """start_worker(name) -> (process, log file): `python -m whisperq worker` on this
    test's queue, model loaded; stopped by its process group at the end."""
    started: list[subprocess.Popen] = []

    def start(name: str, **environment: str) -> tuple[subprocess.Popen, Path]:
        log_file = tmp_path / f"{name}.log"
        env = worker_environment(
            aws,
            WHISPERQ_PACK_MAX_FILES="1",  # each worker takes one job, none takes both
            **environment,
        )
        with log_file.open("wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "whisperq", "worker"],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        started.append(process)
        wait_for(
            lambda: (
                READY_MARK in log_file.read_text(errors="replace") or process.poll() is not None
            ),
            180,
            f"{name} to load its model",
        )
        assert process.poll() is None, log_file.read_text(errors="replace")[-3000:]
        return process, log_file

    yield start
    for process in started:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=30)


def test_two_workers_finishing_a_batchs_last_two_files_at_once_write_one_done_json(
    aws, start_worker, make_speech, tmp_path, monkeypatch
):
    settings = aws.model_copy(update={"event_bus": "default"})
    events = _event_queue(settings)
    holds = JobHolds(tmp_path / "holds", monkeypatch)  # before the workers start
    write_batch(settings, "night", PATHS)
    _settle(settings, "night", PATHS[0])  # settled earlier: the batch's last two are left
    audio = make_speech(tmp_path / "call.wav", CLEAR_SENTENCE)
    jobs = [upload_job(settings, audio, "night", path) for path in PATHS[1:]]
    workers = [start_worker(f"worker-{n}", WHISPERQ_EVENT_BUS="default") for n in range(2)]
    send_jobs(storage.client(settings, "sqs"), settings.queue_url, jobs)
    # one job in each worker, both held at their transcription stage ...
    pids = {holds.started(path)[1] for path in PATHS[1:]}
    assert pids == {process.pid for process, _ in workers}
    assert _done(settings, "night") is None
    holds.release_all()  # ... and let go at the same moment

    done = wait_for(lambda: _done(settings, "night"), 120, "done.json")
    assert (done["submitted"], done["done"], done["failed"]) == (3, 3, 0)

    def logs() -> str:
        return "".join(log.read_text(errors="replace") for _, log in workers)

    wait_for(lambda: logs().count("done night/") >= 2, 60, "both jobs to finish")
    wait_for(lambda: WROTE in logs(), 60, "the writer's log line")  # logged after the write
    assert logs().count(WROTE) == 1, logs()[-4000:]  # the conditional write: one writer
    (event,) = _events(settings, events)
    assert event["detail"]["batch"] == "night" and event["detail"] == done
