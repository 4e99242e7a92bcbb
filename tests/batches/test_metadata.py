"""Call metadata: the rules (pure), what ingest and submit send with each job (moto, no
workers: the jobs are read back from the queue), and `report --csv`'s columns.

The worker's side (the result JSON, a sidecar that lands late) is in
tests/worker/test_worker.py.
"""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime

import pytest
from typer.testing import CliRunner

from whisperq import keys, storage
from whisperq.batches import ingest
from whisperq.batches import records as batch_records
from whisperq.batches.submit import SubmitError, read_metadata_csv, submit
from whisperq.cli import app
from whisperq.schemas import CallMetadataRecord, FileEntry, TranscriptionJob, TranscriptionOptions
from whisperq.settings import Settings

from helpers import drain_jobs, silent_wav, write_batch, write_result

runner = CliRunner()

# --- the rules ---------------------------------------------------------------------------


def test_flat_fields_are_kept_with_their_json_types():
    fields, problems = batch_records.clean_metadata(
        {"call_id": "C-0001", "agent": "0042", "wait_s": 12, "score": 4.5, "vip": True, "x": None},
        "sidecar call.wav.json",
    )
    assert fields == {
        "call_id": "C-0001",
        "agent": "0042",
        "wait_s": 12,
        "score": 4.5,
        "vip": True,
        "x": None,
    }
    assert problems == []


def test_nested_odd_and_oversized_fields_are_left_out_with_a_problem_each():
    fields, problems = batch_records.clean_metadata(
        {
            "call_id": "C1",
            "agent": {"id": 7},
            "tags": ["a", "b"],
            "bad": float("nan"),
            "": "x",
            " padded": "x",
            "n" * 65: "x",
            "tab\tname": "x",
        },
        "sidecar c.wav.json",
    )
    assert fields == {"call_id": "C1"}
    assert len(problems) == 7 and all(p.startswith("sidecar c.wav.json: ") for p in problems)
    assert "field 'agent' is an object" in problems[0]
    assert "field 'tags' is a list" in problems[1]
    assert "not a JSON number" in problems[2]
    assert all("left out" in problem for problem in problems)

    big, problems = batch_records.clean_metadata({"notes": "x" * 3000, "id": "1"}, "a.csv line 2")
    assert big == {}
    assert problems == [
        "a.csv line 2: 3021 bytes of metadata, over the 2048 a call may carry: left out"
    ]
    assert batch_records.clean_metadata([1, 2], "sidecar x.wav.json") == (
        {},
        ["sidecar x.wav.json: not a JSON object of fields but a list: left out"],
    )


def test_sidecars_that_are_not_json():
    assert batch_records.parse_sidecar(b'\xef\xbb\xbf{"a": 1}', "s") == ({"a": 1}, [])  # a BOM
    fields, (problem,) = batch_records.parse_sidecar(b"call_id=7", "sidecar x.wav.json")
    assert fields == {} and problem.startswith("sidecar x.wav.json: not JSON (Expecting value")
    fields, (problem,) = batch_records.parse_sidecar(b"\xff\xfe", "s")
    assert fields == {} and "not JSON" in problem
    fields, (problem,) = batch_records.parse_sidecar(b" " * (64 * 1024 + 1), "s")
    assert fields == {} and "too big" in problem


def test_precedence_and_the_limit_when_sources_meet():
    merged, problems = batch_records.merge_metadata(
        ("sidecar", {"queue": "sales", "call_id": "C1"}),
        ("S3 user metadata", {"queue": "billing", "agent": "A7"}),
    )
    assert merged == {"queue": "sales", "call_id": "C1", "agent": "A7"} and problems == []
    merged, problems = batch_records.merge_metadata(
        ("sidecar", {"a": "x" * 1500}), ("S3 user metadata", {"b": "y" * 1000, "c": "z"})
    )
    assert merged == {"a": "x" * 1500, "c": "z"}
    assert problems == [
        "S3 user metadata: 1 field(s) left out: with the others the call's metadata would be "
        "over 2048 bytes"
    ]


