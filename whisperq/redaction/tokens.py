"""The transcript as tokens: one :class:`Token` per word, with its times and where it came
from (segment, word or character span) so that it can be rewritten.

A segment with words gives one token per word, with their timings; otherwise its text is
split on whitespace and each token's times are interpolated by character position (see
:func:`tokenize`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from whisperq.schemas import Segment


@dataclass(frozen=True)
class Token:
    """One word of the transcript, with where it came from so it can be rewritten."""

    text: str
    start: float
    end: float
    speaker: str | None
    channel: int | None
    segment: int  # index in the segments given
    word: int | None  # index in segment.words; None when split from the text
    char_start: int = 0  # span in segment.text when split from it
    char_end: int = 0

    @property
    def stream(self) -> tuple[str | None, int | None]:
        return (self.speaker, self.channel)


def tokenize(segments: Sequence[Segment]) -> list[Token]:
    """Tokens of every segment in order: its words, or its text split on whitespace with
    times interpolated across the segment by character position."""
    tokens: list[Token] = []
    for index, segment in enumerate(segments):
        if segment.words:
            for w, word in enumerate(segment.words):
                if word.word.strip():
                    tokens.append(
                        Token(
                            word.word.strip(),
                            word.start,
                            word.end,
                            segment.speaker if segment.speaker is not None else word.speaker,
                            segment.channel if segment.channel is not None else word.channel,
                            index,
                            w,
                        )
                    )
            continue
        text = segment.text
        length = max(1, len(text))
        span = max(0.0, segment.end - segment.start)
        for match in re.finditer(r"\S+", text):
            tokens.append(
                Token(
                    match.group(),
                    segment.start + span * match.start() / length,
                    segment.start + span * match.end() / length,
                    segment.speaker,
                    segment.channel,
                    index,
                    None,
                    match.start(),
                    match.end(),
                )
            )
    return tokens


_EDGE_PUNCT = "\"'\u201c\u201d\u2018\u2019()[]{}<>,.;:!?\u00a1\u00bf\u2026\u2014\u2013*"


def core(text: str) -> str:
    """The token without surrounding punctuation (internal ``-./@`` kept)."""
    return text.strip(_EDGE_PUNCT)


def word_set(text: str) -> frozenset[str]:
    """The whitespace-separated words of ``text``: how the word lists are written."""
    return frozenset(text.split())
