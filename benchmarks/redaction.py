"""Redaction recall, over-redaction and cost on synthetic two-sided calls (issue 13).

    .venv/bin/python benchmarks/redaction.py                 # base, all calls (~10 min audio)
    .venv/bin/python benchmarks/redaction.py --quick         # tiny.en, 5 calls
    .venv/bin/python benchmarks/redaction.py --retranscribe  # ignore cached transcripts
    .venv/bin/python benchmarks/redaction.py --oracle        # reference as transcript

**Calls.** Scripted dialogues read by espeak-ng (several voices and rates), 8 kHz and 16 kHz,
stereo: agent on the left channel, customer on the right. Customers read card numbers in
every style (digits grouped 4-4-4-4, plain words, pairs "forty five thirty two", "double" /
"triple", fillers, a restart, split across two turns, a Luhn-invalid one near "card", an
Amex with no cue word), security codes, expiry dates, emails, phone numbers, dates of
birth, an SSN, a sort code and an account number. Agents and customers also say numbers
that must stay (prices, times, quantities, delivery dates), some of them seconds after a
cue word. Audio and ground truth are cached under ``benchmarks/.data/redaction/``; the
transcripts too (per model, keyed by the audio's sha256), with the time they took.

**Transcription** is the worker's: ``engine.load_model(EngineConfig(model))`` and
``engine.transcribe_file(..., TranscriptionOptions(channels="split",
speakers=("agent", "customer"), word_timestamps=True))``; then ``redact(segments, [group])``
(``whisperq.redaction.rewriting``) for ``pci`` and ``pii``.

**Matching transcript to reference.** Per channel, both the reference words and the
transcript's words (``tokenize``, ``whisperq.redaction.tokens``) become one *character
stream*: digit runs as their digits (``digit_runs``, ``whisperq.redaction.numbers``: "four
five", "45", "forty five" and "double four" read the same way on both sides; each digit
belongs to the words it came from), every other word as its lower-case letters and digits
("john.smith@example.com" and "john dot smith at example dot com" both give
"johnsmithexamplecom": "dot", "at", "underscore" give nothing). The two streams are aligned
with a minimal edit script (rapidfuzz Levenshtein opcodes). A reference word is *heard*
when 3/4 of its characters are aligned to equal transcript characters; a sensitive digit is
heard when it is aligned, a sensitive letter when it is aligned and its word is heard
(letters of garbled text align by chance).

- **Sensitive characters** of a value: the characters of its words (fillers inside a value,
  "uh", "sorry, let me start again", are neither sensitive nor counted as non-sensitive).
  A heard character is *removed* when every transcript word it came from became a
  ``[TAG]`` in the redacted words (any tag type counts). Recall = removed / heard, for the
  group's types (pci: card, CVV, expiry; pii: all). Card digit recall is the same over card
  numbers only; a card *leaks a run* when 4+ consecutive digits of it were heard and kept.
- **Over-redaction**: heard reference words outside every sensitive value (words with no
  characters, "dot"/"at", are not counted) of which at least one transcript word (carrying
  an aligned character) became a tag, over all such heard words, both channels.
- **Time**: ``redact()`` seconds (median of 3) per audio hour, and as a share of the
  transcription's seconds (measured when the transcript was made; a cached transcript keeps
  its time).

Values Whisper did not hear cannot leak and are not counted in recall (their share is shown
as "heard"). Output: a markdown table per group and overall, every leaked value and every
over-redacted word with its transcript snippet (synthetic test values only), and
``benchmarks/.data/redaction/results.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from calls import VOICES, _run  # noqa: E402

from whisperq import vocabulary  # noqa: E402
from whisperq.redaction.numbers import digit_runs, luhn_valid  # noqa: E402
from whisperq.redaction.rewriting import redact  # noqa: E402
from whisperq.redaction.tokens import Token, core, tokenize  # noqa: E402
from whisperq.schemas import Segment  # noqa: E402

DATA = HERE / ".data" / "redaction"
SPEAKERS = ("agent", "customer")
GROUPS = ("pci", "pii")
QUICK_CALLS = ("card-grouped", "card-fillers-split", "pii-email-phone-dob", "clean-shop")
QUICK_CALLS += ("clean-mobile-trap",)
RATES = (8000, 16000)
SILENT_WORDS = frozenset({"dot", "at", "underscore", "period", "dash", "hyphen", "@"})
TAG = re.compile(r"\[([A-Z][A-Z0-9_]*)\]")
GOALS = {
    "card_digit_recall": ">= 100%",
    "cards_leaking_run": "0",
    "char_recall": ">= 99%",
    "over_redaction": "<= 2%",
    "redact_share": "< 2%",
}

# --- values and how they are read -------------------------------------------------------

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
TEEN_WORDS = ("ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen")
TEEN_WORDS += ("seventeen", "eighteen", "nineteen")
TENS_WORDS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty")
TENS_WORDS += ("ninety",)


def luhn_card(rng: random.Random, prefix: str, length: int = 16) -> str:
    """A Luhn-valid test number: ``prefix``, random digits, the check digit."""
    body = prefix + "".join(rng.choice("0123456789") for _ in range(length - len(prefix) - 1))
    return next(body + c for c in "0123456789" if luhn_valid(body + c))


def misheard(card: str, position: int = 7) -> str:
    """One digit changed: a single-digit error always fails Luhn."""
    digit = str((int(card[position]) + 1) % 10)
    return card[:position] + digit + card[position + 1 :]


def say_digit(d: str, zero: str = "oh") -> str:
    return zero if d == "0" else DIGIT_WORDS[int(d)]


def say_digits(digits: str, zero: str = "oh") -> str:
    """ "four five three two zero one ..." """
    return " ".join(say_digit(d, zero) for d in digits)


def say_grouped(digits: str, groups: Sequence[int] = (4, 4, 4, 4), zero: str = "oh") -> str:
    """Digit words in groups, a comma (a pause) between groups."""
    parts, i = [], 0
    for size in groups:
        parts.append(say_digits(digits[i : i + size], zero))
        i += size
    return ", ".join(parts)


def say_pair(pair: str) -> str:
    a, b = pair
    if a == "0":
        return "double oh" if b == "0" else f"oh {say_digit(b)}"
    if a == "1":
        return TEEN_WORDS[int(b)]
    return TENS_WORDS[int(a)] + ("" if b == "0" else f" {say_digit(b)}")


def say_pairs(digits: str) -> str:
    """ "forty five thirty two oh one fifty one ..." """
    pairs = [say_pair(digits[i : i + 2]) for i in range(0, len(digits) - 1, 2)]
    if len(digits) % 2:
        pairs.append(say_digit(digits[-1]))
    return ", ".join(" ".join(pairs[i : i + 2]) for i in range(0, len(pairs), 2))


def say_repeats(digits: str, zero: str = "oh") -> str:
    """ "double four triple seven ..." for repeated digits."""
    words = []
    for run in re.finditer(r"(\d)\1*", digits):
        d, size = run.group(1), len(run.group())
        while size:
            step = 3 if size == 3 else 2 if size >= 2 else 1
            prefix = {3: "triple ", 2: "double ", 1: ""}[step]
            words.append(prefix + say_digit(d, zero))
            size -= step
    return " ".join(words)


def with_fillers(grouped: str, fillers: Sequence[str]) -> str:
    """Fillers between the groups, marked ``{...}`` as not part of the value."""
    groups = grouped.split(", ")
    out = groups[0]
    for i, group in enumerate(groups[1:]):
        out += f", {{{fillers[i % len(fillers)]}}} {group}"
    return out


# --- scripts ----------------------------------------------------------------------------


@dataclass(frozen=True)
class V:
    """A sensitive value as read; ``{...}`` inside marks filler words. Parts of one value
    in several turns share a ``key``."""

    type: str
    text: str
    key: str = ""


Part = str | V
Turn = tuple[str, list[Part]]


def A(*parts: Part) -> Turn:
    return ("agent", list(parts))


def C(*parts: Part) -> Turn:
    return ("customer", list(parts))


def card_calls(rng: random.Random) -> dict[str, list[Turn]]:
    c1, c2, c3 = (luhn_card(rng, p) for p in ("4532", "5412", "4929"))
    c4 = luhn_card(rng, "4477700")
    c5, c6 = luhn_card(rng, "5105"), luhn_card(rng, "4916")
    c7 = misheard(luhn_card(rng, "4024"))
    amex = luhn_card(rng, "37", 15)
    cn, ex, cvv = "CARD_NUMBER", "EXPIRY", "CVV"
    return {
        "card-grouped": [
            A("Thank you for calling Northwind billing, this is Sarah. How can I help you?"),
            C("Hi, I would like to pay the balance on my account please."),
            A("Of course. Can I take the long number on the front of the card?"),
            C("Yes, it is ", V(cn, say_grouped(c1)), "."),
            A("Thank you. And the expiry date?"),
            C("It expires ", V(ex, "oh nine, twenty seven"), "."),
            A("And the three digits on the back, please."),
            C("That's ", V(cvv, "seven three one"), "."),
            A("Lovely. That is one hundred and twenty pounds fifty for three items, paid today."),
            C("Great, thank you very much."),
        ],
        "card-words": [
            A("Good morning, you're through to payments. What can I do for you?"),
            C("I want to renew my subscription and pay by card."),
            A("No problem. Please read me the card number."),
            C(V(cn, say_digits(c2, zero="zero")), "."),
            A("And the expiry date?"),
            C("The expiry date is ", V(ex, "twelve {slash} twenty six"), "."),
            A("What is the security code?"),
            C("The security code is ", V(cvv, "four two nine"), "."),
            A("Thanks. Renewal is forty nine ninety nine a year, starting on the first of May."),
            C("Perfect, thanks."),
        ],
        "card-pairs": [
            A("Hello, card services, how can I help?"),
            C("I need to make a payment on my visa."),
            A("Sure. What is the sixteen digit number on the card?"),
            C(V(cn, say_pairs(c3)), "."),
            A("Thank you. The expiry date?"),
            C(V(ex, "oh three, twenty eight"), "."),
            A("And the security code on the back?"),
            C("It is ", V(cvv, "double five two"), "."),
            A("Thank you. I can see you called us at half past three yesterday about this bill."),
        ],
        "card-repeats": [
            A("Thanks for holding. Are you paying by credit card or debit card today?"),
            C("Debit card. The number is ", V(cn, say_repeats(c4)), "."),
            A("And when does it expire?"),
            C("In ", V(ex, "January twenty twenty seven"), "."),
            A("And finally the security code."),
            C(V(cvv, "triple eight"), "."),
            A("Thank you, you will get a text in about five minutes."),
        ],
        "card-fillers-split": [
            A("Can I take the card number, please?"),
            C("Sure, it's ", V(cn, with_fillers(say_grouped(c5[:8], (4, 4)), ["uh,"]), "c5")),
            A("Mm-hm, go on."),
            C(V(cn, "{um,} " + with_fillers(say_grouped(c5[8:], (4, 4)), ["er,"]), "c5"), "."),
            A("Thank you. What is the expiry?"),
            C("Erm, ", V(ex, "oh four {slash} twenty nine"), "."),
            A("Thanks, we will email a receipt for twelve pounds fifty."),
        ],
        "card-restart": [
            A("What is the long number on your card?"),
            C(
                "It's ",
                V(
                    cn,
                    f"{say_grouped(c6[:6], (4, 2))}, {{sorry, let me start again.}} "
                    + say_grouped(c6, zero="zero"),
                ),
                ".",
            ),
            A("Got it. And the expiry date?"),
            C("It's valid until ", V(ex, "eleven twenty five"), "."),
            A("And the security code?"),
            C("The three digits are ", V(cvv, "oh six one"), "."),
        ],
        "card-misheard": [
            A("I'm afraid that payment was declined. Could you read the card number again?"),
            C("Sorry, it's ", V(cn, say_grouped(c7)), "."),
            A("Thanks, that one went through. The total is twenty three pounds for two boxes."),
            C("Great, thanks a lot."),
        ],
        "card-amex-no-cue": [
            A("Hello, how can I help today?"),
            C("I'd like to pay my bill."),
            A("Okay, please go ahead with the number when you're ready."),
            C("It's ", V(cn, say_grouped(amex, (4, 6, 5))), "."),
            A("Thank you, all done. Anything else?"),
            C("No, that's everything."),
        ],
    }


def pii_calls() -> dict[str, list[Turn]]:
    return {
        "pii-email-phone-dob": [
            A("Hello, accounts team. Can I take your full name?"),
            C("It's John Smith."),
            A("Thanks. What is your email address?"),
            C("It's ", V("EMAIL", "john dot smith at example dot com"), "."),
            A("And your date of birth?"),
            C("The ", V("DATE_OF_BIRTH", "third {of} March nineteen eighty five"), "."),
            A("And a mobile number we can call you back on?"),
            C("Yes, it's ", V("PHONE", "oh seven seven double oh, nine oh oh, one two three"), "."),
            A("Thank you, I will call you back in about twenty minutes."),
        ],
        "pii-ssn-email-dob": [
            A("Welcome to the benefits line. Can I have your social security number?"),
            C("Sure, it's ", V("SSN", "one two three, four five, six seven eight nine"), "."),
            A("And your date of birth?"),
            C("I was born on ", V("DATE_OF_BIRTH", "oh four, oh seven, nineteen ninety"), "."),
            A("What email address should we use?"),
            C(V("EMAIL", "mary underscore jones eighty four at mail dot co dot uk"), "."),
            A("And your phone number?"),
            C(V("PHONE", "five five five, two one two, three four five six"), "."),
            A("We will post the forms within ten working days."),
        ],
        "pii-bank": [
            A("To set up the direct debit I need your sort code."),
            C("It's ", V("SORT_CODE", "twelve, thirty four, fifty six"), "."),
            A("And the account number?"),
            C(V("BANK_ACCOUNT", "three one nine two, six eight one nine"), "."),
            A("Thanks. Anything else?"),
            C("If I'm not in, try ", V("PHONE", "oh two oh, seven nine four six, oh oh one eight")),
            A("Noted. The first payment of thirty five pounds goes out on the fifth of June."),
        ],
    }


def clean_calls() -> dict[str, list[Turn]]:
    return {
        "clean-shop": [
            A("Hello, sales team, how can I help?"),
            C("Hi, how much is the premium plan?"),
            A("It is forty nine ninety nine a month, and the basic plan is nineteen ninety nine."),
            C("Okay. I'd like to order twelve boxes and three hundred and fifty labels."),
            A("No problem, they will arrive on the fifth of June between eight and twelve."),
            C("Can the driver come at half past three instead?"),
            A("Yes, I have put that on the order. Your total is two hundred and six pounds."),
            C("Thank you, goodbye."),
        ],
        "clean-mobile-trap": [
            A("Hello, mobile support. What seems to be the problem?"),
            C("My mobile bill went up from twenty five to thirty two pounds this month."),
            A("I see. You used forty gigabytes of data and made one hundred and ten calls."),
            C("That can't be right, I only have two phones and one tablet."),
            A("Your contract ends in eleven months, on the twenty first of March."),
            C("And my card was charged twice, two payments of thirty two pounds."),
            A("I will refund one payment within three to five working days."),
        ],
        "clean-appointment": [
            A("Customer service, this is Tom. How can I help?"),
            C("I'd like to book an engineer visit for my broadband."),
            A("I have Tuesday the fourteenth at ten thirty, or Thursday at two fifteen."),
            C("Tuesday at ten thirty works, I'll be home all day."),
            A("Great. The visit takes about forty five minutes and costs nothing."),
            C("And how long is the contract?"),
            A("Eighteen months, at twenty four pounds a month, the first three at half price."),
        ],
    }


def scripts() -> dict[str, list[Turn]]:
    return card_calls(random.Random(13)) | pii_calls() | clean_calls()


# --- ground truth -----------------------------------------------------------------------


@dataclass(frozen=True)
class RefWord:
    text: str
    value: int | None  # index in the call's values
    filler: bool  # a filler inside a value: neither sensitive nor counted


@dataclass
class CallTruth:
    name: str
    file: str
    rate: int
    seconds: float
    turns: list[tuple[str, str]]  # (speaker, text as read)
    words: dict[str, list[RefWord]]  # per speaker
    values: list[dict[str, str]]  # type, reference text


def split_value(text: str) -> list[tuple[str, bool]]:
    """(word, filler) for a value's text; ``{...}`` marks fillers."""
    out = []
    for piece in re.split(r"(\{[^}]*\})", text):
        filler = piece.startswith("{")
        out += [(w, filler) for w in piece.strip("{}").split()]
    return out


