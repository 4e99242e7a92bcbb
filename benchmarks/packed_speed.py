"""Short files packed against the same files alone, on this machine, in one run: the
measurement behind ``whisperq.fleet.speeds.SHORT`` and the test that checks it.

Each round takes the next ``pack_files`` files in a shuffled (queue) order, as a worker
gathers a pack, and transcribes them alone (``engine.transcribe_file`` each, as a worker
runs a job that is not packed) and then packed (``engine.short_audio`` each, then
``engine.transcribe_packed``, as ``pack_runner`` does), in the same process with the same
model. Alone and packed rounds alternate, so whatever else runs on the machine slows both
alike: the ratio of their times is what this measures, not the machine's speed. The same
files joined into one long recording (1 s of silence between), transcribed before and after
the packs, give the speed the model's figure in ``speeds.SPEEDS`` stands for (long calls),
so that short files alone can be put against it too.

    python benchmarks/packed_speed.py --model base           # 40 real clips, 16 kHz
    python benchmarks/packed_speed.py --model base --rate 8000
    python benchmarks/packed_speed.py --model tiny.en
"""

from __future__ import annotations

import argparse
import csv
import functools
import random
import subprocess
import tempfile
import time
import wave
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

REAL_CLIPS = Path(__file__).resolve().parent / "data" / "real"


@dataclass(frozen=True)
class PackedTiming:
    files: int
    audio_seconds: float
    alone_seconds: float  # wall seconds, every file decoded alone
    packed_seconds: float  # wall seconds, the same files packed as a worker packs them
    decoded_alone: int  # of the packed run: files that did not share (too little sound, in doubt)
    joined_seconds: float  # wall seconds, the same files joined into one long recording

    @property
    def speedup(self) -> float:
        """How many times faster packed than alone."""
        return self.alone_seconds / self.packed_seconds

    @property
    def alone_factor(self) -> float:
        """Short files alone: their speed as a share of the same audio as one long file
        (each short file pays a whole window; a long one fills its windows)."""
        return self.joined_seconds / self.alone_seconds


