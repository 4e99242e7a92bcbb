"""What a review page reads of a result JSON, leniently (:class:`CallView`: the fields
the pages show, others ignored, so results of any worker version are shown), and the
timings it draws: turns, each speaker's talk, overlap and silence as intervals, and the QA
rules' categories with their evidence.

What redaction removed is never in a result: the text holds ``[TYPE]`` tags, and
``redactions`` says where, never the value (:class:`ReviewRedaction` reads nothing else).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from whisperq.schemas import ConversationMetrics
from whisperq.transcripts import conversation


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")


class ReviewWord(_Lenient):
    start: float
    end: float
    word: str
    speaker: str | None = None


class ReviewSegment(_Lenient):
    start: float
    end: float
    text: str
    speaker: str | None = None
    language: str | None = None
    words: list[ReviewWord] | None = None


class ReviewRedaction(_Lenient):
    """Where a value was removed, and its type: nothing else is read."""

    type: str
    start: float
    end: float
    speaker: str | None = None


class ReviewLanguage(_Lenient):
    language: str
    seconds: float = 0.0
    share: float = 0.0


class ReviewChannel(_Lenient):
    channel: int
    speaker: str
    language: str | None = None
    language_probability: float | None = None


class CallView(_Lenient):
    """What a review page shows of a result JSON (``whisperq.schemas.TranscriptResult``)."""

    path: str
    duration: float
    language: str | None = None
    language_probability: float | None = None
    channel_mode: str | None = None
    channels: list[ReviewChannel] | None = None
    languages: list[ReviewLanguage] | None = None
    model: dict[str, Any] | None = None
    options: dict[str, Any] = {}
    segments: list[ReviewSegment] = []
    redactions: list[ReviewRedaction] | None = None
    metrics: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None
    metadata_problems: list[str] | None = None
    categories: Any = None
    finished_at: str | None = None

    def conversation(self) -> ConversationMetrics:
        """The stored metrics; computed from the segments when absent (or of a shape this
        version does not know), as ``whisperq report`` does."""
        if self.metrics is not None:
            try:
                return ConversationMetrics.model_validate(self.metrics)
            except ValidationError:
                pass
        labels = [channel.speaker for channel in self.channels or ()]
        return conversation.conversation_metrics(self.segments, self.duration, speakers=labels)

    @property
    def category_names(self) -> list[str]:
        return category_names(self.categories)

    @property
    def language_codes(self) -> list[str]:
        """The call's languages, the largest share first."""
        found = [item.language for item in self.languages or ()]
        found += [c.language for c in self.channels or () if c.language]
        if self.language:
            found.append(self.language)
        return list(dict.fromkeys(found))

    def text(self) -> str:
        """The transcript's words, whitespace squeezed (for the index's search)."""
        return " ".join(" ".join(segment.text.split()) for segment in self.segments).strip()


Evidence = list[dict[str, Any]]


def category_entries(categories: Any) -> list[tuple[str, Evidence]]:
    """(name, evidence) per category a result holds: QA rules write a list of
    ``{"rule": name, "evidence": [...]}`` (``whisperq.transcripts.categories``); a list of
    names, of objects with a ``name``, or an object name -> matched are read too."""
    found: dict[str, Evidence] = {}
    if isinstance(categories, dict):
        for name, hit in categories.items():
            if hit:
                found.setdefault(str(name), _evidence(hit))
    elif isinstance(categories, list):
        for item in categories:
            if isinstance(item, dict):
                name = next(
                    (item[k] for k in ("rule", "name", "category", "label") if k in item), None
                )
                if name is not None and item.get("matched", True):
                    found.setdefault(str(name), _evidence(item.get("evidence")))
            elif item is not None:
                found.setdefault(str(item), [])
    return list(found.items())


def _evidence(value: Any) -> Evidence:
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def category_names(categories: Any) -> list[str]:
    return [name for name, _ in category_entries(categories)]


# --- turns and intervals -------------------------------------------------------------------


@dataclass
class Turn:
    """A run of segments of one speaker, in order of start."""

    speaker: str | None
    start: float
    end: float
    segments: list[ReviewSegment] = field(default_factory=list)


def turns(segments: Sequence[ReviewSegment]) -> list[Turn]:
    found: list[Turn] = []
    for segment in sorted(segments, key=lambda s: (s.start, s.end)):
        if not segment.text.strip() and not segment.words:
            continue
        if found and found[-1].speaker == segment.speaker:
            found[-1].segments.append(segment)
            found[-1].end = max(found[-1].end, segment.end)
        else:
            found.append(Turn(segment.speaker, segment.start, segment.end, [segment]))
    return found


Interval = tuple[float, float]


def union(intervals: Iterable[Interval], gap: float = 0.0) -> list[Interval]:
    """Sorted disjoint intervals covering ``intervals``; those under ``gap`` apart joined."""
    merged: list[Interval] = []
    for start, end in sorted(intervals):
        if merged and (start <= merged[-1][1] or start - merged[-1][1] < gap):
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def talk_lanes(
    segments: Sequence[ReviewSegment], duration: float
) -> dict[str | None, list[Interval]]:
    """Each speaker's talk as intervals: words merged across pauses under
    ``conversation.UTTERANCE_GAP_S`` when every segment has words, else the segments (the
    metrics' bases)."""
    by_words = bool(segments) and all(segment.words for segment in segments)
    pieces: dict[str | None, list[Interval]] = {}
    for segment in segments:
        if by_words:
            for word in segment.words or ():
                who = word.speaker if word.speaker is not None else segment.speaker
                pieces.setdefault(who, []).append(clamp(word.start, word.end, duration))
        else:
            pieces.setdefault(segment.speaker, []).append(
                clamp(segment.start, segment.end, duration)
            )
    return {
        who: [(s, e) for s, e in union(spans, conversation.UTTERANCE_GAP_S) if e > s]
        for who, spans in pieces.items()
    }


def clamp(start: float, end: float, duration: float) -> Interval:
    start = min(max(start, 0.0), duration)
    return start, min(max(end, start), duration)


def overlaps(lanes: dict[str | None, list[Interval]]) -> list[Interval]:
    """Where two or more lanes have talk at once."""
    events = sorted(
        [(s, 1) for spans in lanes.values() for s, _ in spans]
        + [(e, -1) for spans in lanes.values() for _, e in spans]
    )
    found: list[Interval] = []
    speaking, since = 0, 0.0
    for time, step in events:
        if speaking >= 2 and time > since:
            found.append((since, time))
        speaking += step
        since = time
    return union(found)


def silences(lanes: dict[str | None, list[Interval]], duration: float) -> list[Interval]:
    """Where nobody talks, within [0, duration]."""
    gaps: list[Interval] = []
    cursor = 0.0
    for start, end in union(span for spans in lanes.values() for span in spans):
        if start > cursor:
            gaps.append((cursor, start))
        cursor = max(cursor, end)
    if duration > cursor:
        gaps.append((cursor, duration))
    return gaps
