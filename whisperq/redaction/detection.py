"""PCI/PII redaction of transcripts: pure functions over ``Segment``s, no I/O, no model.

How it works, in four steps:

1. **Tokens.** Every segment becomes :class:`Token`s: one per ``Segment.words`` entry when
   the segment has words (their timings), otherwise its text is split on whitespace and each
   token's times are *interpolated by character position*: a token spanning characters
   ``[a, b)`` of a text of length ``L`` gets ``start + (end - start) * a / L`` to
   ``start + (end - start) * b / L``. Rough, but enough for the redaction list's times.
2. **Streams.** Tokens are grouped into one stream per ``(speaker, channel)`` in transcript
   order, so a number split across segments of the same voice is one run. In a split-stereo
   call the agent's interjections ("mm-hm", "yes") are in the other channel, so they do not
   cut the customer's digits; in a mono call both voices are one stream, and interjections
   in the filler list are bridged like "uh". Cue words ("card", "security code", ...) are
   looked up by *time* across all streams, because the agent asks ("the long number on the
   card?") and the customer answers on the other channel.
3. **Normalisation.** Digits ("4532", "4532-0151", "12/27"), number words ("four five",
   "forty two", "double four", "triple seven", "nine thousand", "oh") become digit runs;
   fillers and restarts ("uh", "sorry, let me start again", "slash") inside a run are bridged
   (at most :data:`MAX_BRIDGE` tokens), so a restart makes the whole neighbourhood one run.
   Each digit remembers the tokens it came from (:attr:`DigitRun.sources`).
4. **Detectors** turn runs and token patterns into :class:`Entity` spans, and
   :func:`redact` rewrites text and words with ``[TYPE]`` tags and lists times, never values.

Rules favour over-redacting near cue words over leaking (see :func:`detect`).
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, TypedDict

from whisperq.schemas import Segment, Word
from whisperq.vocabulary import (
    BANK_ACCOUNT,
    CARD_NUMBER,
    CVV,
    DATE_OF_BIRTH,
    EMAIL,
    EXPIRY,
    IBAN,
    NATIONAL_ID,
    PHONE,
    PII_TYPES,
    PRIORITY,
    REFERENCE,
    SORT_CODE,
    SSN,
    compile_user_patterns,
    expand_groups,
)

MAX_BRIDGE: Final = 6  # filler/restart tokens a digit run may span ("sorry let me start again")
MAX_GAP_S: Final = 8.0  # silence between two numeric tokens that ends a run
CUE_BEFORE_S: Final = 30.0  # a cue this long before a run still applies (agent asks, caller digs)
# Short values (3-4 digits) are common in speech: their cues reach less far back, so a price
# read half a minute after "security code" stays.
SHORT_CUE_BEFORE_S: Final[Mapping[str, float]] = {"CVV": 12.0, "EXPIRY": 15.0}
CARD_FRAGMENT_DIGITS: Final = 4  # near a card cue, a run this long is part of a card
QUANTITY_DIGITS: Final = 6  # prices, times and counts are shorter than this
LONG_RUN_DIGITS: Final = 15  # a run this long is a card even without cue or Luhn
NEIGHBOUR_WORDS: Final = 3  # misheard words ("I'm free to") between two parts of a value
NEIGHBOUR_GAP_S: Final = 3.0
CUE_AFTER_S: Final = 10.0  # ... or this long after it ("... that's my visa")

AFTER_WEIGHT: Final = 3.0  # a cue after a run is this many times farther than one before


# --- tokens -----------------------------------------------------------------------------


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


def _cue_form(text: str) -> str:
    word = re.sub(r"[^\w']", "", text.lower())
    return word.removesuffix("'s")


# --- number words -----------------------------------------------------------------------


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


UNITS: Final = {
    "zero": 0,
    "oh": 0,
    "o": 0,
    "nought": 0,
    "naught": 0,
    "nil": 0,
    "one": 1,
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
}
TEENS: Final = {
    "ten": 10,
    "eleven": 11,
    "twelve": 12,
    "thirteen": 13,
    "fourteen": 14,
    "fifteen": 15,
    "sixteen": 16,
    "seventeen": 17,
    "eighteen": 18,
    "nineteen": 19,
}
TENS: Final = {
    "twenty": 20,
    "thirty": 30,
    "forty": 40,
    "fourty": 40,
    "fifty": 50,
    "sixty": 60,
    "seventy": 70,
    "eighty": 80,
    "ninety": 90,
}
REPEATS: Final = {"double": 2, "triple": 3}
SCALES: Final = {"hundred": 100, "thousand": 1000}
NUMBER_WORDS: Final = frozenset(UNITS) | frozenset(TEENS) | frozenset(TENS) | set(REPEATS)
NUMBER_WORDS_ALL: Final = NUMBER_WORDS | set(SCALES)

# Bridged inside a digit run: fillers, restarts, spoken separators, agent back-channels.
FILLERS: Final = _words(
    "uh um umm uhm er erm ah eh hmm hm mm mhm uh-huh mm-hmm sorry pardon like so ok okay "
    "right yes yeah yep sure"
)
RESTART_WORDS: Final = _words(
    "let me start again over from top beginning try i mean no wait actually hang hold "
    "on i'll repeat that it's is"
)
SEPARATORS: Final = _words("slash dash hyphen space stroke")
BRIDGES: Final = FILLERS | RESTART_WORDS | SEPARATORS

MONTHS: Final = _words(
    "january february march april may june july august september october november december "
    "jan feb mar apr jun jul aug sep sept oct nov dec"
)
ORDINAL_WORDS: Final = _words(
    "first second third fourth fifth sixth seventh eighth ninth tenth eleventh twelfth "
    "thirteenth fourteenth fifteenth sixteenth seventeenth eighteenth nineteenth twentieth "
    "thirtieth"
)

# Words after a number that make it a quantity, not an identifier: never redacted by a
# cue (a Luhn-valid card still is).
CURRENCY_WORDS: Final = _words("pounds pound quid dollars dollar bucks euros euro")
QUANTITY_WORDS: Final = CURRENCY_WORDS | _words(
    "pence p cents percent per each items boxes times o'clock am pm a.m. p.m. minutes minute "
    "hours hour days day weeks week months month years year gigs gb mb megabits mbps pieces "
    "units"
)

_NUMERIC = re.compile(r"\+?[$£€]?\d(?:[\d\-./:,]*\d)?")
_CURRENCY = re.compile(r"[$£€]")
_DECIMAL = re.compile(r"\d\.\d{2}\b(?!\.\d)")  # 12.50, not 12.05.27 (a date)
_DECIMAL_PART = re.compile(r"\.\d{2}\W*")
_DIGIT = re.compile(r"\d")
_ORDINAL_DIGITS = re.compile(r"\d{1,2}(?:st|nd|rd|th)")


@dataclass(frozen=True)
class _Atom:
    kind: str  # "digits" or "word"
    text: str
    token: int  # stream position


def _atoms(position: int, token: Token) -> list[_Atom] | None:
    """A token's number atoms, or None when it is not numeric."""
    # faster-whisper writes "4-5-3-2" as the words "4", "-5", "-3", "-2" ("-nine" too)
    word = core(token.text).lstrip("-.")
    if _NUMERIC.fullmatch(word):
        return [_Atom("digits", re.sub(r"\D", "", word), position)]
    parts = [part for part in word.lower().split("-") if part]
    if parts and all(part in NUMBER_WORDS_ALL for part in parts):
        return [_Atom("word", part, position) for part in parts]
    if len(_DIGIT.findall(word)) >= 4:  # "R6402493362" : a misheard run is still digits
        return [_Atom("digits", re.sub(r"\D", "", word), position)]
    return None