def test_s3_user_metadata_is_decoded_and_problems_are_capped():
    assert batch_records.user_metadata({"agent": "=?UTF-8?B?Wm/Dqw==?=", "q": "=?x"}) == {
        "agent": "Zoë",
        "q": "=?x",
    }
    many = batch_records.capped(f"p{n}" for n in range(25))
    assert len(many) == batch_records.MAX_PROBLEMS and many[-1] == (
        "... and 16 more metadata problem(s)"
    )


def test_payloads_carry_metadata_only_when_there_is_some():
    plain = TranscriptionJob(
        batch="b", path="x.wav", input_key="inputs/b/x.wav", sha256="0" * 64, size=1
    )
    assert "metadata" not in plain.model_dump(mode="json")  # as before: older workers take it
    entry = FileEntry.model_validate(
        batch_records.entry_document(
            "b", "x.wav", "0" * 64, 1, 1.0, "submit", metadata={"id": 5}, metadata_problems=["p"]
        )
    )
    job = entry.job("b", TranscriptionOptions())  # retry sends the metadata again
    assert job.model_dump(mode="json")["metadata"] == {"id": 5}
    assert job.model_dump(mode="json")["metadata_problems"] == ["p"]
    with pytest.raises(ValueError, match="over 2048"):
        TranscriptionJob.model_validate(plain.model_dump() | {"metadata": {"a": "x" * 2100}})
    with pytest.raises(ValueError):
        TranscriptionJob.model_validate(plain.model_dump() | {"metadata": {"a": {"b": 1}}})


def test_a_path_cannot_take_the_metadata_keys_name():
    assert keys.metadata_key("b", "a/x.wav") == "inputs/b/a/x.wav.metadata.json"
    with pytest.raises(ValueError, match="metadata"):
        keys.normalize_relative_path("a/x.wav.metadata.json")


# --- ingest: the job carries the call's metadata -----------------------------------------


def _ingest(aws: Settings, key: str, **changes) -> ingest.Outcome:
    s3, sqs = storage.client(aws, "s3"), storage.client(aws, "sqs")
    config = ingest.IngestConfig.from_env(aws.ingest_environment())
    for name, value in changes.items():
        config = type(config)(**{**config.__dict__, name: value})
    return ingest.ingest_object(s3, sqs, config, ingest.ObjectRef(aws.bucket, key))


def _put(aws: Settings, key: str, body: bytes, **metadata: str) -> None:
    storage.client(aws, "s3").put_object(Bucket=aws.bucket, Key=key, Body=body, Metadata=metadata)


def test_the_sidecar_over_the_audios_s3_user_metadata(aws):
    sidecar = {"call_id": "C-0001", "queue": "sales", "wait_s": 42, "vip": False}
    _put(aws, "incoming/support/call-0001.wav.json", json.dumps(sidecar).encode())
    _put(aws, "incoming/support/call-0001.wav", silent_wav(1), **{"agent-id": "A7", "queue": "b"})
    outcome = _ingest(aws, "incoming/support/call-0001.wav")
    assert outcome.status == "queued" and outcome.reason is None

    (payload,) = drain_jobs(aws)
    job = TranscriptionJob.model_validate(payload)
    assert job.metadata == {**sidecar, "agent-id": "A7"}  # the sidecar wins over S3's
    assert job.metadata_problems is None
    s3 = storage.client(aws, "s3")
    (listed,) = batch_records.list_entries(s3, aws.bucket, "support").values()
    entry = FileEntry.model_validate(batch_records.read_entry(s3, aws.bucket, listed.key))
    assert entry.metadata == job.metadata  # `retry` queues it again with it


def test_bad_metadata_is_reported_and_the_call_still_queued(aws):
    _put(aws, "incoming/support/a.wav.json", b"{'call_id': 7}")  # not JSON
    _put(aws, "incoming/support/a.wav", silent_wav(1), agent="A7")
    outcome = _ingest(aws, "incoming/support/a.wav")
    assert outcome.status == "queued"
    line = outcome.describe()
    assert line.startswith("queued support/a.wav (")
    assert "metadata problems: sidecar a.wav.json: " in line
    assert "not JSON" in line
    (payload,) = drain_jobs(aws)
    assert payload["metadata"] == {"agent": "A7"}
    (problem,) = payload["metadata_problems"]
    assert problem.startswith("sidecar a.wav.json: not JSON (")


