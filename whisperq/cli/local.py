"""`whisperq local ...`: the embedded local stack (moto server and worker processes)."""

from __future__ import annotations

from typing import Annotated

import typer

from whisperq.cli.app import err, local_app, out
from whisperq.errors import LocalStackError
from whisperq.settings import load_settings
from whisperq.stacks import local as local_stack


@local_app.command("up")
def local_up(
    workers: Annotated[
        int | None,
        typer.Option("--workers", "-w", min=1, help="Worker processes (default: one per 4 cores)."),
    ] = None,
    model: Annotated[
        str | None, typer.Option("--model", help="Model (default: tiny.en, offline).")
    ] = None,
    visibility_timeout: Annotated[
        int, typer.Option("--visibility-timeout", min=1, help="Queue's, seconds.")
    ] = local_stack.VISIBILITY_TIMEOUT_S,
    max_receive_count: Annotated[
        int,
        typer.Option(
            "--max-receive-count",
            min=1,
            help="Deliveries before a job goes to the dead-letter queue.",
        ),
    ] = local_stack.MAX_RECEIVE_COUNT,
) -> None:
    """Start moto server on 127.0.0.1, create bucket and queues, start the workers and the
    ingest process (files copied into `s3://whisperq-local/incoming/<batch>/` become jobs)."""
    settings = load_settings()
    with err.status("Starting the local stack (moto server, workers, model)..."):
        state, started = local_stack.up(
            settings,
            workers=workers,
            model=model,
            visibility_timeout=visibility_timeout,
            max_receive_count=max_receive_count,
        )
    connection = state["settings"]
    processes = local_stack.managed_processes(state)
    running = [process for process in processes if process.name.startswith("worker")]
    verb = "Started" if started else "Already running:"
    err.print(
        f"{verb} local stack at {connection['endpoint_url']} "
        f"({len(running)} worker(s), model {state['model']}).",
        highlight=False,
    )
    err.print(f"bucket {connection['bucket']}, queue {connection['queue_url']}", highlight=False)
    if connection.get("autoscaling_group"):
        err.print(
            f"fleet: group {connection['autoscaling_group']} in moto, one instance per worker",
            highlight=False,
        )
    if connection.get("ingest_queue_url"):
        drop = f"s3://{connection['bucket']}/{local_stack.INGEST_PREFIX}"
        err.print(
            f"ingest: audio copied into {drop}<batch>/ with any S3 client becomes a job of "
            "<batch>, e.g.",
            highlight=False,
            soft_wrap=True,
        )
        err.print(
            f"  aws --endpoint-url {connection['endpoint_url']} s3 cp call.wav {drop}demo/",
            highlight=False,
            soft_wrap=True,
            markup=False,
        )
    err.print("whisperq commands now use it; `whisperq local down` to stop.")


@local_app.command("down")
def local_down() -> None:
    """Stop every process the local stack started (by PID); its data is discarded."""
    stopped = local_stack.down(load_settings())
    if not stopped:
        err.print("The local stack is not running.")
        return
    err.print(f"Stopped {len(stopped)} process(es): " + ", ".join(p.name for p in stopped))


@local_app.command("logs")
def local_logs(
    lines: Annotated[int, typer.Option("--lines", "-n", help="Lines per log file.")] = 40,
) -> None:
    """Show the end of each local stack log (moto server, workers, ingest)."""
    files = local_stack.log_files(load_settings())
    if not files:
        raise LocalStackError("No logs: the local stack has not been started.")
    for path in files:
        out.rule(str(path))
        out.print(local_stack.tail(path, lines), markup=False, highlight=False)