def _below_100(atoms: Sequence[_Atom], i: int) -> tuple[int, int] | None:
    if i >= len(atoms) or atoms[i].kind != "word":
        return None
    word = atoms[i].text
    if word in TEENS:
        return TEENS[word], i + 1
    if word in TENS:
        nxt = atoms[i + 1] if i + 1 < len(atoms) else None
        if nxt and nxt.kind == "word" and UNITS.get(nxt.text, 0) > 0:
            return TENS[word] + UNITS[nxt.text], i + 2
        return TENS[word], i + 1
    if word in UNITS:
        return UNITS[word], i + 1
    return None


def _is(atoms: Sequence[_Atom], i: int, word: str) -> bool:
    return i < len(atoms) and atoms[i].kind == "word" and atoms[i].text == word


def _scaled(
    atoms: Sequence[_Atom],
    i: int,
    part: Callable[[Sequence[_Atom], int], tuple[int, int] | None],
    word: str,
    factor: int,
) -> tuple[int, int] | None:
    """``part`` [``word`` [and] ``part``]: "two hundred (and) five", "nine thousand ..."."""
    first = part(atoms, i)
    if first is None:
        return None
    value, j = first
    if _is(atoms, j, word):
        value, j = value * factor, j + 1
        k = j + 1 if _is(atoms, j, "and") else j
        rest = part(atoms, k)
        if rest is not None:
            value, j = value + rest[0], rest[1]
    return value, j


