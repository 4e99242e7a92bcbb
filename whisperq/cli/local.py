"""`whisperq local ...`: the embedded local stack (moto server and worker processes)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Annotated

import typer

from whisperq.cli.app import err, local_app, out
from whisperq.errors import LocalStackError
from whisperq.settings import load_settings
from whisperq.stacks import local as local_stack

WorkersOption = Annotated[
    int | None,
    typer.Option("--workers", "-w", min=1, help="Worker processes (default: one per 4 cores)."),
]
ModelOption = Annotated[
    str | None, typer.Option("--model", help="Model (default: tiny.en, offline).")
]
VisibilityOption = Annotated[
    int, typer.Option("--visibility-timeout", min=1, help="The job queue's, in seconds.")
]
ReceiveOption = Annotated[
    int,
    typer.Option(
        "--max-receive-count", min=1, help="Deliveries before a job goes to the dead-letter queue."
    ),
]


@local_app.command("up")
def local_up(
    workers: WorkersOption = None,
    model: ModelOption = None,
    visibility_timeout: VisibilityOption = local_stack.VISIBILITY_TIMEOUT_S,
    max_receive_count: ReceiveOption = local_stack.MAX_RECEIVE_COUNT,
) -> None:
    """Start moto server on 127.0.0.1, create bucket and queues, start the workers and the
    ingest process (files copied into `s3://whisperq-local/incoming/<batch>/` become jobs).

    On a running stack it starts again any worker or ingest process that died, keeping the
    batches and logs; new options need `whisperq local reset` (which discards the data).

    Example: `whisperq local up --workers 2`
    """
    options = _StackOptions(workers, model, visibility_timeout, max_receive_count)
    with err.status("Starting the local stack (moto server, workers, model)..."):
        result = local_stack.up(load_settings(), **asdict(options))
    _report(result, workers=workers, model=model)


@local_app.command("reset")
def local_reset(
    workers: WorkersOption = None,
    model: ModelOption = None,
    visibility_timeout: VisibilityOption = local_stack.VISIBILITY_TIMEOUT_S,
    max_receive_count: ReceiveOption = local_stack.MAX_RECEIVE_COUNT,
) -> None:
    """Stop the local stack and start a fresh, empty one (with these options): every batch
    on it is discarded; the old logs move to logs/previous/.

    Example: `whisperq local reset --model base`
    """
    options = _StackOptions(workers, model, visibility_timeout, max_receive_count)
    with err.status("Starting a fresh local stack (moto server, workers, model)..."):
        result = local_stack.reset(load_settings(), **asdict(options))
    _report(result, workers=None, model=None)


@dataclass(frozen=True)
class _StackOptions:
    """What `local up` and `local reset` pass on to the stack."""

    workers: int | None
    model: str | None
    visibility_timeout: int
    max_receive_count: int


def _report(result: local_stack.UpResult, workers: int | None, model: str | None) -> None:
    state, started = result.state, result.started
    connection = state["settings"]
    processes = local_stack.managed_processes(state)
    running = [process for process in processes if process.name.startswith("worker")]
    verb = "Started" if started else "Already running:"
    if result.restarted:
        verb = f"Restarted {', '.join(result.restarted)} (batches and logs kept) on the"
    err.print(
        f"{verb} local stack at {connection['endpoint_url']} "
        f"({len(running)} worker(s), model {state['model']}).",
        highlight=False,
        soft_wrap=True,  # a URL broken across lines cannot be copied
    )
    err.print(
        f"bucket {connection['bucket']}, queue {connection['queue_url']}",
        highlight=False,
        soft_wrap=True,
    )
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
            # moto takes any credentials: these work on a machine with no AWS profile
            f"  AWS_ACCESS_KEY_ID={connection['aws_access_key_id']} "
            f"AWS_SECRET_ACCESS_KEY={connection['aws_secret_access_key']} "
            f"AWS_DEFAULT_REGION={connection['region']} "
            f"aws --endpoint-url {connection['endpoint_url']} s3 cp call.wav {drop}demo/",
            highlight=False,
            soft_wrap=True,
            markup=False,
        )
    if not started:
        differs = []
        if workers is not None and workers != len(running):
            differs.append(f"--workers {workers} (running: {len(running)})")
        if model is not None and model != state["model"]:
            differs.append(f"--model {model} (running: {state['model']})")
        if differs:
            err.print(
                f"[yellow]Not applied to the running stack:[/] {', '.join(differs)}. "
                "`whisperq local reset` with these options starts a fresh stack with them "
                "(its batches are discarded).",
                soft_wrap=True,
            )
    err.print("whisperq commands now use it; `whisperq local down` to stop.")


@local_app.command("down")
def local_down() -> None:
    """Stop every process the local stack started (by PID); its data is discarded.

    Example: `whisperq local down`
    """
    stopped = local_stack.down(load_settings())
    if not stopped:
        err.print("The local stack is not running.")
        return
    err.print(f"Stopped {len(stopped)} process(es): " + ", ".join(p.name for p in stopped))


@local_app.command("logs")
def local_logs(
    lines: Annotated[int, typer.Option("--lines", "-n", help="Lines per log file.")] = 40,
) -> None:
    """Show the end of each local stack log (moto server, workers, ingest).

    Example: `whisperq local logs --lines 20`
    """
    files = local_stack.log_files(load_settings())
    if not files:
        raise LocalStackError("No logs: the local stack has not been started.")
    for path in files:
        out.rule(str(path))
        out.print(local_stack.tail(path, lines), markup=False, highlight=False)
