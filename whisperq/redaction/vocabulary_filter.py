"""A vocabulary filter: words that must not appear in stored transcripts (profanity,
competitor names), as AWS Transcribe's vocabulary filters do it, applied after redaction
to the text of every segment and to its words, so every rendering (JSON, SRT, VTT, TXT)
agrees:

- ``mask``: the word becomes ``***`` (its punctuation kept: ``darn,`` -> ``***,``);
- ``remove``: the word goes (and the space before it);
- ``tag``: the word stays, marked: ``[FILTERED:darn]``.

Entries are single words or phrases, matched whole and case-insensitively; timings stay.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from typing import Literal

from whisperq.schemas import Segment, Word

FilterMode = Literal["mask", "remove", "tag"]
MASK = "***"


def pattern(entries: Collection[str]) -> re.Pattern[str]:
    """One regex for every entry, longest first (a phrase before its first word)."""
    alternatives = sorted({" ".join(e.split()) for e in entries if e.strip()}, key=len)[::-1]
    spelled = [r"\s+".join(map(re.escape, entry.split())) for entry in alternatives]
    return re.compile(r"(?<![\w'])(?:" + "|".join(spelled) + r")(?![\w'])", re.IGNORECASE)


def _replace(text: str, found: re.Pattern[str], mode: FilterMode) -> str:
    if mode == "mask":
        return found.sub(lambda m: " ".join(MASK for _ in m.group(0).split()), text)
    if mode == "tag":
        return found.sub(lambda m: f"[FILTERED:{' '.join(m.group(0).split())}]", text)
    removed = re.sub(found.pattern + r"[,;:]?", "", text, flags=found.flags)
    return re.sub(r"\s+([,.;:!?])", r"\1", re.sub(r"\s{2,}", " ", removed)).strip()


def filter_segments(
    segments: Sequence[Segment], entries: Collection[str], mode: FilterMode
) -> tuple[list[Segment], int]:
    """The segments with the entries masked, removed or tagged; how many were found."""
    if not entries:
        return list(segments), 0
    found = pattern(entries)
    hits = 0
    filtered = []
    for segment in segments:
        hits += len(found.findall(segment.text))
        update: dict[str, object] = {"text": _replace(segment.text, found, mode)}
        if segment.words:
            update["words"] = _filter_words(segment.words, found, mode)
        filtered.append(segment.model_copy(update=update))
    return filtered, hits


def _filter_words(words: Sequence[Word], found: re.Pattern[str], mode: FilterMode) -> list[Word]:
    """Matches are found in the words joined (a phrase spans several words): each word a
    match touches is masked, dropped, or (tag) the match's first word carries the tag and
    the match's time, the others go."""
    starts, pieces, at = [], [], 0
    for word in words:
        starts.append(at)
        pieces.append(word.word.strip())
        at += len(pieces[-1]) + 1
    joined = " ".join(pieces)

    def index_of(char: int) -> int:
        return max(i for i, start in enumerate(starts) if start <= char)

    covered: dict[int, tuple[int, int]] = {}  # word -> (first, last) word of its match
    for match in found.finditer(joined):
        first, last = index_of(match.start()), index_of(match.end() - 1)
        for w in range(first, last + 1):
            covered[w] = (first, last)
    kept: list[Word] = []
    for w, word in enumerate(words):
        if w not in covered:
            kept.append(word)
            continue
        first, last = covered[w]
        lead = word.word[: len(word.word) - len(word.word.lstrip())]
        if mode == "mask":
            kept.append(
                word.model_copy(
                    update={
                        "word": lead + _replace(pieces[w], found, mode)
                        if found.search(pieces[w])
                        else lead + MASK
                    }
                )
            )
        elif mode == "tag" and w == first:
            said = " ".join(pieces[first : last + 1])
            update = {"word": lead + _replace(said, found, mode), "end": words[last].end}
            kept.append(word.model_copy(update=update))
        elif mode == "remove" and found.search(pieces[w]):
            rest = found.sub("", pieces[w]).strip()
            if any(ch.isalnum() for ch in rest):
                kept.append(word.model_copy(update={"word": lead + rest}))
    return kept
