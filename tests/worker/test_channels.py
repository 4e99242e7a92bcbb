"""Call-centre transcripts: who said what on a stereo call, words with times, options."""

from __future__ import annotations

import subprocess
import wave
from pathlib import Path

import numpy as np
import pytest

from whisperq import storage
from whisperq.schemas import Segment, TranscriptionOptions, TranscriptResult
from whisperq.speech import engine
from whisperq.speech.audio import choose_channel_mode
from whisperq.transcripts import render
from whisperq.worker.runner import JobRunner

from helpers import CLEAR_SENTENCE, result_keys, upload_job, word_error_rate, words

CONFIRMATION = "Please send the confirmation to my email address."
THANKS = "Thank you very much for your help."
VOICES = {"agent": "en-us", "customer": "en-gb+f3"}


def make_call(tmp: Path, turns: list[tuple[str, str]], overlap: float = 0.0) -> Path:
    """A stereo call, agent on the left and customer on the right, turn after turn; with
    ``overlap`` the second turn starts that many seconds before the first one ends."""
    sides: dict[str, list[str]] = {"agent": [], "customer": []}
    for index, (speaker, text) in enumerate(turns):
        raw, turn, quiet = (tmp / f"{index}-{name}.wav" for name in ("raw", "turn", "quiet"))
        espeak = ["espeak-ng", "-v", VOICES[speaker], "-s", "150", "-w", str(raw), text]
        subprocess.run(espeak, check=True)
        subprocess.run(
            ["sox", raw, "-r", "16000", "-c", "1", turn, "pad", "0.3", "0.3"], check=True
        )
        subprocess.run(["sox", turn, quiet, "vol", "0"], check=True)  # as long, silent
        sides[speaker].append(str(turn))
        sides["customer" if speaker == "agent" else "agent"].append(str(quiet))
    channels = []
    for speaker in ("agent", "customer"):
        side = tmp / f"{speaker}.wav"
        subprocess.run(["sox", *sides[speaker], str(side)], check=True)
        channels.append(side)
    if overlap:  # pull the customer's side earlier by trimming its start
        shifted = tmp / "customer-shifted.wav"
        subprocess.run(["sox", channels[1], shifted, "trim", str(overlap)], check=True)
        channels[1] = shifted
    call = tmp / "call.wav"
    subprocess.run(["sox", "-M", *map(str, channels), str(call)], check=True)
    return call


