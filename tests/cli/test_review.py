"""`whisperq report BATCH --html DIR` against moto: which audio each page plays (a
redacted batch never reads its inputs unless asked), presigned links, failures, and the
bounded window of reads. The pages themselves: tests/transcripts/test_review_*.py."""

from __future__ import annotations

import html
import json
import re
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest
from review_samples import CARD, redacted_call, stereo_call
from typer.testing import CliRunner

from whisperq import keys, storage
from whisperq.batches import records as batch_records
from whisperq.cli import app
from whisperq.cli.review import (
    NO_REDACTED_AUDIO,
    ORIGINAL_TOO,
    audio_plan,
    in_order,
    write_review,
)
from whisperq.schemas import ErrorRecord, TranscriptionOptions

runner = CliRunner()
ORIGINAL = b"RIFF original: the customer reads out " + CARD.encode()
REDACTED = b"RIFF redacted: silence where the card number was"


class Spy:
    """An S3 client that notes every key it GETs."""

    def __init__(self, s3: Any) -> None:
        self._s3 = s3
        self.read: list[str] = []
        self._lock = threading.Lock()

    def get_object(self, **kwargs: Any) -> Any:
        with self._lock:
            self.read.append(kwargs["Key"])
        return self._s3.get_object(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._s3, name)


def make_batch(settings, batch: str, options: TranscriptionOptions, paths: list[str]) -> Any:
    s3 = storage.client(settings, "s3")
    batch_records.ensure_batch(
        s3, settings.bucket, batch, options.model_dump(mode="json"), "submit", strict=True
    )
    entries = [
        batch_records.entry_document(batch, path, f"{i:064x}", 1000, 9.0, "submit")
        for i, path in enumerate(paths)
    ]
    batch_records.write_entries(s3, settings.bucket, batch, entries)
    for path in paths:  # every input is in the bucket
        s3.put_object(Bucket=settings.bucket, Key=keys.input_key(batch, path), Body=ORIGINAL)
    return s3


def put_result(s3, settings, batch: str, result: Any) -> None:
    data = result if isinstance(result, dict) else result.model_dump(mode="json")
    data = {**data, "batch": batch, "input_key": keys.input_key(batch, data["path"])}
    key = keys.result_key(batch, data["path"], "json")
    storage.put_text(s3, settings.bucket, key, json.dumps(data), "application/json")


def put_failure(s3, settings, batch: str, path: str, reason: str) -> None:
    record = ErrorRecord(
        batch=batch,
        path=path,
        input_key=keys.input_key(batch, path),
        reason=reason,
        kind="permanent",
        error_type="DecodeError",
        attempts=1,
        worker_id="host-a:1",
        failed_at=datetime(2026, 3, 2, tzinfo=UTC),
    )
    key = keys.error_key(batch, path)
    storage.put_text(s3, settings.bucket, key, record.model_dump_json(), "application/json")


@pytest.fixture
def redacted_batch(cli_env):
    """pci redaction with audio: a.wav has its redacted copy, b.wav has none (its copy
    failed), c.wav failed, d.wav pending; an unreadable result."""
    options = TranscriptionOptions(redact=("pci",), redact_audio=True, word_timestamps=True)
    paths = ["a.wav", "b.wav", "c.wav", "d.wav", "e.wav"]
    s3 = make_batch(cli_env, "pay", options, paths)
    put_result(s3, cli_env, "pay", redacted_call("a.wav"))
    put_result(s3, cli_env, "pay", redacted_call("b.wav"))
    s3.put_object(Bucket=cli_env.bucket, Key=keys.redacted_audio_key("pay", "a.wav"), Body=REDACTED)
    put_failure(s3, cli_env, "pay", "c.wav", "Not audio: <b>c.wav</b> could not be decoded")
    storage.put_text(s3, cli_env.bucket, keys.result_key("pay", "e.wav", "json"), "[]", "x/json")
    return "pay"


def audio_of(page: Path) -> list[str]:
    """The player's source, then the other sources offered."""
    html = page.read_text(encoding="utf-8")
    return re.findall(r'<audio id="player"[^>]* src="([^"]*)"', html) + re.findall(
        r'class="source[^"]*" type="button" data-src="([^"]*)"', html
    )


def test_a_redacted_batch_plays_its_redacted_audio_and_never_reads_its_inputs(
    redacted_batch, cli_env, tmp_path
):
    spy = Spy(storage.client(cli_env, "s3"))
    written = write_review(cli_env, spy, redacted_batch, tmp_path / "site", threads=2)
    assert not [key for key in spy.read if key.startswith("inputs/")]
    assert (written.calls, written.failed, written.unreadable) == (2, 1, 1)
    calls = tmp_path / "site" / "calls"
    assert audio_of(calls / "a.wav.html") == ["a.wav.redacted.wav"]
    assert (calls / "a.wav.redacted.wav").read_bytes() == REDACTED
    assert audio_of(calls / "b.wav.html") == []
    assert NO_REDACTED_AUDIO.split(":")[0] in (calls / "b.wav.html").read_text()
    assert sorted(p.name for p in calls.iterdir()) == [
        "a.wav.html",
        "a.wav.redacted.wav",
        "b.wav.html",
    ]  # no original anywhere
    for page in [*calls.iterdir(), *(tmp_path / "site" / "data").iterdir()]:
        assert CARD.encode() not in page.read_bytes()
    rows = (tmp_path / "site" / "data" / "calls-0000.js").read_text()
    assert '"p":"c.wav"' in rows and "Not audio: <b>c.wav</b> could not be decoded" in rows
    index = written.index.read_text()
    assert "2 of 5 submitted file(s) done." in index and "unreadable results" in index


