"""Memory for a long recording: the whole file in memory (how faster-whisper's
``decode_audio`` and the seed deployments take it) against whisperq's window-by-window
stream, on one synthetic recording of several hours (the benchmark calls, repeated).

Each measurement runs in its own process, so each peak RSS is its own:

  (a) whole file: ``faster_whisper.decode_audio`` of the whole file, nothing else (the
      least the whole-file path needs: transcribing adds the model and its features);
  (b) stream, decode only: ``whisperq.speech.audio.stream_audio`` over the whole file;
  (c) stream, transcribed: ``whisperq.speech.engine.transcribe_file``, the worker's path, with
      its model (tiny.en by default: it is the memory that is measured here, not speed).

    python benchmarks/long_file.py                  # 3 hours, (a) (b) (c)
    python benchmarks/long_file.py --skip-transcribe
    python benchmarks/long_file.py --quick          # 0.02 h of 2 short calls (a test runs it)
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from calls import generate  # noqa: E402


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def long_recording(data: Path, hours: float, calls: int = 8, turns: int = 24) -> Path:
    """The benchmark calls (``calls`` of ``turns``) joined and repeated to ``hours``, as one
    8 kHz mono WAV."""
    source = "" if (calls, turns) == (8, 24) else f"-{calls}x{turns}"
    path = data / f"long-{hours:g}h{source}.wav"
    if path.exists():
        return path
    calls_made = generate(data / f"{calls}x{turns}", calls, turns)
    one_round = data / f"long-round{source}.wav"
    with tempfile.TemporaryDirectory() as tmp:
        telephone = []  # sox joins only files of one rate and layout
        for call in calls_made:
            telephone.append(str(Path(tmp) / call.path.name))
            subprocess.run(
                ["sox", str(call.path), "-r", "8000", "-c", "1", telephone[-1]], check=True
            )
        subprocess.run(["sox", *telephone, str(one_round)], check=True)
    rounds = math.ceil(hours * 3600 / sum(c.seconds for c in calls_made))
    partial = path.with_suffix(".partial.wav")
    command = ["sox", str(one_round), str(partial), "repeat", str(rounds - 1)]
    subprocess.run([*command, "trim", "0", str(hours * 3600)], check=True)
    partial.replace(path)
    one_round.unlink()
    return path


def measure(mode: str, path: Path, model: str) -> dict:
    started = time.perf_counter()
    if mode == "whole":
        from faster_whisper import decode_audio

        seconds = len(decode_audio(str(path), sampling_rate=16_000)) / 16_000
        windows = 1
    elif mode == "stream":
        from whisperq.speech.audio import SAMPLE_RATE, stream_audio

        lengths = [len(window.samples) for window in stream_audio(path)]
        seconds, windows = sum(lengths) / SAMPLE_RATE, len(lengths)
    else:
        from whisperq.schemas import TranscriptionOptions
        from whisperq.speech import engine

        config = engine.EngineConfig(model=model)
        loaded = engine.load_model(config)
        transcript = engine.transcribe_file(loaded, path, TranscriptionOptions(), config)
        seconds, windows = transcript.duration, len(transcript.segments)
    return {
        "seconds": seconds,
        "windows_or_segments": windows,
        "wall": time.perf_counter() - started,
        "rss_mb": peak_rss_mb(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hours", type=float, default=3.0)
    parser.add_argument("--model", default="tiny.en", help="for (c); default tiny.en")
    parser.add_argument("--data", type=Path, default=HERE / ".data")
    parser.add_argument("--skip-transcribe", action="store_true", help="only (a) and (b)")
    parser.add_argument(
        "--quick", action="store_true", help="0.02 h made of 2 calls of 6 turns, tiny.en"
    )
    parser.add_argument("--mode", choices=["whole", "stream", "transcribe"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.hours = 0.02
    source = (2, 6) if args.quick else (8, 24)
    path = long_recording(args.data, args.hours, *source)
    if args.mode:
        print(json.dumps(measure(args.mode, path, args.model)))
        return
    print(f"{path.name}: {args.hours:g} h of 8 kHz mono audio, {path.stat().st_size >> 20} MB")
    labels = {
        "whole": "(a) whole file, decode only",
        "stream": "(b) stream, decode only",
        "transcribe": f"(c) stream, transcribed ({args.model})",
    }
    modes = ["whole", "stream"] + ([] if args.skip_transcribe else ["transcribe"])
    for mode in modes:
        command = [sys.executable, __file__, "--mode", mode, "--hours", str(args.hours)]
        command += ["--model", args.model, "--data", str(args.data)]
        command += ["--quick"] if args.quick else []
        done = subprocess.run(command, capture_output=True, text=True, timeout=7200)
        if done.returncode != 0:
            raise SystemExit(f"{mode} failed:\n{done.stderr[-4000:]}")
        figures = json.loads(done.stdout.strip().splitlines()[-1])
        print(
            f"  {labels[mode]:<36} peak RSS {figures['rss_mb']:6.0f} MB   "
            f"{figures['seconds'] / 3600:.2f} h of audio in {figures['wall']:.0f} s",
            flush=True,
        )


if __name__ == "__main__":
    main()