@pytest.fixture(scope="module")
def dialogue(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("dialogue")
    turns = [("agent", CLEAR_SENTENCE), ("customer", CONFIRMATION), ("agent", THANKS)]
    return make_call(tmp, turns)


def transcribe(path: Path, batch_size: int = 0, **options) -> engine.Transcript:
    config = engine.EngineConfig(batch_size=batch_size)
    loaded = engine.load_model(config)
    return engine.transcribe_file(loaded, path, TranscriptionOptions(**options), config)


def turns_of(segments: list[Segment]) -> list[str | None]:
    """Speakers in order, consecutive repeats collapsed."""
    order: list[str | None] = []
    for segment in segments:
        if not order or order[-1] != segment.speaker:
            order.append(segment.speaker)
    return order


def said_by(segments: list[Segment], word: str) -> set[str | None]:
    return {s.speaker for s in segments if word in words(s.text)}


def test_split_labels_every_sentence_with_who_said_it(dialogue):
    transcript = transcribe(dialogue, channels="split", speakers=("agent", "customer"))

    assert transcript.channel_mode == "split"
    assert said_by(transcript.segments, "internet") == {"agent"}
    assert said_by(transcript.segments, "confirmation") == {"customer"}
    assert said_by(transcript.segments, "thank") == {"agent"}
    assert turns_of(transcript.segments) == ["agent", "customer", "agent"]
    assert all(s.channel == {"agent": 0, "customer": 1}[s.speaker] for s in transcript.segments)
    starts = [s.start for s in transcript.segments]
    assert starts == sorted(starts)
    reference = f"{CLEAR_SENTENCE} {CONFIRMATION} {THANKS}"
    assert word_error_rate(reference, transcript.text) <= 0.35
    assert [(c.channel, c.speaker, c.language) for c in transcript.channels] == [
        (0, "agent", "en"),
        (1, "customer", "en"),
    ]


def test_split_works_with_batched_decoding_too(dialogue):
    transcript = transcribe(dialogue, 8, channels="split", speakers=("agent", "customer"))
    assert transcript.options["batch_size"] == 8
    assert said_by(transcript.segments, "internet") == {"agent"}
    assert said_by(transcript.segments, "confirmation") == {"customer"}
    assert turns_of(transcript.segments) == ["agent", "customer", "agent"]


def test_split_renders_the_speakers_in_srt_vtt_and_txt(dialogue):
    segments = transcribe(dialogue, channels="split", speakers=("agent", "customer")).segments

    srt = render.render_srt(segments)
    assert "] " in srt and all(
        line.startswith(("[agent] ", "[customer] "))
        for line in srt.splitlines()
        if line and not line[0].isdigit()
    )
    vtt = render.render_vtt(segments)
    assert "<v agent>" in vtt and "<v customer>" in vtt
    lines = render.render_txt(segments).splitlines()
    assert [line.split(":", 1)[0] for line in lines] == ["agent", "customer", "agent"]
    assert "confirmation" in words(lines[1])


def test_auto_splits_two_speakers_and_mixes_dual_mono(dialogue, tmp_path, make_speech):
    assert transcribe(dialogue).channel_mode == "split"  # auto is the default

    dual_mono = make_speech(tmp_path / "dual.wav", CLEAR_SENTENCE, rate=16000, channels=2)
    mixed = transcribe(dual_mono)
    assert mixed.channel_mode == "mix" and mixed.channels is None
    assert all(s.speaker is None for s in mixed.segments)
    assert {"internet", "connection"} <= words(mixed.text)


def test_the_channel_choice_itself():
    rng = np.random.default_rng(1)
    left, right = rng.normal(0, 0.2, 16000), rng.normal(0, 0.2, 16000)
    assert choose_channel_mode(left, right) == "split"  # two independent voices
    assert choose_channel_mode(left, left * 0.9) == "mix"  # the same signal twice
    assert choose_channel_mode(left, right * 0.01) == "mix"  # one side silent (-40 dB)
    assert choose_channel_mode(left * 0, right * 0) == "mix"  # nothing at all
    echo = right + 0.3 * left  # the agent's voice leaking into the customer's line
    assert choose_channel_mode(left, echo) == "split"


def stereo_wav(path: Path, left: np.ndarray, right: np.ndarray, rate: int) -> Path:
    """A 16-bit stereo WAV of two float channels in [-1, 1]."""
    frames = np.round(np.stack([left, right], axis=1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(2)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(frames.tobytes())
    return path


def calls_decided_only_by_their_first_10_minutes(rate: int) -> dict[str, tuple]:
    """Two 12-minute stereo calls whose channel choice differs between the first 10
    minutes and any other part that a decision could be made on, as (left, right).

    "split": 8 minutes of the same signal on both sides (dual mono: mix), then 2 minutes
    of two independent, louder voices: over 0-10 min they correlate at 0.5 (split), over
    any start shorter than 8.5 min above 0.8 (mix). Then 2 minutes of a loud tone on the
    left alone, loud enough that the whole file, or any stretch holding much of it, has
    one silent side (mix).
    "mix": 10 minutes of dual mono (mix), then 2 minutes of two independent voices so
    loud that the whole file, or the end alone, correlates near 0 (split).
    """
    rng = np.random.default_rng(10)
    minute = 60 * rate

    def noise(minutes: int, level: float) -> np.ndarray:
        return rng.normal(0, level, minutes * minute)

    same = noise(8, 0.02)
    tone = 0.9 * np.sin(2 * np.pi * 440 * np.arange(2 * minute) / rate)
    split_first = (
        np.concatenate([same, noise(2, 0.04), tone]),
        np.concatenate([same, noise(2, 0.04), np.zeros(2 * minute)]),
    )
    same = noise(10, 0.02)
    mix_first = (
        np.concatenate([same, noise(2, 0.15)]),
        np.concatenate([same, noise(2, 0.15)]),
    )
    return {"split": split_first, "mix": mix_first}


def test_the_first_10_minutes_decide_the_channel_split(tmp_path, monkeypatch):
    """The promise (docs/call-analytics.md): with channels=auto, the first 10 minutes of a
    file decide mix or split for the whole file. Each call below would be decided the
    other way on its whole length or its end, the first on a start under 8.5 minutes too
    (checked first, on the samples); the worker's engine, decoding the real file, must
    decide as its first 10 minutes do. Whisper itself is left out: what it is given is
    recorded instead (the decision is made before any decoding)."""
    rate = 8000
    minute = 60 * rate
    calls = calls_decided_only_by_their_first_10_minutes(rate)
    for first, (left, right) in calls.items():
        other = "mix" if first == "split" else "split"
        assert choose_channel_mode(left[: 10 * minute], right[: 10 * minute]) == first
        assert choose_channel_mode(left[: int(9.75 * minute)], right[: int(9.75 * minute)]) == (
            first
        )  # the first window ends at the quietest point of its last 15 s
        assert choose_channel_mode(left, right) == other  # the whole file
        assert choose_channel_mode(left[10 * minute :], right[10 * minute :]) == other
        assert choose_channel_mode(left[2 * minute :], right[2 * minute :]) == other
        if first == "split":  # a shorter start would mix
            assert choose_channel_mode(left[: 8 * minute], right[: 8 * minute]) == "mix"

    from whisperq.settings import Settings
    from whisperq.worker.models import engine_config

    config = engine_config(Settings())  # the worker's own: its window, its choice
    judged: list[int] = []
    given: list[int] = []
    choose = engine.choose_channel_mode

    def spy(left: np.ndarray, right: np.ndarray) -> str:
        judged.append(len(left))
        return choose(left, right)

    def whisper(loaded, audio, options, config, **kwargs) -> engine.Transcript:
        given.append(len(audio))
        return engine.Transcript([], "en", 1.0, len(audio) / engine.SAMPLE_RATE, {})

    monkeypatch.setattr(engine, "choose_channel_mode", spy)
    monkeypatch.setattr(engine, "transcribe", whisper)
    for first, (left, right) in calls.items():
        path = stereo_wav(tmp_path / f"{first}.wav", left, right, rate)
        judged.clear()
        given.clear()
        options = TranscriptionOptions(channels="auto", vad=False)
        transcript = engine.transcribe_file(None, path, options, config)

        assert transcript.channel_mode == first, first
        assert transcript.duration == pytest.approx(12 * 60, abs=0.1)
        (seconds,) = [length / engine.SAMPLE_RATE for length in judged]  # decided once
        assert 9.75 * 60 <= seconds <= 10 * 60
        # and kept: every window decoded as decided (split: a channel at a time)
        assert len(given) == (4 if first == "split" else 2)


def test_overlapping_speech_keeps_both_lines(tmp_path):
    call = make_call(tmp_path, [("agent", CLEAR_SENTENCE), ("customer", CONFIRMATION)], 1.5)
    transcript = transcribe(call, channels="split", speakers=("agent", "customer"))

    agent = [s for s in transcript.segments if s.speaker == "agent"]
    customer = [s for s in transcript.segments if s.speaker == "customer"]
    assert agent and customer
    assert customer[0].start < agent[-1].end  # they do overlap ...
    srt = render.render_srt(transcript.segments)
    assert "[agent]" in srt and "[customer]" in srt  # ... and both are kept
    assert "confirmation" in words(transcript.text) and "internet" in words(transcript.text)


def test_word_timestamps_carry_times_probability_and_speaker(dialogue):
    transcript = transcribe(
        dialogue, channels="split", speakers=("agent", "customer"), word_timestamps=True
    )
    for segment in transcript.segments:
        assert segment.words
        for word in segment.words:
            assert segment.start - 0.5 <= word.start <= word.end <= segment.end + 0.5
            assert 0.0 <= word.probability <= 1.0
            assert (word.speaker, word.channel) == (segment.speaker, segment.channel)
    heard = words(" ".join(w.word for s in transcript.segments for w in s.words or []))
    assert {"internet", "confirmation"} <= heard  # normalised: any case or punctuation
    vtt = render.render_vtt(transcript.segments)
    assert "> <00:00:" not in vtt and "<00:00:0" in vtt  # a timestamp tag before a word


def test_a_forced_language_skips_detection(make_speech, tmp_path):
    mono = make_speech(tmp_path / "mono.wav", CLEAR_SENTENCE)
    transcript = transcribe(mono, language="en")
    assert (transcript.language, transcript.language_probability) == ("en", 1.0)


def test_the_worker_writes_the_formats_asked_and_echoes_the_options(aws, dialogue):
    options = TranscriptionOptions(
        channels="split", speakers=("agent", "customer"), formats=("txt",), hotwords="Acme"
    )
    assert JobRunner(aws).run(upload_job(aws, dialogue, "cc", "call.wav", options)) == "done"

    assert result_keys(aws, "cc") == ["results/cc/call.wav.json", "results/cc/call.wav.txt"]
    s3 = storage.client(aws, "s3")
    result = TranscriptResult.model_validate(
        storage.get_json(s3, aws.bucket, "results/cc/call.wav.json")
    )
    assert result.channel_mode == "split"
    assert result.options["speakers"] == ["agent", "customer"]
    assert result.options["hotwords"] == "Acme" and result.options["formats"] == ["txt"]
    assert [c.speaker for c in result.channels] == ["agent", "customer"]
    assert {s.speaker for s in result.segments} == {"agent", "customer"}
    text = s3.get_object(Bucket=aws.bucket, Key="results/cc/call.wav.txt")["Body"].read()
    assert text.decode().startswith("agent: ")

    # conversation metrics, from the segments (no word timings asked): plausible, consistent
    metrics = result.metrics
    assert metrics is not None and metrics.basis == "segments"
    assert metrics.duration == pytest.approx(result.duration)
    by_speaker = {entry.speaker: entry for entry in metrics.speakers}
    assert set(by_speaker) == {"agent", "customer"}
    assert all(0 < entry.talk_time < metrics.duration for entry in by_speaker.values())
    talk = sum(entry.talk_time for entry in by_speaker.values()) - metrics.overlap_time
    assert talk == pytest.approx(metrics.talk_time, abs=0.01)
    assert metrics.talk_time + metrics.non_talk_time == pytest.approx(metrics.duration, abs=0.01)
    assert metrics.turns == 3  # agent, customer, agent
    # (no interruption check: segment ends carry the VAD clip's padding; words are exact)
    assert all(60 < (entry.words_per_minute or 0) < 400 for entry in by_speaker.values())


def test_a_model_the_workers_do_not_serve_fails_the_file_with_the_reason(
    aws, make_speech, tmp_path
):
    audio = make_speech(tmp_path / "a.wav", "Good morning.")
    payload = upload_job(aws, audio, "mm", "a.wav", TranscriptionOptions(model="large-v3"))
    assert JobRunner(aws).run(payload) == "failed"

    assert result_keys(aws, "mm") == ["results/mm/a.wav.error.json"]
    record = storage.get_json(storage.client(aws, "s3"), aws.bucket, "results/mm/a.wav.error.json")
    assert record["kind"] == "permanent"
    assert "large-v3" in record["reason"] and "WHISPERQ_ALLOWED_MODELS" in record["reason"]


def test_options_are_checked_before_anything_is_sent():
    with pytest.raises(ValueError, match="must differ"):
        TranscriptionOptions(speakers=("agent", "agent"))
    with pytest.raises(ValueError, match="speaker label"):
        TranscriptionOptions(speakers=("agent", "cust<omer"))
    assert TranscriptionOptions(formats=("json", "txt", "srt")).formats == ("srt", "txt")


def test_hotwords_reach_every_decode_and_the_company_name_is_heard(monkeypatch):
    """What --hotwords guarantees: Whisper is given the hotwords for every stretch of each
    channel it decodes, and the name is heard. Not the spelling one decode prints (tiny.en
    wrote "Acme Fibre" with the hotword and "Acme Fiber" without: the same words once
    normalised), which is why the hotwords' arrival is checked at the model's door."""
    example = Path(__file__).parents[2] / "examples/calls/support/call-0002-stereo.flac"
    loaded = engine.load_model(engine.EngineConfig())
    given: list[object] = []
    decode = loaded.model.transcribe

    def spy(audio, **decoding):
        given.append(decoding.get("hotwords"))
        return decode(audio, **decoding)

    monkeypatch.setattr(loaded.model, "transcribe", spy)
    transcript = transcribe(example, speakers=("agent", "customer"), hotwords="Acme Fibre")

    assert transcript.channel_mode == "split" and len(given) >= 2  # each channel decoded
    assert given == ["Acme Fibre"] * len(given)
    first = transcript.segments[0]
    assert first.speaker == "agent" and words("Acme Fibre") <= words(first.text), first.text