def _below_1000(atoms: Sequence[_Atom], i: int) -> tuple[int, int] | None:
    return _scaled(atoms, i, _below_100, "hundred", 100)


def _cardinal(atoms: Sequence[_Atom], i: int) -> tuple[int, int] | None:
    return _scaled(atoms, i, _below_1000, "thousand", 1000)


def parse_numbers(atoms: Sequence[_Atom]) -> list[tuple[str, tuple[int, ...]]]:
    """Number atoms to digit chunks, each with the stream positions it came from.

    Read the way card numbers are read: "four five" -> 4, 5; "forty five" -> 45;
    "double four" -> 44; "nine thousand" -> 9000; "one hundred and two" -> 102;
    a bare "hundred"/"thousand" after digits appends zeros ("4 thousand" -> 4000).
    """
    chunks: list[tuple[str, tuple[int, ...]]] = []
    i = 0
    while i < len(atoms):
        atom = atoms[i]
        if atom.kind == "digits":
            chunks.append((atom.text, (atom.token,)))
            i += 1
            continue
        if atom.text in REPEATS and i + 1 < len(atoms):
            nxt = atoms[i + 1]
            digit = (
                str(UNITS[nxt.text])
                if nxt.kind == "word" and nxt.text in UNITS
                else nxt.text
                if nxt.kind == "digits" and len(nxt.text) == 1
                else None
            )
            if digit is not None:
                chunks.append((digit * REPEATS[atom.text], (atom.token, nxt.token)))
                i += 2
                continue
        if atom.text in SCALES:
            chunks.append(("0" * (len(str(SCALES[atom.text])) - 1), (atom.token,)))
            i += 1
            continue
        parsed = _cardinal(atoms, i)
        if parsed is None:  # "and", a lone "double"
            i += 1
            continue
        value, j = parsed
        chunks.append((str(value), tuple(sorted({a.token for a in atoms[i:j]}))))
        i = j
    return chunks


# --- digit runs -------------------------------------------------------------------------


@dataclass(frozen=True)
class DigitRun:
    """Consecutive numeric tokens of one stream (fillers and restarts bridged)."""

    digits: str
    sources: tuple[tuple[int, ...], ...]  # per digit: the stream positions it came from
    parts: tuple[str, ...]  # digits between bridges ("4532 0151 uh 1283" -> 2 parts)
    first: int  # stream positions, inclusive
    last: int
    plus: bool  # written with a leading "+" (international phone)


def _numeric_atoms(stream: Sequence[Token]) -> list[list[_Atom] | None]:
    """Atoms per stream token; an "oh"/"o" counts only next to another number."""
    atoms = [_atoms(p, token) for p, token in enumerate(stream)]
    for p, found in enumerate(atoms):
        if found and all(a.kind == "word" and a.text in ("oh", "o") for a in found):
            group = [p]
            for step in (-1, 1):
                q = p + step
                while 0 <= q < len(atoms) and atoms[q] is not None:
                    group.append(q)
                    q += step
            has_number = any(
                a.kind == "digits" or a.text not in ("oh", "o")
                for q in group
                for a in atoms[q] or ()
            )
            if not has_number:
                atoms[p] = None
    return atoms


def _hyphen_joined(token: Token) -> bool:
    """A piece of a hyphenated group ("4-5-I-2": the model's "five" misheard as "I"), inside
    a run it is a digit that did not come out as one."""
    return token.text.lstrip().startswith("-")


