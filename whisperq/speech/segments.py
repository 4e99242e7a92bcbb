"""Segments as whisperq stores them: faster-whisper's, moved into the file's time,
labelled with who spoke, and a window's last words to prompt the next one with."""

from __future__ import annotations

from typing import Any

from whisperq.schemas import Segment, Word


def segment_of(segment: Any) -> Segment:
    """faster-whisper's segment as whisperq stores it."""
    return Segment(
        start=round(segment.start, 3),
        end=round(segment.end, 3),
        text=segment.text.strip(),
        avg_logprob=segment.avg_logprob,
        no_speech_prob=segment.no_speech_prob,
        words=None
        if segment.words is None
        else [
            Word(
                start=round(word.start, 3),
                end=round(word.end, 3),
                word=word.word.strip(),
                probability=round(word.probability, 4),
            )
            for word in segment.words
        ],
    )


def shift(segment: Segment, seconds: float) -> Segment:
    """A window's segment (and its words) in the file's time."""
    if not seconds:
        return segment

    def moved(start: float, end: float) -> dict[str, float]:
        return {"start": round(start + seconds, 3), "end": round(end + seconds, 3)}

    words = None
    if segment.words is not None:
        words = [word.model_copy(update=moved(word.start, word.end)) for word in segment.words]
    return segment.model_copy(update=moved(segment.start, segment.end) | {"words": words})


def label(segment: Segment, speaker: str | None, channel: int | None) -> Segment:
    """Who said it: on the segment and on each of its words."""
    if speaker is None:
        return segment
    who = {"speaker": speaker, "channel": channel}
    words = None
    if segment.words is not None:
        words = [word.model_copy(update=who) for word in segment.words]
    return segment.model_copy(update=who | {"words": words})


def context_prompt(segments: list[Segment], max_words: int = 50) -> str | None:
    """The last words of a window, to prompt the next one with (Whisper's prompt holds
    at most 223 tokens; 50 words stay well inside it)."""
    words = " ".join(segment.text for segment in segments).split()
    return " ".join(words[-max_words:]) or None
