"""`whisperq worker`: a Celery worker in the foreground, what a server's service runs."""

from __future__ import annotations

import os
from typing import Annotated, Any

import typer

from whisperq.cli.app import app, settings_for_storage
from whisperq.errors import WhisperqError


@app.command()
def worker(
    concurrency: Annotated[
        int | None, typer.Option("--concurrency", "-c", help="Pool processes.")
    ] = None,
    model: Annotated[str | None, typer.Option("--model", help="Model name or directory.")] = None,
    loglevel: Annotated[str, typer.Option("--loglevel", "-l")] = "INFO",
) -> None:
    """Run a Celery worker in the foreground (what a server's service runs).

    SIGTERM stops it gracefully: no new jobs; the running job may finish within
    WHISPERQ_SHUTDOWN_GRACE_SECONDS, else it goes back to the queue for another worker.
    """
    # billiard reads this when celery is first imported (below): SIGTERM then means
    # Celery's soft shutdown (bounded wait, then hand back), and pool processes ignore it.
    os.environ.setdefault("REMAP_SIGTERM", "SIGQUIT")
    try:
        from whisperq.worker import run_worker
    except ImportError as error:
        raise WhisperqError(f"{error}. The worker needs: pip install 'whisperq[worker]'") from None
    overrides: dict[str, Any] = {}
    if concurrency:
        overrides["worker_concurrency"] = concurrency
    if model:
        overrides["model"] = model
    settings = settings_for_storage()
    run_worker(settings.model_copy(update=overrides), loglevel=loglevel.upper())
