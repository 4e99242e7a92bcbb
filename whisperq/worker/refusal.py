"""An invalid job payload: never executed, and refused where the user will look.

A payload that does not validate as a ``TranscriptionJob`` is logged; if its batch and
path are themselves safe keys, an error record is written at that path too, so that
``status`` shows the refusal. Anything else about it is unknown and stays out of the
record.
"""

from __future__ import annotations

import logging
from typing import Any

from pydantic import ValidationError

from whisperq import keys
from whisperq.schemas import TranscriptionJob
from whisperq.worker import failures
from whisperq.worker.results import ResultStore

log = logging.getLogger("whisperq.worker")


def refuse(payload: Any, error: ValidationError, results: ResultStore) -> str:
    """An invalid payload is never executed. If its batch and path are themselves
    safe, the refusal is recorded where the user will look; otherwise only logged.
    Returns the job's outcome: "refused"."""
    log.error("refused an invalid job payload %.500r: %s", payload, error)
    if isinstance(payload, dict):
        try:
            batch = keys.validate_batch_name(str(payload.get("batch")))
            path = keys.normalize_relative_path(str(payload.get("path")))
        except keys.InvalidKeyError:
            return "refused"
        if path == payload.get("path"):
            # Only batch, path and input_key go into the record; the rest is unknown.
            fake = TranscriptionJob.model_construct(
                batch=batch, path=path, input_key=keys.input_key(batch, path), sha256="", size=0
            )
            failure = failures.classify(error, path)
            results.write_error(fake, failure, error, 1, None)
    return "refused"
