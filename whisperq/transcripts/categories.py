"""Rules (``whisperq.qa_rules``) applied to one transcript: which categories a call
falls in, with the evidence (speaker, start, end, the words that matched).

Phrases are matched on normalised words (lower case, punctuation off; redaction tags such
as ``[CARD_NUMBER]`` stay whole, so a rule can match them) and tolerate small recognition
errors: a word of five letters or more matches a heard word that is at least 80% alike
("cancelation" for "cancellation"), and in a phrase of three words or more one word may
be heard wrong -- a short one (three letters or fewer: "my" heard as "by"), or, from four
words on, any one, or be missing, or have one word heard between. All other words must
match, in order. Small numbers match in digits or words ("2" is "two"). A
phrase said by ``speaker`` is looked for in that speaker's words alone (the other side's
"mm-hm" does not break it). ``benchmarks/rules.py`` measures false and missed matches.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from difflib import SequenceMatcher
from typing import Any

from whisperq.qa_rules import MEASURES, Condition, Rule
from whisperq.schemas import ConversationMetrics, Segment, TranscriptResult
from whisperq.transcripts.conversation import conversation_metrics

_TAG = re.compile(r"\[[A-Z_]+\]")
_EDGE = re.compile(r"^[^\w\[]+|[^\w\]]+$")
SIMILAR = 0.8  # how alike a long word must be to count as heard
LONG_WORD = 5
SHORT_WORD = 3


@dataclass(frozen=True)
class Token:
    word: str  # normalised
    heard: str  # as in the transcript
    start: float
    end: float
    speaker: str | None


_NUMBERS = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
    "twenty",
]


def normalise(word: str) -> str:
    """``"Cancel,"`` -> ``cancel``; ``[CARD_NUMBER].`` -> ``[card_number]``; ``2`` ->
    ``two`` (Whisper writes small numbers either way; rules are written in words)."""
    word = word.strip()
    tag = _TAG.search(word)
    if tag:
        return tag.group(0).lower()
    plain = _EDGE.sub("", word.lower()).replace("\u2019", "'")
    if plain.isdigit() and int(plain) < len(_NUMBERS):
        return _NUMBERS[int(plain)]
    return plain


def tokens_of(segments: Sequence[Segment] | Sequence[Any]) -> list[Token]:
    """Every word in transcript order with its time and speaker: the segment's words when
    it has them, else its text split, each word's time interpolated across the segment."""
    tokens: list[Token] = []
    for segment in segments:
        if segment.words:
            for w in segment.words:
                word = normalise(w.word)
                if word:
                    speaker = w.speaker if w.speaker is not None else segment.speaker
                    tokens.append(Token(word, w.word.strip(), w.start, w.end, speaker))
            continue
        pieces = segment.text.split()
        span = (segment.end - segment.start) / max(1, len(pieces))
        for i, piece in enumerate(pieces):
            word = normalise(piece)
            if word:
                start = segment.start + i * span
                tokens.append(Token(word, piece, start, start + span, segment.speaker))
    return tokens


def _alike(heard: str, wanted: str) -> bool:
    if heard == wanted:
        return True
    if len(wanted) < LONG_WORD or wanted.startswith("[") or abs(len(heard) - len(wanted)) > 3:
        return False
    if heard[:1] != wanted[:1]:  # misheard words keep their first sound; and it is quick
        return False
    return SequenceMatcher(None, heard, wanted).ratio() >= SIMILAR


def occurrences(tokens: Sequence[Token], phrase: str) -> list[tuple[int, int]]:
    """Where ``phrase`` was said in ``tokens``: (first, end) indices, without overlaps."""
    wanted = [normalise(word) for word in phrase.split()]
    wanted = [word for word in wanted if word]
    size = len(wanted)
    found: list[tuple[int, int]] = []
    i = 0
    while i + min(size, size - 1 if size >= 4 else size) <= len(tokens):
        end = _match_at(tokens, i, wanted)
        if end is not None:
            found.append((i, end))
            i = end
        else:
            i += 1
    return found


def _match_at(tokens: Sequence[Token], i: int, wanted: list[str]) -> int | None:
    """The end of a match of ``wanted`` starting at ``tokens[i]``, else None: every word
    (one may be heard wrong, see ``_tolerated``) or, from four words on, all but one
    (a word the model dropped) or all with one extra word heard in between."""
    size = len(wanted)
    heard = [token.word for token in tokens[i : i + size + 1]]
    if len(heard) >= size:
        wrong = [k for k in range(size) if not _alike(heard[k], wanted[k])]
        if _tolerated(wrong, wanted):
            return i + size
    if size < 4 or not heard or not _alike(heard[0], wanted[0]):
        return None
    for skip in range(1, size - 1):  # a word dropped (never the first or the last)
        shorter = wanted[:skip] + wanted[skip + 1 :]
        if len(heard) >= size - 1 and all(map(_alike, heard[: size - 1], shorter)):
            return i + size - 1
    for extra in range(1, size):  # a word heard in between
        if len(heard) == size + 1 and all(map(_alike, heard[:extra] + heard[extra + 1 :], wanted)):
            return i + size + 1
    return None


