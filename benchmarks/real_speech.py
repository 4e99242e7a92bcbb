"""Accuracy and speed on real human speech: the seed-style baseline and whisperq's engine
(with and without short-file packing), per condition, in one run.

The recordings are benchmarks/data/real/ (read and spontaneous speech from public ASR
corpora and test suites, each with the reference its source ships; where each came from
and its licence: SOURCES.md there), or any folder of audio with a references.tsv
(--folder). From them this builds, under benchmarks/.data/real/ (cached):

  16k     the recordings as they are
  8k      telephone copies: 8 kHz mu-law WAV
  gsm     band-limited to 300-3400 Hz and through the GSM 06.10 codec, 8 kHz WAV
  stereo  two-speaker "calls", 8 kHz mu-law: clips of two different speakers taking
          turns, one speaker on the left channel and one on the right, silence on the
          other side; a reference per channel

and transcribes every condition, each system in its own process, with

  baseline    as the seed deployments do: one WhisperModel (CPU, int8, all cores'
              threads), files one after another, model.transcribe(path, beam_size=5)
  baseline_en the same, told the language (language="en"): with a multilingual model
              and no language, faster-whisper runs an encoder pass per file to detect
              it, which the packed system (told the language) does not pay
  engine      whisperq.speech.engine as a worker runs it: choose_concurrency() processes, each
              with its own model, transcribe_file(..., TranscriptionOptions()), with
              channels="split" for the stereo calls
  packed      the engine with short-file packing, as a worker runs a batch of short
              files: each process takes PACK_GROUP files at a time and decodes those
              under 29 s several to one 30 s window (engine.transcribe_packed), told
              language="en"; the stereo calls as the engine does them (split), also
              with language="en"
  packed_auto the same packing given no language, as most batches are submitted: each
              process learns a condition's language from its first files (decoded
              alone, the language detected) and packs the rest in it, checking each
              share for another language (whisperq.speech.batch_language); compare
              with baseline (which detects the language too), not baseline_en
  unguarded   the engine without its invented-text guard (guard.invented): the guard's
              effect on real speech (not run by default)
  engine_greedy, engine_batched, engine_cond
              the engine with one decoding option changed: beam 1, batches of 8
              windows, each window prompted with the previous one's text
              (faster-whisper's default; the engine's until this sweep chose
              otherwise); the option sweep for long calls, not run by default

WER is jiwer's over all files of a condition, after Whisper's English normaliser (as in
throughput.py); for a stereo call the baselines (one mixed transcript) are scored against
the turns in time order, the engine systems against each channel's own reference. Speed
is audio seconds per wall second, model load excluded, and as a ratio to the baseline's.
The table is printed as markdown and the figures, with every hypothesis, are written to
results.json in the cache folder.

    python benchmarks/real_speech.py                    # base, every condition
    python benchmarks/real_speech.py --quick            # tiny.en, 8 clips, 16k + stereo, 3 systems
    python benchmarks/real_speech.py --conditions 16k,8k
    python benchmarks/real_speech.py --systems baseline,packed,unguarded
    python benchmarks/real_speech.py --folder ~/calls   # your recordings + references.tsv
    python benchmarks/real_speech.py --folder benchmarks/data/real --folder long_real \
        --conditions 16k,8k        # short and long recordings in one run
    python benchmarks/real_speech.py --folder long_real --conditions 16k,8k \
        --systems baseline,engine,engine_greedy,engine_batched,engine_cond   # the sweep

references.tsv: tab-separated, a header line, the columns `file` and `reference`
required, `speaker` (stereo calls pair clips of two different speakers; without it every
file is its own speaker) and `duration_s` optional. Needs sox (`make system-deps`).
"""

from __future__ import annotations

import argparse
import csv
import json
import multiprocessing
import os
import platform
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
import wave
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from throughput import word_error_rate  # noqa: E402

CONDITIONS = ("16k", "8k", "gsm", "stereo")
TELEPHONE_RATE = 8000
TURNS_PER_SPEAKER = 3  # per stereo call
GAP_SECONDS = 0.5  # silence between two turns of a stereo call
# Short files the packed system hands a process at once: mirrors the worker's default
# ``pack_max_files`` (how many short jobs it takes together to pack).
PACK_GROUP = 8
# Files this long are never packed (a window holds 30 s): one per work unit.
LONG_SECONDS = 29.0
DEFAULT_SYSTEMS = ("baseline", "baseline_en", "engine", "packed", "packed_auto")
# Systems that give one mixed transcript per file (scored against all turns in order).
MIXED_SYSTEMS = frozenset({"baseline", "baseline_en"})


