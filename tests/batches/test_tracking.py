"""status arithmetic (pure) and its cost: listing only, one GET per batch."""

import json
from collections import Counter

from whisperq import keys, storage
from whisperq.batches import tracking

from helpers import settle, write_batch, write_legacy_manifest


def durations(paths, duration=60.0):
    return dict.fromkeys(paths, duration)


def test_done_failed_pending_and_audio_hours():
    files = durations(["a.wav", "b.wav", "c.wav", "d.wav"], duration=900.0)
    result_keys = [
        keys.result_key("b", "a.wav", "srt"),
        keys.result_key("b", "a.wav", "json"),
        keys.result_key("b", "b.wav", "srt"),  # renderings without JSON: not done yet
        keys.error_key("b", "c.wav"),
        keys.error_key("b", "d.wav"),
        keys.result_key("b", "d.wav", "json"),  # a success after a failure wins
        keys.result_key("b", "stray.wav", "json"),  # not in the batch: ignored
    ]
    status = tracking.summarize("b", files, result_keys)
    assert (status.submitted, status.done, status.failed, status.pending) == (4, 2, 1, 1)
    assert status.failed_paths == ["c.wav"]
    assert status.audio_seconds_done == 1800.0
    assert status.audio_hours_done == 0.5
    assert not status.finished


def test_finished_when_nothing_is_pending():
    status = tracking.summarize("b", durations(["a.wav"]), [keys.error_key("b", "a.wav")])
    assert status.finished and status.failed == 1


def test_unknown_durations_are_counted_not_guessed():
    status = tracking.summarize("b", {"a.wav": None, "b.wav": 30.0}, [])
    assert status.unknown_durations == 1 and status.audio_seconds_submitted == 30.0


def test_status_of_a_large_batch_lists_its_entries_only(aws):
    """3,000 files: one GET (the batch's options), then the entries' listing only (1,000
    keys each): their keys say which files are done or failed, whatever the renderings."""
    paths = [f"calls/{i:05d}.wav" for i in range(3_000)]
    write_batch(aws, "big", paths, duration=30.0)
    settle(aws, "big", paths[:1050])
    settle(aws, "big", paths[1050:1100], "failed")

    calls = Counter()
    counted = storage.client(aws, "s3")
    counted.meta.events.register("before-call.s3", lambda model, **_: calls.update([model.name]))
    status = tracking.batch_status(aws, counted, "big")

    assert (status.submitted, status.done, status.failed, status.pending) == (3000, 1050, 50, 1900)
    assert status.audio_seconds_done == 1050 * 30.0
    assert status.failed_paths == paths[1050:1100]
    assert calls == Counter({"GetObject": 1, "ListObjectsV2": 3})
    # the same from the results listing: the states say what the results say
    exact = tracking.batch_status(aws, counted, "big", exact=True)
    assert (exact.done, exact.failed, exact.pending) == (1050, 50, 1900)
    assert calls == Counter({"GetObject": 2, "ListObjectsV2": 3 + 3 + 2})


def test_a_missed_rename_shows_pending_until_the_queues_are_empty(aws):
    """A result whose entry was never renamed (a worker stopped in between; a job done
    before submit wrote its entry) counts as pending by the entries, and as done once the
    queues hold nothing (``confirmed``): never done when it is not."""
    write_batch(aws, "missed", ["a.wav", "b.wav"])
    settle(aws, "missed", ["a.wav"])
    s3 = storage.client(aws, "s3")
    s3.put_object(Bucket=aws.bucket, Key=keys.result_key("missed", "b.wav", "json"), Body=b"{}")
    view = tracking.load_batch(aws, s3, "missed")
    status = tracking.batch_status(aws, s3, "missed", view=view)
    assert (status.done, status.pending) == (1, 1)

    sqs = storage.client(aws, "sqs")
    sqs.send_message(QueueUrl=aws.queue_url, MessageBody="a job still waiting")
    assert tracking.confirmed(aws, s3, status, view).pending == 1  # jobs left: as counted
    sqs.purge_queue(QueueUrl=aws.queue_url)
    again = tracking.confirmed(aws, s3, status, view)
    assert (again.done, again.pending, again.finished) == (2, 0, True)


def test_batches_made_before_entries_had_states_count_from_the_results(aws):
    write_batch(aws, "older", ["a.wav", "b.wav"])
    s3 = storage.client(aws, "s3")
    document = storage.get_json(s3, aws.bucket, keys.batch_info_key("older"))
    del document["entry_states"]
    s3.put_object(Bucket=aws.bucket, Key=keys.batch_info_key("older"), Body=json.dumps(document))
    s3.put_object(Bucket=aws.bucket, Key=keys.result_key("older", "a.wav", "json"), Body=b"{}")
    status = tracking.batch_status(aws, s3, "older")
    assert (status.done, status.pending) == (1, 1)


def test_batches_from_before_per_file_entries_are_still_read(aws):
    write_legacy_manifest(aws, "old", ["a.wav", "b.wav"], duration=10.0)
    s3 = storage.client(aws, "s3")
    s3.put_object(Bucket=aws.bucket, Key=keys.result_key("old", "a.wav", "json"), Body=b"{}")
    status = tracking.batch_status(aws, s3, "old")
    assert (status.submitted, status.done, status.pending) == (2, 1, 1)
    assert status.audio_seconds_done == 10.0
    view = tracking.load_batch(aws, s3, "old")
    assert view.options.language == "en"
    (entry,) = view.entries(aws, s3, ["b.wav"])
    assert entry.input_key == "inputs/old/b.wav" and entry.sha256 == f"{1:064x}"
