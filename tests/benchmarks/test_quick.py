"""Each benchmark runs end to end in its quick mode, in its own process, on the real code
path, and prints its report: the rows and fields present, the numbers sane. Times are
printed by the benchmarks, never asserted here.

benchmarks/rules.py and benchmarks/privacy.py have theirs beside their features
(tests/transcripts/test_rules_benchmark.py, tests/speech/test_privacy.py); calls.py is the
other benchmarks' call generator, run by each of them.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run(script: str, *arguments: str | Path, env: dict[str, str] | None = None) -> str:
    """``benchmarks/<script> --quick ...``'s standard output; it must exit 0."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), "--quick", *map(str, arguments)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
        env=os.environ | (env or {}),
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return done.stdout


@pytest.mark.e2e
def test_throughput_compares_baseline_engine_and_the_local_stack(tmp_path: Path):
    report = run("throughput.py", "--calls", "2", "--data", tmp_path)
    assert re.search(r"^2 calls, [\d.]+ min of audio, model tiny\.en", report, re.M)
    rows = re.findall(
        r"^\s+(baseline|engine|e2e)\s+([\d.]+)x real time\s+WER ([\d.]+)\s+peak RSS (\d+) MB",
        report,
        re.M,
    )
    assert [row[0] for row in rows] == ["baseline", "engine", "e2e"]
    for _, speed, wer, rss in rows:
        assert float(speed) > 0 and 0 <= float(wer) < 0.5 and int(rss) > 50
    assert re.search(r"engine / baseline:\s+[\d.]+x", report)
    assert re.search(r"e2e / engine:\s+[\d.]+x", report)
    cold = re.search(r"local stack up to ready ([\d.]+)s, model load ([\d.]+)s", report)
    assert cold is not None and 0 < float(cold.group(2)) < float(cold.group(1))


def test_real_speech_scores_each_condition_and_system(tmp_path: Path):
    report = run("real_speech.py", "--clips", "4", "--cache", tmp_path)
    assert re.search(r"^4 clips, \d+ speakers, \d+ s of audio", report, re.M)
    rows = re.findall(r"^\| (16k|stereo) \| (\d+) \| \d+ \| (\d+) \|(.*)\|$", report, re.M)
    assert [condition for condition, *_ in rows] == ["16k", "stereo"]
    for _, files, words, cells in rows:
        wers = [float(x) for x in re.findall(r"([\d.]+)%", cells)]
        ratios = [float(x) for x in re.findall(r"([\d.]+)x", cells)]
        assert int(files) >= 1 and int(words) > 0
        assert len(wers) == 3 and all(0 <= wer <= 100 for wer in wers)
        assert len(ratios) == 2 and all(ratio > 0 for ratio in ratios)
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["model"] == "tiny.en" and set(results["conditions"]) == {"16k", "stereo"}


def test_redaction_reports_recall_and_over_redaction(tmp_path: Path):
    report = run("redaction.py", "--calls", "card-grouped", "clean-shop", "--data", tmp_path)
    assert "### overall" in report
    assert re.search(r"^\| card digits removed \(of heard\) \| [\d.]+% \| [\d.]+% \|", report, re.M)
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["model"] == "tiny.en"
    assert [call["name"] for call in results["calls"]] == ["card-grouped", "clean-shop"]
    for figures in results["figures"].values():
        assert figures["cards"] >= 1 and figures["clean_words"] > 0
        for share in ("card_digit_recall", "char_recall", "over_redaction"):
            assert 0 <= figures[share] <= 1, share


def test_long_file_measures_each_way_in_its_own_process(tmp_path: Path):
    report = run("long_file.py", "--data", tmp_path)
    rows = re.findall(
        r"^\s+\((a|b|c)\) .*?peak RSS\s+(\d+) MB\s+([\d.]+) h of audio in \d+ s", report, re.M
    )
    assert [row[0] for row in rows] == ["a", "b", "c"]
    assert all(int(rss) > 20 and float(hours) == 0.02 for _, rss, hours in rows)


def test_diarization_scores_speakers_and_measures_memory():
    report = run("diarization.py", env={"OPENBLAS_NUM_THREADS": "1"})
    rows = re.findall(r"^\| ([\w+-]+(?: / [\w+-]+)?) \| (\d+) \| (\d+) \|", report, re.M)
    # one two-voice call, one one-voice call; speakers found between 1 and diarize's most
    assert [voices.count(" / ") for voices, _, _ in rows] == [1, 0]
    assert all(int(seconds) > 0 and 1 <= int(found) <= 6 for _, seconds, found in rows)
    total = re.search(
        r"^\| \*\*two-voice calls\*\* .*\*\*([\d.]+)%\*\* \| \*\*(\d+)/(\d+)\*\*", report, re.M
    )
    assert total is not None
    assert 0 <= float(total.group(1)) <= 100 and int(total.group(2)) <= int(total.group(3)) == 6
    memory = re.search(
        r"memory: ([\d.]+) h of audio .* peak allocated (\d+) MB .* peak RSS (\d+) MB before,"
        r" (\d+) MB after",
        report,
    )
    assert memory is not None
    hours, traced, before, after = map(float, memory.groups())
    assert 0.08 <= hours <= 0.12 and traced > 0 and after >= before