def digit_runs(
    stream: Sequence[Token], stops: Collection[int] = (), turns: Sequence[float] = ()
) -> list[DigitRun]:
    """Digit runs of one stream, fillers/restarts/separators bridged. A run ends at a cue
    word (``stops``: stream positions, "the *three* digits") and where another speaker
    spoke in between (``turns``, from :func:`turns_besides`): the next answer is another
    value."""
    atoms = _numeric_atoms(stream)
    for position in stops:
        atoms[position] = None

    def turn_between(a: float, b: float) -> bool:
        return bisect.bisect_left(turns, b) - bisect.bisect_right(turns, a) >= TURN_WORDS

    runs: list[DigitRun] = []
    p = 0
    while p < len(stream):
        if atoms[p] is None:
            p += 1
            continue
        members = [p]
        part_of = {p: 0}
        part = 0
        last = p
        q = p + 1
        bridged = 0
        while q < len(stream) and bridged <= MAX_BRIDGE:
            if q in stops:
                break
            if atoms[q] is not None:
                gap = (stream[last].end, stream[q].start)
                if gap[1] - gap[0] > MAX_GAP_S or turn_between(*gap):
                    break
                if bridged:
                    part += 1
                members.append(q)
                part_of[q] = part
                last, bridged = q, 0
            elif (
                core(stream[q].text).lower() in BRIDGES
                or _hyphen_joined(stream[q])
                or (
                    core(stream[q].text).lower() == "and"
                    and core(stream[last].text).lower() in SCALES
                )
            ):
                bridged += 1
            else:
                break
            q += 1
        run_atoms = [a for m in members for a in atoms[m] or ()]
        digits, sources = "", []
        by_part = [""] * (part + 1)
        for chunk, toks in parse_numbers(run_atoms):
            digits += chunk
            sources += [toks] * len(chunk)
            by_part[part_of[toks[0]]] += chunk
        if digits:
            runs.append(
                DigitRun(
                    digits,
                    tuple(sources),
                    tuple(x for x in by_part if x),
                    p,
                    last,
                    core(stream[p].text).startswith("+"),
                )
            )
        p = last + 1
    return runs


def luhn_valid(digits: str) -> bool:
    if not digits.isdigit():
        return False
    total = 0
    for i, char in enumerate(reversed(digits)):
        d = int(char)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def looks_like_card(run: DigitRun) -> bool:
    """13-19 digits passing Luhn: the whole run, or any consecutive parts of it (so a
    restart, "4532 0151 sorry let me start again 4532 0151 1283 0366", is caught); for
    runs over 16 digits also every prefix and suffix cut between spoken numbers (a card
    with its CVV read straight after). A 16-digit run is tried whole only."""
    candidates = {run.digits}
    for i in range(len(run.parts)):
        for j in range(i + 1, len(run.parts) + 1):
            candidates.add("".join(run.parts[i:j]))
    if len(run.digits) > 16:  # a card with something read on: try prefixes and suffixes
        cuts = [i for i in range(1, len(run.digits)) if run.sources[i] != run.sources[i - 1]]
        candidates |= {run.digits[:i] for i in cuts} | {run.digits[i:] for i in cuts}
    return any(13 <= len(c) <= 19 and luhn_valid(c) for c in candidates)


def looks_like_phone(run: DigitRun) -> bool:
    """Phone shape without a cue: UK 0xxxxxxxxx(x), +44..., NANP (1)NXXNXXXXXX, or "+"."""
    d = run.digits
    if run.plus and 10 <= len(d) <= 15:
        return True
    if len(d) in (10, 11) and d[0] == "0" and d[1] != "0":
        return True
    if len(d) == 12 and d.startswith("44") and d[2] != "0":
        return True
    nanp = d[1:] if len(d) == 11 and d[0] == "1" else d
    return len(nanp) == 10 and nanp[0] in "23456789" and nanp[3] in "23456789"


# --- cues -------------------------------------------------------------------------------


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


# --- detection --------------------------------------------------------------------------


@dataclass(frozen=True)
class Entity:
    """A detected value: its type and the tokens (global indices, consecutive within one
    stream) that carry it."""

    type: str
    tokens: tuple[int, ...]


