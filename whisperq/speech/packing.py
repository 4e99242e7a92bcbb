"""Short recordings share Whisper's 30-second window: where each file goes, and how the
transcript of a shared window is split back into each file's own.

Whisper's encoder always reads 30 s of audio: a 3 s voicemail costs what 30 s costs. Laid
end to end with a second of silence between them, several short files go through the
encoder once (benchmarks/real_speech.py, system ``packed``: BENCHMARKS.md). Pure logic
here; the engine decodes the packed audio (``engine.transcribe_packed``).

Which file a word was said in is decided by its timing and, where Whisper's alignment
stretched it across a gap, by where the sound is (``owner``). Where that is in doubt --
a word with no time of its own or none in any file (``misplaced``), a word run over
several files (``lost``) -- the files it may have been said in are decoded alone; so are
files with too little sound to share a window safely (``MIN_SHARED_SOUND_SECONDS``).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

import numpy as np

from whisperq.schemas import Segment, Word, words_text

SAMPLE_RATE = 16_000
# A packed window stays a second under Whisper's 30 s, so its end is never cut off.
WINDOW_SECONDS = 29.0
# Silence between two files: enough for Whisper to end a segment there (on the real set
# 1 s kept every file's words apart; 2 s packed fewer files for no better accuracy).
GAP_SECONDS = 1.0
# A "word" this long that runs from one file into another is Whisper losing its place:
# tiny.en, on six real clips, wrote the last word of one as "the" from 18.2 s to 26.2 s,
# over two more files, and never transcribed them. (Real words stretched across a gap
# by the alignment measured up to 1.5 s.)
LOST_WORD_SECONDS = 2.0
# What counts as sound when trimming a file's silence (``speech_bounds``): a sample 1/50
# of the file's loudest (-34 dB), kept with a little padding on either side.
SOUND_LEVEL = 0.02
SPEECH_PAD_SECONDS = 0.3
# A file with less sound than this (guard.sound_seconds) is decoded alone, never packed.
# Packed, a file of a word or two is heard as its neighbours: with similar clips side by
# side, tiny.en wrote a neighbour's words over the file's own sound, timed where nothing
# marks them (``misplaced``): "yes" for a cut "No th-" (16 clips of 0.5 s, the case that
# opened issue 27), "Yes, please." for "No thank you" cut to 0.8 s of sound, "one" (from
# "this one Montreal ...") for 1.4 s of a real "Montreal forced aligner". None did with
# 1.5 s or more (benchmarks/privacy.py, BENCHMARKS.md). Alone such a file costs one short
# decode, and calls this short are rare.
MIN_SHARED_SOUND_SECONDS = 1.5
# A word whose start is its end: the alignment found no time for it (tiny.en put the "please"
# that ends one file at a point in the gap before the next; copies of a short phrase came
# back as runs of such words). Whisper's word times are multiples of 0.02 s.
TIMELESS_WORD_SECONDS = 0.01


@dataclass(frozen=True)
class Placement:
    """File ``index`` (of the list given to :func:`plan`) at ``start`` .. ``end`` seconds
    of its packed window: the file's audio from ``offset`` seconds on (the silence before
    its speech is left out), of a file ``file_seconds`` long."""

    index: int
    start: float
    end: float
    offset: float = 0.0
    file_seconds: float | None = None  # None: the whole file is placed

    def overlaps(self, word: Word) -> bool:
        return word.start < self.end and word.end > self.start

    @property
    def duration(self) -> float:
        """The whole file's length."""
        if self.file_seconds is not None:
            return self.file_seconds
        return self.offset + self.end - self.start


def gap_samples(gap: float = GAP_SECONDS) -> int:
    return round(gap * SAMPLE_RATE)


