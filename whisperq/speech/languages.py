"""Languages: which one each segment is in when a file switches between them
(``multilingual``), and each language's share of a transcript's time."""

from __future__ import annotations

from typing import Any

import numpy as np

from whisperq.schemas import LanguageShare, Segment
from whisperq.speech.audio import segment_audio
from whisperq.speech.guard import made_up
from whisperq.speech.segments import segment_of, shift


def in_their_own_languages(
    model: Any,  # faster_whisper.WhisperModel
    audio: np.ndarray,
    segments: list[Segment],
    decoded_in: str,
    decoding: dict[str, Any],
) -> list[Segment]:
    """Each segment labelled with its language; a segment in another language than the one
    its window was decoded in is decoded again, alone, in its own (faster-whisper picks one
    language per 30 s window: a German sentence between two English ones came back as
    English-sounding nonsense)."""
    done: list[Segment] = []
    for segment in segments:
        clip = segment_audio(audio, segment)
        language = clip_language(model, clip)
        if language == decoded_in:
            done.append(segment.model_copy(update={"language": language}))
            continue
        again = decoding | {
            "language": language,
            "multilingual": False,
            "vad_filter": False,
            "initial_prompt": None,
        }
        again.pop("clip_timestamps", None)
        again.pop("vad_parameters", None)
        parts, _ = model.transcribe(clip, **again)
        redone = [
            shift(segment_of(part), segment.start).model_copy(update={"language": language})
            for part in parts
            if part.text.strip() and not made_up(part)
        ]
        done += redone or [segment.model_copy(update={"language": language})]
    return done


def clip_language(model: Any, clip: np.ndarray) -> str:
    """The language spoken in one segment's audio: Whisper's language detection on it
    alone (faster-whisper's ``multilingual`` switches the decoder per window but does not
    say which language each segment is in)."""
    language, _, _ = model.detect_language(clip)
    return str(language)


def language_shares(segments: list[Segment]) -> list[LanguageShare]:
    """Each language's share of the segments' time, largest first."""
    seconds: dict[str, float] = {}
    for segment in segments:
        if segment.language:
            seconds[segment.language] = (
                seconds.get(segment.language, 0.0) + segment.end - segment.start
            )
    total = sum(seconds.values()) or 1.0
    return [
        LanguageShare(language=lang, seconds=round(time, 3), share=round(time / total, 4))
        for lang, time in sorted(seconds.items(), key=lambda item: -item[1])
    ]