def _classify_run(
    run: DigitRun, start: float, end: float, cues: Sequence[Cue], types: set[str], quantity: bool
) -> str | None:
    """The run's type: a Luhn card anywhere; else, unless it is a quantity ("49.99 pounds"),
    the nearest cue whose lengths fit; else part of a card near a card cue; else a phone
    by its shape."""
    length = len(run.digits)
    if CARD_NUMBER in types and looks_like_card(run):
        return CARD_NUMBER
    if quantity:
        return None
    fitting = [t for t in types if t in LENGTHS and length in LENGTHS[t]]
    found = nearest_cue(cues, fitting, start, end)
    if found:
        return found
    if (
        CARD_NUMBER in types
        and length >= CARD_FRAGMENT_DIGITS
        and nearest_cue(cues, [CARD_NUMBER], start, end)
    ):
        return CARD_NUMBER  # a card Whisper heard in pieces, or with a digit misheard
    if PHONE in types and looks_like_phone(run):
        return PHONE
    if (
        CARD_NUMBER in types
        and length >= LONG_RUN_DIGITS
        and not nearest_cue(cues, [REFERENCE], start, end)
    ):
        return CARD_NUMBER  # no cue, no Luhn: a card misheard ("$3.003, $27.004, ...")
    return None


def _is_quantity(stream: Sequence[Token], run: DigitRun) -> bool:
    """A price, time or count: at most :data:`QUANTITY_DIGITS` digits with a currency
    sign, a decimal part ("12.50"; "12", ".50"), or a unit word after it. Longer runs are
    never quantities: Whisper writes a card read in pairs as "49 .29 .662 .45 ..."."""
    if len(run.digits) > QUANTITY_DIGITS:
        return False
    if _CURRENCY.search(stream[run.first].text):
        return True
    members = [stream[p].text.strip() for p in range(run.first, run.last + 1)]
    if any(_DECIMAL.search(text) or _DECIMAL_PART.fullmatch(text) for text in members):
        return True

    def word(p: int) -> str:
        return core(stream[p].text).lower() if 0 <= p < len(stream) else ""

    after = run.last + 1
    if word(after) in QUANTITY_WORDS or word(run.first - 1) in CURRENCY_WORDS:
        return True  # "20 pounds", "pounds fifty"
    return word(after) in ("a", "an", "per") and word(after + 1) in QUANTITY_WORDS  # "a year"


def _absorb_neighbours(
    stream: Sequence[Token],
    runs: Sequence[DigitRun],
    kinds: list[str | None],
    quantities: Sequence[bool],
) -> None:
    """A run left unclassified next to a classified one -- at most NEIGHBOUR_WORDS words
    and NEIGHBOUR_GAP_S apart, "Three one, I'm two six eight one" -- takes its type
    (quantities excepted)."""
    for _ in range(2):  # forwards, then backwards
        for i in range(len(runs) - 1):
            a, b = runs[i], runs[i + 1]
            close = (
                b.first - a.last - 1 <= NEIGHBOUR_WORDS
                and stream[b.first].start - stream[a.last].end <= NEIGHBOUR_GAP_S
            )
            if not close or quantities[i] or quantities[i + 1]:
                continue
            if kinds[i] and not kinds[i + 1]:
                kinds[i + 1] = kinds[i]
            elif kinds[i + 1] and not kinds[i]:
                kinds[i] = kinds[i + 1]


_EMAIL_WRITTEN = re.compile(r"[\w.+%-]+@[\w-]+(?:\.[\w-]+)+", re.ASCII)
_DOMAIN = re.compile(r"[\w-]+(?:\.[\w-]+)+", re.ASCII)
_WORDISH = re.compile(r"[\w'+-]+")
_EMAIL_JOINERS = frozenset({"dot", "underscore", "dash", "hyphen", "period", "."})
_EMAIL_STOP = _words(
    "is it's its email e-mail mail address my the it was that's yeah yes sure so and or me "
    "at to on send use that this your our a an ok okay please of you i we can be will "
    "uh um er erm"
)


