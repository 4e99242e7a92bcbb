"""Redaction end to end: options, the worker's outputs, the redacted audio, the CLI.

The detection rules themselves are tested in test_redaction.py; here, that a batch asking
for redaction gets no card number in any output, log line or listing, with the real
tiny.en model against moto.
"""

from __future__ import annotations

import json
import logging
import re
import subprocess
import wave
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from whisperq import keys, storage
from whisperq.batches import ingest, tracking
from whisperq.cli import app
from whisperq.redaction import audio as redacted_audio
from whisperq.schemas import RedactedSpan, TranscriptionOptions, TranscriptResult
from whisperq.worker.runner import JobRunner

from helpers import upload_job, word_error_rate

CARD = "4532015112830366"  # Luhn-valid test number
CARD_WORDS = "four five three two, zero one five one, one two eight three, zero three six six"
cli = CliRunner()


def card_fragments(text: str) -> list[str]:
    """Runs of 4 or more of the card's digits in order, as any output might spell them."""
    digits = re.sub(r"\D", "", text)
    return [CARD[i : i + 4] for i in range(0, len(CARD), 4) if CARD[i : i + 4] in digits]


# --- options ----------------------------------------------------------------------------


def test_redaction_options_are_validated_and_normalised():
    options = TranscriptionOptions(redact=["PCI", "phone", "pci"], redact_audio=True)
    assert options.redact == ("pci", "PHONE") and options.redacting
    assert not TranscriptionOptions().redacting
    assert TranscriptionOptions(redact_patterns={"policy": r"POL-\d{8}"}).redacting
    with pytest.raises(ValidationError, match="unknown redaction group 'cards'"):
        TranscriptionOptions(redact=["cards"])
    with pytest.raises(ValidationError, match="redact_audio needs redact"):
        TranscriptionOptions(redact_audio=True)
    with pytest.raises(ValidationError, match="user pattern 'policy'"):
        TranscriptionOptions(redact_patterns={"policy": "POL-("})
    with pytest.raises(ValidationError, match="built-in type"):
        TranscriptionOptions(redact_patterns={"email": "x"})


# --- the audio copy -----------------------------------------------------------------------


def test_spans_are_widened_by_the_margin_and_merged():
    spans = [
        RedactedSpan(type="CVV", start=5.0, end=6.0),
        RedactedSpan(type="CARD_NUMBER", start=0.1, end=2.0),
        RedactedSpan(type="EXPIRY", start=6.3, end=7.0),
    ]
    assert redacted_audio.silence_spans(spans, margin=0.25) == [(0.0, 2.25), (4.75, 7.25)]
    assert redacted_audio.silence_spans([], margin=0.25) == []
    assert redacted_audio.sample_ranges([(0.5, 1.00001)], 8000) == [(4000, 8001)]


def write_wav(path: Path, samples: np.ndarray, rate: int) -> Path:
    """``samples``: int16, shape (n, channels)."""
    with wave.open(str(path), "wb") as out:
        out.setnchannels(samples.shape[1])
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(samples.astype("<i2").tobytes())
    return path


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    with wave.open(str(path), "rb") as source:
        data = np.frombuffer(source.readframes(source.getnframes()), dtype="<i2")
        return data.reshape(-1, source.getnchannels()), source.getframerate()


@pytest.mark.parametrize(("rate", "channels"), [(8000, 2), (16000, 1), (44100, 2)])
def test_redacted_audio_is_silent_inside_the_spans_and_identical_outside(tmp_path, rate, channels):
    rng = np.random.default_rng(7)
    original = rng.integers(-20000, 20000, size=(rate * 4, channels), dtype=np.int16)
    source = write_wav(tmp_path / "in.wav", original, rate)
    spans = [(0.5, 1.25), (3.0, 3.5)]

    info = redacted_audio.write_redacted_wav(source, tmp_path / "out.wav", spans)

    copy, copy_rate = read_wav(tmp_path / "out.wav")
    assert (copy_rate, copy.shape) == (rate, original.shape)  # same rate, channels, length
    inside = np.zeros(len(original), dtype=bool)
    for first, last in redacted_audio.sample_ranges(spans, rate):
        inside[first:last] = True
    assert not copy[inside].any()  # every channel silent in the spans
    assert np.array_equal(copy[~inside], original[~inside])  # untouched elsewhere
    assert info.silenced_samples == inside.sum() and info.samples == len(original)


def test_a_mu_law_input_gets_a_pcm_copy_at_its_own_rate(tmp_path, make_speech):
    speech = make_speech(tmp_path / "speech.wav", "The account is in good order.", rate=8000)
    mulaw = tmp_path / "call.wav"
    subprocess.run(["sox", speech, "-e", "u-law", mulaw], check=True)

    info = redacted_audio.write_redacted_wav(mulaw, tmp_path / "out.wav", [(1.0, 1.5)])

    copy, rate = read_wav(tmp_path / "out.wav")
    assert (rate, info.channels) == (8000, 1)
    assert not copy[8000:12000].any() and copy[:8000].any()


# --- the worker ---------------------------------------------------------------------------


