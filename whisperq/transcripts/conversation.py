"""Conversation metrics of one call, and of a batch of calls, from a transcript's timings.

What call-centre supervisors read before any transcript line (AWS Transcribe Call
Analytics reports the same kind of figures): who talked how long, how much of the call was
silence, who cut in on whom, how fast each side spoke, how often the floor changed hands.

Everything here is computed from the timings in a result: the words' when every segment
has word timings (``basis = "words"``), else the segments' (``basis = "segments"``: coarser,
a segment spans its pauses). Speakers are the segments' and words' ``speaker`` labels (set
when the channels of a stereo call are transcribed separately); a transcript without
labels has one entry, ``speaker = None``, and no interruptions or turns (who spoke is
not known).

Definitions (all times in seconds, clamped to ``[0, duration]``):

- **utterance**: a speaker's words (or segments), merged while the gap between one and
  the next of the same speaker is under :data:`UTTERANCE_GAP_S`;
- **talk time** of a speaker: the length of the union of their utterances; of the call:
  the length of the union of everyone's (time anyone speaks);
- **non-talk time**: ``duration - talk time``: silence on all channels, lead-in and tail
  included; **longest silence**: the longest stretch of it, with where it starts;
- **overlap time**: the time two or more speakers speak at once;
- **interruption**: an utterance of B that starts at ``t`` while an utterance of another
  speaker A has ``start < t`` and ``end > t + TOLERANCE_S``; counted once per utterance of
  B, for B (the one who cut in), however many others were speaking;
- **turn**: a maximal run of utterances of one speaker, utterances taken in order of
  their start: the call's turns are 1 + the number of changes of speaker (0 without
  speech); a speaker's turns are the runs that are theirs;
- **words per minute**: the speaker's words over their talk time in minutes.

The result fields (``ConversationMetrics``) are in ``whisperq.schemas``; the worker and
the CLI both import this module.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final, Protocol

from pydantic import BaseModel, ConfigDict, Field

from whisperq.schemas import Basis, ConversationMetrics, Silence, SpeakerMetrics

# Pauses inside a sentence (a breath, a hesitation, a comma) are mostly shorter than half
# a second, and Whisper's word boundaries are themselves only good to a tenth or two of a
# second, so a smaller gap would cut one utterance in pieces on timing noise (each piece
# could then count as an interruption or a turn); a longer one would join a speaker's
# separate turns across a pause the other side could take the floor in.
UTTERANCE_GAP_S: Final = 0.5
# Overlaps up to this long are ordinary turn-taking, not cutting in: a reply that starts a
# moment before the other side's last word ends, plus the word timings' own jitter.
TOLERANCE_S: Final = 0.3
# The CSV columns' prefix for speech without a speaker label (mono calls).
NO_SPEAKER_LABEL: Final = "unlabelled"


class WordLike(Protocol):
    """What the metrics read from a word (whisperq.schemas.Word has it)."""

    @property
    def start(self) -> float: ...
    @property
    def end(self) -> float: ...
    @property
    def word(self) -> str: ...
    @property
    def speaker(self) -> str | None: ...


class SegmentLike(Protocol):
    """What the metrics read from a segment (whisperq.schemas.Segment has it)."""

    @property
    def start(self) -> float: ...
    @property
    def end(self) -> float: ...
    @property
    def text(self) -> str: ...
    @property
    def speaker(self) -> str | None: ...
    @property
    def words(self) -> Sequence[WordLike] | None: ...


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class _Piece:
    """One timed unit: a word, or a segment on the segments basis."""

    speaker: str | None
    start: float
    end: float
    words: int


@dataclass(frozen=True)
class _Utterance:
    speaker: str | None
    start: float
    end: float


Interval = tuple[float, float]


def conversation_metrics(
    segments: Sequence[SegmentLike], duration: float, *, speakers: Sequence[str] = ()
) -> ConversationMetrics:
    """The metrics of one transcript of ``duration`` seconds.

    ``speakers``: labels the call is known to have (its channels' speakers), listed even
    when they said nothing; the others are found in the segments and words.
    """
    duration = max(0.0, duration)
    basis, pieces = _pieces(segments, duration)
    labels = list(dict.fromkeys([*(p.speaker for p in pieces), *speakers]))
    labelled = any(label is not None for label in labels)
    if not labels:
        labels = [None]
    utterances = _utterances(pieces)
    union = _union((u.start, u.end) for u in utterances)
    talk = _length(union)
    gaps = _gaps(union, duration)
    longest = max(gaps, key=lambda gap: gap[1] - gap[0], default=None)
    runs = _turns(utterances)
    cut_in = _interruptions(utterances)
    per_speaker = []
    for label in labels:
        own = _length(_union((u.start, u.end) for u in utterances if u.speaker == label))
        words = sum(p.words for p in pieces if p.speaker == label)
        per_speaker.append(
            SpeakerMetrics(
                speaker=label,
                talk_time=round(own, 3),
                talk_share=round(own / duration, 4) if duration else 0.0,
                words=words,
                words_per_minute=round(words / (own / 60), 1) if own > 0 else None,
                interruptions=cut_in.count(label) if labelled else None,
                turns=runs.count(label) if labelled else None,
            )
        )
    return ConversationMetrics(
        basis=basis,
        duration=round(duration, 3),
        talk_time=round(talk, 3),
        non_talk_time=round(duration - talk, 3),
        overlap_time=round(_overlap(utterances), 3),
        longest_silence=None
        if longest is None
        else Silence(
            start=round(longest[0], 3),
            end=round(longest[1], 3),
            seconds=round(longest[1] - longest[0], 3),
        ),
        turns=len(runs) if labelled else None,
        speakers=per_speaker,
    )


def _pieces(segments: Sequence[SegmentLike], duration: float) -> tuple[Basis, list[_Piece]]:
    """The timed units, clamped to [0, duration], in the transcript's order."""

    def clamp(start: float, end: float) -> Interval:
        start = min(max(start, 0.0), duration)
        return start, min(max(end, start), duration)

    if segments and all(segment.words for segment in segments):
        pieces = []
        for segment in segments:
            for word in segment.words or ():
                speaker = word.speaker if word.speaker is not None else segment.speaker
                start, end = clamp(word.start, word.end)
                pieces.append(_Piece(speaker, start, end, 1 if word.word.strip() else 0))
        return "words", pieces
    return "segments", [
        _Piece(segment.speaker, *clamp(segment.start, segment.end), len(segment.text.split()))
        for segment in segments
    ]


def _utterances(pieces: Iterable[_Piece]) -> list[_Utterance]:
    """Each speaker's pieces merged across gaps under UTTERANCE_GAP_S, sorted by start
    (pieces of no length are left out: they count as words, never as speech)."""
    by_speaker: dict[str | None, list[Interval]] = {}
    for piece in pieces:
        if piece.end > piece.start:
            by_speaker.setdefault(piece.speaker, []).append((piece.start, piece.end))
    found: list[_Utterance] = []
    for speaker, intervals in by_speaker.items():
        merged = _union(intervals, gap=UTTERANCE_GAP_S)
        found.extend(_Utterance(speaker, start, end) for start, end in merged)
    return sorted(found, key=lambda u: (u.start, u.end))


def _union(intervals: Iterable[Interval], gap: float = 0.0) -> list[Interval]:
    """Sorted, disjoint intervals covering ``intervals``; ones less than ``gap`` apart
    are joined (with gap 0, touching ones are)."""
    merged: list[Interval] = []
    for start, end in sorted(intervals):
        if merged and (start <= merged[-1][1] or start - merged[-1][1] < gap):
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def _length(intervals: Iterable[Interval]) -> float:
    return sum(end - start for start, end in intervals)


def _gaps(union: Sequence[Interval], duration: float) -> list[Interval]:
    """The silences around and between ``union``'s intervals within [0, duration]."""
    gaps = []
    cursor = 0.0
    for start, end in union:
        if start > cursor:
            gaps.append((cursor, start))
        cursor = max(cursor, end)
    if duration > cursor:
        gaps.append((cursor, duration))
    return gaps


def _turns(utterances: Sequence[_Utterance]) -> list[str | None]:
    """The speaker of each turn, in order: a new turn at each change of speaker."""
    runs: list[str | None] = []
    for utterance in utterances:
        if not runs or runs[-1] != utterance.speaker:
            runs.append(utterance.speaker)
    return runs


def _interruptions(utterances: Sequence[_Utterance]) -> list[str | None]:
    """The speaker of each utterance that is an interruption (see the module docstring).

    One sweep in start order, keeping per speaker the latest end of their utterances that
    started strictly earlier (utterances that start together interrupt neither way)."""
    latest_end: dict[str | None, float] = {}
    found: list[str | None] = []
    index = 0
    while index < len(utterances):
        start = utterances[index].start
        stop = index
        while stop < len(utterances) and utterances[stop].start == start:
            stop += 1
        same_start = utterances[index:stop]
        for utterance in same_start:
            others = [end for who, end in latest_end.items() if who != utterance.speaker]
            if others and max(others) > start + TOLERANCE_S:
                found.append(utterance.speaker)
        for utterance in same_start:
            previous = latest_end.get(utterance.speaker, utterance.end)
            latest_end[utterance.speaker] = max(previous, utterance.end)
        index = stop
    return found


def _overlap(utterances: Sequence[_Utterance]) -> float:
    """Seconds two or more speakers speak at once (a speaker's own utterances never
    overlap: they are merged)."""
    events = sorted(
        [(u.start, 1) for u in utterances] + [(u.end, -1) for u in utterances],
        key=lambda event: (event[0], event[1]),  # ends before starts at the same instant
    )
    total, speaking, since = 0.0, 0, 0.0
    for time, step in events:
        if speaking >= 2:
            total += time - since
        speaking += step
        since = time
    return total


# --- a batch ----------------------------------------------------------------------------


class SpeakerTotals(_Strict):
    speaker: str | None
    calls: int = Field(description="Calls the label appears in.")
    talk_time: float
    words: int
    words_per_minute: float | None
    interruptions: int | None = Field(description="None when never counted (no labels).")


class CallSilence(_Strict):
    path: str
    seconds: float
    start: float


class CallInterruptions(_Strict):
    path: str
    interruptions: int
    by_speaker: dict[str, int]


class BatchConversation(_Strict):
    """A batch's figures: totals over its calls, and the calls to listen to first."""

    calls: int
    audio_seconds: float
    talk_time: float
    non_talk_time: float
    overlap_time: float
    interruptions: int
    speakers: list[SpeakerTotals] = Field(description="Per label, by first appearance.")
    longest_silences: list[CallSilence] = Field(description="The top N, longest first.")
    most_interruptions: list[CallInterruptions] = Field(
        description="The top N with at least one, most first."
    )


CallMetrics = tuple[str, ConversationMetrics]


def batch_labels(calls: Sequence[CallMetrics]) -> list[str | None]:
    """Every speaker label of the batch, by first appearance (calls in the given order,
    each call's speakers in its own order)."""
    return list(dict.fromkeys(s.speaker for _, metrics in calls for s in metrics.speakers))


def batch_conversation(calls: Sequence[CallMetrics], top: int = 10) -> BatchConversation:
    """Totals over ``calls`` (path, metrics) and the ``top`` calls with the longest
    silences and with the most interruptions (ties: by path)."""
    speakers = []
    for label in batch_labels(calls):
        entries = [s for _, m in calls for s in m.speakers if s.speaker == label]
        talk = sum(s.talk_time for s in entries)
        words = sum(s.words for s in entries)
        counted = [s.interruptions for s in entries if s.interruptions is not None]
        speakers.append(
            SpeakerTotals(
                speaker=label,
                calls=len(entries),
                talk_time=round(talk, 3),
                words=words,
                words_per_minute=round(words / (talk / 60), 1) if talk > 0 else None,
                interruptions=sum(counted) if counted else None,
            )
        )
    silences = sorted(
        (
            CallSilence(path=path, seconds=m.longest_silence.seconds, start=m.longest_silence.start)
            for path, m in calls
            if m.longest_silence is not None
        ),
        key=lambda item: (-item.seconds, item.path),
    )
    interrupted = sorted(
        (
            CallInterruptions(path=path, interruptions=sum(counts.values()), by_speaker=counts)
            for path, counts in ((path, _interruptions_by_speaker(m)) for path, m in calls)
            if sum(counts.values()) > 0
        ),
        key=lambda item: (-item.interruptions, item.path),
    )
    return BatchConversation(
        calls=len(calls),
        audio_seconds=round(sum(m.duration for _, m in calls), 3),
        talk_time=round(sum(m.talk_time for _, m in calls), 3),
        non_talk_time=round(sum(m.non_talk_time for _, m in calls), 3),
        overlap_time=round(sum(m.overlap_time for _, m in calls), 3),
        interruptions=sum(s.interruptions or 0 for s in speakers),
        speakers=speakers,
        longest_silences=silences[:top],
        most_interruptions=interrupted[:top],
    )


def _interruptions_by_speaker(metrics: ConversationMetrics) -> dict[str, int]:
    return {
        s.speaker: s.interruptions
        for s in metrics.speakers
        if s.speaker is not None and s.interruptions is not None
    }


CsvValue = str | int | float | None


def csv_rows(calls: Sequence[CallMetrics]) -> list[list[CsvValue]]:
    """A header row, then one row per call (in the given order), for a spreadsheet.

    Columns, seconds rounded to 3 decimals (an empty cell: not applicable):

    - ``path``: the file's path in the batch; ``duration_s``; ``basis`` (words/segments);
    - ``talk_time_s``, ``non_talk_time_s``, ``overlap_time_s``;
    - ``longest_silence_s`` and ``longest_silence_start_s`` (empty: no silence);
    - ``turns`` and ``interruptions`` (the call's, all speakers; empty without labels);
    - then for each speaker label of the batch, by first appearance across it (speech
      without a label is ``unlabelled``): ``<label>_talk_s``, ``<label>_share`` (of the
      duration, 4 decimals), ``<label>_wpm`` (words per minute, 1 decimal),
      ``<label>_interruptions`` (the times that speaker cut in); all empty for a call the
      label does not appear in.
    """
    labels = batch_labels(calls)
    header: list[CsvValue] = [
        "path",
        "duration_s",
        "basis",
        "talk_time_s",
        "non_talk_time_s",
        "overlap_time_s",
        "longest_silence_s",
        "longest_silence_start_s",
        "turns",
        "interruptions",
    ]
    for label in labels:
        name = NO_SPEAKER_LABEL if label is None else label
        header += [f"{name}_talk_s", f"{name}_share", f"{name}_wpm", f"{name}_interruptions"]
    rows = [header]
    for path, m in calls:
        silence = m.longest_silence
        counts = [s.interruptions for s in m.speakers if s.interruptions is not None]
        row: list[CsvValue] = [
            path,
            m.duration,
            m.basis,
            m.talk_time,
            m.non_talk_time,
            m.overlap_time,
            silence.seconds if silence else None,
            silence.start if silence else None,
            m.turns,
            sum(counts) if m.turns is not None else None,
        ]
        own = {s.speaker: s for s in m.speakers}
        for label in labels:
            entry = own.get(label)
            if entry is None:
                row += [None] * 4
            else:
                row += [
                    entry.talk_time,
                    entry.talk_share,
                    entry.words_per_minute,
                    entry.interruptions,
                ]
        rows.append(row)
    return rows