@pytest.mark.browser
def test_review_site_writes_and_opens_the_site():
    report = run("review_site.py")
    row = json.loads(next(line for line in report.splitlines() if line.startswith("{")))
    assert row["calls"] == 200 and row["data_files"] >= 1 and row["index_kb"] > 0
    for key in ("first_page_ms", "all_rows_ms", "load_event_ms", "first_search_ms"):
        assert row[key] > 0, key
    assert row["first_page_ms"] <= row["all_rows_ms"]


@pytest.mark.moto
def test_submit_scale_counts_the_requests():
    report = run("submit_scale.py")
    assert "files: 50 x 8 KB WAV" in report
    assert "SQS requests 5 (0.100 per file; report says 5)" in report
    assert re.search(r"s3\.PutObject\s+101$", report, re.M)  # 50 inputs, 50 entries, batch.json
    for state in ("nothing done", "all done"):
        assert re.search(
            rf"status, {state}:\s+[\d.]+ s, {{'s3.GetObject': 1, 's3.ListObjectsV2': 1}}", report
        )


def test_status_scale_counts_what_status_costs():
    """Issue 28: requests of `status BATCH` half done, all done (the first finished status
    writes done.json), finished (its done.json alone), and plain status."""
    report = run("status_scale.py")
    row = re.search(
        r"^\| 200 \| (\d+) requests, [\d.]+ s \| (\d+) requests, [\d.]+ s \| (\d+) requests",
        report,
        re.M,
    )
    assert row, report
    half, done, finished = map(int, row.groups())
    assert finished == 1  # done.json only
    assert 2 <= half <= 12 and 2 <= done <= 12  # batch.json, a few listings, the marker
    assert re.search(r"^plain status, 1 finished batch\(es\): [1-3] requests", report, re.M), report
    # 200 files fit one listing of their entries, whose keys say which are done (issue 28:
    # the results are not listed), listed once (the stale check reuses it)
    assert (
        "200 files, half done, by operation: {'s3.GetObject': 3, 's3.ListObjectsV2': 1}" in report
    )


def test_simulate_prints_the_day():
    report = run("simulate.py")
    assert report.startswith("built-in day x1: 1,000 calls;")
    assert re.search(r"^calls\s+1,000\s+1,000$", report, re.M)
    assert re.search(r"^Transcribe / this\s+\d+x\s+\d+x$", report, re.M)


@pytest.mark.moto
def test_day_run_loses_and_doubles_nothing():
    """Issue 28: a day of 200 calls (100 submitted, 100 ingested into support-<day>, 1
    failing in the stub worker) through submit, ingest, status, wait and results."""
    report = run("day_run.py")
    assert re.search(r"^checks: (\d+) of \1 passed$", report, re.M), report
    assert "FAIL" not in report
    assert re.search(r"^day \d{4}-\d\d-\d\d: 200 calls = 100 submitted .* 1 fail", report, re.M)
    rows = {
        name: (int(s3.replace(",", "")), int(sqs.replace(",", "")))
        for name, s3, sqs in re.findall(r"^\| ([^|]+?) \| ([\d,]+) \| ([\d,]+) \|", report, re.M)
    }
    # jobs ten per SendMessageBatch; one entry and one input per file (+ batch.json once)
    assert rows["submit (morning)"][1] == rows["submit (afternoon)"][1] == 5
    assert 100 <= rows["submit (morning)"][0] <= 110
    assert rows["ingest (morning)"][1] == rows["ingest (afternoon)"][1] == 50  # a job each
    for batch in re.findall(r"^\| status (\S+) --json, half done \|", report, re.M):
        assert rows[f"status {batch} --json, half done"][0] <= 6  # one listing of the entries
    waits = [rows[name] for name in rows if name.startswith("wait ")]
    assert len(waits) == 2 and all(s3 <= 2 and sqs == 0 for s3, sqs in waits)  # done.json
    assert rows["status (plain)"][0] <= 4
    for line in (
        r"every path has one result or error record, none doubled \(100 paths; 0 not so\)",
        r"done\.json says submitted 100, done 100, failed 0",
        r"done\.json says submitted 100, done 99, failed 1",
        r"downloaded 99 result JSON\(s\) \+ 1 error record\(s\)",
        r"results 199 \+ error records 1 == submitted 100 \+ ingested 100",
        r"metadata of 12 sampled results == their CSV row / sidecar / none",
        r"wait's exit codes \{'nightly-[\d-]+': 0, 'support-[\d-]+': 1\}",
    ):
        assert re.search(line, report), line