def real_clips(folder: Path = REAL_CLIPS) -> list[tuple[Path, float]]:
    """The real clips (all under 30 s) and their lengths, from references.tsv."""
    with (folder / "references.tsv").open(newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    return [(folder / row["file"], float(row["duration_s"])) for row in rows]


def telephone_copies(clips: Sequence[Path], folder: Path, rate: int) -> list[Path]:
    """Copies at ``rate`` Hz, mu-law WAV, as a telephone system records them (decoded by
    the engine's own decoder, resampled by sox: what benchmarks/real_speech.py does)."""
    import numpy as np
    from faster_whisper import decode_audio

    copies = []
    for clip in clips:
        wide, target = folder / f"{clip.stem}-16k.wav", folder / f"{clip.stem}.wav"
        samples = (np.clip(decode_audio(str(clip)), -1, 1) * 32767).astype("<i2")
        with wave.open(str(wide), "wb") as handle:
            handle.setnchannels(1)
            handle.setsampwidth(2)
            handle.setframerate(16000)
            handle.writeframes(samples.tobytes())
        subprocess.run(
            ["sox", str(wide), "-r", str(rate), "-c", "1", "-e", "mu-law", str(target)],
            check=True,
        )
        copies.append(target)
    return copies


def joined(files: Sequence[Path], target: Path, gap_seconds: float = 1.0) -> Path:
    """The files one after another, ``gap_seconds`` of silence between, as one 16 kHz WAV:
    the same speech as a long recording."""
    import numpy as np
    from faster_whisper import decode_audio

    gap = np.zeros(int(16000 * gap_seconds), dtype=np.float32)
    parts = [part for path in files for part in (decode_audio(str(path)), gap)]
    samples = (np.clip(np.concatenate(parts), -1, 1) * 32767).astype("<i2")
    with wave.open(str(target), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(16000)
        handle.writeframes(samples.tobytes())
    return target


def _timed(action: Callable[[], T]) -> tuple[T, float]:
    began = time.perf_counter()
    result = action()
    return result, time.perf_counter() - began


def _alone(loaded: Any, config: Any, files: Sequence[Path], options: Any) -> list[Any]:
    from whisperq.speech import engine

    return [engine.transcribe_file(loaded, path, options, config) for path in files]


def _packed(loaded: Any, config: Any, files: Sequence[Path], options: Any) -> list[Any]:
    from whisperq.speech import engine

    audios = [engine.short_audio(path, options) for path in files]
    shared = [audio for audio in audios if audio is not None]
    return engine.transcribe_packed(loaded, shared, options, config)


def measure(
    loaded: Any,
    config: Any,
    files: Sequence[Path],
    options: Any,
    pack_files: int = 8,
    seed: int = 0,
    join: bool = True,
) -> PackedTiming:
    """Alone and packed wall time of ``files`` (all under 30 s), pack by pack, and with
    ``join`` the time of each two packs' files joined into one long recording (about two
    minutes of audio), right after them: each comparison is made within a minute or two,
    so a machine growing busier or quieter meanwhile counts little."""
    order = list(files)
    random.Random(seed).shuffle(order)  # a standard SQS queue hands jobs out in no order
    alone = packed = audio_seconds = joined_seconds = 0.0
    decoded_alone = 0
    for first in range(0, len(order), 2 * pack_files):
        chunk = order[first : first + 2 * pack_files]
        for start in range(0, len(chunk), pack_files):
            pack = chunk[start : start + pack_files]
            ones, took = _timed(functools.partial(_alone, loaded, config, pack, options))
            alone += took
            audio_seconds += sum(transcript.duration for transcript in ones)
            shared, took = _timed(functools.partial(_packed, loaded, config, pack, options))
            packed += took
            decoded_alone += sum(1 for t in shared if not t.options.get("packed_with"))
        if join:
            with tempfile.TemporaryDirectory() as folder:
                long = joined(chunk, Path(folder) / "joined.wav")
                _, took = _timed(functools.partial(_alone, loaded, config, [long], options))
            joined_seconds += took
    return PackedTiming(len(order), audio_seconds, alone, packed, decoded_alone, joined_seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="base")
    parser.add_argument("--rate", type=int, default=16000, help="8000: mu-law telephone copies")
    parser.add_argument("--clips", type=int, default=0, help="the first N clips (0: all)")
    parser.add_argument("--rounds", type=int, default=1, help="the whole set this many times")
    args = parser.parse_args()

    from whisperq.schemas import TranscriptionOptions
    from whisperq.speech import engine

    config = engine.EngineConfig(model=args.model)
    loaded = engine.load_model(config)
    options = TranscriptionOptions(language="en")  # packing needs a known language
    clips = [path for path, _ in real_clips()][: args.clips or None]
    with tempfile.TemporaryDirectory() as folder:
        if args.rate != 16000:
            clips = telephone_copies(clips, Path(folder), args.rate)
        for round_ in range(args.rounds):
            timing = measure(loaded, config, clips, options, seed=round_)
            print(
                f"{args.model} {args.rate} Hz, {timing.files} files, "
                f"{timing.audio_seconds:.0f} s of audio: alone {timing.alone_seconds:.1f} s "
                f"({timing.audio_seconds / timing.alone_seconds:.2f}x), packed "
                f"{timing.packed_seconds:.1f} s "
                f"({timing.audio_seconds / timing.packed_seconds:.2f}x): "
                f"packed {timing.speedup:.2f}x faster ({timing.decoded_alone} decoded alone); "
                f"joined {timing.joined_seconds:.1f} s: alone at {timing.alone_factor:.2f} of "
                "the joined speed",
                flush=True,
            )


if __name__ == "__main__":
    main()