def _email_spans(stream: Sequence[Token]) -> list[tuple[int, int]]:
    """ "x@y.z" tokens, and spoken "x (dot x) at y dot z" / "x at y.z"."""
    words = [core(t.text) for t in stream]
    lower = [w.lower() for w in words]
    spans: list[tuple[int, int]] = []
    for i, word in enumerate(words):
        if _EMAIL_WRITTEN.fullmatch(word):
            spans.append((i, i))
            continue
        if lower[i] not in ("at", "@") or i == 0:
            continue
        # the domain: "gmail.com", or "gmail dot com (dot uk)"
        j = i + 1
        if j >= len(words) or not (_WORDISH.fullmatch(words[j]) or _DOMAIN.fullmatch(words[j])):
            continue
        end = j
        while True:  # "gmail dot com", "gmail.com", and faster-whisper's "mail", ".co", ".uk"
            if (
                end + 2 < len(words)
                and lower[end + 1] in ("dot", ".")
                and _WORDISH.fullmatch(words[end + 2])
            ):
                end += 2
            elif end + 1 < len(words) and stream[end + 1].text.lstrip().startswith("."):
                end += 1
            else:
                break
        if end == j and not _DOMAIN.fullmatch(words[j]):
            continue
        if not re.search(r"[A-Za-z]", words[end]) or words[j].isdigit():
            continue  # "at 10 .30" is a time
        # the local part: one word, joined parts ("john dot smith"), spelled letters, and up
        # to three more plain words before it ("mary jane smith at ...")
        b = i - 1
        if not _WORDISH.fullmatch(words[b].replace(".", "")) or lower[b] in _EMAIL_STOP:
            continue
        extra = 0
        while b >= 1:
            if b >= 2 and lower[b - 1] in _EMAIL_JOINERS and lower[b - 2] not in _EMAIL_STOP:
                b -= 2  # "... dot smith", "mary underscore ..."
                continue
            plain = lower[b - 1] not in _EMAIL_STOP and words[b - 1]
            if extra >= 3 or not plain or not _WORDISH.fullmatch(words[b - 1].replace(".", "")):
                break
            b -= 1
            if len(words[b]) > 1:
                extra += 1
        spans.append((b, end))
    return spans


_IBAN_START = re.compile(r"[A-Z]{2}\d{2}[A-Z0-9]*")
_IBAN_GROUP = re.compile(r"[A-Z0-9]{1,8}")


def _iban_shape_spans(stream: Sequence[Token]) -> list[tuple[int, int]]:
    """Written IBANs: "GB29 NWBK 6016 1331 9268 19" or one token, 15-34 characters."""
    words = [core(t.text) for t in stream]
    spans = []
    i = 0
    while i < len(words):
        if _IBAN_START.fullmatch(words[i]):
            j, total = i, len(words[i])
            while j + 1 < len(words) and _IBAN_GROUP.fullmatch(words[j + 1]) and total < 34:
                j += 1
                total += len(words[j])
            if 15 <= total <= 34:
                spans.append((i, j))
                i = j + 1
                continue
        i += 1
    return spans


def _spelled_spans(
    stream: Sequence[Token], atoms: list[list[_Atom] | None]
) -> list[tuple[int, int]]:
    """Runs of single letters, upper-case groups and numbers ("G B two nine N W B K ...")
    with at least 10 characters: IBANs and IDs read aloud."""
    spans = []
    i = 0
    while i < len(stream):
        j, size = i, 0
        while j < len(stream):
            word = core(stream[j].text)
            if atoms[j] is not None:
                size += sum(len(a.text) if a.kind == "digits" else 1 for a in atoms[j] or ())
            elif (len(word) == 1 and word.isalpha()) or _IBAN_GROUP.fullmatch(word):
                size += len(word)
            else:
                break
            j += 1
        if j > i and size >= 10:
            spans.append((i, j - 1))
        i = max(j, i + 1)
    return spans


_NI_NUMBER = re.compile(r"[A-Z]{2}\s?\d{2}\s?\d{2}\s?\d{2}\s?[A-D]")


def _date_kind(stream: Sequence[Token], atoms: list[list[_Atom] | None], p: int) -> str | None:
    word = core(stream[p].text).lower()
    if word in MONTHS:
        return "month"
    if word in ORDINAL_WORDS or _ORDINAL_DIGITS.fullmatch(word):
        return "ordinal"
    if word.split("-")[-1] in ORDINAL_WORDS:
        return "ordinal"
    if atoms[p] is not None:
        return "number"
    if word in ("of", "the", "slash") or word in FILLERS:
        return "bridge"
    return None


