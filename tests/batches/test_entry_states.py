"""Each file's state in its entry's key (whisperq.entry_states): renamed after its result or
error record, back to pending before a retry; the newest entry of a path counts; several
workers renaming at once lose nothing."""

import multiprocessing

import pytest

from whisperq import entry_states, keys, storage
from whisperq.batches import records as batch_records
from whisperq.batches import tracking

from helpers import settle, write_batch


def _keys(settings, batch):
    s3 = storage.client(settings, "s3")
    return sorted(
        o.key for o in storage.list_objects(s3, settings.bucket, keys.entries_prefix(batch))
    )


def test_the_state_rides_in_the_key():
    assert keys.entry_key("b", "a.wav", 1.5) == "batches/b/files/a.wav/1500.json"
    assert keys.entry_key("b", "a.wav", 1.5, "done") == "batches/b/files/a.wav/1500.done.json"
    assert (
        keys.entry_key("b", "a.wav", None, "failed") == "batches/b/files/a.wav/unknown.failed.json"
    )
    for state in keys.ENTRY_STATES:
        for duration in (None, 0.0, 61.25):
            key = keys.entry_key("b", "x/y.done.wav", duration, state)
            assert keys.parse_entry("b", key) == keys.EntryParts("x/y.done.wav", duration, state)
            assert keys.parse_entry_key("b", key) == ("x/y.done.wav", duration)
    assert keys.parse_entry("b", "batches/b/files/a.wav/12.lost.json") is None
    assert keys.parse_entry("b", "batches/b/files/a.wav/done.json") is None


def test_a_rename_keeps_the_entry_and_says_its_state(aws):
    write_batch(aws, "b", ["a.wav", "b.wav"], duration=2.0)
    s3 = storage.client(aws, "s3")
    before = batch_records.read_entry(s3, aws.bucket, keys.entry_key("b", "a.wav", 2.0))
    settle(aws, "b", ["a.wav"])
    settle(aws, "b", ["b.wav"], "failed")
    assert _keys(aws, "b") == [
        keys.entry_key("b", "a.wav", 2.0, "done"),
        keys.entry_key("b", "b.wav", 2.0, "failed"),
    ]
    # the entry itself (sha256, metadata: what retry sends again) moved with it
    assert (
        batch_records.read_entry(s3, aws.bucket, keys.entry_key("b", "a.wav", 2.0, "done"))
        == before
    )
    view = tracking.load_batch(aws, s3, "b")
    (entry,) = view.entries(aws, s3, ["b.wav"])
    assert entry.path == "b.wav"
    # marking again is a no-op; a path with no entry (yet) says so
    assert entry_states.mark(s3, aws.bucket, "b", "a.wav", "done")
    assert not entry_states.mark(s3, aws.bucket, "b", "never.wav", "done")
    assert len(_keys(aws, "b")) == 2


def test_a_worker_renames_its_job_s_entry_without_a_listing(aws):
    """The job names the entry it was queued with: the rename is a copy and a delete (two
    S3 requests, no listing: at 50,000 jobs a day that is 50,000 listings fewer). When
    that entry is gone (a new submission of the path replaced it), the path is listed."""
    from collections import Counter

    from whisperq.schemas import TranscriptionJob
    from whisperq.worker.batch_end import BatchEnds
    from whisperq.worker.clients import ProcessClients

    write_batch(aws, "jk", ["a.wav", "b.wav"], duration=2.0)
    s3 = storage.client(aws, "s3")
    jobs = {}
    for path in ("a.wav", "b.wav"):
        entry = batch_records.read_entry(s3, aws.bucket, keys.entry_key("jk", path, 2.0))
        jobs[path] = TranscriptionJob.model_validate(batch_records.job_payload("jk", entry, {}))
    assert jobs["a.wav"].entry_key == keys.entry_key("jk", "a.wav", 2.0)

    clients = ProcessClients(aws)
    calls: Counter[str] = Counter()
    clients.s3.meta.events.register("before-call.s3", lambda model, **_: calls.update([model.name]))
    ends = BatchEnds(aws, clients, recheck_seconds=0)
    ends.job_settled(jobs["a.wav"], "done")
    assert calls == Counter({"CopyObject": 1, "DeleteObject": 1})

    # b.wav submitted again with other content (3 s): its job's entry was replaced
    again = batch_records.entry_document("jk", "b.wav", "f" * 64, 2000, 3.0, "submit")
    older = batch_records.path_entries(s3, aws.bucket, "jk", "b.wav")
    batch_records.write_entries(s3, aws.bucket, "jk", [again], replaced={"b.wav": older[0]})
    calls.clear()
    ends.job_settled(jobs["b.wav"], "failed")
    assert calls["ListObjectsV2"] == 1
    assert _keys(aws, "jk") == [
        keys.entry_key("jk", "a.wav", 2.0, "done"),
        keys.entry_key("jk", "b.wav", 3.0, "failed"),
    ]
    # a delivered twice: the second finds its entry renamed already (a listing says so)
    calls.clear()
    ends.job_settled(jobs["a.wav"], "done")
    assert calls["ListObjectsV2"] == 1 and calls["CopyObject"] == 1
    assert keys.entry_key("jk", "a.wav", 2.0, "done") in _keys(aws, "jk")