def truth(name: str, turns: list[Turn]) -> tuple[list[tuple[str, str]], dict, list[dict]]:
    """Spoken turns, reference words per speaker, values."""
    spoken: list[tuple[str, str]] = []
    words: dict[str, list[RefWord]] = {s: [] for s in SPEAKERS}
    values: list[dict[str, str]] = []
    keys: dict[str, int] = {}
    for speaker, parts in turns:
        text = ""
        for part in parts:
            if isinstance(part, str):
                text += part
                words[speaker] += [RefWord(w, None, False) for w in part.split()]
                continue
            index = keys.get(part.key) if part.key else None
            if index is None:
                index = len(values)
                values.append({"type": part.type, "reference": ""})
                if part.key:
                    keys[part.key] = index
            ref = values[index]["reference"]
            values[index]["reference"] = (ref + " " + part.text).strip()
            text += part.text.replace("{", "").replace("}", "")
            words[speaker] += [RefWord(w, index, f) for w, f in split_value(part.text)]
        spoken.append((speaker, re.sub(r"\s+", " ", text).strip()))
    return spoken, words, values


# --- audio ------------------------------------------------------------------------------


def synthesize(path: Path, turns: list[tuple[str, str]], name: str, rate: int) -> float:
    """Stereo WAV: agent turns on the left, customer turns on the right, one after another
    with pauses. Voices and speeds depend on the call's name only (reproducible)."""
    rng = random.Random(name)
    voices = {"agent": rng.choice(VOICES), "customer": rng.choice(VOICES)}
    while voices["customer"] == voices["agent"]:
        voices["customer"] = rng.choice(VOICES)
    with tempfile.TemporaryDirectory() as tmp:
        pieces = []
        for index, (speaker, text) in enumerate(turns):
            raw, piece = Path(tmp) / f"{index:03d}.wav", Path(tmp) / f"{index:03d}-s.wav"
            speed = str(rng.randrange(140, 170))
            _run("espeak-ng", "-v", voices[speaker], "-s", speed, "-w", str(raw), text)
            remix = ("1", "0") if speaker == "agent" else ("0", "1")
            pause = f"{rng.uniform(0.4, 1.2):.2f}"
            _run(
                "sox",
                "-R",
                str(raw),
                "-r",
                str(rate),
                str(piece),
                "remix",
                *remix,
                "pad",
                "0",
                pause,
            )
            pieces.append(str(piece))
        _run("sox", "-R", *pieces, str(path))
    done = subprocess.run(["soxi", "-D", str(path)], check=True, capture_output=True, text=True)
    return float(done.stdout)


