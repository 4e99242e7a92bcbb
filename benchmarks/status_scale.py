"""What `whisperq status` costs as batches grow: S3 requests and seconds, per batch size.

Against a moto server on 127.0.0.1 (started and stopped here, by PID). For each size N a
batch's records are written directly, as submit and the workers leave them (no audio, no
model): ``batch.json``, one entry per file, and for every file its result JSON plus each
default rendering (``TranscriptionOptions().formats``: srt, vtt, txt) and its entry
renamed "done" (whisperq.entry_states), half of the files done while the batch runs (the
others' jobs waiting on the queue), all of them at the end. Then, through the real CLI
(``whisperq status ... --json``, in this process, S3 requests counted on every client):

  - ``status BATCH`` while half the files are done (the listing of the entries);
  - ``status BATCH`` once every file is done (the first call writes ``done.json``);
  - ``status BATCH`` again (a finished batch: its ``done.json`` only);
  - plain ``status`` with all the batches of the run (finished ones from their marker).

Issue 28's target is <= 60 S3 requests for ``status BATCH`` at 50,000 files with the
default formats; this prints where it stands.

    python benchmarks/status_scale.py                 # 1,000, 10,000 and 50,000 files
    python benchmarks/status_scale.py --sizes 1000,5000
    python benchmarks/status_scale.py --quick         # 200 files (a test runs it)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from typer.testing import CliRunner

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from submit_scale import Counting, cli_env, fresh_target, moto_server  # noqa: E402

from whisperq import keys, storage  # noqa: E402
from whisperq.batches import records as batch_records  # noqa: E402
from whisperq.schemas import TranscriptionOptions  # noqa: E402
from whisperq.settings import Settings  # noqa: E402

RESULT = json.dumps(
    {"note": "a stand-in result: status lists keys and never reads a file's result"}
).encode()


DURATION = 30.0  # seconds per file


def paths_of(count: int) -> list[str]:
    return [f"calls/{index // 1000:03d}/call-{index:06d}.wav" for index in range(count)]


def entry_of(batch: str, path: str) -> dict:
    sha256 = hashlib.sha256(path.encode()).hexdigest()
    return batch_records.entry_document(batch, path, sha256, 1000, DURATION, "submit")


def write_batch(settings: Settings, batch: str, paths: list[str]) -> None:
    """batch.json and one entry per file, as submit writes them."""
    s3 = storage.client(settings, "s3")
    options = TranscriptionOptions().model_dump(mode="json")
    batch_records.ensure_batch(s3, settings.bucket, batch, options, "submit", strict=True)
    entries = [entry_of(batch, path) for path in paths]
    batch_records.write_entries(s3, settings.bucket, batch, entries, threads=32)


def write_results(settings: Settings, batch: str, paths: list[str]) -> None:
    """Each file's renderings and, last, its JSON, then its entry renamed "done": the keys
    a worker leaves (whisperq.entry_states; the rename as a put and a delete, since this
    writer knows the entry's key and a worker lists it first)."""
    s3 = storage.client(settings, "s3")
    formats = [*TranscriptionOptions().formats, "json"]

    def settle(path: str) -> None:
        for fmt in formats:
            key = keys.result_key(batch, path, fmt)
            s3.put_object(Bucket=settings.bucket, Key=key, Body=RESULT)
        batch_records.write_entries(
            s3, settings.bucket, batch, [entry_of(batch, path)], threads=1, state="done"
        )
        s3.delete_object(Bucket=settings.bucket, Key=keys.entry_key(batch, path, DURATION))

    with ThreadPoolExecutor(32) as pool:
        list(pool.map(settle, paths))


def cli_status(settings: Settings, counting: Counting, *args: str) -> tuple[dict, float, Counter]:
    """`whisperq status ARGS --json` in this process: its output, seconds, S3 requests."""
    from whisperq.cli import app

    env = cli_env(settings)
    counting.take()
    started = time.perf_counter()
    result = CliRunner().invoke(app, ["status", *args, "--json"], env=env)
    seconds = time.perf_counter() - started
    calls = Counter({k: v for k, v in counting.take().items() if k.startswith("s3.")})
    if result.exit_code != 0:
        raise SystemExit(f"status {' '.join(args)} failed: {result.output[-2000:]}")
    return json.loads(result.stdout), seconds, calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes", default="1000,10000,50000", help="files per batch, comma-separated"
    )
    parser.add_argument("--quick", action="store_true", help="one batch of 200 files")
    args = parser.parse_args()
    sizes = [200] if args.quick else [int(size) for size in args.sizes.split(",")]

    counting = Counting()
    rows = []
    with moto_server() as endpoint:
        target = fresh_target(endpoint)
        storage.client = counting.client  # type: ignore[assignment]
        for size in sizes:
            batch = f"scale-{size}"
            paths = paths_of(size)
            started = time.perf_counter()
            write_batch(target, batch, paths)
            write_results(target, batch, paths[: size // 2])
            # The other half's jobs wait on the queue (one stands for them: status reads
            # the queue's counts, never its messages).
            sqs = storage.client(target, "sqs")
            sqs.send_message(QueueUrl=target.queue_url, MessageBody="a job still waiting")
            half, half_s, half_calls = cli_status(target, counting, batch)
            sqs.purge_queue(QueueUrl=target.queue_url)
            write_results(target, batch, paths[size // 2 :])
            done, done_s, done_calls = cli_status(target, counting, batch)
            again, again_s, again_calls = cli_status(target, counting, batch)
            setup_s = time.perf_counter() - started - half_s - done_s - again_s
            (mine,) = half["batches"]
            assert (mine["submitted"], mine["done"]) == (size, size // 2), mine
            for finished in (done, again):
                (mine,) = finished["batches"]
                assert (mine["submitted"], mine["done"], mine["pending"]) == (size, size, 0), mine
            rows.append(
                (size, setup_s, half_s, half_calls, done_s, done_calls, again_s, again_calls)
            )
            print(  # as it goes: a long run that fails later keeps what it measured
                f"{size:,} files (records written in {setup_s:.0f} s): status BATCH half done "
                f"{dict(sorted(half_calls.items()))} {half_s:.2f} s; all done "
                f"{dict(sorted(done_calls.items()))} {done_s:.2f} s; finished "
                f"{dict(sorted(again_calls.items()))} {again_s:.2f} s",
                flush=True,
            )
        every, every_s, every_calls = cli_status(target, counting)
        assert len(every["batches"]) == len(sizes), every["batches"]

    formats = ", ".join([*TranscriptionOptions().formats, "json"])
    print(f"machine: {platform.machine()}, Python {platform.python_version()}, moto on 127.0.0.1")
    print(f"per file: an entry, and when done its {formats} (S3 keys listed, never read)")
    print()
    print(
        "| files | status BATCH, half done | all done (writes done.json) | finished (done.json) |"
    )
    print("| ---: | --- | --- | --- |")
    for size, _setup, half_s, half_calls, done_s, done_calls, again_s, again_calls in rows:
        cells = [
            f"{sum(calls.values())} requests, {seconds:.2f} s"
            for seconds, calls in (
                (half_s, half_calls),
                (done_s, done_calls),
                (again_s, again_calls),
            )
        ]
        print(f"| {size:,} | {' | '.join(cells)} |")
    print()
    print(
        f"plain status, {len(sizes)} finished batch(es): {sum(every_calls.values())} requests, "
        f"{every_s:.2f} s"
    )
    for size, _setup, _hs, half_calls, *_ in rows:
        print(
            f"status BATCH at {size:,} files, half done, by operation: "
            f"{dict(sorted(half_calls.items()))}"
        )
    target_row = [row for row in rows if row[0] == 50_000]
    if target_row:
        requests = sum(target_row[0][3].values())
        verdict = "met" if requests <= 60 else "not met"
        print(f"issue 28's target (<= 60 requests at 50,000 files): {verdict} ({requests})")


if __name__ == "__main__":
    main()