def _tolerated(wrong: list[int], wanted: list[str]) -> bool:
    if not wrong:
        return True
    if len(wrong) > 1 or len(wanted) < 3:
        return False
    if wrong[0] in (0, len(wanted) - 1) and len(wanted) < 4:
        return False  # a three-word phrase must at least begin and end as written
    return len(wanted) >= 4 or len(wanted[wrong[0]]) <= SHORT_WORD


@dataclass
class _Call:
    """What the rules read from one transcript."""

    tokens: list[Token]
    duration: float
    metrics: ConversationMetrics

    def stream(self, speaker: str | None) -> list[Token]:
        return [t for t in self.tokens if speaker is None or t.speaker == speaker]


def categorize(rules: Sequence[Rule], result: TranscriptResult) -> list[dict[str, Any]]:
    """The rules ``result`` matches, each with its evidence, in the rules' order."""
    metrics = result.metrics or conversation_metrics(result.segments, result.duration)
    return categorize_call(rules, result.segments, result.duration, metrics)


def categorize_call(
    rules: Sequence[Rule], segments: Sequence[Any], duration: float, metrics: ConversationMetrics
) -> list[dict[str, Any]]:
    """:func:`categorize` for a call given as its parts (segments as a stored result holds
    them: start, end, text, speaker and words with start, end, word, speaker)."""
    call = _Call(tokens_of(segments), duration, metrics)
    matched = []
    for rule in rules:
        holds, evidence = _holds(rule.condition, call)
        if holds:
            matched.append({"rule": rule.name, "evidence": evidence})
    return matched


def _holds(condition: Condition, call: _Call) -> tuple[bool, list[dict[str, Any]]]:
    evidence: list[dict[str, Any]] = []
    checks = [
        _said(condition, call),
        _not_said(condition, call),
        *(
            _measure(key, threshold, condition.speaker, call)
            for key, threshold in condition.measures
        ),
    ]
    for holds, found in checks:
        if not holds:
            return False, []
        evidence += found
    for child in condition.all_of:
        holds, found = _holds(child, call)
        if not holds:
            return False, []
        evidence += found
    if condition.any_of:
        for child in condition.any_of:
            holds, found = _holds(child, call)
            if holds:
                evidence += found
                break
        else:
            return False, []
    for child in condition.none_of:
        holds, _ = _holds(child, call)
        if holds:
            return False, []
        evidence.append({"not": "the nested condition does not hold"})
    return True, evidence


def _window(condition: Condition, call: _Call) -> tuple[float, float]:
    start, end = 0.0, call.duration
    if condition.within_first is not None:
        end = min(end, condition.within_first)
    if condition.within_last is not None:
        start = max(start, call.duration - condition.within_last)
    return start, end


def _found(condition: Condition, call: _Call, phrases: Sequence[str]) -> list[dict[str, Any]]:
    stream = call.stream(condition.speaker)
    start, end = _window(condition, call)
    hits = []
    for phrase in phrases:
        for first, last in occurrences(stream, phrase):
            said = stream[first:last]
            if start <= said[0].start < end:
                hits.append(
                    {
                        "phrase": phrase,
                        "speaker": said[0].speaker,
                        "start": round(said[0].start, 3),
                        "end": round(said[-1].end, 3),
                        "words": " ".join(token.heard for token in said),
                    }
                )
    return sorted(hits, key=lambda hit: hit["start"])


def _said(condition: Condition, call: _Call) -> tuple[bool, list[dict[str, Any]]]:
    if not condition.phrases:
        return True, []
    hits = _found(condition, call, condition.phrases)
    return bool(hits), hits


def _not_said(condition: Condition, call: _Call) -> tuple[bool, list[dict[str, Any]]]:
    if not condition.absent:
        return True, []
    if _found(condition, call, condition.absent):
        return False, []
    start, end = _window(condition, call)
    return True, [
        {
            "absent": list(condition.absent),
            "speaker": condition.speaker,
            "start": round(start, 3),
            "end": round(end, 3),
        }
    ]


def _measure(
    key: str, threshold: float, speaker: str | None, call: _Call
) -> tuple[bool, list[dict[str, Any]]]:
    value = measured(MEASURES[key][0], speaker, call.metrics, call.duration)
    if value is None:
        return False, []
    holds = value > threshold if MEASURES[key][1] == ">" else value < threshold
    item = {"measure": key, "value": round(value, 3), "threshold": threshold}
    if speaker is not None:
        item["speaker"] = speaker
    return holds, [item] if holds else []


def measured(
    name: str, speaker: str | None, metrics: ConversationMetrics, duration: float
) -> float | None:
    """One of the call's measures; per speaker when ``speaker`` is given (None when the
    call has no such speaker, or the measure is unknown for it)."""
    if name == "non_talk_time":
        return metrics.non_talk_time
    if name == "longest_silence":
        return metrics.longest_silence.seconds if metrics.longest_silence else 0.0
    if name == "duration":
        return duration
    if speaker is not None:
        mine = [item for item in metrics.speakers if item.speaker == speaker]
        if not mine:
            return None
        value = getattr(mine[0], name)
        return None if value is None else float(value)
    if name == "interruptions":
        counts = [item.interruptions for item in metrics.speakers]
        return None if all(c is None for c in counts) else float(sum(c or 0 for c in counts))
    if name == "talk_share":
        return metrics.talk_time / duration if duration else 0.0
    words = sum(item.words for item in metrics.speakers)
    return words / (metrics.talk_time / 60) if metrics.talk_time else None
