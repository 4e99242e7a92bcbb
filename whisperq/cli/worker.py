"""`whisperq worker`: a Celery worker in the foreground, what a server's service runs; and
`whisperq mark-unhealthy`, what the image runs when that worker cannot run."""

from __future__ import annotations

import os
from typing import Annotated, Any

import typer
from botocore.exceptions import BotoCoreError, ClientError

from whisperq.cli.app import app, explain_aws_error, out, settings_for_storage
from whisperq.errors import WhisperqError
from whisperq.settings import load_settings


@app.command()
def worker(
    concurrency: Annotated[
        int | None, typer.Option("--concurrency", "-c", help="Pool processes.")
    ] = None,
    model: Annotated[str | None, typer.Option("--model", help="Model name or directory.")] = None,
    loglevel: Annotated[
        str, typer.Option("--loglevel", "-l", help="DEBUG, INFO, WARNING or ERROR.")
    ] = "INFO",
) -> None:
    """Run a Celery worker in the foreground (what a server's service runs).

    SIGTERM stops it gracefully: no new jobs; the running job may finish within
    WHISPERQ_SHUTDOWN_GRACE_SECONDS, else it goes back to the queue for another worker.

    Example: `whisperq worker --loglevel INFO`
    """
    # billiard reads this when celery is first imported (below): SIGTERM then means
    # Celery's soft shutdown (bounded wait, then hand back), and pool processes ignore it.
    os.environ.setdefault("REMAP_SIGTERM", "SIGQUIT")
    try:
        from whisperq.worker.app import run_worker
    except ImportError as error:
        raise WhisperqError(f"{error}. The worker needs: pip install 'whisperq[worker]'") from None
    overrides: dict[str, Any] = {}
    if concurrency:
        overrides["worker_concurrency"] = concurrency
    if model:
        overrides["model"] = model
    settings = settings_for_storage()
    status = run_worker(settings.model_copy(update=overrides), loglevel=loglevel.upper())
    if status:
        # 75 (defaults.WORKER_EXIT_INSTANCE_LEAVING): stopped because the instance is going
        # away; the unit's RestartPreventExitStatus=75 keeps systemd from restarting it.
        raise typer.Exit(status)


@app.command("mark-unhealthy")
def mark_unhealthy(
    reason: Annotated[
        str, typer.Option("--reason", help="Why (printed with what was done, for the log).")
    ] = "not given",
) -> None:
    """Have the Auto Scaling group replace this instance: a worker that cannot run must not
    sit there looking healthy.

    On EC2: reads the instance id from IMDS (or WHISPERQ_INSTANCE_ID) and marks it
    Unhealthy (SetInstanceHealth, no grace period) in WHISPERQ_AUTOSCALING_GROUP. Exits 0
    when marked, 1 with a message otherwise. The image runs it when the worker service
    gives up or the boot fails.
    """
    from whisperq import storage
    from whisperq.worker.instance import Imds
    from whisperq.worker.instance import mark_unhealthy as set_unhealthy

    try:
        settings = load_settings()
    except WhisperqError as error:  # an invalid setting: still "not marked" (1)
        raise WhisperqError(f"not marked (reason: {reason}): {error}") from None
    group = settings.autoscaling_group
    if not group:
        raise WhisperqError(
            f"not marked (reason: {reason}): no Auto Scaling group configured "
            "(WHISPERQ_AUTOSCALING_GROUP; worker.env sets it on a worker)."
        )
    instance_id = settings.instance_id
    if not instance_id:
        imds = Imds(settings.imds_endpoint)
        try:
            instance_id = imds.instance_id()
        except OSError as error:
            raise WhisperqError(
                f"not marked (reason: {reason}): cannot read this instance's id from IMDS at "
                f"{imds.endpoint} ({error}); not on EC2? WHISPERQ_INSTANCE_ID names it."
            ) from None
        if not instance_id:
            raise WhisperqError(
                f"not marked (reason: {reason}): IMDS at {imds.endpoint} has no instance id."
            )
    try:
        set_unhealthy(storage.client(settings, "autoscaling"), instance_id)
    except (BotoCoreError, ClientError) as error:
        raise WhisperqError(
            f"not marked (reason: {reason}): could not mark {instance_id} unhealthy in Auto "
            f"Scaling group {group}: {explain_aws_error(error, settings)}"
        ) from None
    out.print(
        f"marked {instance_id} unhealthy in Auto Scaling group {group} (reason: {reason}): "
        "the group replaces it",
        highlight=False,
        soft_wrap=True,
    )