def build_calls(names: Sequence[str], out: Path) -> list[CallTruth]:
    """Make (or reuse, when the script is unchanged) each call's audio and ground truth."""
    for tool in ("espeak-ng", "sox", "soxi"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is missing: `make system-deps` installs espeak-ng and sox")
    out.mkdir(parents=True, exist_ok=True)
    every = scripts()
    made = []
    for number, name in enumerate(every):
        if name not in names:
            continue
        spoken, words, values = truth(name, every[name])
        rate = RATES[number % len(RATES)]
        path = out / f"{name}-{rate // 1000}k.wav"
        meta = path.with_suffix(".json")
        spec = json.loads(json.dumps({"turns": spoken, "rate": rate, "voices": VOICES, "v": 2}))
        cached = json.loads(meta.read_text()) if meta.exists() else {}
        if cached.get("spec") == spec and path.exists():
            seconds = cached["seconds"]
        else:
            seconds = synthesize(path, spoken, name, rate)
            meta.write_text(json.dumps({"spec": spec, "seconds": seconds}, indent=1))
        made.append(CallTruth(name, path.name, rate, seconds, spoken, words, values))
    return made


# --- transcription ----------------------------------------------------------------------


def transcribe_all(
    calls: Sequence[CallTruth], model: str, out: Path, fresh: bool
) -> dict[str, tuple[list[Segment], float]]:
    """Each call's segments and transcription seconds, cached per model and audio."""
    from whisperq.schemas import TranscriptionOptions
    from whisperq.speech import engine

    cache = out / "transcripts" / model.replace("/", "_")
    cache.mkdir(parents=True, exist_ok=True)
    options = TranscriptionOptions(channels="split", speakers=SPEAKERS, word_timestamps=True)
    config = engine.EngineConfig(model=model)
    loaded = None
    result = {}
    for call in calls:
        audio = out / call.file
        digest = hashlib.sha256(audio.read_bytes()).hexdigest()
        stored = cache / f"{call.name}.json"
        if not fresh and stored.exists():
            data = json.loads(stored.read_text())
            if data["sha256"] == digest:
                segments = [Segment.model_validate(s) for s in data["segments"]]
                result[call.name] = (segments, data["seconds"])
                continue
        if loaded is None:
            loaded = engine.load_model(config)
        started = time.perf_counter()
        transcript = engine.transcribe_file(loaded, audio, options, config)
        seconds = time.perf_counter() - started
        print(f"  transcribed {call.name}: {call.seconds:.1f}s in {seconds:.1f}s", flush=True)
        dumped = [s.model_dump(mode="json") for s in transcript.segments]
        stored.write_text(json.dumps({"sha256": digest, "seconds": seconds, "segments": dumped}))
        result[call.name] = (transcript.segments, seconds)
    return result


def oracle_segments(call: CallTruth) -> list[Segment]:
    """The reference as a perfect transcript (``--oracle``): one segment per turn, words
    0.4 s apart; isolates the rules from Whisper's errors."""
    from whisperq.schemas import Word

    segments, clock = [], 0.0
    for speaker, text in call.turns:
        words = []
        for word in text.split():
            words.append(Word(start=clock, end=clock + 0.35, word=f" {word}", probability=1.0))
            clock += 0.4
        segments.append(
            Segment(
                start=words[0].start,
                end=words[-1].end,
                text=f" {text}",
                avg_logprob=0.0,
                no_speech_prob=0.0,
                words=words,
                speaker=speaker,
                channel=SPEAKERS.index(speaker),
            )
        )
        clock += 1.0
    return segments


# --- character streams and alignment ----------------------------------------------------


@dataclass(frozen=True)
class Char:
    char: str
    sources: tuple[int, ...]  # stream positions of the words it came from


def letters(text: str) -> str:
    word = core(text).lower()
    return "" if word in SILENT_WORDS else re.sub(r"[^a-z0-9]", "", word)


def char_stream(stream: Sequence[Token]) -> list[Char]:
    """Digit runs as digits (each on the first word it came from), other words as letters."""
    emitted: dict[int, list[Char]] = {}
    sourced: set[int] = set()
    for run in digit_runs(stream):
        for digit, sources in zip(run.digits, run.sources, strict=True):
            emitted.setdefault(min(sources), []).append(Char(digit, sources))
            sourced.update(sources)
    chars: list[Char] = []
    for p, token in enumerate(stream):
        if p in emitted:
            chars += emitted[p]
        elif p not in sourced:
            chars += [Char(c, (p,)) for c in letters(token.text)]
    return chars


def ref_stream(words: Sequence[RefWord], speaker: str) -> list[Token]:
    """Reference words as tokens, 0.4 s apart (no gap ends a digit run)."""
    return [Token(w.text, i * 0.4, i * 0.4 + 0.3, speaker, None, 0, i) for i, w in enumerate(words)]


def align(ref: Sequence[Char], hyp: Sequence[Char]) -> dict[int, int]:
    """Reference character index -> equal transcript character index (minimal edits)."""
    from rapidfuzz.distance import Levenshtein

    a, b = "".join(c.char for c in ref), "".join(c.char for c in hyp)
    pairs: dict[int, int] = {}
    for op in Levenshtein.opcodes(a, b):
        if op.tag == "equal":
            for k in range(op.src_end - op.src_start):
                pairs[op.src_start + k] = op.dest_start + k
    return pairs


# --- scoring ----------------------------------------------------------------------------


@dataclass
class ValueScore:
    call: str
    speaker: str
    type: str
    reference: str
    said: int = 0
    heard: int = 0
    removed: int = 0
    longest_leak: int = 0  # consecutive heard-and-kept characters
    tokens: set[int] = field(default_factory=set)  # transcript stream positions


@dataclass
class Over:
    call: str
    speaker: str
    words: list[str]
    tags: set[str]
    tokens: set[int]


@dataclass
class CallScore:
    values: list[ValueScore]
    overs: list[Over]
    clean_words: int  # transcribed non-sensitive words
    snippets: dict[str, tuple[list[str], list[str]]]  # speaker -> (original, redacted)


def word_tags(stream: Sequence[Token], redacted: Sequence[Segment]) -> list[str | None]:
    """The tag each transcript word became, or None."""
    tags: list[str | None] = []
    for token in stream:
        segment = redacted[token.segment]
        if token.word is not None and segment.words:
            found = TAG.fullmatch(segment.words[token.word].word.strip())
            tags.append(found.group(1) if found else None)
        else:  # a segment without words: redacted when its text lost the token
            tags.append(None if token.text in segment.text else "?")
    return tags


def longest_run(flags: Sequence[bool]) -> int:
    best = current = 0
    for flag in flags:
        current = current + 1 if flag else 0
        best = max(best, current)
    return best


HEARD_SHARE = 0.75  # a word is heard when this share of its characters is aligned


@dataclass
class Alignment:
    refs: list[RefWord]
    ref: list[Char]
    hyp: list[Char]
    pairs: dict[int, int]  # reference character -> equal transcript character
    word_chars: dict[int, list[int]]  # reference word -> its characters
    heard_words: set[int]

    def heard(self, r: int) -> bool:
        """A digit is heard when aligned; a letter when its word is heard too (letters
        of garbled text align by chance)."""
        if r not in self.pairs:
            return False
        return self.ref[r].char.isdigit() or bool(self.heard_words & set(self.ref[r].sources))


def alignment(refs: list[RefWord], speaker: str, hyp: Sequence[Token]) -> Alignment:
    ref_chars, hyp_chars = char_stream(ref_stream(refs, speaker)), char_stream(hyp)
    pairs = align(ref_chars, hyp_chars)
    word_chars: dict[int, list[int]] = {}
    for r, char in enumerate(ref_chars):
        for p in char.sources:
            word_chars.setdefault(p, []).append(r)
    heard = {
        p
        for p, chars in word_chars.items()
        if sum(r in pairs for r in chars) >= HEARD_SHARE * len(chars)
    }
    return Alignment(refs, ref_chars, hyp_chars, pairs, word_chars, heard)


def score_values(
    call: CallTruth, speaker: str, al: Alignment, tags: Sequence[str | None]
) -> list[ValueScore]:
    """Said, heard and removed characters of each value spoken on this channel."""
    values = [ValueScore(call.name, speaker, v["type"], v["reference"]) for v in call.values]
    kept_flags: list[list[bool]] = [[] for _ in values]
    for r, char in enumerate(al.ref):
        owners = [al.refs[p] for p in char.sources if al.refs[p].value is not None]
        if not owners or all(w.filler for w in owners):
            continue
        index = owners[0].value
        assert index is not None
        score = values[index]
        score.said += 1
        if not al.heard(r):
            kept_flags[index].append(False)
            continue
        sources = al.hyp[al.pairs[r]].sources
        kept = any(tags[q] is None for q in sources)
        score.heard += 1
        score.removed += not kept
        score.tokens.update(sources)
        kept_flags[index].append(kept)
    for score, flags in zip(values, kept_flags, strict=True):
        score.longest_leak = longest_run(flags)
    return [v for v in values if v.said]


def score_clean(
    call: CallTruth, speaker: str, al: Alignment, tags: Sequence[str | None]
) -> tuple[list[Over], int]:
    """Over-redacted spans and the count of heard words outside every value."""
    overs: list[Over] = []
    clean = 0
    for p, word in enumerate(al.refs):
        if word.value is not None or p not in al.heard_words:
            continue
        clean += 1
        tokens = {q for r in al.word_chars[p] if r in al.pairs for q in al.hyp[al.pairs[r]].sources}
        hit = {tags[q] for q in tokens if tags[q]}
        if hit:
            overs.append(Over(call.name, speaker, [word.text], hit, tokens))
    return merge_overs(overs), clean


def merge_overs(overs: list[Over]) -> list[Over]:
    """Adjacent over-redacted words (sharing or touching transcript words) as one entry."""
    merged: list[Over] = []
    for over in overs:
        last = merged[-1] if merged else None
        if last and min(over.tokens) <= max(last.tokens) + 1:
            last.words += over.words
            last.tags |= over.tags
            last.tokens |= over.tokens
        else:
            merged.append(over)
    return merged


def score_call(call: CallTruth, segments: list[Segment], redacted: list[Segment]) -> CallScore:
    tokens = tokenize(segments)
    values: list[ValueScore] = []
    overs: list[Over] = []
    clean = 0
    snippets = {}
    for speaker in SPEAKERS:
        hyp = [t for t in tokens if t.speaker == speaker]
        tags = word_tags(hyp, redacted)
        al = alignment(call.words[speaker], speaker, hyp)
        values += score_values(call, speaker, al, tags)
        spans, heard = score_clean(call, speaker, al, tags)
        overs += spans
        clean += heard
        snippets[speaker] = (
            [t.text for t in hyp],
            [f"[{g}]" if g else t.text for t, g in zip(hyp, tags, strict=True)],
        )
    return CallScore(values, overs, clean, snippets)


def snippet(words: Sequence[str], positions: set[int], margin: int = 4) -> str:
    if not positions:
        return ""
    a, b = max(0, min(positions) - margin), min(len(words), max(positions) + margin + 1)
    return " ".join(words[a:b])


def timed_redact(segments: list[Segment], group: str) -> tuple[list[Segment], float]:
    times, out = [], segments
    for _ in range(3):
        started = time.perf_counter()
        out, _ = redact(segments, [group])
        times.append(time.perf_counter() - started)
    return out, statistics.median(times)


# --- report -----------------------------------------------------------------------------


@dataclass
class GroupResult:
    group: str
    values: list[ValueScore]
    overs: list[Over]
    clean_words: int
    redact_seconds: float
    snippets: dict[str, dict[str, tuple[list[str], list[str]]]]  # call -> speaker -> ...


def run_group(
    group: str, calls: Sequence[CallTruth], transcripts: dict[str, tuple[list[Segment], float]]
) -> GroupResult:
    types = vocabulary.GROUPS[group]
    result = GroupResult(group, [], [], 0, 0.0, {})
    for call in calls:
        segments = transcripts[call.name][0]
        redacted, seconds = timed_redact(segments, group)
        scored = score_call(call, segments, redacted)
        result.values += [v for v in scored.values if v.type in types]
        result.overs += scored.overs
        result.clean_words += scored.clean_words
        result.redact_seconds += seconds
        result.snippets[call.name] = scored.snippets
    return result


def share(part: float, whole: float) -> float | None:
    return part / whole if whole else None


def pct(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{100 * value:.{digits}f}%"


def summary(result: GroupResult, audio: float, transcribe: float) -> dict[str, Any]:
    cards = [v for v in result.values if v.type == vocabulary.CARD_NUMBER]
    over_words = sum(len(o.words) for o in result.overs)
    return {
        "card_digit_recall": share(sum(v.removed for v in cards), sum(v.heard for v in cards)),
        "cards": len(cards),
        "cards_leaking_run": sum(v.longest_leak >= 4 for v in cards),
        "char_recall": share(
            sum(v.removed for v in result.values), sum(v.heard for v in result.values)
        ),
        "heard": share(sum(v.heard for v in result.values), sum(v.said for v in result.values)),
        "over_redaction": share(over_words, result.clean_words),
        "over_redacted_words": over_words,
        "clean_words": result.clean_words,
        "redact_seconds": result.redact_seconds,
        "redact_s_per_audio_hour": result.redact_seconds / audio * 3600,
        "redact_share": share(result.redact_seconds, transcribe),
    }


def type_table(result: GroupResult) -> list[str]:
    lines = [
        f"### {result.group}",
        "",
        "| type | values | chars said | heard | removed | recall | values leaking |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    kinds = sorted({v.type for v in result.values}, key=vocabulary.PRIORITY.index)
    for kind in [*kinds, "all"]:
        rows = [v for v in result.values if kind in ("all", v.type)]
        said, heard = sum(v.said for v in rows), sum(v.heard for v in rows)
        removed = sum(v.removed for v in rows)
        leaking = sum(v.removed < v.heard for v in rows)
        name = f"**{kind}**" if kind == "all" else kind
        lines.append(
            f"| {name} | {len(rows)} | {said} | {heard} ({pct(share(heard, said), 0)}) | "
            f"{removed} | {pct(share(removed, heard))} | {leaking} |"
        )
    return lines


def overall_table(figures: dict[str, dict[str, Any]]) -> list[str]:
    rows = [
        (
            "card digits removed (of heard)",
            lambda f: pct(f["card_digit_recall"]),
            "card_digit_recall",
        ),
        (
            "cards leaking a run of 4+ digits",
            lambda f: f"{f['cards_leaking_run']} / {f['cards']}",
            "cards_leaking_run",
        ),
        (
            "sensitive characters removed (of heard)",
            lambda f: pct(f["char_recall"], 2),
            "char_recall",
        ),
        (
            "non-sensitive words tagged",
            lambda f: (
                f"{pct(f['over_redaction'], 2)} ({f['over_redacted_words']}/{f['clean_words']})"
            ),
            "over_redaction",
        ),
        ("redact() s per audio hour", lambda f: f"{f['redact_s_per_audio_hour']:.2f}", ""),
        ("redact() / transcription time", lambda f: pct(f["redact_share"], 3), "redact_share"),
    ]
    lines = ["| metric | pci | pii | goal |", "| --- | ---: | ---: | --- |"]
    for label, show, goal in rows:
        cells = " | ".join(show(figures[g]) for g in GROUPS)
        lines.append(f"| {label} | {cells} | {GOALS.get(goal, '')} |")
    return lines


def misses(result: GroupResult) -> list[dict[str, Any]]:
    out = []
    for v in result.values:
        if v.removed < v.heard:
            original, redacted = result.snippets[v.call][v.speaker]
            out.append(
                {
                    "group": result.group,
                    "call": v.call,
                    "type": v.type,
                    "reference": v.reference.replace("{", "").replace("}", ""),
                    "kept": v.heard - v.removed,
                    "heard": v.heard,
                    "longest_leak": v.longest_leak,
                    "transcript": snippet(original, v.tokens),
                    "redacted": snippet(redacted, v.tokens),
                }
            )
    return out


def over_list(result: GroupResult) -> list[dict[str, Any]]:
    out = []
    for o in result.overs:
        original, redacted = result.snippets[o.call][o.speaker]
        out.append(
            {
                "group": result.group,
                "call": o.call,
                "speaker": o.speaker,
                "words": " ".join(o.words),
                "tags": sorted(o.tags),
                "transcript": snippet(original, o.tokens),
                "redacted": snippet(redacted, o.tokens),
            }
        )
    return out


def once(entries: list[dict[str, Any]], key: tuple[str, ...]) -> list[dict[str, Any]]:
    """Entries found in both groups listed once, ``group`` "pci+pii" (the last one's
    snippet kept)."""
    merged: dict[tuple[Any, ...], dict[str, Any]] = {}
    for entry in entries:
        k = tuple(entry[f] for f in key)
        if k in merged:
            entry = entry | {"group": f"{merged[k]['group']}+{entry['group']}"}
        merged[k] = entry
    return list(merged.values())


def listing(leaked: list[dict[str, Any]], overs: list[dict[str, Any]]) -> list[str]:
    lines = [f"### leaked values ({len(leaked)})"]
    for m in leaked:
        lines += [
            f'- [{m["group"]}] {m["call"]} {m["type"]} "{m["reference"]}": kept '
            f"{m['kept']}/{m['heard']} heard chars (longest run {m['longest_leak']})",
            f"    heard:    {m['transcript']}",
            f"    redacted: {m['redacted']}",
        ]
    lines.append(f"\n### over-redacted words ({len(overs)} spans)")
    for o in overs:
        lines += [
            f'- [{o["group"]}] {o["call"]} {o["speaker"]} "{o["words"]}" -> {",".join(o["tags"])}',
            f"    heard:    {o['transcript']}",
            f"    redacted: {o['redacted']}",
        ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny.en and 5 calls")
    parser.add_argument("--model", default=None, help="default: base (tiny.en with --quick)")
    parser.add_argument("--calls", nargs="*", help="only these calls (names)")
    parser.add_argument("--retranscribe", action="store_true", help="ignore cached transcripts")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument(
        "--oracle", action="store_true", help="the reference as transcript: rules only"
    )
    args = parser.parse_args()
    model = "oracle" if args.oracle else args.model or ("tiny.en" if args.quick else "base")
    names = args.calls or (list(QUICK_CALLS) if args.quick else list(scripts()))

    calls = build_calls(names, args.data)
    audio = sum(c.seconds for c in calls)
    print(f"{len(calls)} calls, {audio / 60:.1f} min of audio, model {model}", flush=True)
    if args.oracle:
        transcripts = {c.name: (oracle_segments(c), 0.0) for c in calls}
    else:
        transcripts = transcribe_all(calls, model, args.data, args.retranscribe)
    transcribe = sum(seconds for _, seconds in transcripts.values())
    if transcribe:
        print(f"transcription: {transcribe:.1f}s ({audio / transcribe:.1f}x real time)\n")

    results = {g: run_group(g, calls, transcripts) for g in GROUPS}
    figures = {g: summary(r, audio, transcribe) for g, r in results.items()}
    lines = [f"## Redaction, model {model}, {len(calls)} calls, {audio / 60:.1f} min", ""]
    for result in results.values():
        lines += [*type_table(result), ""]
    lines += ["### overall", "", *overall_table(figures), ""]
    leaked = once([m for r in results.values() for m in misses(r)], ("call", "reference"))
    overs = once([o for r in results.values() for o in over_list(r)], ("call", "transcript"))
    lines += listing(leaked, overs)
    print("\n".join(lines))

    report = {
        "model": model,
        "calls": [
            {"name": c.name, "file": c.file, "rate": c.rate, "seconds": c.seconds} for c in calls
        ],
        "audio_seconds": audio,
        "transcribe_seconds": transcribe,
        "figures": figures,
        "leaked": leaked,
        "over_redacted": overs,
        "values": [
            asdict(v) | {"tokens": sorted(v.tokens)} for r in results.values() for v in r.values
        ],
    }
    args.data.mkdir(parents=True, exist_ok=True)
    target = args.data / ("results-oracle.json" if args.oracle else "results.json")
    target.write_text(json.dumps(report, indent=1))
    print(f"\nwritten: {target}")


if __name__ == "__main__":
    main()
