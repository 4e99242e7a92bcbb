"""Cue words: the phrases that say what a nearby number is ("card", "security code",
"date of birth", ...), and the digit-run lengths each cue-driven type accepts.

Cues are looked up by *time* across all streams (:func:`find_cues`,
:func:`nearest_cue`), because the agent asks ("the long number on the card?") and the
customer answers on the other channel.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from whisperq.redaction.tokens import Token
from whisperq.vocabulary import (
    BANK_ACCOUNT,
    CARD_NUMBER,
    CVV,
    DATE_OF_BIRTH,
    EXPIRY,
    IBAN,
    NATIONAL_ID,
    PHONE,
    PRIORITY,
    REFERENCE,
    SORT_CODE,
    SSN,
)

CUE_BEFORE_S: Final = 30.0  # a cue this long before a run still applies (agent asks, caller digs)
CUE_AFTER_S: Final = 10.0  # ... or this long after it ("... that's my visa")
# Short values (3-4 digits) are common in speech: their cues reach less far back, so a price
# read half a minute after "security code" stays.
SHORT_CUE_BEFORE_S: Final[Mapping[str, float]] = {"CVV": 12.0, "EXPIRY": 15.0}
AFTER_WEIGHT: Final = 3.0  # a cue after a run is this many times farther than one before


def _cue_form(text: str) -> str:
    word = re.sub(r"[^\w']", "", text.lower())
    return word.removesuffix("'s")


def _phrases(*texts: str) -> tuple[tuple[str, ...], ...]:
    return tuple(tuple(text.split()) for text in texts)


CUES: Final[Mapping[str, tuple[tuple[str, ...], ...]]] = {
    CARD_NUMBER: _phrases(
        "card",
        "cards",
        "visa",
        "mastercard",
        "master card",
        "amex",
        "american express",
        "maestro",
        "debit",
        "credit",
        "long number",
        "number on the front",
        "sixteen digit",
        "sixteen digits",
        "16 digit",
        "16 digits",
        "pan",
    ),
    CVV: _phrases(
        "security code",
        "security number",
        "cvv",
        "cvv2",
        "cvc",
        "cv2",
        "csc",
        "verification code",
        "three digits",
        "3 digits",
        "digits on the back",
        "back of the card",
    ),
    EXPIRY: _phrases(
        "expiry",
        "expires",
        "expire",
        "expiring",
        "expiration",
        "exp",
        "valid until",
        "valid to",
        "valid thru",
        "valid through",
        "good thru",
        "good through",
        "end date",
    ),
    SSN: _phrases("social security", "social", "ssn", "s s n"),
    NATIONAL_ID: _phrases(
        "national insurance",
        "national id",
        "ni number",
        "id number",
        "passport number",
        "driving licence",
        "driving license",
        "driver's license",
        "tax id",
    ),
    PHONE: _phrases(
        "phone",
        "telephone",
        "mobile",
        "cell",
        "cellphone",
        "landline",
        "contact number",
        "call you",
        "call you back",
        "callback",
        "reach you",
        "extension",
        "whatsapp",
    ),
    DATE_OF_BIRTH: _phrases(
        "date of birth", "dob", "d o b", "born", "birthday", "birth date", "birthdate"
    ),
    IBAN: _phrases("iban", "i ban", "international bank account"),
    BANK_ACCOUNT: _phrases(
        "account number", "account", "acct", "bank account", "routing number", "routing", "aba"
    ),
    SORT_CODE: _phrases("sort code", "sortcode"),
    # not redacted: numbers that identify an order, not a person (against the long-run rule)
    REFERENCE: _phrases(
        "order number",
        "order",
        "reference",
        "ref",
        "tracking",
        "invoice",
        "booking",
        "ticket",
        "case number",
        "confirmation number",
        "serial number",
    ),
}

# digit-run lengths each cue-driven type accepts (CARD_NUMBER: 12+ near a card cue)
LENGTHS: Final[Mapping[str, range]] = {
    CARD_NUMBER: range(12, 1000),
    # Generous below: near its cue, a value Whisper heard short (a digit lost, "nine" heard
    # as "I'm") is still that value.
    CVV: range(2, 5),
    EXPIRY: range(2, 7),
    SSN: range(4, 10),  # "the last four of your social" too
    NATIONAL_ID: range(6, 13),
    PHONE: range(4, 16),
    DATE_OF_BIRTH: range(4, 9),
    IBAN: range(10, 35),
    BANK_ACCOUNT: range(4, 18),
    SORT_CODE: range(4, 7),
}


@dataclass(frozen=True)
class Cue:
    type: str
    start: float
    end: float
    tokens: tuple[int, ...] = ()  # global token indices of the phrase


def find_cues(tokens: Sequence[Token]) -> list[Cue]:
    """Cue phrases anywhere in the transcript (every stream), with their times."""
    cues: list[Cue] = []
    by_stream: dict[tuple[str | None, int | None], list[int]] = {}
    for index, token in enumerate(tokens):
        by_stream.setdefault(token.stream, []).append(index)
    for ids in by_stream.values():
        words = [_cue_form(tokens[i].text) for i in ids]
        for i in range(len(words)):
            for kind, phrases in CUES.items():
                for phrase in phrases:
                    if tuple(words[i : i + len(phrase)]) == phrase:
                        span = tuple(ids[i : i + len(phrase)])
                        cues.append(Cue(kind, tokens[span[0]].start, tokens[span[-1]].end, span))
    return cues


def _cue_distance(cue: Cue, start: float, end: float) -> float | None:
    """Seconds between a cue and a span, None when out of reach."""
    before = SHORT_CUE_BEFORE_S.get(cue.type, CUE_BEFORE_S)
    if cue.end < start - before or cue.start > end + CUE_AFTER_S:
        return None
    if cue.end <= start:
        return start - cue.end
    if cue.start >= end:  # values usually follow their cue: a cue after counts as farther
        return AFTER_WEIGHT * (cue.start - end)
    return 0.0


def nearest_cue(cues: Sequence[Cue], types: Iterable[str], start: float, end: float) -> str | None:
    """The type of the nearest cue in reach among ``types`` (ties: :data:`PRIORITY`)."""
    wanted = set(types)
    best: tuple[float, int, str] | None = None
    for cue in cues:
        if cue.type not in wanted:
            continue
        distance = _cue_distance(cue, start, end)
        if distance is None:
            continue
        rank = PRIORITY.index(cue.type) if cue.type in PRIORITY else len(PRIORITY)
        key = (distance, rank, cue.type)
        if best is None or key < best:
            best = key
    return best[2] if best else None
