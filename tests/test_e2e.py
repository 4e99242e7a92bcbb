"""The whole pipeline as a user runs it: `whisperq local up`, submit, wait, status, results,
`local down` — moto server, a real Celery worker process and the real tiny.en model."""

import json
import os
import signal
import subprocess

import pytest

from whisperq import keys, storage
from whisperq.settings import Settings
from whisperq.stacks import local as local_stack

from helpers import _normalize, run_cli, word_error_rate, words

pytestmark = pytest.mark.e2e

CALLS = {
    "calls/support/call 01.wav": (
        "Hello, my internet connection keeps dropping every evening.",
        {"internet", "connection", "evening"},  # words tiny.en gets right on this audio
    ),
    "calls/billing/call 01.wav": (  # same base name, other folder
        "I was charged two times this month and I would like a refund.",
        {"charged", "month", "refund"},
    ),
    "calls/billing/Café order — Zoë.wav": (  # spaces, accents, a dash
        "Please send the confirmation to my email address.",
        {"confirmation", "email", "address"},
    ),
}


@pytest.fixture
def stack(isolated_settings):
    """`whisperq local up`; afterwards `local down`, then SIGKILL anything it left."""
    up = run_cli("local", "up", "--workers", "1")
    state = local_stack.read_state(Settings())
    try:
        assert up.returncode == 0, up.stderr + up.stdout
        assert state is not None
        yield state
    finally:
        run_cli("local", "down", timeout=60)
        for process in local_stack.managed_processes(state or {}):
            if local_stack.is_alive(process):
                os.killpg(process.pid, signal.SIGKILL)


def test_local_stack_end_to_end(stack, make_speech, tmp_path):
    for path, (sentence, _) in CALLS.items():
        make_speech(tmp_path / path, sentence, voice="en-us")
    (tmp_path / "calls/notes.txt").write_text("not audio")

    again = run_cli("local", "up")
    assert again.returncode == 0 and "Already running" in again.stderr
    assert local_stack.read_state(Settings())["processes"] == stack["processes"]

    submitted = run_cli("submit", str(tmp_path / "calls"), "--batch", "e2e")
    assert submitted.returncode == 0, submitted.stderr
    assert submitted.stdout.strip() == "e2e"
    assert "Queued 3 file(s)" in submitted.stderr
    assert "Skipped 1 non-audio" in submitted.stderr

    waited = run_cli("wait", "e2e", "--timeout", "180", "--interval", "1")
    assert waited.returncode == 0, waited.stderr + run_cli("local", "logs").stdout
    assert "All 3 done" in waited.stderr

    status = json.loads(run_cli("status", "e2e", "--json").stdout)
    (batch,) = status["batches"]
    assert (batch["submitted"], batch["done"], batch["failed"], batch["pending"]) == (3, 3, 0, 0)
    assert batch["audio_seconds_done"] > 6
    assert status["queue"]["visible"] == 0 and status["queue"]["dead_lettered"] == 0
    assert status["target"].startswith("local stack at http://127.0.0.1:")

    # the key layout, exactly
    settings = Settings()
    s3 = storage.client(settings, "s3")
    stored = {item.key for item in storage.list_objects(s3, settings.bucket, "")}
    relative = [f"calls/{p.split('calls/', 1)[1]}" for p in CALLS]
    entries = {key for key in stored if key.startswith("batches/e2e/files/")}
    parsed = sorted(keys.parse_entry_key("e2e", key) for key in entries)
    assert [path for path, _ in parsed] == sorted(relative)
    assert all(duration and duration > 1 for _, duration in parsed)  # from the WAV headers
    assert stored - entries == (
        {"batches/e2e/batch.json", "batches/e2e/done.json"}  # done: `wait` saw it finished
        | {f"inputs/e2e/{p}" for p in relative}
        | {f"results/e2e/{p}.{ext}" for p in relative for ext in ("json", "srt", "vtt", "txt")}
    )

    out = tmp_path / "transcripts"
    fetched = run_cli("results", "e2e", "--out", str(out))
    assert fetched.returncode == 0, fetched.stderr
    for path, (sentence, expected_words) in CALLS.items():
        # tiny.en on 8 kHz synthetic speech: close, not always perfect (thread timing can
        # tip a beam), so: mostly right, and the right file's words, not another's
        txt = (out / f"{path}.txt").read_text(encoding="utf-8")
        assert word_error_rate(sentence, txt) <= 0.4, (path, txt)
        assert len(expected_words & words(txt)) >= 2, (path, txt)
        result = json.loads((out / f"{path}.json").read_text(encoding="utf-8"))
        assert result["path"] == path and result["language"] == "en"
        assert " ".join(txt.split()) == result["text"]
        assert (out / f"{path}.srt").read_text(encoding="utf-8").startswith("1\n00:00:")
        metrics = result["metrics"]  # mono: one unlabelled speaker, no turns to count
        assert 1 < metrics["talk_time"] < metrics["duration"] and metrics["turns"] is None
        assert [entry["speaker"] for entry in metrics["speakers"]] == [None]

    report = run_cli("report", "e2e", "--csv")
    assert report.returncode == 0, report.stderr
    rows = report.stdout.strip().splitlines()
    assert rows[0].startswith("path,duration_s,basis,talk_time_s") and len(rows) == 4

    # one model load in the pool process, for all three jobs
    log = (settings.state_dir / "logs" / "worker-1.log").read_text()
    assert log.count("model tiny.en loaded") == 1
    assert log.count("done e2e/") == 3

    down = run_cli("local", "down", timeout=60)
    assert down.returncode == 0 and "Stopped 3 process(es)" in down.stderr  # moto, ingest, worker
    assert not settings.local_stack_file.exists()
    assert not any(local_stack.is_alive(p) for p in local_stack.managed_processes(stack))
    assert Settings().endpoint_url is None  # back to the configured target