def test_include_original_audio_offers_the_original_too(redacted_batch, cli_env, tmp_path):
    s3 = storage.client(cli_env, "s3")
    write_review(cli_env, s3, redacted_batch, tmp_path, include_original_audio=True)
    calls = tmp_path / "calls"
    assert audio_of(calls / "a.wav.html") == ["a.wav.redacted.wav", "a.wav.redacted.wav", "a.wav"]
    assert audio_of(calls / "b.wav.html") == ["b.wav"]  # the original, said so
    assert ORIGINAL_TOO in (calls / "b.wav.html").read_text()
    assert "original audio (unredacted)" in (calls / "b.wav.html").read_text()
    assert (calls / "b.wav").read_bytes() == ORIGINAL


def test_a_batch_without_redaction_copies_its_inputs(cli_env, tmp_path):
    paths = ["calls/one call.wav", "calls/gone.wav"]
    s3 = make_batch(cli_env, "plain", TranscriptionOptions(word_timestamps=True), paths)
    for path in paths:
        put_result(s3, cli_env, "plain", stereo_call(path))
    s3.delete_object(Bucket=cli_env.bucket, Key=keys.input_key("plain", "calls/gone.wav"))
    written = write_review(cli_env, s3, "plain", tmp_path)
    folder = tmp_path / "calls" / "calls"
    assert audio_of(folder / "one call.wav.html") == ["one%20call.wav"]
    assert (folder / "one call.wav").read_bytes() == ORIGINAL
    assert audio_of(folder / "gone.wav.html") == []
    assert "no longer in the bucket" in (folder / "gone.wav.html").read_text()
    assert written.index == tmp_path / "index.html"
    assert "cost (estimate)" in written.index.read_text()  # priced as `whisperq cost` does


def test_presigned_links_instead_of_copies(redacted_batch, cli_env, tmp_path):
    s3 = storage.client(cli_env, "s3")
    write_review(cli_env, s3, redacted_batch, tmp_path, presign_hours=2)
    [link] = audio_of(tmp_path / "calls" / "a.wav.html")
    address, _, query = html.unescape(link).partition("?")
    assert address == f"{cli_env.endpoint_url}/{cli_env.bucket}/results/pay/a.wav.redacted.wav"
    fields = parse_qs(query)
    if "X-Amz-Expires" in fields:  # SigV4: seconds
        assert fields["X-Amz-Expires"] == ["7200"]
    else:  # SigV2 (moto's default here): when, as a Unix time
        assert abs(int(fields["Expires"][0]) - time.time() - 7200) < 120
    assert sorted(p.name for p in (tmp_path / "calls").iterdir()) == ["a.wav.html", "b.wav.html"]


def test_report_html_writes_the_site_and_prints_its_index(redacted_batch, tmp_path):
    result = runner.invoke(app, ["report", redacted_batch, "--html", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    index = (tmp_path / "out" / "index.html").resolve()
    assert result.stdout.strip() == str(index) and index.is_file()
    assert "2 call page(s), 1 failed call(s) listed." in result.stderr

    result = runner.invoke(app, ["report", redacted_batch, "--presign", "1"])
    assert result.exit_code == 2 and "go with --html DIR" in result.output
    result = runner.invoke(
        app, ["report", redacted_batch, "--html", str(tmp_path), "--presign", "500"]
    )
    assert result.exit_code == 2 and "1 to 168 hours" in result.output
    result = runner.invoke(app, ["report", "nope", "--html", str(tmp_path / "x")])
    assert result.exit_code == 1 and "No batch named 'nope'" in result.output


@pytest.mark.parametrize(
    ("redacted", "has_copy", "has_input", "include", "plan", "note"),
    [
        (False, False, True, False, ["original"], None),
        (False, False, False, False, [], "No audio: the recording is no longer in the bucket."),
        (True, True, True, False, ["redacted"], None),
        (True, False, True, False, [], NO_REDACTED_AUDIO),
        (True, True, True, True, ["redacted", "original"], ORIGINAL_TOO),
        (True, False, True, True, ["original"], ORIGINAL_TOO),
    ],
)
def test_audio_plan(redacted, has_copy, has_input, include, plan, note):
    found, said = audio_plan(redacted, has_copy, has_input, include)
    assert [kind for kind, _ in found] == plan and said == note


def test_reads_are_in_order_with_a_bounded_window():
    pulled = 0

    def items():
        nonlocal pulled
        for i in range(100):
            pulled += 1
            yield i

    seen = []
    for value in in_order(items(), lambda i: i * i, threads=4):
        assert pulled - len(seen) <= 8  # at most 2 x threads read ahead
        seen.append(value)
    assert seen == [i * i for i in range(100)]
