"""A batch's language, learned by a worker process from the batch's first short files,
so that a batch submitted without ``--language`` can still pack its short files (issue 29).

One packed window is decoded in one language. With no language given, the language of
each of the first ``VOTES`` files of a batch that could be packed is detected alone (one
encoder pass, nothing decoded); once two agree (a majority of the first three), the
process has *learned* the batch's language and packs the batch's short files -- those
that voted too -- with it forced. Each packed file's share is then checked for being in
another language (``in_another_language``): such a file's language is detected alone,
and the file decoded alone in it when it is another. A batch where more than one packed
file in four turns out to be in another language (``too_mixed``) stops packing in this
process: a truly mixed batch runs as it did before (each file alone, its language
detected).

What a process knows is kept per batch (``BatchLanguages``), in memory, for the last
``KEPT_BATCHES`` batches: another process, or this one after a restart, learns again
from the files it meets. Pure logic here; the engine decodes (``engine.transcribe_packed``).
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from whisperq.schemas import Segment

# Files whose language is detected alone before a batch's language is known: a language
# two of the first three are said in is the batch's (two agreeing settle it early).
VOTES = 3
# A packed share decoded in the learned language whose words Whisper is this unsure of
# (mean log probability of its words) may be in another language. Measured (base model,
# espeak-ng English and German, real English clips): it flags 51 of 53 shares in the
# wrong language, and 7 of 216 espeak English shares and 12 of 66 real English ones that
# were right (their language is then detected alone, and their shares stand).
WRONG_LANGUAGE_LOG_PROB = -0.6
# Packing stops for a batch once more than this share of its packed files were in
# another language than the one learned: over a quarter, each such file costs its packed
# share and a decode alone, and the vote that learned the language was likely luck.
MAX_OTHER_LANGUAGE_SHARE = 0.25
# ... judged on at least this many packed files (one German voicemail among the first
# three English ones must not stop a batch).
MIN_FILES_JUDGED = 8
# Batches a process remembers (a few hundred bytes each); the oldest is forgotten first.
KEPT_BATCHES = 256

# How a transcript's language was decided (its options["language_source"]).
GIVEN = "given"  # the batch's --language, or the only language of an English-only model
DETECTED = "detected"  # the file decoded alone, in the language Whisper detected in it
LEARNED = "learned"  # packed in the language learned from the batch's first files


def vote(languages: Sequence[str], votes: int = VOTES) -> str | None:
    """The language said in a majority of the first ``votes`` files, once it is certain:
    None while no language has one (yet)."""
    counted = Counter(languages[:votes]).most_common(1)
    if counted and counted[0][1] > votes // 2:
        return counted[0][0]
    return None


def undecidable(languages: Sequence[str], votes: int = VOTES) -> bool:
    """Whether the first ``votes`` files cannot give a majority any more: all were
    decoded and no language has one (three files, three languages)."""
    return len(languages) >= votes and vote(languages, votes) is None


def too_mixed(other: int, judged: int) -> bool:
    """Whether a batch with ``other`` of its ``judged`` packed files in another language
    than the one learned is too mixed to pack (``MAX_OTHER_LANGUAGE_SHARE``)."""
    return judged >= MIN_FILES_JUDGED and other > MAX_OTHER_LANGUAGE_SHARE * judged


def mean_word_log_probability(segments: Sequence[Segment]) -> float | None:
    """The mean log probability of the words of one file's share; None without words."""
    chances = [word.probability for segment in segments for word in segment.words or []]
    if not chances:
        return None
    return float(np.mean(np.log(np.maximum(chances, 1e-6))))


def in_another_language(segments: Sequence[Segment]) -> bool:
    """Whether a share decoded in the learned language may be in another one: Whisper is
    unsure of its words (``WRONG_LANGUAGE_LOG_PROB``). A share with no words is judged by
    the other checks (an empty share is decoded alone anyway)."""
    mean = mean_word_log_probability(segments)
    return mean is not None and mean < WRONG_LANGUAGE_LOG_PROB


@dataclass
class BatchLanguage:
    """What one worker process knows of one batch's language."""

    votes: list[str] = field(default_factory=list)  # languages detected alone, in order
    language: str | None = None  # learned: its short files are packed in it
    judged: int = 0  # files packed (or outvoted) since the language was learned
    other: int = 0  # of those, found in another language
    stopped: str | None = None  # why this batch is no longer packed here

    @property
    def learning(self) -> bool:
        """Still to detect files' languages alone, before packing."""
        return self.language is None and self.stopped is None

    @property
    def packs(self) -> bool:
        return self.stopped is None

    def add_vote(self, language: str) -> None:
        """A file of the batch was found, alone, to be in ``language``."""
        if not self.learning:
            return
        self.votes.append(language)
        self.language = vote(self.votes)
        if undecidable(self.votes):
            self.stop(f"no language in a majority of its first {VOTES} files ({self.votes})")

    def add_packed(self, language: str) -> None:
        """A packed file turned out to be in ``language`` (the learned one unless it
        was found in another)."""
        if self.language is None or self.stopped is not None:
            return
        self.judged += 1
        self.other += language != self.language
        if too_mixed(self.other, self.judged):
            self.stop(f"{self.other} of {self.judged} packed files were not in {self.language}")

    def stop(self, reason: str) -> None:
        self.stopped = reason


class BatchLanguages:
    """The batches' languages as one process learns them, the latest ``kept`` batches."""

    def __init__(self, kept: int = KEPT_BATCHES) -> None:
        self.kept = kept
        self._batches: OrderedDict[str, BatchLanguage] = OrderedDict()

    def __len__(self) -> int:
        return len(self._batches)

    def for_batch(self, batch: str) -> BatchLanguage:
        """The batch's (a new one the first time), now the most recently used."""
        known = self._batches.pop(batch, None) or BatchLanguage()
        self._batches[batch] = known
        while len(self._batches) > self.kept:
            self._batches.popitem(last=False)
        return known