def test_a_job_s_entry_key_must_be_a_pending_entry_of_its_own_path():
    job = {
        "batch": "b",
        "path": "a.wav",
        "input_key": keys.input_key("b", "a.wav"),
        "sha256": "0" * 64,
        "size": 1,
    }
    from pydantic import ValidationError

    from whisperq.schemas import TranscriptionJob

    assert TranscriptionJob.model_validate(job).entry_key is None
    ok = keys.entry_key("b", "a.wav", 1.0)
    assert TranscriptionJob.model_validate({**job, "entry_key": ok}).entry_key == ok
    for wrong in (
        keys.entry_key("b", "other.wav", 1.0),
        keys.entry_key("c", "a.wav", 1.0),
        keys.entry_key("b", "a.wav", 1.0, "done"),
        "batches/b/results/a.wav.json",
    ):
        with pytest.raises(ValidationError, match="entry_key"):
            TranscriptionJob.model_validate({**job, "entry_key": wrong})


@pytest.fixture
def calls(tmp_path):
    for name, body in (("a/x.wav", b"first call"), ("b/x.wav", b"second call")):
        (tmp_path / "calls" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "calls" / name).write_bytes(body)
    return tmp_path


def test_a_file_submitted_again_is_pending_again(aws, calls):
    from whisperq.batches.submit import submit

    submit(aws, ["calls/a"], batch="again", cwd=calls)
    settle(aws, "again", ["calls/a/x.wav"])
    s3 = storage.client(aws, "s3")
    assert tracking.batch_status(aws, s3, "again").done == 1
    (calls / "calls/a/x.wav").write_bytes(b"the call, recorded again")
    submit(aws, ["calls/a"], batch="again", cwd=calls, force=True)
    status = tracking.batch_status(aws, s3, "again")
    assert (status.done, status.pending) == (0, 1)
    assert [item.state for item in tracking.load_batch(aws, s3, "again").files.values()] == [
        "pending"
    ]


def test_retry_makes_failed_files_pending_before_their_jobs_go(aws, calls):
    from whisperq.batches.submit import requeue_failed, submit

    submit(aws, ["calls"], batch="weekly", cwd=calls)
    s3 = storage.client(aws, "s3")
    paths = sorted(tracking.load_batch(aws, s3, "weekly").files)
    assert paths == ["calls/a/x.wav", "calls/b/x.wav"]
    settle(aws, "weekly", paths[:1], "failed")
    assert tracking.batch_status(aws, s3, "weekly").failed == 1
    assert requeue_failed(aws, "weekly") == paths[:1]
    status = tracking.batch_status(aws, s3, "weekly")
    assert (status.failed, status.pending) == (0, 2)
    states = [item.state for item in tracking.load_batch(aws, s3, "weekly").files.values()]
    assert states == ["pending", "pending"]


def _mark_all(endpoint, bucket, batch, paths, state, ready, go):
    import boto3

    s3 = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    ready.set()
    go.wait(30)
    for path in paths:
        entry_states.mark(s3, bucket, batch, path, state)


def test_workers_renaming_at_once_lose_no_file(aws):
    """Four processes settle 60 files at once, the same 20 by two of them (a job delivered
    twice): every file ends with exactly one entry, done, and the status counts 60."""
    paths = [f"calls/{i:03d}.wav" for i in range(60)]
    write_batch(aws, "busy", paths, duration=1.0)
    s3 = storage.client(aws, "s3")
    for path in paths:
        s3.put_object(Bucket=aws.bucket, Key=keys.result_key("busy", path, "json"), Body=b"{}")
    shares = [paths[0:20], paths[20:40], paths[40:60], paths[0:20]]
    context = multiprocessing.get_context("fork")
    go = context.Event()
    readies = [context.Event() for _ in shares]
    workers = [
        context.Process(
            target=_mark_all,
            args=(aws.endpoint_url, aws.bucket, "busy", share, "done", ready, go),
        )
        for share, ready in zip(shares, readies, strict=True)
    ]
    for worker in workers:
        worker.start()
    try:
        assert all(ready.wait(30) for ready in readies)
        go.set()
        for worker in workers:
            worker.join(60)
        assert [worker.exitcode for worker in workers] == [0, 0, 0, 0]
    finally:
        for worker in workers:
            if worker.is_alive():
                worker.kill()
                worker.join(5)
    assert _keys(aws, "busy") == sorted(keys.entry_key("busy", p, 1.0, "done") for p in paths)
    status = tracking.batch_status(aws, s3, "busy")
    assert (status.submitted, status.done, status.pending) == (60, 60, 0)
