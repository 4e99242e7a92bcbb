"""Results for the review-site tests, built with whisperq.schemas' models: a split
stereo call with words, metadata and categories; a redacted call; a mono call in two
languages without word timings; a call whose text, speaker labels, metadata and path
are hostile HTML; and a short WAV to play."""

from __future__ import annotations

import wave
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from whisperq import keys
from whisperq.qa_rules import parse_rules
from whisperq.schemas import (
    ChannelInfo,
    LanguageShare,
    ModelInfo,
    RedactedSpan,
    Segment,
    Timings,
    TranscriptionOptions,
    TranscriptResult,
    Word,
)
from whisperq.transcripts.categories import categorize
from whisperq.transcripts.conversation import conversation_metrics

BATCH = "review"
SCRIPT = "<script>alert(1)</script>"
CARD = "4532015112830366"  # what the redacted call's customer said (never stored)
PATTERN = r"POL-?\d{8}"  # a redaction pattern: the page names it, never shows it
RULES = parse_rules(
    {
        "rule": [
            {"name": "connectivity", "phrases": ["internet drops"], "speaker": "customer"},
            {"name": "long hold", "longest_silence_over": 1.5},
        ]
    }
)


def said(speaker: str | None, channel: int | None, *timed: tuple[float, float, str]) -> Segment:
    """A segment of ``speaker`` from (start, end, word) triples, with its words."""
    words = [
        Word(start=s, end=e, word=f" {w}", probability=0.9, speaker=speaker, channel=channel)
        for s, e, w in timed
    ]
    return Segment(
        start=timed[0][0],
        end=timed[-1][1],
        text="".join(w.word for w in words).strip(),
        avg_logprob=-0.2,
        no_speech_prob=0.01,
        speaker=speaker,
        channel=channel,
        words=words,
    )


def plain(start: float, end: float, text: str, language: str | None = None) -> Segment:
    return Segment(
        start=start,
        end=end,
        text=text,
        avg_logprob=-0.3,
        no_speech_prob=0.02,
        language=language,
    )


def result(
    path: str,
    duration: float,
    segments: list[Segment],
    *,
    speakers: tuple[str, str] | None = ("agent", "customer"),
    options: TranscriptionOptions | None = None,
    redactions: list[RedactedSpan] | None = None,
    languages: list[LanguageShare] | None = None,
    metadata: dict[str, Any] | None = None,
    batch: str = BATCH,
) -> TranscriptResult:
    options = options or TranscriptionOptions(word_timestamps=True)
    channels = (
        [
            ChannelInfo(channel=i, speaker=name, language="en", language_probability=0.98)
            for i, name in enumerate(speakers)
        ]
        if speakers
        else None
    )
    return TranscriptResult(
        batch=batch,
        path=path,
        input_key=keys.input_key(batch, path),
        sha256="0" * 64,
        duration=duration,
        language="en",
        language_probability=0.98,
        channel_mode="split" if speakers else "mix",
        channels=channels,
        languages=languages,
        model=ModelInfo(name="tiny.en", device="cpu", compute_type="int8"),
        options=options.model_dump(mode="json"),
        text=" ".join(s.text for s in segments),
        segments=segments,
        redactions=redactions,
        metrics=conversation_metrics(segments, duration, speakers=list(speakers or ())),
        timings=Timings(download=0.1, transcribe=2.0, upload=0.1),
        worker_id="host-a:101",
        finished_at=datetime(2026, 3, 2, 10, 30, tzinfo=UTC),
        metadata=metadata,
    )


def stereo_call(path: str = "support/call-0001.wav") -> TranscriptResult:
    """10 s: agent 0.5-2.9, customer 3.0-5.0 (cut in on by the agent at 4.0), a silence
    5.0-7.0, the agent again 7.0-8.5."""
    segments = [
        said("agent", 0, (0.5, 1.0, "Thank"), (1.0, 1.4, "you"), (1.4, 2.0, "for"),
             (2.0, 2.9, "calling.")),
        said("customer", 1, (3.0, 3.5, "My"), (3.5, 4.2, "internet"), (4.2, 5.0, "drops.")),
        said("agent", 0, (4.0, 4.6, "Sorry,"), (4.6, 4.9, "one"), (4.9, 5.0, "moment.")),
        said("agent", 0, (7.0, 7.6, "Let"), (7.6, 8.0, "me"), (8.0, 8.5, "check.")),
    ]  # fmt: skip
    made = result(path, 10.0, segments, metadata={"agent_id": "A-17", "queue": "billing"})
    return made.model_copy(update={"categories": categorize(RULES, made)})


def redacted_call(path: str = "payments/call 0002.wav") -> TranscriptResult:
    """The customer's card number, as the worker stores it: a tag in the text and the
    words, a span in ``redactions``; the batch had a pattern of its own."""
    options = TranscriptionOptions(
        word_timestamps=True,
        redact=("pci",),
        redact_patterns={"policy": PATTERN},
        redact_audio=True,
    )
    segments = [
        said("agent", 0, (0.5, 1.0, "Your"), (1.0, 1.5, "card"), (1.5, 2.2, "number?")),
        said("customer", 1, (2.5, 3.0, "It"), (3.0, 3.3, "is"), (3.3, 7.0, "[CARD_NUMBER]")),
        said("agent", 0, (7.5, 8.0, "Thank"), (8.0, 8.4, "you.")),
    ]
    spans = [RedactedSpan(type="CARD_NUMBER", start=3.3, end=7.0, speaker="customer", channel=1)]
    return result(path, 9.0, segments, options=options, redactions=spans)


