"""Diarization on mono two-speaker calls: who said each word, and what it costs.

Synthetic calls (espeak-ng + sox, 16 kHz mono): lines of ``calls.LINES`` alternating
between two voices a listener tells apart, 0.3-1.5 s between turns; and one-voice calls,
where any second speaker is an error. Each call is transcribed with word timestamps, then
diarized. Printed as a markdown table:

- word speaker error: the share of words whose speaker is wrong after the best matching of
  found labels to true voices (a word belongs to the turn its middle falls in);
- turns right: turns whose words mostly carry the turn's voice (after the same matching);
- added time: diarization seconds per audio hour, and as a share of transcription time.

Then the memory a worker's diarization takes for a long recording: one two-voice call and its
transcript repeated to ``--memory-hours`` (default 1), run as the engine does it (the mono
audio kept as float16 window by window, joined and made float32, then ``diarize``): the
peak of what numpy and Python allocated on the way (tracemalloc) and the process's peak
RSS before and after (the model loaded).

Run: ``OPENBLAS_NUM_THREADS=1 python benchmarks/diarization.py`` (the module's advice; see
whisperq/speech/diarization.py), ``--calls N`` for more; ``--quick``: one two-voice call and
one one-voice call of 6 turns, memory over 0.1 hour (a test runs it).
"""

from __future__ import annotations

import argparse
import itertools
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from calls import LINES  # noqa: E402

from whisperq.schemas import Segment, TranscriptionOptions  # noqa: E402
from whisperq.speech import diarization, engine  # noqa: E402
from whisperq.speech.audio import SAMPLE_RATE, stream_audio  # noqa: E402

# Pairs a listener tells apart: another sex, or another accent and sex. (en-gb+m3 against
# en-us is left out: the same male voice with another accent, close to one voice.)
PAIRS = [
    ("en-us", "en-us+f3"),
    ("en-gb", "en-gb-x-rp+f2"),
    ("en-us+m7", "en-us+f3"),
    ("en-gb+m3", "en-us+f3"),
    ("en-us", "en-gb-x-rp+f2"),
]
SINGLE = ["en-us", "en-us+f3", "en-gb+m3"]


@dataclass
class Turn:
    start: float
    end: float
    voice: int


def make_call(tmp: Path, voices: tuple[str, ...], turns: int, rng: random.Random) -> tuple:
    """A mono 16 kHz call alternating ``voices``; returns its path and the turns' times."""
    pieces, reference, clock = [], [], 0.0
    for index, text in enumerate(rng.sample(LINES, k=turns)):
        raw, piece = tmp / f"{index}-raw.wav", tmp / f"{index}.wav"
        voice = index % len(voices)
        speed = str(rng.randrange(145, 175))
        subprocess.run(
            ["espeak-ng", "-v", voices[voice], "-s", speed, "-w", str(raw), text], check=True
        )
        pause = rng.uniform(0.3, 1.5)
        subprocess.run(
            ["sox", raw, "-r", "16000", "-c", "1", "-b", "16", piece, "pad", "0", f"{pause:.2f}"],
            check=True,
        )
        seconds = float(
            subprocess.run(["soxi", "-D", piece], capture_output=True, text=True).stdout
        )
        reference.append(Turn(clock, clock + seconds - pause, voice))
        clock += seconds
        pieces.append(str(piece))
    path = tmp / "call.wav"
    subprocess.run(["sox", *pieces, str(path)], check=True)
    return path, reference


def true_voice(reference: list[Turn], time_s: float) -> int:
    """The voice of the turn nearest to ``time_s`` (words can overhang a turn slightly)."""
    return min(reference, key=lambda t: max(t.start - time_s, time_s - t.end, 0.0)).voice


def score(segments: list[Segment], reference: list[Turn]) -> tuple[int, int, int, int]:
    """(wrong words, words, right turns, turns) under the best label matching."""
    pairs = [
        (w.speaker or "", true_voice(reference, (w.start + w.end) / 2))
        for s in segments
        for w in s.words or []
    ]
    labels = sorted({label for label, _ in pairs})
    voices = sorted({t.voice for t in reference})
    best: dict[str, int] = {}
    best_right = -1
    slots = voices + [-1] * max(0, len(labels) - len(voices))
    for order in itertools.permutations(slots, len(labels)):
        mapping = dict(zip(labels, order, strict=True))
        right = sum(mapping[label] == voice for label, voice in pairs)
        if right > best_right:
            best, best_right = mapping, right
    turns_right = 0
    for turn in reference:
        said = [
            best.get(w.speaker or "", -1) == turn.voice
            for s in segments
            for w in s.words or []
            if turn.start - 0.2 <= (w.start + w.end) / 2 <= turn.end + 0.2
        ]
        turns_right += bool(said) and sum(said) > len(said) / 2
    return len(pairs) - best_right, len(pairs), turns_right, len(reference)