def test_nothing_said_gives_no_text_and_short_answers_survive(stack, make_speech, tmp_path):
    """A minute of silence and a minute of a 425 Hz ringing tone come back empty on the
    local stack, a truncated 0.09 s fragment with no word nobody said; one-word answers
    come back as said."""
    calls = tmp_path / "quiet"
    said = "The account number is in the letter."
    padded = make_speech(tmp_path / "padded.wav", said)
    sentence = tmp_path / "sentence.wav"
    subprocess.run(["sox", padded, sentence, "trim", "0.8"], check=True)  # starts mid-word
    # The header still promises the whole sentence; the data stops after 0.09 s (8 kHz).
    (calls / "fragment.wav").parent.mkdir(parents=True)
    (calls / "fragment.wav").write_bytes(sentence.read_bytes()[: 44 + int(0.09 * 8000) * 2])
    sox = ["sox", "-n", "-r", "8000", "-c", "1", "-b", "16"]
    subprocess.run([*sox, calls / "silence.wav", "trim", "0", "60"], check=True)
    subprocess.run(
        [*sox, calls / "tone.wav", "synth", "60", "sine", "425", "vol", "0.3"], check=True
    )
    answers = {"yes": {"yes", "yeah"}, "no": {"no"}, "okay": {"okay", "ok"}}
    for answer in answers:
        make_speech(calls / f"{answer}.wav", f"{answer}.")

    assert run_cli("submit", str(calls), "--batch", "quiet").returncode == 0
    waited = run_cli("wait", "quiet", "--timeout", "240", "--interval", "1")
    assert waited.returncode == 0, waited.stderr + run_cli("local", "logs").stdout

    out = tmp_path / "transcripts"
    assert run_cli("results", "quiet", "--out", str(out), "--format", "json").returncode == 0
    texts = {
        path.name.removesuffix(".wav.json"): json.loads(path.read_text())["text"]
        for path in (out / "quiet").glob("*.json")
    }
    # Nothing said, nothing written; a 0.09 s piece of a word holds no word nobody said
    # (Whisper unguarded: "Thank you.") and a piece of one at most.
    assert (texts["silence"], texts["tone"]) == ("", ""), texts
    spoken = _normalize(said)
    invented = [word for word in _normalize(texts["fragment"]).split() if word not in spoken]
    assert invented == [] and len(words(texts["fragment"])) <= 1, texts
    for answer, heard in answers.items():
        assert words(texts[answer]) & heard, (answer, texts[answer])
