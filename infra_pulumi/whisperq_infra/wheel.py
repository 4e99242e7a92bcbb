"""The whisperq wheel a stock image installs at boot: dist/whisperq-<version>-*.whl, built
by the program itself (``make wheel``'s command) when it is missing or older than the code.

Building at preview keeps docs/deploy.md's steps literal: `pulumi up` on a new checkout works
without a separate `make wheel`, and an edited checkout never ships yesterday's wheel.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import whisperq

REPO = Path(__file__).resolve().parents[2]
# What the wheel is built from: a file here newer than the wheel makes it stale.
SOURCES = ("pyproject.toml", "whisperq")


class WheelError(RuntimeError):
    """The wheel could not be built; the message says what to run instead."""


def wheel_name(version: str = whisperq.__version__) -> str:
    return f"whisperq-{version}-py3-none-any.whl"


def newest_source(root: Path = REPO) -> float:
    """The newest modification time among the files the wheel is built from."""
    newest = 0.0
    for name in SOURCES:
        path = root / name
        files = [path] if path.is_file() else path.rglob("*")
        for file in files:
            if file.is_file() and "__pycache__" not in file.parts:
                newest = max(newest, file.stat().st_mtime)
    return newest


def build_command(dist: Path, root: Path = REPO) -> list[str]:
    """`make wheel`'s command, with the interpreter running the program (the venv's)."""
    pip_wheel = ["-m", "pip", "wheel", "--quiet", "--no-deps"]
    return [sys.executable, *pip_wheel, "-w", str(dist), str(root)]


def run_build(dist: Path, root: Path = REPO) -> None:
    done = subprocess.run(
        build_command(dist, root), capture_output=True, text=True, timeout=600, check=False
    )
    if done.returncode != 0:
        raise WheelError((done.stderr or done.stdout).strip()[-2000:] or f"exit {done.returncode}")


def ensure_wheel(
    dist: Path, root: Path = REPO, build: Callable[[Path, Path], None] = run_build
) -> tuple[Path, bool]:
    """(the wheel, whether it was built now): dist's wheel of this version, built first
    when it is missing or older than the code."""
    wheel = dist / wheel_name()
    if wheel.is_file() and wheel.stat().st_mtime >= newest_source(root):
        return wheel, False
    try:
        build(dist, root)
    except (OSError, subprocess.SubprocessError, WheelError) as error:
        raise WheelError(
            f"could not build {wheel.relative_to(dist.parent)} ({error}): run `make wheel` "
            "in the repository"
        ) from None
    if not wheel.is_file():
        raise WheelError(f"building the wheel made no {wheel}: run `make wheel` in the repository")
    return wheel, True
