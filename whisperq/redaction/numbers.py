"""Digits and number words to digit runs, and the shapes a run is judged by.

Digits ("4532", "4532-0151", "12/27") and number words ("four five", "forty two",
"double four", "triple seven", "nine thousand", "oh") are read the way card numbers are
read (:func:`parse_numbers`). Consecutive numeric tokens of one stream, fillers and
restarts bridged, become a :class:`DigitRun` (:func:`digit_runs`) whose digits remember
the tokens they came from. Without a cue, a run is judged by its shape: Luhn
(:func:`looks_like_card`) or a phone number (:func:`looks_like_phone`). Also the word
lists around numbers: fillers, months, ordinals, currencies and units.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Final

from whisperq.redaction.tokens import Token, core, word_set

MAX_BRIDGE: Final = 6  # filler/restart tokens a digit run may span ("sorry let me start again")
MAX_GAP_S: Final = 8.0  # silence between two numeric tokens that ends a run
TURN_WORDS: Final = 3  # words of another speaker between two numbers that end a value


# --- number words -----------------------------------------------------------------------


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
FILLERS: Final = word_set(
    "uh um umm uhm er erm ah eh hmm hm mm mhm uh-huh mm-hmm sorry pardon like so ok okay "
    "right yes yeah yep sure"
)
RESTART_WORDS: Final = word_set(
    "let me start again over from top beginning try i mean no wait actually hang hold "
    "on i'll repeat that it's is"
)
SEPARATORS: Final = word_set("slash dash hyphen space stroke")
BRIDGES: Final = FILLERS | RESTART_WORDS | SEPARATORS

MONTHS: Final = word_set(
    "january february march april may june july august september october november december "
    "jan feb mar apr jun jul aug sep sept oct nov dec"
)
ORDINAL_WORDS: Final = word_set(
    "first second third fourth fifth sixth seventh eighth ninth tenth eleventh twelfth "
    "thirteenth fourteenth fifteenth sixteenth seventeenth eighteenth nineteenth twentieth "
    "thirtieth"
)

# Words after a number that make it a quantity, not an identifier: never redacted by a
# cue (a Luhn-valid card still is).
CURRENCY_WORDS: Final = word_set("pounds pound quid dollars dollar bucks euros euro")
QUANTITY_WORDS: Final = CURRENCY_WORDS | word_set(
    "pence p cents percent per each items boxes times o'clock am pm a.m. p.m. minutes minute "
    "hours hour days day weeks week months month years year gigs gb mb megabits mbps pieces "
    "units"
)

_NUMERIC = re.compile(r"\+?[$£€]?\d(?:[\d\-./:,]*\d)?")
_DIGIT = re.compile(r"\d")


@dataclass(frozen=True)
class Atom:
    """One number piece of a token: its digits, or one number word ("forty-two" is two)."""

    kind: str  # "digits" or "word"
    text: str
    token: int  # stream position


def _atoms(position: int, token: Token) -> list[Atom] | None:
    """A token's number atoms, or None when it is not numeric."""
    # faster-whisper writes "4-5-3-2" as the words "4", "-5", "-3", "-2" ("-nine" too)
    word = core(token.text).lstrip("-.")
    if _NUMERIC.fullmatch(word):
        return [Atom("digits", re.sub(r"\D", "", word), position)]
    parts = [part for part in word.lower().split("-") if part]
    if parts and all(part in NUMBER_WORDS_ALL for part in parts):
        return [Atom("word", part, position) for part in parts]
    if len(_DIGIT.findall(word)) >= 4:  # "R6402493362" : a misheard run is still digits
        return [Atom("digits", re.sub(r"\D", "", word), position)]
    return None


def _below_100(atoms: Sequence[Atom], i: int) -> tuple[int, int] | None:
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


def _is(atoms: Sequence[Atom], i: int, word: str) -> bool:
    return i < len(atoms) and atoms[i].kind == "word" and atoms[i].text == word


def _scaled(
    atoms: Sequence[Atom],
    i: int,
    part: Callable[[Sequence[Atom], int], tuple[int, int] | None],
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


def _below_1000(atoms: Sequence[Atom], i: int) -> tuple[int, int] | None:
    return _scaled(atoms, i, _below_100, "hundred", 100)


def _cardinal(atoms: Sequence[Atom], i: int) -> tuple[int, int] | None:
    return _scaled(atoms, i, _below_1000, "thousand", 1000)


def parse_numbers(atoms: Sequence[Atom]) -> list[tuple[str, tuple[int, ...]]]:
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


def numeric_atoms(stream: Sequence[Token]) -> list[list[Atom] | None]:
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
    spoke in between (``turns``, from
    :func:`~whisperq.redaction.detection.turns_besides`): the next answer is another
    value."""
    atoms = numeric_atoms(stream)
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
