"""Redacted copies of segments: :func:`redact` runs the detectors over the whole
transcript, rewrites text and words with ``[TYPE]`` tags, and lists what was redacted
(:class:`Redaction`: type, times, speaker, channel), never the values.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import TypedDict

from whisperq.redaction.detection import Entity, detect
from whisperq.redaction.tokens import Token, tokenize
from whisperq.schemas import Segment, Word
from whisperq.vocabulary import PRIORITY, expand_groups


class Redaction(TypedDict):
    """One redacted value: where and what kind, never the value."""

    type: str
    start: float
    end: float
    speaker: str | None
    channel: int | None


def _assign(entities: Sequence[Entity]) -> dict[int, int]:
    """Token -> entity index; where entities overlap, the higher-priority type wins."""
    order = sorted(
        range(len(entities)),
        key=lambda e: (
            PRIORITY.index(entities[e].type) if entities[e].type in PRIORITY else len(PRIORITY),
            entities[e].tokens[0],
        ),
    )
    owner: dict[int, int] = {}
    for e in order:
        for token in entities[e].tokens:
            owner.setdefault(token, e)
    return owner


def _tag(kind: str) -> str:
    return f"[{kind}]"


def _leading_space(text: str) -> str:
    return text[: len(text) - len(text.lstrip())]


def _rewrite_words(segment: Segment, owner: Mapping[int, tuple[int, str]]) -> Segment:
    """``owner``: word index -> (entity, type). Each redacted word becomes the tag, its
    timing kept; the text is rebuilt from the words with one tag per entity run."""
    assert segment.words is not None
    words: list[Word] = []
    pieces: list[str] = []
    previous: int | None = None
    for w, word in enumerate(segment.words):
        hit = owner.get(w)
        if hit is None:
            words.append(word)
            pieces.append(word.word)
            previous = None
            continue
        entity, kind = hit
        tagged = _leading_space(word.word) + _tag(kind)
        words.append(word.model_copy(update={"word": tagged}))
        if entity != previous:
            pieces.append(tagged)
        previous = entity
    # Words come stripped from the engine (faster-whisper's own carry a leading space).
    text = _leading_space(segment.text) + " ".join(piece.strip() for piece in pieces)
    return segment.model_copy(update={"words": words, "text": text})


def _rewrite_text(segment: Segment, owner: Sequence[tuple[Token, int, str]]) -> Segment:
    """Words-less segment: the redacted tokens' characters replaced, one tag per entity
    run (the spaces between its tokens go too)."""
    text = segment.text
    runs: list[tuple[int, int, str]] = []
    previous: int | None = None
    for token, entity, kind in sorted(owner, key=lambda item: item[0].char_start):
        if runs and entity == previous:
            a, _, k = runs[-1]
            runs[-1] = (a, token.char_end, k)
        else:
            runs.append((token.char_start, token.char_end, kind))
        previous = entity
    for a, b, kind in reversed(runs):
        text = text[:a] + _tag(kind) + text[b:]
    return segment.model_copy(update={"text": text})


def _same_text(segment: Segment) -> bool:
    assert segment.words is not None
    return " ".join(w.word for w in segment.words).split() == segment.text.split()


def redact(
    segments: Sequence[Segment],
    groups: Iterable[str],
    user_patterns: Mapping[str, re.Pattern[str] | str] | None = None,
) -> tuple[list[Segment], list[Redaction]]:
    """Redacted copies of ``segments`` and the list of what was redacted.

    ``groups``: ``pci``, ``pii`` and/or type names (:func:`expand_groups`); user patterns are
    applied whenever given. Detection runs over the whole transcript, one stream per
    speaker/channel (see :mod:`whisperq.redaction`). In each segment, consecutive tokens of
    one entity become one ``[TYPE]`` tag in the text, and every redacted word's ``word``
    becomes the tag with its timing kept. A segment with words whose text differs from its
    words gets its text rebuilt from the words, so the text never keeps what the words
    lost. The input is not modified.
    """
    types = expand_groups(groups)
    tokens = tokenize(segments)
    entities = detect(tokens, types, user_patterns)
    owner = _assign(entities)
    by_segment: dict[int, list[tuple[Token, int, str]]] = {}
    kept: dict[int, list[int]] = {}
    for token_index, entity in owner.items():
        token = tokens[token_index]
        by_segment.setdefault(token.segment, []).append((token, entity, entities[entity].type))
        kept.setdefault(entity, []).append(token_index)
    result: list[Segment] = []
    for index, segment in enumerate(segments):
        hits = by_segment.get(index, [])
        if segment.words:
            if hits or not _same_text(segment):
                words_owner = {t.word: (e, k) for t, e, k in hits if t.word is not None}
                segment = _rewrite_words(segment, words_owner)
        elif hits:
            segment = _rewrite_text(segment, hits)
        result.append(segment)
    redactions: list[Redaction] = []
    for entity, token_ids in kept.items():
        first = tokens[min(token_ids)]
        redactions.append(
            Redaction(
                type=entities[entity].type,
                start=min(tokens[t].start for t in token_ids),
                end=max(tokens[t].end for t in token_ids),
                speaker=first.speaker,
                channel=first.channel,
            )
        )
    redactions.sort(key=lambda r: (r["start"], r["end"], r["type"]))
    return result, redactions