def run_call(path: Path) -> tuple[list[Segment], np.ndarray, float, float]:
    config = engine.EngineConfig()
    loaded = engine.load_model(config)
    began = time.perf_counter()
    transcript = engine.transcribe_file(
        loaded, path, TranscriptionOptions(word_timestamps=True), config
    )
    transcribing = time.perf_counter() - began
    audio = np.concatenate([w.samples for w in stream_audio(path)])
    began = time.perf_counter()
    segments = diarization.diarize(audio, transcript.segments)
    return segments, audio, transcribing, time.perf_counter() - began


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def memory_for(path: Path, hours: float) -> dict[str, float]:
    """Peak memory of diarizing ``path`` repeated to ``hours``, as the engine does it: the
    transcript's segments repeated with the audio, the mono audio held as float16 per
    window, joined and made float32, then ``diarize``. Returns the traced peak (MB, what
    numpy and Python allocated from the float16 buffer on), the process's peak RSS before
    and after (MB), the audio's length (h) and the diarization's seconds."""
    config = engine.EngineConfig()
    transcript = engine.transcribe_file(
        engine.load_model(config), path, TranscriptionOptions(word_timestamps=True), config
    )
    one = np.concatenate([w.samples for w in stream_audio(path)]).astype(np.float32)
    call_s = len(one) / SAMPLE_RATE
    repeats = max(1, round(hours * 3600 / call_s))
    segments = [
        s.model_copy(
            update={
                "start": s.start + k * call_s,
                "end": s.end + k * call_s,
                "words": [
                    w.model_copy(update={"start": w.start + k * call_s, "end": w.end + k * call_s})
                    for w in s.words or []
                ],
            }
        )
        for k in range(repeats)
        for s in transcript.segments
    ]
    window = int(config.window_seconds * SAMPLE_RATE)
    rss_before = peak_rss_mb()
    tracemalloc.start()
    began = time.perf_counter()
    voices = []  # as engine.transcribe_file keeps it: float16, one piece per window
    for _ in range(repeats):
        for i in range(0, len(one), window):
            voices.append(one[i : i + window].astype(np.float16))
    diarization.diarize(np.concatenate(voices).astype(np.float32), segments)
    spent = time.perf_counter() - began
    traced = tracemalloc.get_traced_memory()[1] / 1e6
    tracemalloc.stop()
    return {
        "hours": repeats * call_s / 3600,
        "traced_mb": traced,
        "rss_before_mb": rss_before,
        "rss_after_mb": peak_rss_mb(),
        "seconds": spent,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=len(PAIRS), help="two-voice calls")
    parser.add_argument("--turns", type=int, default=10)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument(
        "--memory-hours", type=float, default=1.0, help="audio for the memory row (0 = none)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="1 two-voice + 1 one-voice call, 6 turns, 0.1 h"
    )
    args = parser.parse_args()
    if args.quick:
        args.calls, args.turns, args.memory_hours = 1, 6, 0.1
    singles = SINGLE[:1] if args.quick else SINGLE
    rng = random.Random(args.seed)
    diarization.load_encoder()
    engine.load_model(engine.EngineConfig())
    rows = []
    totals = {"wrong": 0, "words": 0, "right": 0, "turns": 0, "audio": 0.0, "asr": 0.0, "d": 0.0}
    with tempfile.TemporaryDirectory() as tmp:
        cases = [PAIRS[i % len(PAIRS)] for i in range(args.calls)] + [(v,) for v in singles]
        for number, voices in enumerate(cases):
            folder = Path(tmp) / str(number)
            folder.mkdir()
            path, reference = make_call(folder, voices, args.turns, rng)
            segments, audio, asr, spent = run_call(path)
            wrong, words, right, turns = score(segments, reference)
            found = len({s.speaker for s in segments})
            seconds = len(audio) / SAMPLE_RATE
            rows.append(
                f"| {' / '.join(voices)} | {seconds:.0f} | {found} | {wrong / max(words, 1):.1%}"
                f" | {right}/{turns} | {spent / seconds * 3600:.0f} | {spent / asr:.1%} |"
            )
            if len(voices) == 2:
                for key, value in zip(totals, (wrong, words, right, turns), strict=False):
                    totals[key] += value
            totals["audio"] += seconds
            totals["asr"] += asr
            totals["d"] += spent
            if number == 0 and args.memory_hours > 0:
                memory = memory_for(path, args.memory_hours)
    threads = os.environ.get("OPENBLAS_NUM_THREADS", "default")
    print(f"\nOPENBLAS_NUM_THREADS={threads}, {os.cpu_count()} CPUs, tiny.en, beam 5\n")
    print(
        "| voices | audio s | speakers found | word speaker error | turns right |"
        " diarization s / audio h | of transcription time |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    print("\n".join(rows))
    print(
        f"| **two-voice calls** | | | **{totals['wrong'] / max(totals['words'], 1):.1%}** |"
        f" **{totals['right']}/{totals['turns']}** |"
        f" **{totals['d'] / totals['audio'] * 3600:.0f}** | **{totals['d'] / totals['asr']:.1%}** |"
    )
    if args.memory_hours > 0:
        hours = memory["hours"]
        print(
            f"\nmemory: {hours:.2f} h of audio (the first call repeated) diarized in"
            f" {memory['seconds']:.1f} s; peak allocated {memory['traced_mb']:.0f} MB"
            f" ({memory['traced_mb'] / hours:.0f} MB per audio hour; tracemalloc, from the"
            f" float16 buffer on); peak RSS {memory['rss_before_mb']:.0f} MB before,"
            f" {memory['rss_after_mb']:.0f} MB after"
        )


if __name__ == "__main__":
    main()