def plan(
    lengths: Sequence[int],
    window: float = WINDOW_SECONDS,
    gap: float = GAP_SECONDS,
    speech: Sequence[tuple[int, int]] | None = None,
    alone: Collection[int] = (),
) -> list[list[Placement]]:
    """Files (``lengths`` in 16 kHz samples) placed into windows of at most ``window``
    seconds, a ``gap`` of silence between neighbours: each file goes into the first
    window with room for it (first fit, in the order given), a file too long to share a
    window gets one of its own, as does each file in ``alone``. ``speech``: per file, the
    samples (first, end) to place (``speech_bounds``); default all. Times are exact sample
    positions, in seconds."""
    limit = round(window * SAMPLE_RATE)
    pause = gap_samples(gap)
    bounds = list(speech) if speech is not None else [(0, length) for length in lengths]
    alone = set(alone)
    windows: list[list[tuple[int, int, int]]] = []  # (index, first sample, end sample)
    shared: list[list[tuple[int, int, int]]] = []  # those others may join
    for index, (first, end) in enumerate(bounds):
        length = end - first
        if index in alone:
            windows.append([(index, 0, length)])
            continue
        for placed in shared:
            start = placed[-1][2] + pause
            if start + length <= limit:
                placed.append((index, start, start + length))
                break
        else:
            windows.append([(index, 0, length)])
            shared.append(windows[-1])
    return [
        [
            Placement(
                index,
                start / SAMPLE_RATE,
                end / SAMPLE_RATE,
                bounds[index][0] / SAMPLE_RATE,
                lengths[index] / SAMPLE_RATE,
            )
            for index, start, end in placed
        ]
        for placed in windows
    ]


def speech_bounds(audio: np.ndarray, pad: float = SPEECH_PAD_SECONDS) -> tuple[int, int]:
    """The samples (first, end) of ``audio`` from its first sound to its last, ``pad``
    seconds wider: the part to place. Silence before and after is left out, so a window
    holds more files and a gap is real silence between two people's words (Whisper's
    alignment put a file's first word 4 s early, in the quiet end of the file before)."""
    level = np.abs(audio)
    # the loudest 0.1% of samples set the scale: one click at full scale does not
    loudest = float(np.percentile(level, 99.9)) if level.size else 0.0
    loud = np.flatnonzero(level >= SOUND_LEVEL * max(loudest, 1e-9))
    if loud.size == 0:
        return 0, len(audio)
    margin = round(pad * SAMPLE_RATE)
    return max(0, int(loud[0]) - margin), min(len(audio), int(loud[-1]) + 1 + margin)


def pack(audios: Sequence[np.ndarray], window: Sequence[Placement]) -> np.ndarray:
    """One window's audio: its files' placed samples at their places, silence between."""
    end = round(window[-1].end * SAMPLE_RATE)
    packed = np.zeros(end, dtype=np.float32)
    for placement in window:
        first = round(placement.start * SAMPLE_RATE)
        skip = round(placement.offset * SAMPLE_RATE)
        length = round(placement.end * SAMPLE_RATE) - first
        packed[first : first + length] = audios[placement.index][skip : skip + length]
    return packed


def sound(audio: np.ndarray, start: float, end: float) -> float:
    """The energy (sum of squares) of ``audio`` between two times."""
    first, last = round(start * SAMPLE_RATE), round(end * SAMPLE_RATE)
    piece = audio[max(first, 0) : max(last, first, 0)]
    return float(np.dot(piece, piece))


def owner(word: Word, window: Sequence[Placement], audio: np.ndarray) -> int:
    """The position in ``window`` of the file ``word`` was said in. Whisper's word
    alignment stretches a word across the silence beside it -- a file's first word can
    begin in the file before, its last end in the file after -- so a word that overlaps
    two files goes to the one where its stretch holds the sound; a word wholly in a gap
    to the nearest file."""
    overlapping = [
        position for position, placement in enumerate(window) if placement.overlaps(word)
    ]
    if not overlapping:

        def distance(position: int) -> float:
            placement = window[position]
            return max(placement.start - word.end, word.start - placement.end, 0.0)

        return min(range(len(window)), key=distance)
    return max(
        overlapping,
        key=lambda position: sound(
            audio,
            max(word.start, window[position].start),
            min(word.end, window[position].end),
        ),
    )


def lost(segments: Sequence[Segment], window: Sequence[Placement]) -> set[int]:
    """Files (indices) whose share of the window cannot be trusted, to be decoded alone:
    those a lost-place word (``LOST_WORD_SECONDS``) runs over."""
    doubtful: set[int] = set()
    for segment in segments:
        for word in segment.words or []:
            if word.end - word.start < LOST_WORD_SECONDS:
                continue
            over = [p.index for p in window if p.overlaps(word)]
            if len(over) > 1:
                doubtful.update(over)
    return doubtful