def test_a_sidecar_after_its_audio_is_kept_beside_the_input_for_the_worker(aws):
    _put(aws, "incoming/support/day/b.wav", silent_wav(1), agent="A7")
    assert _ingest(aws, "incoming/support/day/b.wav").status == "queued"
    (payload,) = drain_jobs(aws)
    assert payload["metadata"] == {"agent": "A7"}

    _put(aws, "incoming/support/day/b.wav.json", b'{"call_id": "C2", "nested": [1]}')
    outcome = _ingest(aws, "incoming/support/day/b.wav.json", batch_template="{folder}-{date}")
    today = datetime.now(UTC).date().isoformat()
    assert (outcome.status, outcome.batch, outcome.path) == (
        "metadata",
        f"support-{today}",
        "day/b.wav",
    )
    assert f"kept at inputs/support-{today}/day/b.wav.metadata.json" in outcome.reason
    assert "field 'nested' is a list" in outcome.reason
    assert drain_jobs(aws) == []  # no job: the call has one

    s3 = storage.client(aws, "s3")
    document = storage.get_json(s3, aws.bucket, keys.metadata_key(f"support-{today}", "day/b.wav"))
    record = CallMetadataRecord.model_validate(document)
    assert record.metadata == {"call_id": "C2", "agent": "A7"}
    assert record.source == f"s3://{aws.bucket}/incoming/support/day/b.wav.json"
    audio = s3.head_object(Bucket=aws.bucket, Key="incoming/support/day/b.wav")
    assert record.source_modified == audio["LastModified"]  # the version it is for
    assert len(record.metadata_problems) == 1


def test_a_sidecar_without_its_audio_is_ignored_until_the_audio_comes(aws):
    _put(aws, "incoming/support/c.wav.json", b'{"call_id": "C3"}')
    outcome = _ingest(aws, "incoming/support/c.wav.json")
    assert outcome.status == "ignored" and "audio is not there (yet)" in outcome.reason
    _put(aws, "incoming/support/c.wav", silent_wav(1))
    assert _ingest(aws, "incoming/support/c.wav").status == "queued"
    (payload,) = drain_jobs(aws)
    assert payload["metadata"] == {"call_id": "C3"}


def test_a_sidecar_after_the_result_says_so(aws):
    _put(aws, "incoming/support/d.wav", silent_wav(1))
    assert _ingest(aws, "incoming/support/d.wav").status == "queued"
    write_result(aws, "support", "d.wav", duration=1.0)
    _put(aws, "incoming/support/d.wav.json", b'{"call_id": "C4"}')
    outcome = _ingest(aws, "incoming/support/d.wav.json")
    assert outcome.status == "metadata"
    assert "the call's result was written already" in outcome.reason


# --- submit --metadata FILE.csv ----------------------------------------------------------


def _calls(tmp_path):
    for name in ("a.wav", "b.wav", "sub/c.wav"):
        path = tmp_path / "calls" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(silent_wav(1 + len(name) / 10))


