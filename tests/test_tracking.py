"""status arithmetic (pure) and its cost: listing only, one GET per batch."""

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone

from whisperq import keys, storage, tracking
from whisperq.schemas import BatchManifest, ManifestEntry

NOW = datetime(2026, 11, 21, tzinfo=timezone.utc)


def manifest(batch, paths, duration=60.0):
    return BatchManifest(
        batch=batch,
        created_at=NOW,
        updated_at=NOW,
        files=[
            ManifestEntry(
                path=path,
                input_key=keys.input_key(batch, path),
                sha256="0" * 64,
                size=1,
                duration=duration,
                submitted_at=NOW,
                queued=True,
            )
            for path in paths
        ],
    )


def test_done_failed_pending_and_audio_hours():
    m = manifest("b", ["a.wav", "b.wav", "c.wav", "d.wav"], duration=900.0)
    result_keys = [
        keys.result_key("b", "a.wav", "srt"),
        keys.result_key("b", "a.wav", "json"),
        keys.result_key("b", "b.wav", "srt"),  # renderings without JSON: not done yet
        keys.error_key("b", "c.wav"),
        keys.error_key("b", "d.wav"),
        keys.result_key("b", "d.wav", "json"),  # a success after a failure wins
        keys.result_key("b", "stray.wav", "json"),  # not in the manifest: ignored
    ]
    status = tracking.summarize(m, result_keys)
    assert (status.submitted, status.done, status.failed, status.pending) == (4, 2, 1, 1)
    assert status.failed_paths == ["c.wav"]
    assert status.audio_seconds_done == 1800.0
    assert status.audio_hours_done == 0.5
    assert not status.finished


def test_finished_when_nothing_is_pending():
    status = tracking.summarize(manifest("b", ["a.wav"]), [keys.error_key("b", "a.wav")])
    assert status.finished and status.failed == 1


def test_status_of_a_large_batch_lists_and_never_gets_each_result(aws):
    """10,000 files: one GET (the manifest) and one listing per 1,000 result keys."""
    s3 = storage.client(aws, "s3")
    paths = [f"calls/{i:05d}.wav" for i in range(10_000)]
    storage.put_text(
        s3, aws.bucket, keys.manifest_key("big"), manifest("big", paths).model_dump_json(), "x"
    )
    result_keys = [keys.result_key("big", path, "json") for path in paths[:1050]]
    result_keys += [keys.error_key("big", path) for path in paths[1050:1100]]
    with ThreadPoolExecutor(8) as pool:
        list(
            pool.map(lambda key: s3.put_object(Bucket=aws.bucket, Key=key, Body=b"{}"), result_keys)
        )

    calls = Counter()
    counted = storage.client(aws, "s3")
    counted.meta.events.register("before-call.s3", lambda model, **_: calls.update([model.name]))
    status = tracking.batch_status(aws, counted, "big")

    assert (status.submitted, status.done, status.failed, status.pending) == (
        10_000,
        1050,
        50,
        8900,
    )
    assert calls == Counter({"GetObject": 1, "ListObjectsV2": 2})