BACKCHANNELS: Final = FILLERS | _words(
    "go on got it and thanks thank you continue alright great perfect fine next carry"
)
TURN_WORDS: Final = 3  # words of another speaker between two numbers that end a value


def turns_besides(
    tokens: Sequence[Token], stream: tuple[str | None, int | None], cues: Sequence[Cue] = ()
) -> list[float]:
    """Start times of the words other speakers said, sorted, for :func:`digit_runs`: a run
    ends where :data:`TURN_WORDS` of them fall between two of its numbers. Back-channels
    ("mm-hm, go on") are left out; a cue word counts as a whole turn ("expiry?")."""
    cue_words = {t for cue in cues for t in cue.tokens}
    times: list[float] = []
    for index, token in enumerate(tokens):
        if token.stream == stream or core(token.text).lower() in BACKCHANNELS:
            continue
        times += [token.start] * (TURN_WORDS if index in cue_words else 1)
    return sorted(times)


def _date_spans(stream: Sequence[Token], atoms: list[list[_Atom] | None]) -> list[tuple[int, int]]:
    """Dates with words: a month or ordinal next to numbers ("the third of March
    nineteen eighty five", "March 2027", "12th of June"), bridged by "of"/"the"/","."""
    spans = []
    i = 0

    def kind(p: int) -> str | None:
        return _date_kind(stream, atoms, p)

    while i < len(stream):
        if kind(i) in (None, "bridge"):
            i += 1
            continue
        j, last, kinds = i, i, set()
        while j < len(stream) and kind(j) is not None:
            k = kind(j)
            if k != "bridge":
                kinds.add(k)
                last = j
            j += 1
        if ("month" in kinds and len(kinds) > 1) or {"ordinal", "number"} <= kinds:
            spans.append((i, last))
        i = max(j, i + 1)
    return spans