def test_submit_takes_a_csv_of_metadata_by_path(cli_env, tmp_path, monkeypatch):
    _calls(tmp_path)
    (tmp_path / "calls.csv").write_text(
        "path,call_id,agent,notes\n"
        "calls/a.wav,C-1,0042,\n"
        "calls/sub/c.wav, C-3 ,A9,hello\n"
        "calls/gone.wav,C-9,A1,\n"
        "\n",
        encoding="utf-8",
    )
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(
        app, ["submit", "calls", "--batch", "m", "--metadata", "calls.csv", "--json"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["queued"] == 3 and report["metadata_unmatched"] == ["calls/gone.wav"]
    jobs = {job["path"]: job for job in drain_jobs(cli_env)}
    assert jobs["calls/a.wav"]["metadata"] == {"call_id": "C-1", "agent": "0042"}  # strings
    assert jobs["calls/sub/c.wav"]["metadata"] == {
        "call_id": "C-3 ",
        "agent": "A9",
        "notes": "hello",
    }
    assert "metadata" not in jobs["calls/b.wav"]

    plain = runner.invoke(app, ["submit", "calls", "--batch", "m2", "--metadata", "calls.csv"])
    assert plain.exit_code == 0, plain.output
    assert "1 metadata row(s) name no submitted file: calls/gone.wav" in plain.stderr


def test_bad_csv_rows_are_that_calls_problems_bad_files_stop_submit(aws, tmp_path):
    _calls(tmp_path)
    table = tmp_path / "calls.csv"
    table.write_text(
        f"path,notes\ncalls/a.wav,{'x' * 2100}\ncalls/b.wav,ok,extra\n", encoding="utf-8"
    )
    report = submit(aws, ["calls"], batch="bad", cwd=tmp_path, metadata_csv=table)
    assert sorted(report.queued) == ["calls/a.wav", "calls/b.wav", "calls/sub/c.wav"]
    assert report.metadata_problems == {
        "calls/a.wav": [
            "calls.csv line 2: 2112 bytes of metadata, over the 2048 a call may carry: left out"
        ],
        "calls/b.wav": ["calls.csv line 3: more cells than columns: left out"],
    }
    jobs = {job["path"]: job for job in drain_jobs(aws)}
    assert "metadata" not in jobs["calls/a.wav"] and jobs["calls/a.wav"]["metadata_problems"]
    assert jobs["calls/b.wav"]["metadata"] == {"notes": "ok"}

    for text, why in [
        ("name,notes\na.wav,x\n", "no 'path' column"),
        ("path,a,a\nx.wav,1,2\n", "column(s) a appear twice"),
        ("path,a\nx.wav,1\n./x.wav,2\n", "line 3: 'x.wav' has a row already"),
        ("path,a\n../x.wav,1\n", "line 2: Not a usable relative path"),
    ]:
        table.write_text(text, encoding="utf-8")
        with pytest.raises(SubmitError, match=__import__("re").escape(why)):
            read_metadata_csv(table)
    table.write_bytes(b"path,a\n\xff\xfe,1\n")
    with pytest.raises(SubmitError, match="not UTF-8"):
        read_metadata_csv(table)


# --- report --csv ------------------------------------------------------------------------


def test_report_csv_has_a_column_per_metadata_field(cli_env):
    write_batch(cli_env, "r", ["a.wav", "b.wav", "c.wav"])
    write_result(cli_env, "r", "a.wav", duration=10, extra={"metadata": {"call_id": "C1", "n": 3}})
    write_result(
        cli_env,
        "r",
        "b.wav",
        duration=10,
        extra={"metadata": {"agent": "A7", "vip": True}, "metadata_problems": ["p1", "p2"]},
    )
    write_result(cli_env, "r", "c.wav", duration=10)
    result = runner.invoke(app, ["report", "r", "--csv"])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    header = next(csv.reader(io.StringIO(result.stdout)))
    assert header[-5:] == [
        "meta_agent",
        "meta_call_id",
        "meta_n",
        "meta_vip",
        "metadata_problems",
    ]
    assert header[:2] == ["path", "duration_s"]  # the metrics' columns come first, unchanged
    by_path = {row["path"]: row for row in rows}
    assert (by_path["a.wav"]["meta_call_id"], by_path["a.wav"]["meta_n"]) == ("C1", "3")
    assert by_path["b.wav"]["meta_agent"] == "A7" and by_path["b.wav"]["meta_vip"] == "true"
    assert by_path["b.wav"]["metadata_problems"] == "p1; p2"
    assert by_path["c.wav"]["meta_call_id"] == "" and by_path["c.wav"]["metadata_problems"] == ""

    write_batch(cli_env, "plain", ["a.wav"])
    write_result(cli_env, "plain", "a.wav", duration=10)
    plain = runner.invoke(app, ["report", "plain", "--csv"])
    assert not any(name.startswith("meta") for name in plain.stdout.splitlines()[0].split(","))