def misplaced(
    segments: Sequence[Segment],
    window: Sequence[Placement],
    audio: np.ndarray,
    gap: float = GAP_SECONDS,
) -> set[int]:
    """Files (indices) to be decoded alone because a word may have been said in them but
    has no place of its own: a word with no time (``TIMELESS_WORD_SECONDS``) or none in
    any file (wholly in a gap). It may have been said in any file whose sound, with the
    silence around it (the gap and the padding), reaches it, or in any file from the one
    the word before it was said in to the one the word after it was said in (Whisper
    writes words in the order said). Where that is more than one file, all of them are in
    doubt: one may hold a word of another, and the other lack it. ``audio``: the packed
    window (``owner`` of the words around it)."""
    reach = gap + SPEECH_PAD_SECONDS
    spoken = [word for segment in segments for word in segment.words or []]
    placed = [
        word.end - word.start >= TIMELESS_WORD_SECONDS
        and any(placement.overlaps(word) for placement in window)
        for word in spoken
    ]
    owners = [
        owner(word, window, audio) if ok else -1 for word, ok in zip(spoken, placed, strict=True)
    ]
    doubtful: set[int] = set()
    for number, word in enumerate(spoken):
        if placed[number]:
            continue
        near = [
            position
            for position, placement in enumerate(window)
            if placement.start - reach <= word.end and word.start <= placement.end + reach
        ]
        before = [o for o in owners[:number] if o >= 0][-1:]
        after = [o for o in owners[number + 1 :] if o >= 0][:1]
        candidates = near + before + after
        if not candidates:  # no file near, no word placed: the window holds nothing
            continue
        between = range(min(candidates), max(candidates) + 1)
        if len(between) > 1 or not near:  # (not near any file: past the window's end)
            doubtful.update(window[position].index for position in between)
    return doubtful


def neighbours(index: int, window: Sequence[Placement]) -> set[int]:
    """The files placed right before and after file ``index`` in ``window``."""
    order = [placement.index for placement in window]
    position = order.index(index)
    return set(order[max(0, position - 1) : position + 2]) - {index}


def split(
    segments: Sequence[Segment], window: Sequence[Placement], audio: np.ndarray
) -> dict[int, list[Segment]]:
    """The packed window's segments, back in each file's own: file index -> segments, in
    the file's time (0 = its first sample), every word and segment inside the file's
    length. ``audio`` is the packed window (``pack``). A segment whose words come from two
    files becomes one segment in each; no text moves from one file into another, and the
    files' words stay in the order spoken (a word never goes back to a file before the
    one the word before it went to). Segments need their words (the engine decodes packed
    windows with word timings)."""
    split_up: dict[int, list[Segment]] = {placement.index: [] for placement in window}
    latest = 0
    for segment in segments:
        if segment.words is None:
            raise ValueError("a packed window's segments need word timings to be split")
        runs: list[tuple[int, list[Word]]] = []
        for word in segment.words:
            latest = max(latest, owner(word, window, audio))
            if runs and runs[-1][0] == latest:
                runs[-1][1].append(word)
            else:
                runs.append((latest, [word]))
        for position, words in runs:
            placement = window[position]
            split_up[placement.index].append(_in_file_time(segment, words, placement))
    return split_up


def _in_file_time(segment: Segment, words: list[Word], placement: Placement) -> Segment:
    """``words`` of ``segment`` as a segment of the file at ``placement``, in its time."""

    shift = placement.offset - placement.start

    def moved(start: float, end: float) -> dict[str, float]:
        first = min(max(start + shift, 0.0), placement.duration)
        last = min(max(end + shift, first), placement.duration)
        return {"start": round(first, 3), "end": round(last, 3)}

    shifted = [word.model_copy(update=moved(word.start, word.end)) for word in words]
    # Whisper's own text when the segment is all this file's ("cold-hearted": the engine's
    # words lose the spacing between them); rebuilt from the words only when it is cut.
    text = segment.text if len(words) == len(segment.words or []) else words_text(shifted)
    return segment.model_copy(
        update=moved(words[0].start, words[-1].end) | {"text": text, "words": shifted}
    )