def detect(
    tokens: Sequence[Token],
    types: Iterable[str],
    user_patterns: Mapping[str, re.Pattern[str] | str] | None = None,
) -> list[Entity]:
    """Entities in the transcript, by these rules (over-redacting near cues):

    - CARD_NUMBER: a digit run of 13-19 digits passing Luhn (whole, or consecutive parts of
      a run cut by fillers/restarts), anywhere; any run of 12+ digits near a card cue, and
      of 4+ (a card heard in pieces); any run of 15+ digits unless an order/reference/
      ticket number cue is near.
    - Runs end at cue words, at 8 s of silence and where the other speaker said 3+ words
      (not back-channels); unclassified runs within 3 words of a classified one join it.
    - Quantities (6 digits or fewer with a currency sign, a decimal part or a unit word:
      "12.50", "twenty pounds", "three items", "49.99 a year") are never cue-redacted.
    - EXPIRY is a month and year: a date with a day ("the first of May") is not one.
    - CVV 2-4, EXPIRY 2-6 (MMYY, "twelve twenty seven"), SSN 4-9, NATIONAL_ID 6-12,
      PHONE 4-15, DATE_OF_BIRTH 4-8, IBAN 10+, BANK_ACCOUNT 4-17, SORT_CODE 4-6 digits near
      their cue words (nearest cue wins; generous: Whisper loses digits). A cue is "near"
      from 30 s (CVV 12 s, EXPIRY 15 s) before the run to 10 s after it, in any stream.
    - PHONE without a cue: 10-11 digits of phone shape (0..., 1+NANP, NANP, +...).
    - EXPIRY / DATE_OF_BIRTH: also month/ordinal dates near their cues.
    - EMAIL: written ``x@y.z``; spoken "x at y dot z" / "x at y.z".
    - IBAN: written shape (``GB29 NWBK ...``) anywhere; spelled letters+digits near the cue.
    - NATIONAL_ID: the UK NI number shape (``QQ 12 34 56 C``) anywhere.
    - user patterns: ``name -> regex`` over each stream's normalised text (see
      :func:`normalised_text`); the type is the name upper-cased.
    """
    wanted = set(types)
    unknown = wanted - PII_TYPES
    if unknown:
        raise ValueError(f"unknown redaction types: {sorted(unknown)}")
    patterns = compile_user_patterns(user_patterns or {})
    cues = find_cues(tokens)
    streams: dict[tuple[str | None, int | None], list[int]] = {}
    for index, token in enumerate(tokens):
        streams.setdefault(token.stream, []).append(index)
    found: list[Entity] = []
    for ids in streams.values():
        stream = [tokens[i] for i in ids]
        atoms = _numeric_atoms(stream)

        def entity(kind: str, first: int, last: int, ids: list[int] = ids) -> Entity:
            return Entity(kind, tuple(ids[first : last + 1]))

        def near(
            kinds: Iterable[str], first: int, last: int, stream: list[Token] = stream
        ) -> str | None:
            return nearest_cue(cues, kinds, stream[first].start, stream[last].end)

        position = {token_id: p for p, token_id in enumerate(ids)}
        stops = {position[t] for cue in cues for t in cue.tokens if t in position}
        runs = digit_runs(stream, stops, turns_besides(tokens, stream[0].stream, cues))
        quantities = [_is_quantity(stream, run) for run in runs]
        kinds = [
            _classify_run(
                run, stream[run.first].start, stream[run.last].end, cues, wanted, quantity
            )
            for run, quantity in zip(runs, quantities, strict=True)
        ]
        _absorb_neighbours(stream, runs, kinds, quantities)
        found += [
            entity(kind, run.first, run.last) for run, kind in zip(runs, kinds, strict=True) if kind
        ]
        date_types = wanted & {EXPIRY, DATE_OF_BIRTH}
        if date_types:
            for first, last in _date_spans(stream, atoms):
                # an expiry is a month and a year; a day ("the first of May") is not one
                ordinal = any(
                    _date_kind(stream, atoms, p) == "ordinal" for p in range(first, last + 1)
                )
                kind = near(date_types - {EXPIRY} if ordinal else date_types, first, last)
                if kind:
                    found.append(entity(kind, first, last))
        if EMAIL in wanted:
            found += [entity(EMAIL, first, last) for first, last in _email_spans(stream)]
        if IBAN in wanted:
            found += [entity(IBAN, first, last) for first, last in _iban_shape_spans(stream)]
            for first, last in _spelled_spans(stream, atoms):
                if near([IBAN], first, last):
                    found.append(entity(IBAN, first, last))
        if NATIONAL_ID in wanted or patterns:
            text, spans = normalised_text(stream)
            regexes = list(patterns.items())
            if NATIONAL_ID in wanted:
                regexes.append((NATIONAL_ID, _NI_NUMBER))
            for name, regex in regexes:
                for match in regex.finditer(text):
                    hit = [
                        p
                        for a, b, first, last in spans
                        if a < match.end() and match.start() < b
                        for p in (first, last)
                    ]
                    if match.end() > match.start() and hit:
                        found.append(entity(name, min(hit), max(hit)))
    return found


def normalised_text(stream: Sequence[Token]) -> tuple[str, list[tuple[int, int, int, int]]]:
    """A stream as text for user patterns: every digit run as its digits with no spaces
    ("four five 3 2" -> "4532"), other tokens without surrounding punctuation, original
    case, joined by single spaces. Also the ``(char_start, char_end, first, last)`` spans
    mapping text back to stream positions."""
    runs = {run.first: run for run in digit_runs(stream)}
    pieces: list[str] = []
    spans: list[tuple[int, int, int, int]] = []
    offset = 0
    p = 0
    while p < len(stream):
        run = runs.get(p)
        piece, last = (run.digits, run.last) if run else (core(stream[p].text), p)
        if piece:
            if pieces:
                offset += 1
            pieces.append(piece)
            spans.append((offset, offset + len(piece), p, last))
            offset += len(piece)
        p = last + 1
    return " ".join(pieces), spans


# --- rewriting --------------------------------------------------------------------------


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
    speaker/channel (see the module docstring). In each segment, consecutive tokens of one
    entity become one ``[TYPE]`` tag in the text, and every redacted word's ``word`` becomes
    the tag with its timing kept. A segment with words whose text differs from its words
    gets its text rebuilt from the words, so the text never keeps what the words lost.
    The input is not modified.
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