CARD_CALL_TURNS = [
    ("left", "en-us", "Thank you. Can I take the long number on the card please?"),
    ("right", "en-us+f3", f"Yes, it is {CARD_WORDS}."),
    ("left", "en-us", "And the security code, please?"),
    ("right", "en-us+f3", "The security code is seven three one."),
    ("left", "en-us", "Thank you, your order of two boxes is confirmed."),
]


def stereo_card_call(tmp: Path) -> Path:
    """Agent (left) asks for the card, the customer (right) reads it out as words (16 kHz:
    tiny.en mishears espeak-ng at 8 kHz too often for a test of redaction)."""
    sides: dict[str, list[str]] = {"left": [], "right": []}
    for index, (side, voice, text) in enumerate(CARD_CALL_TURNS):
        raw, turn, quiet = (tmp / f"{index}-{name}.wav" for name in ("raw", "turn", "quiet"))
        subprocess.run(["espeak-ng", "-v", voice, "-s", "140", "-w", raw, text], check=True)
        pad = ["pad", "0.4", "0.4"]
        subprocess.run(["sox", raw, "-r", "16000", "-c", "1", turn, *pad], check=True)
        subprocess.run(["sox", turn, quiet, "vol", "0"], check=True)
        sides[side].append(str(turn))
        sides["right" if side == "left" else "left"].append(str(quiet))
    for side in sides:
        subprocess.run(["sox", *sides[side], tmp / f"{side}.wav"], check=True)
    call = tmp / "call.wav"
    subprocess.run(["sox", "-M", tmp / "left.wav", tmp / "right.wav", "-b", "16", call], check=True)
    return call


@pytest.fixture(scope="module")
def card_call(tmp_path_factory) -> Path:
    return stereo_card_call(tmp_path_factory.mktemp("card-call"))


def test_a_redacting_job_stores_no_card_number_anywhere(aws, card_call, tmp_path, caplog):
    caplog.set_level(logging.DEBUG, logger="whisperq")
    options = TranscriptionOptions(
        channels="split", speakers=("agent", "customer"), redact=["pci"], redact_audio=True
    )
    payload = upload_job(aws, card_call, "red", "calls/card.wav", options)

    assert JobRunner(aws).run(payload) == "done"

    s3 = storage.client(aws, "s3")
    base = "results/red/calls/card.wav"
    listing = sorted(item.key for item in storage.list_objects(s3, aws.bucket, "results/red/"))
    assert listing == sorted(
        [f"{base}.{fmt}" for fmt in ("json", "srt", "vtt", "txt")] + [f"{base}.redacted.wav"]
    )
    texts = {
        key: s3.get_object(Bucket=aws.bucket, Key=key)["Body"].read().decode()
        for key in listing
        if not key.endswith(".wav")
    }
    result = TranscriptResult.model_validate_json(texts[f"{base}.json"])
    said = [result.text, texts[f"{base}.txt"], *(segment.text for segment in result.segments)]
    renderings = [(key, text) for key, text in texts.items() if not key.endswith(".json")]
    # The JSON's timings are digits too: its text fields are checked, not its raw bytes.
    for key, text in [*renderings, ("json text", " ".join(said)), ("log", caplog.text)]:
        assert card_fragments(text) == [], f"{key} holds card digits"
    assert "731" not in re.sub(r"\D", "", " ".join(said)), "the security code is left"
    # What the feature guarantees: every value redacted is a tag where it was said. (Whether
    # tiny.en hears the short security code at all varies with threads and load; when it
    # does not, there is nothing to redact, and the digit checks above still hold.)
    assert "[CARD_NUMBER]" in texts[f"{base}.txt"]
    found = {span.type for span in result.redactions or []}
    assert "CARD_NUMBER" in found
    for kind in found:
        assert f"[{kind}]" in texts[f"{base}.txt"]
    found = {span.type: span for span in result.redactions or []}
    assert found["CARD_NUMBER"].speaker == "customer" and found["CARD_NUMBER"].channel == 1
    assert 0 < found["CARD_NUMBER"].start < found["CARD_NUMBER"].end <= result.duration
    # What is no sensitive value stays as heard: the agent said none, and every line of
    # theirs is kept, untagged ("two boxes" is no security code).
    agent = [segment.text for segment in result.segments if segment.speaker == "agent"]
    assert not any("[" in line for line in agent), agent
    said_by_agent = " ".join(text for side, _, text in CARD_CALL_TURNS if side == "left")
    assert word_error_rate(said_by_agent, " ".join(agent)) <= 0.4, agent
    assert all(span.speaker == "customer" for span in result.redactions or [])
    assert all(segment.words is None for segment in result.segments)  # not asked for
    assert result.options["redact"] == ["pci"] and result.options["redact_audio"] is True
    assert result.redacted_audio == f"{base}.redacted.wav"

    audio = tmp_path / "redacted.wav"
    s3.download_file(aws.bucket, f"{base}.redacted.wav", str(audio))
    copy, rate = read_wav(audio)
    original, original_rate = read_wav(card_call)
    assert (rate, copy.shape) == (original_rate, original.shape)
    inside = np.zeros(len(original), dtype=bool)
    spans = redacted_audio.silence_spans(result.redactions or [])
    for first, last in redacted_audio.sample_ranges(spans, rate):
        inside[first:last] = True
    assert inside.any() and not copy[inside].any()
    assert np.array_equal(copy[~inside], original[~inside])


