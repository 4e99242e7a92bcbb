"""Renderers: transcript segments to SRT, WebVTT and plain text, with speaker labels when
a stereo call was split by channel.

Timestamps are rounded half-up to the millisecond from the decimal form of the float
(so 1.0005 s is 00:00:01,001, not ...,000 as binary rounding would give).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

from whisperq.schemas import Segment, Word


def to_milliseconds(seconds: float) -> int:
    """Seconds to whole milliseconds, half-up, never negative."""
    millis = (Decimal(repr(float(seconds))) * 1000).quantize(Decimal(1), ROUND_HALF_UP)
    return max(0, int(millis))


def format_timestamp(seconds: float, decimal_marker: str) -> str:
    """``HH:MM:SS<marker>mmm``; hours grow past 99 rather than wrap."""
    millis = to_milliseconds(seconds)
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{decimal_marker}{millis:03d}"


def srt_timestamp(seconds: float) -> str:
    return format_timestamp(seconds, ",")


def vtt_timestamp(seconds: float) -> str:
    return format_timestamp(seconds, ".")


@dataclass(frozen=True)
class Cue:
    start: float
    end: float
    text: str
    speaker: str | None
    words: list[Word] | None


def _cues(segments: Iterable[Segment]) -> list[Cue]:
    """Segments with text, in order; end never before start."""
    cues = []
    for segment in segments:
        text = " ".join(segment.text.split())
        if text:
            end = max(segment.start, segment.end)
            cues.append(Cue(segment.start, end, text, segment.speaker, segment.words))
    return cues


def render_srt(segments: Iterable[Segment]) -> str:
    """SubRip; a split call's lines start with ``[speaker]``."""
    blocks = [
        f"{index}\n{srt_timestamp(cue.start)} --> {srt_timestamp(cue.end)}\n"
        f"{f'[{cue.speaker}] ' if cue.speaker else ''}{cue.text}\n"
        for index, cue in enumerate(_cues(segments), start=1)
    ]
    return "\n".join(blocks)


def _vtt_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _vtt_text(cue: Cue) -> str:
    """WebVTT cue text: the speaker as a voice span; with word timestamps, each word after
    the first is preceded by its start time (karaoke-style timestamp tags)."""
    if cue.words:
        parts = [_vtt_escape(cue.words[0].word)] + [
            f"<{vtt_timestamp(word.start)}>{_vtt_escape(word.word)}"
            for word in cue.words[1:]
            if cue.start < word.start < cue.end  # tags must lie inside the cue
        ]
        text = " ".join(parts)
    else:
        text = _vtt_escape(cue.text)
    return f"<v {cue.speaker}>{text}" if cue.speaker else text


def render_vtt(segments: Iterable[Segment]) -> str:
    """WebVTT; a split call's cues carry the speaker as ``<v speaker>``."""
    blocks = [
        f"{vtt_timestamp(cue.start)} --> {vtt_timestamp(cue.end)}\n{_vtt_text(cue)}\n"
        for cue in _cues(segments)
    ]
    return "\n".join(["WEBVTT\n", *blocks])


def render_txt(segments: Iterable[Segment]) -> str:
    """Plain text, a line per segment; a split call reads as a dialogue, one
    ``speaker: ...`` line per turn (consecutive segments of one speaker joined)."""
    cues = _cues(segments)
    if not any(cue.speaker for cue in cues):
        lines = [cue.text for cue in cues]
    else:
        turns: list[tuple[str | None, list[str]]] = []
        for cue in cues:
            if turns and turns[-1][0] == cue.speaker:
                turns[-1][1].append(cue.text)
            else:
                turns.append((cue.speaker, [cue.text]))
        lines = [f"{speaker}: {' '.join(texts)}" for speaker, texts in turns]
    return "\n".join(lines) + "\n" if lines else ""


RENDERERS = {"srt": render_srt, "vtt": render_vtt, "txt": render_txt}
CONTENT_TYPES = {
    "srt": "application/x-subrip; charset=utf-8",
    "vtt": "text/vtt; charset=utf-8",
    "txt": "text/plain; charset=utf-8",
    "json": "application/json",
}
