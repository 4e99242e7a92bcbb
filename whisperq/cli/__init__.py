"""The ``whisperq`` command line: one module per group of commands.

- ``app``: the Typer app, consoles, and the one place errors become exit codes;
- ``batches``: submit; ``batches_status``: status;
- ``results``: wait, results, retry, dlq;
- ``estimates``: cost, simulate;
- ``report``: conversation metrics of a batch (``review``: its ``--html`` review site);
- ``worker``: the Celery worker;
- ``local``: the embedded local stack;
- ``config``: the CLI's configuration file.

Exit codes: 0 success; 1 an error, or (``wait``) some jobs failed; 2 bad usage or an
invalid setting, or (``wait``) the timeout passed first.
"""

from __future__ import annotations

# Importing the command modules registers their commands on ``app``.
from whisperq.cli import (  # noqa: F401
    batches,
    batches_status,
    config,
    estimates,
    ingest,
    local,
    report,
    results,
    worker,
)
from whisperq.cli.app import app

__all__ = ["app", "main"]


def main() -> None:
    """The ``whisperq`` console script."""
    app()
