"""Renderers: transcript segments to SRT, WebVTT and plain text.

Timestamps are rounded half-up to the millisecond from the decimal form of the float
(so 1.0005 s is 00:00:01,001, not ...,000 as binary rounding would give).
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import ROUND_HALF_UP, Decimal

from whisperq.schemas import Segment


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


def _cues(segments: Iterable[Segment]) -> list[tuple[float, float, str]]:
    """Segments with text, as (start, end, text); end never before start."""
    cues = []
    for segment in segments:
        text = " ".join(segment.text.split())
        if text:
            cues.append((segment.start, max(segment.start, segment.end), text))
    return cues


def render_srt(segments: Iterable[Segment]) -> str:
    blocks = [
        f"{index}\n{srt_timestamp(start)} --> {srt_timestamp(end)}\n{text}\n"
        for index, (start, end, text) in enumerate(_cues(segments), start=1)
    ]
    return "\n".join(blocks)


def render_vtt(segments: Iterable[Segment]) -> str:
    blocks = [
        f"{vtt_timestamp(start)} --> {vtt_timestamp(end)}\n{text}\n"
        for start, end, text in _cues(segments)
    ]
    return "\n".join(["WEBVTT\n", *blocks])


def render_txt(segments: Iterable[Segment]) -> str:
    lines = [text for _, _, text in _cues(segments)]
    return "\n".join(lines) + "\n" if lines else ""


RENDERERS = {"srt": render_srt, "vtt": render_vtt, "txt": render_txt}
CONTENT_TYPES = {
    "srt": "application/x-subrip; charset=utf-8",
    "vtt": "text/vtt; charset=utf-8",
    "txt": "text/plain; charset=utf-8",
    "json": "application/json",
}
