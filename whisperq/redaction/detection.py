"""The detectors: :func:`detect` finds :class:`Entity` spans (a type and the tokens that
carry it) in a transcript's tokens.

Tokens are grouped into one stream per ``(speaker, channel)`` in transcript order, so a
number split across segments of the same voice is one run. Each stream's digit runs
(:mod:`whisperq.redaction.numbers`) are classified by Luhn, by the nearest cue
(:mod:`whisperq.redaction.cues`) and by their shape; e-mails, IBANs, NI numbers, dates
and user patterns are found in the stream's words. Rules favour over-redacting near cue
words over leaking (see :func:`detect`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from whisperq.redaction.cues import LENGTHS, Cue, find_cues, nearest_cue
from whisperq.redaction.numbers import (
    CURRENCY_WORDS,
    FILLERS,
    MONTHS,
    ORDINAL_WORDS,
    QUANTITY_WORDS,
    TURN_WORDS,
    Atom,
    DigitRun,
    digit_runs,
    looks_like_card,
    looks_like_phone,
    numeric_atoms,
)
from whisperq.redaction.tokens import Token, core, word_set
from whisperq.vocabulary import (
    CARD_NUMBER,
    DATE_OF_BIRTH,
    EMAIL,
    EXPIRY,
    IBAN,
    NATIONAL_ID,
    PHONE,
    PII_TYPES,
    REFERENCE,
    compile_user_patterns,
)

CARD_FRAGMENT_DIGITS: Final = 4  # near a card cue, a run this long is part of a card
QUANTITY_DIGITS: Final = 6  # prices, times and counts are shorter than this
LONG_RUN_DIGITS: Final = 15  # a run this long is a card even without cue or Luhn
NEIGHBOUR_WORDS: Final = 3  # misheard words ("I'm free to") between two parts of a value
NEIGHBOUR_GAP_S: Final = 3.0

_CURRENCY = re.compile(r"[$£€]")
_DECIMAL = re.compile(r"\d\.\d{2}\b(?!\.\d)")  # 12.50, not 12.05.27 (a date)
_DECIMAL_PART = re.compile(r"\.\d{2}\W*")
_ORDINAL_DIGITS = re.compile(r"\d{1,2}(?:st|nd|rd|th)")


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
_EMAIL_STOP = word_set(
    "is it's its email e-mail mail address my the it was that's yeah yes sure so and or me "
    "at to on send use that this your our a an ok okay please of you i we can be will "
    "uh um er erm"
)


# Top-level domains an address without its "at" must end in (see _dotted_address_spans).
_TLDS = word_set(
    "com org net edu gov mil int info biz io co me us uk ie ca au nz de fr es it nl be ch at "
    "se no dk fi pl pt in jp cn br mx za sg hk ae eu"
)
# First parts of a website's host name, not of a person's address: "www dot example dot
# com", "support.example.com" are kept.
_HOST_WORDS = word_set(
    "www web http https ftp mail email support help shop store my app apps portal login "
    "account accounts secure online pay billing docs blog news m"
)
_ADDRESS_PART = re.compile(r"[A-Za-z0-9_+-]+", re.ASCII)


def _dotted_parts(word: str) -> list[str] | None:
    """A word's dot-separated parts ("john.smith" -> ["john", "smith"]), or None when a
    part is not address-like."""
    parts = word.split(".")
    return parts if all(_ADDRESS_PART.fullmatch(part) for part in parts) else None


def _dotted_address_spans(stream: Sequence[Token], taken: set[int]) -> list[tuple[int, int]]:
    """Spoken addresses whose "at" Whisper lost: "john .smith .example .com", "john dot
    smith dot example dot com", "john.smith.example.com" -- three dotted parts or more,
    ending in a known top-level domain, not starting with a website's host word (www,
    support, ...). Two parts ("example.com") are a website and are kept."""
    words = [core(t.text) for t in stream]
    spans: list[tuple[int, int]] = []
    i = 0
    while i < len(stream):
        parts = _dotted_parts(words[i]) if i not in taken and words[i] else None
        if parts is None or stream[i].text.lstrip().startswith("."):
            i += 1
            continue
        end = i
        while end + 1 < len(stream) and end + 1 not in taken:
            following = stream[end + 1].text.strip()
            if following.startswith(".") and (more := _dotted_parts(words[end + 1])):
                parts, end = parts + more, end + 1  # faster-whisper's ".smith"
                continue
            joined = following.lower() in ("dot", "period", ".")
            if joined and end + 2 < len(stream) and end + 2 not in taken:
                more = _dotted_parts(words[end + 2]) if words[end + 2] else None
                if more and not stream[end + 2].text.lstrip().startswith("."):
                    parts, end = parts + more, end + 2  # "smith dot example"
                    continue
            break
        if (
            len(parts) >= 3
            and parts[-1].lower() in _TLDS
            and parts[0].lower() not in _HOST_WORDS
            and parts[0].lower() not in _EMAIL_STOP
            and any(c.isalpha() for c in parts[0])
        ):
            spans.append((i, end))
        i = end + 1
    return spans


def _email_spans(stream: Sequence[Token]) -> list[tuple[int, int]]:
    """ "x@y.z" tokens, spoken "x (dot x) at y dot z" / "x at y.z", and spoken addresses
    whose "at" was lost (:func:`_dotted_address_spans`)."""
    spans = _spoken_email_spans(stream)
    taken = {p for first, last in spans for p in range(first, last + 1)}
    return spans + _dotted_address_spans(stream, taken)


def _spoken_email_spans(stream: Sequence[Token]) -> list[tuple[int, int]]:
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
    stream: Sequence[Token], atoms: list[list[Atom] | None]
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


def _date_kind(stream: Sequence[Token], atoms: list[list[Atom] | None], p: int) -> str | None:
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


BACKCHANNELS: Final = FILLERS | word_set(
    "go on got it and thanks thank you continue alright great perfect fine next carry"
)


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


def _date_spans(stream: Sequence[Token], atoms: list[list[Atom] | None]) -> list[tuple[int, int]]:
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
    - EMAIL: written ``x@y.z``; spoken "x at y dot z" / "x at y.z"; and, "at" lost,
      three dotted parts or more ending in a known TLD ("john .smith .example .com"), not
      a website ("example.com", "www dot example dot com", "support.example.com").
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
        atoms = numeric_atoms(stream)

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