@dataclass(frozen=True)
class Clip:
    """One recording and what was said in it."""

    path: Path
    speaker: str
    reference: str
    seconds: float


@dataclass(frozen=True)
class Item:
    """One file to transcribe in one condition: a reference per channel, and the
    references of all channels in time order (what a mixed transcript is scored on)."""

    path: Path
    seconds: float
    references: tuple[str, ...]
    mixed_reference: str

    @property
    def stereo(self) -> bool:
        return len(self.references) == 2


# --- the recordings -------------------------------------------------------------------


def read_clips(folder: Path) -> list[Clip]:
    """The clips listed in ``folder/references.tsv``, in its order."""
    table = folder / "references.tsv"
    if not table.exists():
        raise SystemExit(f"{table} is missing: one line per file, columns file and reference")
    with table.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    if not rows or not {"file", "reference"} <= set(rows[0]):
        raise SystemExit(f"{table}: needs a header with the columns file and reference")
    clips = []
    for row in rows:
        path = folder / row["file"]
        if not path.exists():
            raise SystemExit(f"{table}: {row['file']} is not in {folder}")
        seconds = float(row.get("duration_s") or 0) or len(decode(path)) / 16000
        clips.append(Clip(path, row.get("speaker") or row["file"], row["reference"], seconds))
    return clips


def pick(clips: list[Clip], count: int) -> list[Clip]:
    """``count`` clips taking speakers in turn, so a small set still has several voices."""
    by_speaker: dict[str, list[Clip]] = {}
    for clip in clips:
        by_speaker.setdefault(clip.speaker, []).append(clip)
    picked: list[Clip] = []
    while len(picked) < count and any(by_speaker.values()):
        for queue in by_speaker.values():
            if queue and len(picked) < count:
                picked.append(queue.pop(0))
    return picked


# --- building the conditions -----------------------------------------------------------


def decode(path: Path, rate: int = 16000) -> np.ndarray:
    """Any audio file to mono float32 samples at ``rate`` (PyAV, as faster-whisper does)."""
    from faster_whisper import decode_audio

    return decode_audio(str(path), sampling_rate=rate)


