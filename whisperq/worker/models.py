"""Which Whisper model a job runs on: the worker's own, loaded when each pool process
starts (``warm_up``), or another one the worker's settings allow (``allowed_models``),
loaded on first use and then kept; any other model a batch asks for fails its job with a
reason that says what to do.

The engine keeps loaded models per process (``engine.load_model``); this only decides
which configuration to ask it for.
"""

from __future__ import annotations

import dataclasses
import logging
import time

from whisperq.schemas import TranscriptionJob
from whisperq.settings import Settings
from whisperq.speech import engine

log = logging.getLogger("whisperq.worker")


def engine_config(settings: Settings) -> engine.EngineConfig:
    return engine.EngineConfig(
        model=settings.model,
        device=settings.device,
        compute_type=settings.compute_type,
        cpu_threads=settings.cpu_threads,
        concurrency=settings.worker_concurrency,
        beam_size=settings.beam_size,
        vad=settings.vad,
        batch_size=settings.batch_size,
    )


class WorkerModels:
    """The worker's model and the others its settings allow."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.config = engine_config(settings)

    def warm_up(self) -> None:
        started = time.perf_counter()
        try:
            loaded = engine.load_model(self.config)
        except engine.ModelError as error:
            log.error("%s; this worker will hand every job back", error)
            return
        log.info(
            "model %s loaded on %s/%s in %.2fs; whisperq worker ready",
            loaded.info.name,
            loaded.info.device,
            loaded.info.compute_type,
            time.perf_counter() - started,
        )

    def for_job(self, job: TranscriptionJob) -> tuple[engine.LoadedModel, engine.EngineConfig]:
        """The model the batch asks for: the worker's own, or another one its settings
        allow (loaded on first use, then kept); anything else fails the job with a reason."""
        wanted = job.options.model
        if not wanted or wanted == self.settings.model:
            return engine.load_model(self.config), self.config
        allowed = self.settings.allowed_models
        if "*" not in allowed and wanted not in allowed:
            raise engine.OptionNotServed(
                f"the batch asks for model {wanted!r}, but these workers serve "
                f"{self.settings.model!r} only. Submit without --model, or allow it on the "
                f"workers: WHISPERQ_ALLOWED_MODELS='[\"{wanted}\"]'."
            )
        config = dataclasses.replace(self.config, model=wanted)
        try:
            return engine.load_model(config), config
        except engine.ModelError as error:
            raise engine.OptionNotServed(
                f"the batch asks for model {wanted!r}, which this worker cannot load: {error}"
            ) from error
