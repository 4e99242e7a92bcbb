"""Privacy of short-file packing: words in a file they were not said in, words from clips
too short to hold one, and what packing saves (issue 27).

    .venv/bin/python benchmarks/privacy.py            # tiny.en, 778 clips (~10 min, 2 cores)
    .venv/bin/python benchmarks/privacy.py --quick    # tiny.en, 64 clips (~1 min)
    .venv/bin/python benchmarks/privacy.py --model base

**Clips.** Every clip is a short mono recording decoded as a worker decodes it
(``audio.short_audio``: 16 kHz float32), in groups that go through
``engine.transcribe_packed`` as a worker's pack does (8 files, the worker's default
``pack_max_files``; 16 or 40 for the adversarial cases that came with issue 27):

- *synthetic* (espeak-ng + sox, several voices, 8 kHz and 16 kHz; cached under
  ``benchmarks/.data/privacy/``):
  ``similar`` -- two similar short phrases alternating ("Yes okay" / "No thanks", "My name
  is John" / "My name is Mary", ...), each cut to its first 0.5 s or 1 s of sound or whole;
  ``longer similar`` -- similar sentences of 1.5-3 s of sound, whole;
  ``copies`` -- one clip many times ("Yes, okay." 40 times, other short answers 8 or 16);
  ``too short`` -- phrases cut to 0.09-0.25 s of sound, shorter than a word;
  ``ordinary`` -- call-centre sentences of 2-4 s of sound (the files packing is for);
- *real* (benchmarks/data/real/: read and spontaneous human speech, sources and licences
  in SOURCES.md there): the 40 clips whole, in a shuffled (queue) order; each cut to its
  first 0.6, 1.0 and 1.6 s of sound; cut to 0.15 and 0.25 s; the four shortest answers
  copied 8 times.

**Counts** (words after Whisper's English normaliser):

- *foreign words*: a word of a file's transcript that is not in the file's reference, IS
  in the reference of another file of its group, and is not in the file's own transcript
  decoded alone (``engine.transcribe``; a word Whisper hears in the file by itself is its
  mishearing of that file, not a neighbour's word). Must be 0. Counted apart: such words
  that are function words (``FUNCTION_WORDS``: "a", "the", "to", "after", ...): sharing
  a window primes how Whisper hears a file with its neighbours' text, and a function word
  heard differently says nothing of anyone.
- *files over*: files given more words packed than their reference holds and than they
  give alone ("okay, yes, okay, yes, okay." for a clip of "Yes, okay.").
- *short clips with words*: clips shorter than 0.3 s whose transcript has any word,
  packed or alone. Must be 0.
- *alone*: files ``transcribe_packed`` decoded alone (too little sound to share, or their
  share in doubt; ``packed_with`` 0).
- *time*: wall seconds of ``transcribe_packed`` over each group, against decoding each of
  its files alone, one process (the model's threads: all cores).

Prints a table per kind of clip and the totals; writes ``results.json`` (every file's
transcripts) to the cache folder.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import random
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
REAL = HERE / "data" / "real"
SHORT_SECONDS = 0.3  # "shorter than a word": the report's short clips

PAIRS = [
    ("Yes okay", "No thanks"),
    ("Yes please", "No thank you"),
    ("That's right", "That's wrong"),
    ("Hello", "Goodbye"),
    ("Okay", "Alright then"),
    ("My name is John", "My name is Mary"),
    ("Four five six", "Seven eight nine"),
    ("Cancel it", "Keep it"),
]
LONGER_PAIRS = [
    ("Yes okay, that's fine by me.", "No thanks, that's not for me."),
    ("My name is John Smith.", "My name is Mary Smith."),
    ("The number is four five six seven.", "The number is seven eight nine zero."),
    ("I want to cancel my order.", "I want to keep my order."),
    ("Yes please, go ahead.", "No, please don't do that."),
]
ANSWERS = ["Thank you.", "No.", "Yes.", "Hello, this is Anna.", "Goodbye.", "Sure, go ahead."]
LONGER_ANSWERS = ["Yes, okay, thank you very much.", "Sorry, I didn't catch that."]
SHORT_PHRASES = ["Yes okay", "Thank you", "Hello there", "I would like to pay my bill", "No"]
SENTENCES = [
    "I would like to pay my electricity bill please.",
    "Please call me back tomorrow morning after nine.",
    "My flight to Chicago was delayed by three hours.",
    "Hello, my internet connection keeps dropping every evening.",
    "I was charged two times this month and I would like a refund.",
    "Can you tell me when my order will arrive?",
    "The package was left at the wrong address yesterday.",
    "I need to change the password on my account.",
    "Your appointment is confirmed for Thursday at four.",
    "I have been waiting on hold for twenty minutes.",
    "Could you send the invoice to my email address?",
    "We moved house last week and need a new meter reading.",
    "The engineer never turned up and nobody called me.",
    "I want to cancel my subscription before it renews.",
    "Is there a cheaper tariff for people working from home?",
    "My card was declined at the supermarket this morning.",
]
VOICES = ["en-us", "en-gb", "en-us+f3", "en-gb-x-rp"]
# Function words: NLTK's English stop words (pronouns, articles, prepositions,
# conjunctions, auxiliaries; the forms left after Whisper's normaliser, which writes
# "don't" as "do not") and the modal verbs, less "no", "nor" and "not": an answer.
_FUNCTION = """
i me my myself we our ours ourselves you your yours yourself yourselves he him his himself
she her hers herself it its itself they them their theirs themselves what which who whom
this that these those am is are was were be been being have has had having do does did
doing a an the and but if or because as until while of at by for with about against between
into through during before after above below to from up down in out on off over under again
further then once here there when where why how all any both each few more most other some
such only own same so than too very can will just should now would could shall may might
must
"""
FUNCTION_WORDS = frozenset(_FUNCTION.split())


@dataclass
class Clip:
    audio: np.ndarray
    reference: str
    source: str  # what it is, for the report


@dataclass
class Group:
    kind: str
    name: str
    clips: list[Clip]
    figures: dict[str, Any] = field(default_factory=dict)


# --- the clips ---------------------------------------------------------------------------


def speech(cache: Path, text: str, voice: str = "en-us", rate: int = 8000) -> np.ndarray:
    """``text`` said by espeak-ng, 0.5 s of silence either side, as a WAV at ``rate`` (a
    telephone's 8 kHz or 16 kHz), decoded as a worker decodes it. No dither: sox's would
    make other audio each time, and tiny.en reads half a second of speech differently."""
    from whisperq.schemas import TranscriptionOptions
    from whisperq.speech.audio import short_audio

    name = "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")
    path = cache / "synthetic" / f"{name}-{voice}-{rate}.wav"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        raw = path.with_suffix(".raw.wav")
        subprocess.run(["espeak-ng", "-v", voice, "-s", "150", "-w", raw, text], check=True)
        subprocess.run(  # -D: no dither, the same audio every time it is made
            ["sox", "-D", raw, "-r", str(rate), "-c", "1", "-b", "16", path, "pad", "0.5", "0.5"],
            check=True,
        )
        raw.unlink()
    audio = short_audio(path, TranscriptionOptions())
    assert audio is not None
    return audio


def cut(audio: np.ndarray, seconds: float | None) -> np.ndarray:
    """The first ``seconds`` of ``audio``'s sound (a recording cut off); None: all."""
    from whisperq.speech import packing

    if seconds is None:
        return audio
    first, _ = packing.speech_bounds(audio, pad=0.0)
    return audio[first : first + round(seconds * packing.SAMPLE_RATE)]


def real_clips() -> list[Clip]:
    from whisperq.schemas import TranscriptionOptions
    from whisperq.speech.audio import short_audio

    with (REAL / "references.tsv").open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    clips = []
    for row in rows:
        audio = short_audio(REAL / row["file"], TranscriptionOptions())
        assert audio is not None, row["file"]
        clips.append(Clip(audio, row["reference"], row["file"]))
    return clips


def in_eights(kind: str, clips: list[Clip]) -> list[Group]:
    return [Group(kind, f"{kind} {k // 8 + 1}", clips[k : k + 8]) for k in range(0, len(clips), 8)]


def build(cache: Path, quick: bool) -> list[Group]:
    """The groups, each one worker's pack (see the module's docstring)."""
    groups: list[Group] = []

    def alternating(kind: str, pair: tuple[str, str], seconds: float | None, count: int, k: int):
        voice, rate = VOICES[k % len(VOICES)], (8000, 16000)[k % 2]
        clips = [
            Clip(cut(speech(cache, text, voice, rate), seconds), text, f"{text} ({voice}, {rate})")
            for text in pair
        ]
        label = f"{pair[0]} / {pair[1]}, " + (f"{seconds} s each" if seconds else "whole")
        groups.append(Group(kind, label, [clips[i % 2] for i in range(count)]))

    def copies(kind: str, text: str, count: int, k: int, seconds: float | None = None):
        clip = Clip(cut(speech(cache, text, VOICES[k % len(VOICES)]), seconds), text, text)
        groups.append(Group(kind, f"{text} x {count}", [clip] * count))

    real = real_clips()
    order = list(range(len(real)))
    random.Random(0).shuffle(order)
    if quick:
        alternating("similar", PAIRS[0], 0.5, 16, 0)
        copies("copies", "Yes, okay.", 16, 0)
        groups += in_eights(
            "too short",
            [
                Clip(cut(speech(cache, text, rate=rate), s), text, f"{text}, {s} s")
                for text in SHORT_PHRASES[:2]
                for rate in (8000, 16000)
                for s in (0.09, 0.2)
            ],
        )
        groups += in_eights("ordinary", [Clip(speech(cache, s), s, s) for s in SENTENCES[:8]])
        groups += in_eights("real", [real[i] for i in order[:8]])
        groups += in_eights(
            "real cut",
            [Clip(cut(real[i].audio, 1.0), real[i].reference, real[i].source) for i in order[8:16]],
        )
        return groups
    for k, pair in enumerate(PAIRS):
        for seconds, count in ((0.5, 16), (1.0, 8), (None, 8)):
            alternating("similar", pair, seconds, count, k)
    for k, pair in enumerate(LONGER_PAIRS):
        alternating("longer similar", pair, None, 8, k)
    copies("copies", "Yes, okay.", 40, 0)
    for k, text in enumerate(ANSWERS):
        copies("copies", text, 8, k + 1)
        copies("copies", text, 8, k + 1, seconds=0.6)
    for k, text in enumerate(LONGER_ANSWERS):
        copies("copies", text, 16, k)
    short = [
        Clip(cut(speech(cache, text, VOICES[k % 4], rate), s), text, f"{text}, {s} s, {rate}")
        for k, text in enumerate(SHORT_PHRASES)
        for rate in (8000, 16000)
        for s in (0.09, 0.1, 0.15, 0.2, 0.25)
    ]
    groups += in_eights("too short", short)
    ordinary = [
        Clip(speech(cache, text, VOICES[(i + k) % 4], (8000, 16000)[(i + k) % 2]), text, text)
        for k in range(2)
        for i, text in enumerate(SENTENCES)
    ]
    groups += in_eights("ordinary", ordinary)
    groups += in_eights("real", [real[i] for i in order])
    pieces = [
        Clip(cut(real[i].audio, s), real[i].reference, f"{real[i].source}, first {s} s")
        for s in (0.6, 1.0, 1.6)
        for i in order
    ]
    random.Random(1).shuffle(pieces)
    groups += in_eights("real cut", pieces)
    groups += in_eights(
        "too short",
        [
            Clip(cut(real[i].audio, s), real[i].reference, f"{real[i].source}, first {s} s")
            for s in (0.15, 0.25)
            for i in order[:20]
        ],
    )
    for name in ("common-voice-en-22058264.mp3", "common-voice-en-22058267.mp3",
                 "pocketsphinx-cards-004.flac", "mfa-breathy.flac"):  # fmt: skip
        clip = next(c for c in real if c.source == name)
        groups.append(Group("real copies", f"{name} x 8", [clip] * 8))
    return groups


# --- transcribing and counting ----------------------------------------------------------


def said(text: str) -> list[str]:
    from whisper_normalizer.english import EnglishTextNormalizer

    return EnglishTextNormalizer()(text).split()


def count(text: str) -> int:
    """Words as said, digits one by one ("4-5-6" and "four five six": 3; the normaliser
    would make "456" of the second)."""
    return len(re.findall(r"[\w']+", text.lower()))


def run(groups: list[Group], model: str) -> None:
    """Each group packed as a worker does it, and each of its files alone; the counts."""
    from whisperq.schemas import TranscriptionOptions
    from whisperq.speech import engine

    config = engine.EngineConfig(model=model)
    loaded = engine.load_model(config)
    options = TranscriptionOptions()
    engine.transcribe_packed(loaded, [groups[0].clips[0].audio] * 2, options, config)  # warm
    for number, group in enumerate(groups, 1):
        audios = [clip.audio for clip in group.clips]
        started = time.perf_counter()
        packed = engine.transcribe_packed(loaded, audios, options, config)
        packed_s = time.perf_counter() - started
        started = time.perf_counter()
        alone = [engine.transcribe(loaded, audio, options, config) for audio in audios]
        alone_s = time.perf_counter() - started
        files = []
        for i, clip in enumerate(group.clips):
            own = set(said(clip.reference))
            others = set().union(*(said(c.reference) for c in group.clips)) - own
            heard, heard_alone = said(packed[i].text), said(alone[i].text)
            moved = [w for w in heard if w in others and w not in heard_alone]
            short = len(clip.audio) < SHORT_SECONDS * 16_000
            files.append(
                {
                    "source": clip.source,
                    "reference": clip.reference,
                    "packed": packed[i].text,
                    "alone": alone[i].text,
                    "packed_with": packed[i].options.get("packed_with", 0),
                    "foreign": [w for w in moved if w not in FUNCTION_WORDS],
                    "function_words": [w for w in moved if w in FUNCTION_WORDS],
                    "over": count(packed[i].text)
                    > max(count(clip.reference), count(alone[i].text)),
                    "short": short,
                    "short_with_words": short and bool(heard or heard_alone),
                }
            )
        group.figures = {"packed_s": packed_s, "alone_s": alone_s, "files": files}
        foreign = sum(len(f["foreign"]) for f in files)
        print(
            f"  [{number}/{len(groups)}] {group.kind}: {group.name}: {len(files)} files, "
            f"{foreign} foreign words, packed {packed_s:.1f} s, alone {alone_s:.1f} s",
            flush=True,
        )


def table(groups: list[Group]) -> tuple[str, dict[str, Any]]:
    """Per kind of clip and in all: the counts and the times (markdown)."""
    kinds = list(dict.fromkeys(g.kind for g in groups))
    header = [
        "clips", "files", "foreign words", "(function words)", "files over",
        "short clips with words",
        "decoded alone", "packed s", "alone s", "alone / packed",
    ]  # fmt: skip
    lines = ["| " + " | ".join(header) + " |", "| --- |" + " ---: |" * (len(header) - 1)]
    totals: dict[str, Any] = {}
    for kind in [*kinds, "all"]:
        chosen = [g for g in groups if kind in (g.kind, "all")]
        files = [f for g in chosen for f in g.figures["files"]]
        packed_s = sum(g.figures["packed_s"] for g in chosen)
        alone_s = sum(g.figures["alone_s"] for g in chosen)
        row = {
            "files": len(files),
            "foreign_words": sum(len(f["foreign"]) for f in files),
            "function_words": sum(len(f["function_words"]) for f in files),
            "files_over": sum(f["over"] for f in files),
            "short_clips": sum(f["short"] for f in files),
            "short_clips_with_words": sum(f["short_with_words"] for f in files),
            "decoded_alone": sum(f["packed_with"] == 0 for f in files),
            "packed_s": round(packed_s, 2),
            "alone_s": round(alone_s, 2),
        }
        totals[kind] = row
        cells = [
            f"**{kind}**" if kind == "all" else kind,
            str(row["files"]),
            str(row["foreign_words"]),
            str(row["function_words"]),
            str(row["files_over"]),
            f"{row['short_clips_with_words']} / {row['short_clips']}",
            str(row["decoded_alone"]),
            f"{packed_s:.1f}",
            f"{alone_s:.1f}",
            f"{alone_s / packed_s:.2f}x" if packed_s else "-",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines), totals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="64 clips, for a quick check")
    parser.add_argument("--model", default="tiny.en", help="default: %(default)s")
    parser.add_argument(
        "--cache", type=Path, default=HERE / ".data" / "privacy", help="default: %(default)s"
    )
    args = parser.parse_args()
    for tool in ("espeak-ng", "sox"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is missing: `make system-deps` installs it")
    args.cache.mkdir(parents=True, exist_ok=True)
    groups = build(args.cache, args.quick)
    clips = sum(len(g.clips) for g in groups)
    print(
        f"{clips} clips in {len(groups)} packs; model {args.model}; {os.cpu_count()} cores "
        f"({platform.processor() or platform.machine()})",
        flush=True,
    )
    run(groups, args.model)
    text, totals = table(groups)
    print()
    print(text)
    every = totals["all"]
    print(f"\nforeign words: {every['foreign_words']} (must be 0)")
    print(f"function words heard only packed: {every['function_words']}")
    print(f"files given more words packed than alone and than said: {every['files_over']}")
    print(
        f"clips shorter than {SHORT_SECONDS} s with words: "
        f"{every['short_clips_with_words']} of {every['short_clips']} (must be 0)"
    )
    for group in groups:
        for f in group.figures["files"]:
            if f["foreign"] or f["function_words"] or f["over"] or f["short_with_words"]:
                print(f"  {group.name}: {f['source']!r}: {f['packed']!r} (alone {f['alone']!r})")
    results = {
        "model": args.model,
        "machine": f"{os.cpu_count()} cores, {platform.platform()}",
        "totals": totals,
        "groups": [{"kind": g.kind, "name": g.name} | g.figures for g in groups],
    }
    (args.cache / "results.json").write_text(json.dumps(results, indent=1))
    print(f"\nevery file's transcripts: {args.cache / 'results.json'}")


if __name__ == "__main__":
    sys.exit(main())