def write_wav(path: Path, samples: np.ndarray, rate: int) -> None:
    """16-bit PCM WAV; ``samples`` is (n,) mono or (2, n) left and right."""
    frames = np.atleast_2d(samples).T
    pcm = (np.clip(frames, -1.0, 1.0) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(pcm.shape[1])
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(pcm.tobytes())


def sox(*arguments: str | Path | int) -> None:
    subprocess.run(["sox", "-D", *map(str, arguments)], check=True, capture_output=True)


def fresh(target: Path, sources: list[Path]) -> bool:
    """A cached file is reused while it is newer than everything it was made from."""
    return target.exists() and all(target.stat().st_mtime >= s.stat().st_mtime for s in sources)


def telephone_copy(clip: Clip, target: Path) -> None:
    """8 kHz mono mu-law, as a telephone network carries it."""
    with tempfile.TemporaryDirectory() as tmp:
        wide = Path(tmp) / "16k.wav"
        write_wav(wide, decode(clip.path), 16000)
        sox(wide, "-r", TELEPHONE_RATE, "-c", 1, "-e", "mu-law", target)


def gsm_copy(clip: Clip, target: Path) -> None:
    """300-3400 Hz and through the GSM 06.10 full-rate codec (sox's libgsm), as a 2G
    mobile leg does; stored as 8 kHz 16-bit WAV."""
    with tempfile.TemporaryDirectory() as tmp:
        wide, coded = Path(tmp) / "16k.wav", Path(tmp) / "coded.gsm"
        write_wav(wide, decode(clip.path), 16000)
        sox(wide, "-r", TELEPHONE_RATE, "-c", 1, coded, "sinc", "300-3400")
        sox(coded, "-e", "signed", "-b", 16, target)


def mono_condition(
    clips: list[Clip], folder: Path, suffix: str, make: Callable[[Clip, Path], None] | None
) -> list[Item]:
    """One file per clip: the clip itself (``make`` None) or a copy made by ``make``."""
    items = []
    for clip in clips:
        path = clip.path
        if make is not None:
            path = folder / f"{clip.path.stem}{suffix}"
            if not fresh(path, [clip.path]):
                folder.mkdir(parents=True, exist_ok=True)
                make(clip, path)
        items.append(Item(path, clip.seconds, (clip.reference,), clip.reference))
    return items


def pair_speakers(clips: list[Clip]) -> list[tuple[list[Clip], list[Clip]]]:
    """Calls of two different speakers: the two with the most clips left each give up to
    TURNS_PER_SPEAKER clips (the same number), until fewer than two speakers are left."""
    left_over: dict[str, list[Clip]] = {}
    for clip in clips:
        left_over.setdefault(clip.speaker, []).append(clip)
    calls = []
    while sum(1 for queue in left_over.values() if queue) >= 2:
        first, second = sorted(left_over, key=lambda s: (-len(left_over[s]), s))[:2]
        turns = min(TURNS_PER_SPEAKER, len(left_over[first]), len(left_over[second]))
        calls.append((left_over[first][:turns], left_over[second][:turns]))
        left_over[first] = left_over[first][turns:]
        left_over[second] = left_over[second][turns:]
    return calls


def stereo_call(left: list[Clip], right: list[Clip], target: Path) -> float:
    """Alternate turns, left first; the silent side is digital silence. Returns seconds."""
    gap = np.zeros(int(GAP_SECONDS * TELEPHONE_RATE), dtype=np.float32)
    channels: list[list[np.ndarray]] = [[gap], [gap]]
    for left_clip, right_clip in zip(left, right, strict=True):
        for speaking, clip in enumerate((left_clip, right_clip)):
            samples = np.concatenate([decode(clip.path, TELEPHONE_RATE), gap])
            channels[speaking].append(samples)
            channels[1 - speaking].append(np.zeros_like(samples))
    both = np.stack([np.concatenate(channel) for channel in channels])
    with tempfile.TemporaryDirectory() as tmp:
        linear = Path(tmp) / "call.wav"
        write_wav(linear, both, TELEPHONE_RATE)
        sox(linear, "-e", "mu-law", target)
    return both.shape[1] / TELEPHONE_RATE


def stereo_condition(clips: list[Clip], folder: Path) -> list[Item]:
    items = []
    for number, (left, right) in enumerate(pair_speakers(clips)):
        sources = [clip.path for clip in left + right]
        names = "-".join(re.sub(r"\W+", "", clip.speaker)[:12] for clip in (left[0], right[0]))
        path = folder / f"call-{number:02d}-{names}-{len(left)}x2.wav"
        if fresh(path, sources):
            seconds = len(decode(path, TELEPHONE_RATE)) / TELEPHONE_RATE
        else:
            folder.mkdir(parents=True, exist_ok=True)
            seconds = stereo_call(left, right, path)
        in_order = [clip.reference for pair in zip(left, right, strict=True) for clip in pair]
        references = (" ".join(c.reference for c in left), " ".join(c.reference for c in right))
        items.append(Item(path, seconds, references, " ".join(in_order)))
    return items


def build(clips: list[Clip], conditions: list[str], cache: Path) -> dict[str, list[Item]]:
    if shutil.which("sox") is None and conditions != ["16k"]:
        raise SystemExit("sox is missing: `make system-deps` installs it")
    makers = {"8k": ("-8k-mulaw.wav", telephone_copy), "gsm": ("-gsm.wav", gsm_copy)}
    plan = {}
    for condition in conditions:
        if condition == "16k":
            plan[condition] = mono_condition(clips, cache, "", None)
        elif condition == "stereo":
            plan[condition] = stereo_condition(clips, cache / "stereo")
        else:
            suffix, make = makers[condition]
            plan[condition] = mono_condition(clips, cache / condition, suffix, make)
    return plan


# --- transcribing (each system in its own process) -------------------------------------


def run_baseline(
    model_name: str, plan: dict[str, list[dict]], language: str | None = None
) -> dict[str, Any]:
    """The seed deployments' way: one model, all cores' threads, one file after another.
    ``language``: told it (baseline_en), faster-whisper skips its language detection, an
    extra encoder pass per file with a multilingual model."""
    from faster_whisper import WhisperModel

    from whisperq.speech.engine import resolve_model

    model = WhisperModel(
        resolve_model(model_name),
        device="cpu",
        compute_type="int8",
        cpu_threads=os.cpu_count() or 1,
    )
    figures = {}
    for condition, items in plan.items():
        started = time.perf_counter()
        texts = []
        for item in items:
            segments, _ = model.transcribe(item["path"], beam_size=5, language=language)
            texts.append([" ".join(segment.text.strip() for segment in segments)])
        figures[condition] = {"wall": time.perf_counter() - started, "texts": texts}
    return figures


def run_engine(
    model_name: str,
    plan: dict[str, list[dict]],
    guard: bool = True,
    **config: Any,
) -> dict[str, Any]:
    """The engine as a worker runs it: as many processes as ``choose_concurrency`` picks,
    each with its own model, files handed out as they free up (as in throughput.py).
    ``guard=False``: without the invented-text guard (``guard.invented``), to measure it;
    ``config``: ``EngineConfig`` fields other than the defaults (the option sweep)."""
    return in_engine_processes(model_name, plan, _engine_group, group=1, guard=guard, config=config)


def run_packed(model_name: str, plan: dict[str, list[dict]], told: bool = True) -> dict[str, Any]:
    """The engine with short-file packing, as a worker runs a batch of short files: the
    same processes as ``run_engine``, but each takes up to PACK_GROUP consecutive files
    of a condition at once and decodes the short ones several to a window
    (``engine.transcribe_packed``). ``told``: language="en" (packed); else no language
    (packed_auto), and each process learns each condition's language as a worker
    process learns a batch's (``engine.transcribe_packed`` with its ``BatchLanguage``).
    A stereo call goes alone and is split as ``run_engine`` does it, with the same
    language."""
    work = _packed_group if told else _packed_auto_group
    return in_engine_processes(model_name, plan, work, group=PACK_GROUP)


def queue_order(count: int) -> list[int]:
    """The order a worker meets the files in. ``PACK_ORDER=queue`` (the default): shuffled
    with a fixed seed, as an SQS standard queue hands jobs out in no set order;
    ``PACK_ORDER=listed``: as references.tsv lists them, which puts one speaker's near-
    identical test clips (14 of the 40 say "Montreal Forced Aligner") side by side -- the
    hardest case for packing."""
    order = list(range(count))
    if os.environ.get("PACK_ORDER", "queue") == "queue":
        random.Random(0).shuffle(order)
    return order


def work_units(items: list[dict], group: int) -> list[list[dict]]:
    """Up to ``group`` consecutive files per unit, a process's work at a time; a stereo
    call or a long file alone (neither is ever packed, so grouping them would only take
    parallelism away: a worker runs them one job at a time)."""

    def alone(item: dict) -> bool:
        return item["stereo"] or item.get("seconds", 0.0) >= LONG_SECONDS

    units: list[list[dict]] = []
    for item in items:
        if units and len(units[-1]) < group and not alone(item) and not alone(units[-1][0]):
            units[-1].append(item)
        else:
            units.append([item])
    return units


def in_engine_processes(
    model_name: str,
    plan: dict[str, list[dict]],
    work: Callable[[list[dict]], list[tuple[list[str], str]]],
    group: int,
    guard: bool = True,
    config: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """``choose_concurrency()`` processes, each with its own model; the clock starts when
    all have loaded (a worker loads once, then serves for hours). ``work`` transcribes one
    unit of up to ``group`` files, handed out as processes free up; it returns the texts
    per file, so every system's texts have the same shape, and how each file was done
    (counted per condition: ``how``)."""
    from whisperq.speech import engine

    batch_size = int(os.environ.get("WHISPERQ_BATCH_SIZE", "0"))
    processes = engine.choose_concurrency(0, engine.choose_device("auto"))
    ready = multiprocessing.Barrier(processes + 1)
    figures: dict[str, Any] = {"processes": processes}
    with ProcessPoolExecutor(
        processes,
        initializer=_load_engine,
        initargs=(model_name, batch_size, processes, ready, guard, config or {}),
    ) as pool:
        warm = pool.submit(time.sleep, 0)  # starts the processes; they load, then meet here
        ready.wait(timeout=600)
        warm.result()
        for condition, items in plan.items():
            started = time.perf_counter()
            order = queue_order(len(items)) if group > 1 else list(range(len(items)))
            units = work_units([items[i] for i in order], group)
            done = [text for texts in pool.map(work, units) for text in texts]
            wall = time.perf_counter() - started
            texts = [done[order.index(i)][0] for i in range(len(items))]
            how = dict(sorted(Counter(how for _, how in done).items()))
            figures[condition] = {"wall": wall, "texts": texts, "how": how}
    return figures


_engine: tuple = ()


def _load_engine(
    model_name: str,
    batch_size: int,
    processes: int,
    ready: Any,
    guard: bool = True,
    settings: dict[str, Any] | None = None,
) -> None:
    global _engine
    from whisperq.speech import engine
    from whisperq.speech import guard as invented_text

    if not guard:
        invented_text.invented = lambda *_: False  # type: ignore[assignment]

    fields = {"model": model_name, "batch_size": batch_size, "concurrency": processes}
    config = engine.EngineConfig(**(fields | (settings or {})))
    _engine = (engine.load_model(config), config)
    ready.wait(timeout=600)


def _engine_group(items: list[dict]) -> list[tuple[list[str], str]]:
    return [(_engine_texts(item), "alone") for item in items]


def _engine_texts(item: dict, language: str | None = None) -> list[str]:
    """The transcript's text, or one text per channel for a stereo call (split)."""
    from whisperq.schemas import TranscriptionOptions
    from whisperq.speech import engine

    loaded, config = _engine
    channels = "split" if item["stereo"] else "auto"
    options = TranscriptionOptions(channels=channels, language=language)
    return _texts(engine.transcribe_file(loaded, item["path"], options, config), item)


def _packed_group(items: list[dict]) -> list[tuple[list[str], str]]:
    return _packed_texts(items, language="en")


def _packed_auto_group(items: list[dict]) -> list[tuple[list[str], str]]:
    return _packed_texts(items, language=None)


_languages: Any = None  # this process's BatchLanguages: a condition is a batch


def _packed_texts(items: list[dict], language: str | None) -> list[tuple[list[str], str]]:
    """Texts per file of a unit: the short files packed (``engine.transcribe_packed``),
    a file too long to share a window (or one that is not one voice) alone; and how
    each was done (``packing_outcome``)."""
    global _languages
    from whisperq.schemas import TranscriptionOptions
    from whisperq.speech import engine
    from whisperq.speech.audio import short_audio
    from whisperq.speech.batch_language import BatchLanguages

    loaded, config = _engine
    options = TranscriptionOptions(language=language)
    _languages = _languages or BatchLanguages()
    batch = _languages.for_batch(items[0].get("condition", ""))
    if any(item["stereo"] for item in items) or not engine.packable(options, loaded, batch):
        return [(_engine_texts(item, language=language), "alone") for item in items]
    audios = {i: short_audio(item["path"], options) for i, item in enumerate(items)}
    short = {i: audio for i, audio in audios.items() if audio is not None}
    packed = engine.transcribe_packed(loaded, list(short.values()), options, config, batch)
    transcripts = dict(zip(short, packed, strict=True))
    for i, item in enumerate(items):
        if i not in transcripts:
            transcripts[i] = engine.transcribe_file(loaded, item["path"], options, config)
    return [
        (_texts(transcripts[i], item), packing_outcome(transcripts[i].options))
        for i, item in enumerate(items)
    ]


def packing_outcome(used: dict[str, Any]) -> str:
    """How a file of a packed system was done, from its transcript's options: its
    language's source (given, learned, detected), packed or alone, whether a share's
    language was checked alone, and why a file packed was redone alone (doubt,
    language)."""
    if "packed_with" not in used:
        return "alone (not short)"
    how = f"{used.get('language_source')}, {'packed' if used['packed_with'] else 'alone'}"
    if used.get("language_checked"):  # unsure of its words: its language checked alone
        how += ", language checked"
    return f"{how}, redone: {used['redone_alone']}" if used.get("redone_alone") else how


def _texts(transcript: Any, item: dict) -> list[str]:
    """One text per file, or per channel for a split stereo call."""
    if not item["stereo"]:
        return [transcript.text]
    return [
        " ".join(s.text.strip() for s in transcript.segments if s.channel == channel)
        for channel in (0, 1)
    ]


SYSTEMS: dict[str, Callable[[str, dict[str, list[dict]]], dict[str, Any]]] = {
    "baseline": run_baseline,
    "baseline_en": lambda model, plan: run_baseline(model, plan, language="en"),
    "engine": run_engine,
    "packed": run_packed,
    "packed_auto": lambda model, plan: run_packed(model, plan, told=False),
    "unguarded": lambda model, plan: run_engine(model, plan, guard=False),
    # the CPU decoding options, one at a time against the engine's defaults (issue 29)
    "engine_greedy": lambda model, plan: run_engine(model, plan, beam_size=1),
    "engine_batched": lambda model, plan: run_engine(model, plan, batch_size=8),
    # each window prompted with the one before: faster-whisper's default, the engine's
    # until the sweep measured the same WER at 1.4x the speed without (issue 29)
    "engine_cond": lambda model, plan: run_engine(model, plan, condition_on_previous_text=True),
}


def run_system(system: str, model: str, plan_file: Path) -> dict[str, Any]:
    """Run one system in a fresh process; its JSON comes back on stdout."""
    command = [sys.executable, __file__, "--run", system, "--model", model, "--plan", plan_file]
    done = subprocess.run(list(map(str, command)), capture_output=True, text=True, timeout=7200)
    if done.returncode != 0:
        raise SystemExit(f"{system} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- scoring and reporting --------------------------------------------------------------


def score(items: list[Item], texts: list[list[str]], system: str) -> float:
    """The engine systems are scored per channel; the baselines (one mixed text) on all
    turns."""
    if system not in MIXED_SYSTEMS:  # the engine: packed, with or without the guard
        references = [r for item in items for r in item.references]
        hypotheses = [h for channels in texts for h in channels]
    else:
        references = [item.mixed_reference for item in items]
        hypotheses = [channels[0] for channels in texts]
    return word_error_rate(references, hypotheses)


def report(plan: dict[str, list[Item]], runs: dict[str, dict], model: str) -> dict[str, Any]:
    """Per condition and system: WER, speed and speed as a ratio to the baseline's; with
    every file's hypotheses."""
    results: dict[str, Any] = {"model": model, "conditions": {}}
    for condition, items in plan.items():
        audio = sum(item.seconds for item in items)
        row: dict[str, Any] = {
            "files": len(items),
            "audio_s": round(audio, 2),
            "reference_words": sum(len(item.mixed_reference.split()) for item in items),
        }
        for system, figures in runs.items():
            texts = figures[condition]["texts"]
            row[system] = {
                "wer": round(score(items, texts, system), 4),
                "speed": round(audio / figures[condition]["wall"], 2),
                "wall_s": round(figures[condition]["wall"], 2),
            }
            if figures[condition].get("how"):
                row[system]["how"] = figures[condition]["how"]
        if "baseline" in runs:
            baseline_wall = runs["baseline"][condition]["wall"]
            for system, figures in runs.items():
                row[system]["x_baseline"] = round(baseline_wall / figures[condition]["wall"], 2)
        row["files_detail"] = [
            asdict(item)
            | {"path": str(item.path)}
            | {system: runs[system][condition]["texts"][i] for system in runs}
            for i, item in enumerate(items)
        ]
        results["conditions"][condition] = row
    return results


def markdown(results: dict[str, Any], systems: list[str]) -> str:
    """Per condition: each system's WER, its speed (audio s per wall s) and, when the
    baseline ran, each other system's speed as a multiple of the baseline's."""
    compared = [s for s in systems if s != "baseline"] if "baseline" in systems else []
    header = ["condition", "files", "audio s", "words"]
    header += [f"{s} WER" for s in systems] + [f"{s} speed" for s in systems]
    header += [f"{s} x baseline" for s in compared]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for condition, row in results["conditions"].items():
        cells = [condition, str(row["files"]), f"{row['audio_s']:.0f}", str(row["reference_words"])]
        cells += [f"{row[s]['wer']:.2%}" for s in systems]
        cells += [f"{row[s]['speed']:.2f}" for s in systems]
        cells += [f"{row[s]['x_baseline']:.2f}x" for s in compared]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# --- command line -----------------------------------------------------------------------


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="default: base (tiny.en with --quick)")
    parser.add_argument(
        "--conditions", default=None, help=f"comma-separated of {CONDITIONS} (default: all)"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="tiny.en, 8 clips, conditions 16k and stereo, systems baseline, engine and packed",
    )
    parser.add_argument(
        "--clips", type=int, default=0, help="use this many clips of each folder (0 = all)"
    )
    parser.add_argument(
        "--folder",
        type=Path,
        action="append",
        help="a folder of recordings with a references.tsv; repeat it to run several sets in "
        "one run (short and long recordings), each condition named after its folder "
        "(default: benchmarks/data/real)",
    )
    parser.add_argument(
        "--systems",
        default=None,
        help=f"comma-separated, of {sorted(SYSTEMS)} (default: {','.join(DEFAULT_SYSTEMS)}; "
        "unguarded is the engine without the invented-text guard)",
    )
    parser.add_argument("--cache", type=Path, default=None, help="default: benchmarks/.data/…")
    parser.add_argument("--run", choices=sorted(SYSTEMS), help=argparse.SUPPRESS)
    parser.add_argument("--plan", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.model = args.model or ("tiny.en" if args.quick else "base")
    args.clips = args.clips or (8 if args.quick else 0)
    args.conditions = args.conditions or ("16k,stereo" if args.quick else ",".join(CONDITIONS))
    quick_systems = ("baseline", "engine", "packed")
    args.systems = args.systems or ",".join(quick_systems if args.quick else DEFAULT_SYSTEMS)
    args.folder = [folder.expanduser() for folder in args.folder or [HERE / "data" / "real"]]
    if args.cache is None:
        if len(args.folder) == 1:
            args.cache = cache_for(args.folder[0])
        else:
            args.cache = HERE / ".data" / "+".join(cache_for(f).name for f in args.folder)
    return args


def cache_for(folder: Path) -> Path:
    """Where a folder's copies (8 kHz, GSM, stereo calls) are built: benchmarks/.data/real
    for the default set, real-<name> for another."""
    if folder.resolve() == (HERE / "data" / "real").resolve():
        return HERE / ".data" / "real"
    return HERE / ".data" / f"real-{re.sub(r'[^A-Za-z0-9_.-]+', '-', folder.name)}"


def main() -> None:
    args = parse_arguments()
    if args.run:  # a child: transcribe the plan with one system, JSON on stdout
        plan = json.loads(args.plan.read_text())
        print(json.dumps(SYSTEMS[args.run](args.model, plan)))
        return

    conditions = [c.strip() for c in args.conditions.split(",") if c.strip()]
    unknown = set(conditions) - set(CONDITIONS)
    if unknown:
        raise SystemExit(f"unknown conditions {sorted(unknown)}; known: {CONDITIONS}")
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = set(systems) - set(SYSTEMS)
    if unknown:
        raise SystemExit(f"unknown systems {sorted(unknown)}; known: {sorted(SYSTEMS)}")
    plan: dict[str, list[Item]] = {}
    for folder in args.folder:
        clips = read_clips(folder)
        if args.clips:
            clips = pick(clips, args.clips)
        cache = args.cache if len(args.folder) == 1 else cache_for(folder)
        cache.mkdir(parents=True, exist_ok=True)
        built = build(clips, conditions, cache)
        # several sets in one run: each condition named after its folder ("long_real 8k")
        named = len(args.folder) > 1
        plan |= {(f"{folder.name} {c}" if named else c): items for c, items in built.items()}
        speakers = len({clip.speaker for clip in clips})
        print(
            f"{len(clips)} clips, {speakers} speakers, {sum(c.seconds for c in clips):.0f} s "
            f"of audio from {folder}",
            flush=True,
        )
    args.cache.mkdir(parents=True, exist_ok=True)
    print(
        f"model {args.model}; {os.cpu_count()} cores "
        f"({platform.processor() or platform.machine()})",
        flush=True,
    )
    plan_file = args.cache / "plan.json"
    plan_file.write_text(
        json.dumps(
            {
                condition: [
                    {
                        "path": str(item.path),
                        "stereo": item.stereo,
                        "condition": condition,
                        "seconds": item.seconds,
                    }
                    for item in items
                ]
                for condition, items in plan.items()
            }
        )
    )
    runs = {}
    for system in systems:
        print(f"  {system} ...", flush=True)
        runs[system] = run_system(system, args.model, plan_file)
    results = report(plan, runs, args.model)
    results["machine"] = f"{os.cpu_count()} cores, {platform.platform()}"
    results["engine_processes"] = runs.get("engine", {}).get("processes")
    results["processes"] = {s: run.get("processes", 1) for s, run in runs.items()}
    (args.cache / "results.json").write_text(json.dumps(results, indent=1))
    print()
    print(markdown(results, systems))
    for condition, row in results["conditions"].items():
        for system in systems:
            if system.startswith("packed") and row[system].get("how"):
                print(f"  {condition} {system}: {row[system]['how']}")
    print(f"\nfigures and every hypothesis: {args.cache / 'results.json'}")


if __name__ == "__main__":
    main()
