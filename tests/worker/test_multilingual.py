"""Calls that switch language: --multilingual finds each segment's language and transcribes
it in that language (espeak-ng English, German, English; the multilingual base model)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from pydantic import ValidationError

from whisperq import storage
from whisperq.schemas import TranscriptionOptions, TranscriptResult
from whisperq.speech import engine
from whisperq.speech.languages import language_shares
from whisperq.worker.runner import JobRunner

from helpers import upload_job, words

TURNS = [
    ("en-us", "Good morning, thank you for calling. How can I help you today?"),
    ("de", "Guten Tag, ich möchte meine Rechnung bezahlen, aber die Webseite funktioniert nicht."),
    ("en-us", "I see. Let me transfer you to our billing team right away."),
]


@pytest.fixture(scope="module")
def switching_call(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("languages")
    parts = []
    for index, (voice, text) in enumerate(TURNS):
        part = tmp / f"{index}.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-w", part, text], check=True)
        parts.append(str(part))
    call = tmp / "call.wav"
    subprocess.run(
        ["sox", *parts, "-r", "16000", "-c", "1", "-b", "16", call, "pad", "0.5", "0.5"], check=True
    )
    return call


def turn_times(call: Path) -> list[tuple[float, float, str]]:
    """(start, end, language) of each of ``TURNS`` in the ``switching_call``."""
    clock, times = 0.5, []  # its half second of padding first
    for index, (voice, _) in enumerate(TURNS):
        part = call.parent / f"{index}.wav"
        soxi = subprocess.run(["soxi", "-D", part], capture_output=True, text=True, check=True)
        seconds = float(soxi.stdout)
        times.append((clock, clock + seconds, voice.split("-")[0]))
        clock += seconds
    return times


def test_multilingual_options_are_checked_at_submit():
    assert TranscriptionOptions(multilingual=True).multilingual
    with pytest.raises(ValidationError, match="leave language unset"):
        TranscriptionOptions(multilingual=True, language="en")
    with pytest.raises(ValidationError, match=r"tiny\.en is English only"):
        TranscriptionOptions(multilingual=True, model="tiny.en")


def test_each_language_is_kept_once_and_in_order(switching_call):
    config = engine.EngineConfig(model="base")
    loaded = engine.load_model(config)

    once = engine.transcribe_file(loaded, switching_call, TranscriptionOptions(), config)
    both = engine.transcribe_file(
        loaded, switching_call, TranscriptionOptions(multilingual=True), config
    )

    # per-file detection (the default) writes the German turn as English-sounding words
    assert not {"rechnung", "bezahlen"} & words(once.text)
    languages = [segment.language for segment in both.segments]
    assert [lang for i, lang in enumerate(languages) if i == 0 or languages[i - 1] != lang] == [
        "en",
        "de",
        "en",
    ]
    german = " ".join(s.text for s in both.segments if s.language == "de")
    # Whisper falls back to sampling when unsure, so the exact German words vary by run.
    # Both sides normalised alike (the English normaliser writes "möchte" as "mochte").
    said = words(TURNS[1][1]) - {"die"}
    assert len(said & words(german)) >= 3, german
    # Each turn kept once and in order, told by time, not by what base made of espeak-ng
    # (its fallback samples: one run heard the last turn as "I'll be fine with you."):
    # no stretch of the call is transcribed twice, each segment lies in a turn said in its
    # language, and every turn has one.
    for previous, segment in zip(both.segments, both.segments[1:], strict=False):
        assert segment.start >= previous.end - 0.1, (previous, segment)
    turns = turn_times(switching_call)
    heard_in = []
    for segment in both.segments:
        overlaps = [min(end, segment.end) - max(start, segment.start) for start, end, _ in turns]
        turn = overlaps.index(max(overlaps))
        assert segment.language == turns[turn][2], (segment, turns[turn])
        heard_in.append(turn)
    assert set(heard_in) == {0, 1, 2}
    shares = language_shares(both.segments)
    assert [share.language for share in shares] == ["en", "de"]
    assert sum(share.share for share in shares) == pytest.approx(1.0, abs=0.001)


def test_an_english_only_model_fails_the_file_with_the_reason(aws, switching_call):
    runner = JobRunner(aws)  # the test workers' model: tiny.en
    payload = upload_job(
        aws, switching_call, "ml", "call.wav", TranscriptionOptions(multilingual=True)
    )

    assert runner.run(payload) == "failed"

    record = storage.get_json(
        storage.client(aws, "s3"), aws.bucket, "results/ml/call.wav.error.json"
    )
    assert record["kind"] == "permanent"
    assert "English only" in record["reason"] and "--multilingual" in record["reason"]


def test_the_result_lists_the_languages_and_each_segments_own(aws, switching_call):
    runner = JobRunner(aws.model_copy(update={"model": "base"}))
    options = TranscriptionOptions(multilingual=True, formats=("txt",))
    assert runner.run(upload_job(aws, switching_call, "ml2", "call.wav", options)) == "done"

    s3 = storage.client(aws, "s3")
    result = TranscriptResult.model_validate(
        storage.get_json(s3, aws.bucket, "results/ml2/call.wav.json")
    )
    assert result.options["multilingual"] is True
    assert [share.language for share in result.languages or []] == ["en", "de"]
    assert {segment.language for segment in result.segments} == {"en", "de"}
    txt = s3.get_object(Bucket=aws.bucket, Key="results/ml2/call.wav.txt")["Body"].read()
    german = [s.text for s in result.segments if s.language == "de"]
    assert german and all(text in txt.decode() for text in german)