def test_words_stay_when_the_batch_asked_for_them_and_are_tagged(aws, card_call):
    options = TranscriptionOptions(channels="split", redact=["CARD_NUMBER"], word_timestamps=True)
    payload = upload_job(aws, card_call, "red-words", "card.wav", options)

    assert JobRunner(aws).run(payload) == "done"

    s3 = storage.client(aws, "s3")
    body = s3.get_object(Bucket=aws.bucket, Key="results/red-words/card.wav.json")["Body"].read()
    result = TranscriptResult.model_validate_json(body)
    tagged = [w for s in result.segments for w in s.words or [] if w.word == "[CARD_NUMBER]"]
    assert tagged and all(w.start <= w.end for w in tagged)
    said = [result.text] + [w.word for s in result.segments for w in s.words or []]
    assert card_fragments(" ".join(said)) == []
    assert {span.type for span in result.redactions or []} == {"CARD_NUMBER"}  # CVV not asked
    assert not s3.list_objects_v2(Bucket=aws.bucket, Prefix="results/red-words/card.wav.red")[
        "KeyCount"
    ]  # no audio copy without --redact-audio


# --- the CLI ------------------------------------------------------------------------------


def test_submit_redact_is_stored_with_the_batch_and_shown_by_status(cli_env, tmp_path):
    (tmp_path / "a.wav").write_bytes(b"a")
    patterns = {"policy": r"POL-?\d{8}"}
    cli_env_patterns = json.dumps(patterns)
    result = cli.invoke(
        app,
        ["submit", str(tmp_path / "a.wav"), "-b", "pci", "--redact", "pci,PHONE", "--redact-audio"],
        env={"WHISPERQ_REDACT_PATTERNS": cli_env_patterns},
    )
    assert result.exit_code == 0, result.output

    s3 = storage.client(cli_env, "s3")
    view = tracking.load_batch(cli_env, s3, "pci")
    assert view is not None
    assert view.options.redact == ("pci", "PHONE") and view.options.redact_audio
    assert view.options.redact_patterns == patterns

    status = json.loads(cli.invoke(app, ["status", "pci", "--json"]).stdout)
    assert status["batches"][0]["redaction"] == {
        "groups": ["pci", "PHONE"],
        "patterns": ["policy"],  # names only: a regex may describe the values
        "audio": True,
    }
    table = cli.invoke(app, ["status", "pci"]).stdout
    assert "pci: redacts pci, PHONE, policy; audio copies silenced" in table


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--redact", "cards"], "--redact: Value error, unknown redaction group 'cards'"),
        (["--redact-audio"], "redact_audio needs redact"),
    ],
)
def test_bad_redaction_flags_fail_before_uploading(cli_env, tmp_path, flags, message):
    (tmp_path / "a.wav").write_bytes(b"a")
    result = cli.invoke(app, ["submit", str(tmp_path / "a.wav"), "-b", "bad", *flags])
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())
    s3 = storage.client(cli_env, "s3")
    assert not s3.list_objects_v2(Bucket=cli_env.bucket, Prefix="inputs/bad/")["KeyCount"]


def test_results_downloads_the_redacted_audio_copies(cli_env, tmp_path):
    s3 = storage.client(cli_env, "s3")
    (tmp_path / "a.wav").write_bytes(b"a")
    assert cli.invoke(app, ["submit", str(tmp_path / "a.wav"), "-b", "dl"]).exit_code == 0
    for key in (keys.result_key("dl", "a.wav", "json"), keys.redacted_audio_key("dl", "a.wav")):
        s3.put_object(Bucket=cli_env.bucket, Key=key, Body=b"x")

    only_audio = cli.invoke(app, ["results", "dl", "-o", str(tmp_path / "a"), "-f", "audio"])
    everything = cli.invoke(app, ["results", "dl", "-o", str(tmp_path / "b")])

    assert only_audio.exit_code == 0 and everything.exit_code == 0
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == [
        ".whisperq-batch",  # the folder's batch (whisperq.batches.download)
        "a.wav.redacted.wav",
    ]
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == [
        ".whisperq-batch",
        "a.wav.json",
        "a.wav.redacted.wav",
    ]


def test_ingest_folders_take_redaction_options(aws):
    settings = aws.model_copy(update={"ingest_options": {"calls": {"redact": ["pii"]}}})
    settings = type(aws).model_validate(settings.model_dump())
    config = ingest.IngestConfig.from_env(settings.ingest_environment())
    assert config.options_for("calls")["redact"] == ["pii"]
    with pytest.raises(ValidationError, match="unknown redaction group"):
        type(aws).model_validate(
            aws.model_dump() | {"ingest_options": {"calls": {"redact": ["cards"]}}}
        )
