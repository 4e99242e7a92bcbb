"""Throughput and accuracy, side by side in one run:

  (a) the seed-style baseline: one WhisperModel, files one after another, beam_size=5;
  (b) the whisperq engine in-process (whisperq.speech.engine with its defaults);
  (c) end to end through the local stack: submit -> every result JSON in S3.

Each runs in its own process (so peak RSS is its own). For each: audio seconds per wall
second, WER (jiwer, Whisper's English normaliser) and peak RSS; then the ratios b/a and c/b,
and the worker's cold start (stack start to ready, model load).

    python benchmarks/throughput.py            # base model, 8 calls, ~16 min of audio
    python benchmarks/throughput.py --quick    # tiny.en, 4 calls of 4 turns (a test runs 2)
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import re
import resource
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from calls import Call, generate  # noqa: E402


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_baseline(model_name: str, calls: list[Call], threads: int) -> dict:
    from faster_whisper import WhisperModel

    from whisperq.speech.engine import resolve_model

    model = WhisperModel(
        resolve_model(model_name), device="cpu", compute_type="int8", cpu_threads=threads
    )
    started = time.perf_counter()
    texts = [
        " ".join(s.text.strip() for s in model.transcribe(str(call.path), beam_size=5)[0])
        for call in calls
    ]
    return {"wall": time.perf_counter() - started, "texts": texts, "rss_mb": peak_rss_mb()}


def run_engine(model_name: str, calls: list[Call], threads: int) -> dict:
    """The engine as a worker runs it: as many processes as ``choose_concurrency`` picks
    for this machine, each with its own model, files handed out as they free up."""
    from whisperq.speech import engine

    batch_size = int(os.environ.get("WHISPERQ_BATCH_SIZE", "0"))
    processes = engine.choose_concurrency(0, engine.choose_device("auto"))
    ready = multiprocessing.Barrier(processes + 1)
    with ProcessPoolExecutor(
        processes, initializer=_load_engine, initargs=(model_name, batch_size, processes, ready)
    ) as pool:
        warm = pool.submit(time.sleep, 0)  # starts the processes; they load, then meet here
        ready.wait(timeout=600)
        warm.result()
        started = time.perf_counter()
        texts = list(pool.map(_engine_text, [call.path for call in calls]))
        wall = time.perf_counter() - started
        peaks = list(pool.map(_peak_after, [0.2] * processes))
    return {"wall": wall, "texts": texts, "rss_mb": max(peaks), "processes": processes}


_engine: tuple = ()


def _load_engine(model_name: str, batch_size: int, processes: int, ready: Any) -> None:
    global _engine
    from whisperq.speech import engine

    config = engine.EngineConfig(model=model_name, batch_size=batch_size, concurrency=processes)
    _engine = (engine.load_model(config), config)
    ready.wait(timeout=600)


def _engine_text(path: Path) -> str:
    from whisperq.schemas import TranscriptionOptions
    from whisperq.speech import engine

    loaded, config = _engine
    return engine.transcribe_file(loaded, path, TranscriptionOptions(), config).text


def _peak_after(seconds: float) -> float:
    time.sleep(seconds)  # so that each process gets one of these
    return peak_rss_mb()


def run_end_to_end(model_name: str, calls: list[Call], workers: int) -> dict:
    """Local stack in a throw-away state dir: submit, wait for every JSON, read texts."""
    from whisperq import storage
    from whisperq.batches import tracking
    from whisperq.batches.submit import submit
    from whisperq.settings import Settings
    from whisperq.stacks import local as local_stack

    with tempfile.TemporaryDirectory() as state:
        os.environ["WHISPERQ_STATE_DIR"] = state
        settings = Settings()
        up_started = time.perf_counter()
        local_stack.up(settings, workers=workers, model=model_name)
        cold_start = time.perf_counter() - up_started
        try:
            settings = Settings()
            s3 = storage.client(settings, "s3")
            started = time.perf_counter()
            folder = calls[0].path.parent  # keys: the file names
            submit(settings, [str(call.path) for call in calls], batch="bench", cwd=folder)
            deadline = started + 3600
            while True:
                status = tracking.batch_status(settings, s3, "bench")
                if status is not None and status.finished:
                    break
                if time.perf_counter() > deadline:
                    raise SystemExit("end to end: not finished within an hour")
                time.sleep(0.5)
            wall = time.perf_counter() - started
            names = [call.path.name for call in calls]
            results = [
                storage.get_json(s3, settings.bucket, f"results/bench/{name}.json")
                for name in names
            ]
            worker_rss = max(
                _vm_hwm_mb(p.pid)
                for p in local_stack.managed_processes(local_stack.read_state(settings))
                if p.name.startswith("worker")
            )
            logs = "".join(
                Path(path).read_text() for path in map(str, local_stack.log_files(settings))
            )
            loads = [float(x) for x in re.findall(r"loaded on \S+ in ([0-9.]+)s", logs)]
        finally:
            local_stack.down(settings)
    return {
        "wall": wall,
        "texts": [(r or {}).get("text", "") for r in results],
        "rss_mb": worker_rss,
        "cold_start_s": cold_start,
        "model_load_s": max(loads) if loads else None,
        "failed": status.failed,
    }


def _vm_hwm_mb(pid: int) -> float:
    """Peak RSS of a process and its pool children (Linux /proc)."""
    pids = [pid]
    children = Path(f"/proc/{pid}/task/{pid}/children")
    if children.exists():
        pids += [int(x) for x in children.read_text().split()]
    peak = 0.0
    for one in pids:
        status = Path(f"/proc/{one}/status")
        if status.exists():
            match = re.search(r"VmHWM:\s+(\d+) kB", status.read_text())
            if match:
                peak = max(peak, int(match.group(1)) / 1024)
    return peak


def word_error_rate(references: list[str], hypotheses: list[str]) -> float:
    import jiwer
    from whisper_normalizer.english import EnglishTextNormalizer

    normalize = EnglishTextNormalizer()
    return jiwer.wer(
        [normalize(r) for r in references], [normalize(h) or "<empty>" for h in hypotheses]
    )


def child(mode: str, args: argparse.Namespace) -> dict:
    """Run one mode in a fresh process; its JSON comes back on stdout."""
    command = [sys.executable, __file__, "--mode", mode, "--model", args.model]
    command += ["--calls", str(args.calls), "--turns", str(args.turns), "--data", str(args.data)]
    command += ["--threads", str(args.threads), "--workers", str(args.workers)]
    env = os.environ | {"WHISPERQ_BATCH_SIZE": str(args.batch_size)}
    done = subprocess.run(command, capture_output=True, text=True, timeout=7200, env=env)
    if done.returncode != 0:
        raise SystemExit(f"{mode} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny.en and 4 calls of 4 turns")
    parser.add_argument("--model", default=None, help="default: base (tiny.en with --quick)")
    parser.add_argument("--calls", type=int, default=None)
    parser.add_argument(
        "--turns", type=int, default=None, help="dialogue turns per call (default 24; 4 quick)"
    )
    parser.add_argument("--data", type=Path, default=HERE / ".data")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--workers", type=int, default=1, help="local stack workers for (c)")
    parser.add_argument("--skip-e2e", action="store_true")
    parser.add_argument(
        "--batch-size", type=int, default=0, help="engine and workers (0 = their default)"
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--mode", choices=["baseline", "engine", "e2e"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.model = args.model or ("tiny.en" if args.quick else "base")
    args.calls = args.calls or (4 if args.quick else 8)
    args.turns = args.turns or (4 if args.quick else 24)

    calls = generate(args.data / f"{args.calls}x{args.turns}", args.calls, args.turns)
    if args.mode:
        runner = {"baseline": run_baseline, "engine": run_engine, "e2e": run_end_to_end}
        scale = args.workers if args.mode == "e2e" else args.threads
        print(json.dumps(runner[args.mode](args.model, calls, scale)))
        return

    audio = sum(call.seconds for call in calls)
    print(
        f"{len(calls)} calls, {audio / 60:.1f} min of audio, model {args.model}, "
        f"engine batch size {args.batch_size or 'default'}, "
        f"{os.cpu_count()} cores ({platform.processor() or platform.machine()})",
        flush=True,
    )
    modes = ["baseline", "engine"] + ([] if args.skip_e2e else ["e2e"])
    figures = {}
    for mode in modes:
        result = child(mode, args)
        result["speed"] = audio / result["wall"]
        result["wer"] = word_error_rate([c.reference for c in calls], result.pop("texts"))
        figures[mode] = result
        print(
            f"  {mode:<9} {result['speed']:6.1f}x real time   WER {result['wer']:.3f}   "
            f"peak RSS {result['rss_mb']:.0f} MB",
            flush=True,
        )
    print(f"  engine / baseline:  {figures['engine']['speed'] / figures['baseline']['speed']:.2f}x")
    if "e2e" in figures:
        e2e = figures["e2e"]
        print(f"  e2e / engine:       {e2e['speed'] / figures['engine']['speed']:.2f}x")
        print(
            f"  cold start: local stack up to ready {e2e['cold_start_s']:.1f}s, "
            f"model load {e2e['model_load_s']:.2f}s"
        )
    if args.json:
        args.json.write_text(
            json.dumps({"audio_s": audio, "model": args.model, **figures}, indent=1)
        )


if __name__ == "__main__":
    main()
