"""submit: discovery rules (pure) and the real upload/record/queue path against moto."""

import hashlib
from concurrent.futures import ThreadPoolExecutor

import pytest

from whisperq import keys, storage
from whisperq.batches import tracking
from whisperq.batches.submit import SubmitError, discover, new_batch_id, probe_duration, submit

from helpers import put_as_worker, queued_jobs


def touch(path, data=b"RIFF"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


# --- discovery ----------------------------------------------------------------------------


def test_directories_recurse_keep_relative_paths_and_count_non_audio(tmp_path):
    touch(tmp_path / "calls/a/x.wav", b"1")
    touch(tmp_path / "calls/b/x.wav", b"2")
    touch(tmp_path / "calls/b/Y.MP3", b"3")
    touch(tmp_path / "calls/notes.txt")
    touch(tmp_path / "calls/.DS_Store")
    found = discover(["calls"], cwd=tmp_path)
    assert [f.relative_path for f in found.files] == [
        "calls/a/x.wav",
        "calls/b/Y.MP3",
        "calls/b/x.wav",
    ]
    assert sorted(p.name for p in found.skipped_non_audio) == [".DS_Store", "notes.txt"]


def test_unusable_names_and_dangling_links_are_set_aside_with_reasons(tmp_path):
    touch(tmp_path / "calls/fine.wav")
    touch(tmp_path / "calls/two\nlines.wav")
    (tmp_path / "calls/loop.wav").symlink_to(tmp_path / "calls/loop.wav")
    (tmp_path / "calls/gone.wav").symlink_to(tmp_path / "nowhere.wav")
    found = discover(["calls"], cwd=tmp_path)
    assert [f.relative_path for f in found.files] == ["calls/fine.wav"]
    reasons = {item.path.name: item.reason for item in found.unusable}
    assert set(reasons) == {"two\nlines.wav", "loop.wav", "gone.wav"}
    assert "control character" in reasons["two\nlines.wav"]
    assert "loops back on itself" in reasons["loop.wav"]
    assert "does not exist" in reasons["gone.wav"] and "nowhere.wav" in reasons["gone.wav"]


def test_when_no_file_is_usable_nothing_is_submitted(tmp_path):
    touch(tmp_path / "calls/bad\n.wav")
    with pytest.raises(SubmitError, match=r"No file whisperq can take.*control character"):
        discover(["calls"], cwd=tmp_path)


def test_named_files_are_taken_whatever_their_extension(tmp_path):
    touch(tmp_path / "odd.bin")
    found = discover([str(tmp_path / "odd.bin")], cwd=tmp_path)
    assert [f.relative_path for f in found.files] == ["odd.bin"]


def test_quoted_globs_expand_recursively(tmp_path):
    touch(tmp_path / "calls/a/1.wav")
    touch(tmp_path / "calls/b/c/2.wav")
    touch(tmp_path / "calls/b/c/2.txt")
    found = discover(["calls/**/*.wav"], cwd=tmp_path)
    assert [f.relative_path for f in found.files] == ["calls/a/1.wav", "calls/b/c/2.wav"]


def test_paths_outside_cwd_are_relative_to_their_common_directory(tmp_path):
    touch(tmp_path / "data/a/x.wav")
    touch(tmp_path / "data/b/x.wav")
    elsewhere = tmp_path / "work"
    elsewhere.mkdir()
    found = discover([str(tmp_path / "data/a/x.wav"), str(tmp_path / "data/b")], cwd=elsewhere)
    assert [f.relative_path for f in found.files] == ["a/x.wav", "b/x.wav"]
    named_directory = discover([str(tmp_path / "data")], cwd=elsewhere)
    assert [f.relative_path for f in named_directory.files] == ["data/a/x.wav", "data/b/x.wav"]


def test_the_same_file_named_twice_is_taken_once(tmp_path):
    touch(tmp_path / "x.wav")
    found = discover(["x.wav", "./x.wav", str(tmp_path / "x.wav")], cwd=tmp_path)
    assert len(found.files) == 1


def test_missing_paths_fail_naming_them(tmp_path):
    touch(tmp_path / "x.wav")
    with pytest.raises(
        SubmitError, match=r"No such file or directory: 'nope\.wav', 'gone/\*\.wav'"
    ):
        discover(["x.wav", "nope.wav", "gone/*.wav"], cwd=tmp_path)


def test_a_directory_without_audio_is_an_error(tmp_path):
    touch(tmp_path / "docs/readme.txt")
    with pytest.raises(SubmitError, match="No audio files found"):
        discover(["docs"], cwd=tmp_path)


def test_batch_ids_are_valid_batch_names():
    first, second = new_batch_id(), new_batch_id()
    assert keys.validate_batch_name(first) == first
    assert first != second


def test_duration_comes_from_the_header(tmp_path, make_speech):
    wav = make_speech(tmp_path / "x.wav", "one two three")
    assert 1.0 < probe_duration(wav) < 4.0
    assert probe_duration(touch(tmp_path / "broken.wav", b"not audio at all")) is None


# --- against moto ---------------------------------------------------------------------------


@pytest.fixture
def calls(tmp_path):
    touch(tmp_path / "calls/a/x.wav", b"first call")
    touch(tmp_path / "calls/b/x.wav", b"second call")
    touch(tmp_path / "calls/Café — Zoë 1.wav", b"third call")
    touch(tmp_path / "calls/notes.txt", b"not audio")
    return tmp_path


def entries_of(settings, batch):
    s3 = storage.client(settings, "s3")
    view = tracking.load_batch(settings, s3, batch)
    return {entry.path: entry for entry in view.entries(settings, s3, view.files)}


def test_submit_uploads_records_and_queues_one_job_per_file(aws, calls):
    report = submit(aws, ["calls"], batch="weekly", cwd=calls)
    expected = ["calls/Café — Zoë 1.wav", "calls/a/x.wav", "calls/b/x.wav"]
    assert sorted(report.queued) == expected
    assert report.skipped_non_audio == 1
    assert report.sqs_requests == 1  # three jobs, one SendMessageBatch

    s3 = storage.client(aws, "s3")
    stored = sorted(o.key for o in storage.list_objects(s3, aws.bucket, "inputs/weekly/"))
    assert stored == [f"inputs/weekly/{p}" for p in expected]
    body = s3.get_object(Bucket=aws.bucket, Key="inputs/weekly/calls/b/x.wav")["Body"].read()
    assert body == b"second call"

    records = sorted(o.key for o in storage.list_objects(s3, aws.bucket, "batches/weekly/"))
    assert records == [
        "batches/weekly/batch.json",
        *(f"batches/weekly/files/{path}/unknown.json" for path in expected),  # not real audio
    ]
    entries = entries_of(aws, "weekly")
    assert sorted(entries) == expected

    jobs = sorted(queued_jobs(aws), key=lambda job: job.path)
    assert [job.path for job in jobs] == expected
    assert jobs[1].input_key == "inputs/weekly/calls/a/x.wav"
    assert all(job.sha256 == entries[job.path].sha256 for job in jobs)
    assert entries["calls/a/x.wav"].sha256 == hashlib.sha256(b"first call").hexdigest()


def test_the_same_file_again_is_skipped_unless_forced_but_every_path_gets_a_job(aws, calls):
    submit(aws, ["calls"], batch="weekly", cwd=calls)
    queued_jobs(aws)
    touch(calls / "calls/copy-of-a.wav", b"first call")  # same content, new name
    touch(calls / "calls/new.wav", b"new call")

    again = submit(aws, ["calls"], batch="weekly", cwd=calls)
    assert sorted(again.queued) == ["calls/copy-of-a.wav", "calls/new.wav"]
    assert sorted(again.duplicates) == ["calls/Café — Zoë 1.wav", "calls/a/x.wav", "calls/b/x.wav"]
    assert again.shared_content == [["calls/a/x.wav", "calls/copy-of-a.wav"]]
    assert sorted(job.path for job in queued_jobs(aws)) == ["calls/copy-of-a.wav", "calls/new.wav"]

    touch(calls / "calls/a/x.wav", b"first call, recorded again")  # same path, new content
    changed = submit(aws, ["calls/a"], batch="weekly", cwd=calls)
    assert changed.queued == ["calls/a/x.wav"]
    forced = submit(aws, ["calls/a"], batch="weekly", force=True, cwd=calls)
    assert forced.queued == ["calls/a/x.wav"]
    assert [job.path for job in queued_jobs(aws)] == ["calls/a/x.wav", "calls/a/x.wav"]
    entries = entries_of(aws, "weekly")
    assert len(entries) == 5  # a path submitted again keeps one entry
    assert (
        entries["calls/a/x.wav"].sha256 == hashlib.sha256(b"first call, recorded again").hexdigest()
    )


def test_a_missing_path_uploads_nothing(aws, calls):
    with pytest.raises(SubmitError, match=r"missing\.wav"):
        submit(aws, ["calls", "missing.wav"], batch="weekly", cwd=calls)
    s3 = storage.client(aws, "s3")
    assert list(storage.list_objects(s3, aws.bucket, "")) == []
    assert queued_jobs(aws) == []


def test_a_submit_cut_short_before_queueing_is_repaired_by_running_it_again(
    aws, calls, monkeypatch
):
    import whisperq.batches.submit as submit_module

    def broken_send(*args, **kwargs):
        raise ConnectionError("queue unreachable")

    monkeypatch.setattr(submit_module, "send_jobs", broken_send)
    with pytest.raises(ConnectionError):
        submit(aws, ["calls"], batch="weekly", cwd=calls)
    assert entries_of(aws, "weekly") == {}  # no entry without a job
    monkeypatch.undo()
    monkeypatch.chdir(calls)

    again = submit(aws, ["calls"], batch="weekly", cwd=calls)
    assert len(again.queued) == 3 and again.duplicates == []
    assert len(queued_jobs(aws)) == 3


def test_other_options_for_an_existing_batch_are_refused(aws, calls):
    from whisperq.schemas import TranscriptionOptions

    submit(aws, ["calls/a"], batch="weekly", cwd=calls, options=TranscriptionOptions(language="en"))
    with pytest.raises(SubmitError, match="other options"):
        submit(aws, ["calls/b"], batch="weekly", cwd=calls, options=TranscriptionOptions())
    more = submit(aws, ["calls/b"], batch="weekly", cwd=calls)  # none given: the batch's
    assert more.queued == ["calls/b/x.wav"]
    assert {job.options.language for job in queued_jobs(aws)} == {"en"}


def test_concurrent_submitters_into_one_batch_lose_nothing(aws, tmp_path):
    """4 submitters x 25 files into one batch at once: every file counted, one job each."""
    for writer in range(4):
        for index in range(25):
            touch(tmp_path / f"w{writer}/call-{index:02d}.wav", f"{writer}-{index}".encode())
    s3 = storage.client(aws, "s3")

    def one(writer: int):
        return submit(aws, [f"w{writer}"], batch="race", cwd=tmp_path)

    with ThreadPoolExecutor(4) as pool:
        reports = list(pool.map(one, range(4)))
    assert sum(len(report.queued) for report in reports) == 100
    assert sum(report.sqs_requests for report in reports) == 4 * 3  # 25 jobs: 3 batches each
    status = tracking.batch_status(aws, s3, "race")
    assert (status.submitted, status.pending) == (100, 100)
    jobs = queued_jobs(aws, limit=200)
    assert len(jobs) == 100 and len({job.path for job in jobs}) == 100


def _fail(settings, batch, path, reason):
    put_as_worker(settings, keys.error_key(batch, path), f'{{"reason": "{reason}"}}'.encode())


def test_retry_queues_first_so_a_crash_before_clearing_loses_nothing(aws, calls, monkeypatch):
    """retry deleted the error record before queueing: a crash between left a file pending
    with no job. Now the jobs go first; a crash leaves the record, and retry again works."""
    import whisperq.batches.submit as submit_module
    from whisperq.batches.submit import requeue_failed

    submit(aws, ["calls/a", "calls/b"], batch="weekly", cwd=calls)
    queued_jobs(aws)
    _fail(aws, "weekly", "calls/a/x.wav", "boom")

    def crash_while_clearing(*args, **kwargs):
        raise ConnectionError("S3 unreachable")

    monkeypatch.setattr(submit_module, "_clear_if_unchanged", crash_while_clearing)
    with pytest.raises(ConnectionError):
        requeue_failed(aws, "weekly")
    assert [job.path for job in queued_jobs(aws)] == ["calls/a/x.wav"]  # queued already
    s3 = storage.client(aws, "s3")
    assert tracking.batch_status(aws, s3, "weekly", exact=True).failed == 1  # record kept
    assert tracking.batch_status(aws, s3, "weekly").pending == 2  # its job is queued
    monkeypatch.undo()

    assert requeue_failed(aws, "weekly") == ["calls/a/x.wav"]  # run again: idempotent
    assert [job.path for job in queued_jobs(aws)] == ["calls/a/x.wav"]
    assert tracking.batch_status(aws, s3, "weekly").pending == 2
    assert requeue_failed(aws, "weekly") == []


def test_retry_keeps_a_failure_record_written_after_it_read_the_old_one(aws, calls, monkeypatch):
    import whisperq.batches.submit as submit_module
    from whisperq.batches.submit import requeue_failed

    submit(aws, ["calls/a"], batch="weekly", cwd=calls)
    _fail(aws, "weekly", "calls/a/x.wav", "first failure")
    real_send = submit_module.send_jobs

    def send_then_the_job_fails_again_at_once(*args, **kwargs):
        sent = real_send(*args, **kwargs)
        _fail(aws, "weekly", "calls/a/x.wav", "second failure")  # a fast worker
        return sent

    monkeypatch.setattr(submit_module, "send_jobs", send_then_the_job_fails_again_at_once)
    assert requeue_failed(aws, "weekly") == ["calls/a/x.wav"]
    record = storage.get_json(
        storage.client(aws, "s3"), aws.bucket, keys.error_key("weekly", "calls/a/x.wav")
    )
    assert record == {"reason": "second failure"}
