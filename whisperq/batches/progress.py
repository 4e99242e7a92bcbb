"""How long-running library calls report progress; the CLI draws it with rich."""

from __future__ import annotations


class ProgressHooks:
    """Silent by default. ``stage`` starts a named stage of ``total`` units (files or
    bytes); ``advance`` reports units done."""

    def stage(self, name: str, total: int) -> None: ...

    def advance(self, amount: int = 1) -> None: ...