def mono_call(path: str = "billing/mono.wav") -> TranscriptResult:
    """No speaker labels, no word timings, two languages."""
    segments = [
        plain(0.4, 3.0, "Hello, I would like to pay my bill.", "en"),
        plain(3.5, 6.0, "Sí, claro, un momento por favor.", "es"),
    ]
    shares = [
        LanguageShare(language="en", seconds=2.6, share=0.51),
        LanguageShare(language="es", seconds=2.5, share=0.49),
    ]
    return result(path, 7.0, segments, speakers=None, languages=shares)


def hostile_call(path: str = f"odd/#1 & {SCRIPT}.wav") -> TranscriptResult:
    """HTML everywhere a caller, a sidecar or a rule's author can put text."""
    segments = [
        said("agent", 0, (0.5, 1.0, SCRIPT), (1.0, 1.5, "<b>bold</b>")),
        said("customer", 1, (2.0, 2.5, "\"quoted'"), (2.5, 3.0, "&amp;")),
    ]
    made = result(path, 4.0, segments, metadata={"note": SCRIPT, SCRIPT: 1})
    evidence = {"phrase": SCRIPT, "speaker": "agent", "start": 0.5, "end": 1.0, "words": SCRIPT}
    return made.model_copy(update={"categories": [{"rule": SCRIPT, "evidence": [evidence]}]})


def sample_results() -> list[TranscriptResult]:
    return [stereo_call(), redacted_call(), mono_call(), hostile_call()]


FAILURE = ("support/call-0003.wav", f"The audio could not be decoded: {SCRIPT}")


def write_wav(path: Path, seconds: float = 10.0, rate: int = 8000) -> Path:
    """A quiet two-tone WAV (16-bit mono) of ``seconds``."""
    t = np.arange(int(seconds * rate)) / rate
    tone = 0.2 * np.sin(2 * np.pi * 220 * t) + 0.1 * np.sin(2 * np.pi * 330 * t)
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes((tone * 32767).astype("<i2").tobytes())
    return path


WORDS = (
    "hello", "thanks", "for", "calling", "how", "can", "I", "help", "my", "internet", "keeps",
    "dropping", "every", "evening", "let", "me", "check", "your", "account", "number",
    "please", "it", "is", "fine", "now", "sorry", "about", "that",
)  # fmt: skip


def synthetic_result(i: int, batch: str = BATCH) -> dict[str, Any]:
    """Call ``i`` of a large synthetic batch, as a result JSON: two speakers taking turns
    over 30-600 s, words with times, a language of three, a category of four; stored
    metrics (as workers write them). Plain dicts: 10,000 of them take seconds."""
    duration = 30.0 + (i * 37) % 570
    segments: list[dict[str, Any]] = []
    t = 0.5 + (i % 5) * 0.3
    turn = 0
    while t < duration - 6 and turn < 12:
        speaker, channel = ("agent", 0) if turn % 2 == 0 else ("customer", 1)
        words = []
        for k in range(4 + (i + turn) % 5):
            word = WORDS[(i * 7 + turn * 3 + k) % len(WORDS)]
            start = round(t, 2)
            words.append(
                {"start": start, "end": round(start + 0.4, 2), "word": f" {word}",
                 "probability": 0.9, "speaker": speaker, "channel": channel}
            )  # fmt: skip
            t += 0.45
        segments.append(
            {"start": words[0]["start"], "end": words[-1]["end"],
             "text": "".join(w["word"] for w in words).strip(), "avg_logprob": -0.2,
             "no_speech_prob": 0.01, "speaker": speaker, "channel": channel, "words": words}
        )  # fmt: skip
        t += 0.2 + ((i + turn) % 7) * 0.6 - (0.5 if (i + turn) % 9 == 0 else 0.0)
        turn += 1
    metrics = conversation_metrics(
        [Segment.model_construct(**{**s, "words": [Word.model_construct(**w) for w in s["words"]]})
         for s in segments],
        duration,
        speakers=["agent", "customer"],
    )  # fmt: skip
    path = f"day-{i % 7}/call-{i:05d}.wav"
    return {
        "schema_version": 1,
        "batch": batch,
        "path": path,
        "input_key": keys.input_key(batch, path),
        "sha256": "0" * 64,
        "duration": duration,
        "language": ("en", "es", "de")[i % 3],
        "language_probability": 0.97,
        "channel_mode": "split",
        "channels": [
            {"channel": 0, "speaker": "agent", "language": "en", "language_probability": 0.9},
            {"channel": 1, "speaker": "customer", "language": "en", "language_probability": 0.9},
        ],
        "model": {"name": "base", "device": "cpu", "compute_type": "int8"},
        "options": {"word_timestamps": True},
        "text": " ".join(s["text"] for s in segments),
        "segments": segments,
        "metrics": metrics.model_dump(mode="json"),
        "timings": {"download": 0.2, "decode": 0.0, "transcribe": duration / 20, "upload": 0.1},
        "worker_id": f"host-{i % 4}:1",
        "instance_type": "c7i.xlarge",
        "finished_at": f"2026-03-02T10:{(i // 60) % 60:02d}:{i % 60:02d}+00:00",
        "categories": [
            {
                "rule": ("billing", "outage", "cancellation", "praise")[i % 4],
                "evidence": [{"measure": "duration", "value": duration, "threshold": 20}],
            }
        ],
    }
