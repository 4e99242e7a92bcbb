"""The README and docs/ walked like a new user (issue 34): every command of every fenced
```bash block that runs on the local stack is run, in order, from a fresh home in a
temporary copy of the repository (the repository's .venv/bin on PATH, no WHISPERQ_
variables), against a local stack the README's own `whisperq local up` starts; each must
exit as the text says. README.md comes first (its `whisperq local down` is kept for the
end, so the docs' commands find its batch `weekly`), then docs/*.md in name order; the
stack is stopped also when a command fails.

How a command is read: a line ending in a backslash goes on; `#` after a blank, outside
quotes, starts a comment; `PORT` is the running local stack's port. A command exits 0
unless its comment says "exits N". What is not run, and why:

- `<!-- needs-aws -->` on the line before a block: every command in it needs an AWS
  account; so do the commands ``needs_aws`` recognises (pulumi, packer, `aws` without
  `--endpoint-url`, `make deploy`, `config from-stack`) and every block of docs/deploy.md
  (deploying is its subject);
- `make` targets that install, test or build (`make demo` is what this walk does by
  hand; `make test` runs this test);
- ``NOT_RUN``: local commands about data the walk does not have, each with its reason;
- `whisperq worker` and `whisperq ingest` run in the foreground until stopped: they must
  still be running after a few seconds, and are then stopped as a user would (Ctrl-C).

A command nothing here recognises fails the test: a new command in the docs is either run
or skipped with a reason.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from whisperq.settings import Settings
from whisperq.stacks import local as local_stack

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = ROOT / ".venv" / "bin"
DOCUMENTS = ["README.md", *sorted(f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md"))]
NEEDS_AWS_DOCUMENTS = {"docs/deploy.md": "deploying to AWS is what it is about"}
NEEDS_AWS_MARK = "<!-- needs-aws -->"
COMMAND_TIMEOUT = 120  # seconds, one command (`wait` is the long one)
FOREGROUND_SECONDS = 6  # a foreground command still running after this is fine
EVENTUALLY_SECONDS = 30  # a command the text says answers "once" something happened

# Local commands that are not run, each with why (exact command text).
NOT_RUN = {
    "whisperq report payments --html review/ --include-original-audio": (
        "batch 'payments' is an example name: the walk has no such batch"
    ),
    "WHISPERQ_INGEST_BATCH='{folder}-{date}' WHISPERQ_INGEST_OPTIONS='{\"support\": "
    '{"channels": "split", "speakers": ["agent", "customer"]}}\' whisperq local up': (
        "starts the stack with other ingest settings: `local up` refuses on a running "
        "stack (tests/stacks/ test that)"
    ),
    "AWS_ACCESS_KEY_ID=local AWS_SECRET_ACCESS_KEY=local AWS_DEFAULT_REGION=us-east-1 aws "
    "--endpoint-url http://127.0.0.1:PORT s3 cp call-0001.wav call-0001.wav.json "
    "s3://whisperq-local/incoming/support/2026-12-04/": (
        "the user's own call and its sidecar, not files of the repository"
    ),
    "whisperq status support-$(date -u +%F)": "the batch of the daily-ingest example above",
}
# Answers once the ingest step has run: tried again until EVENTUALLY_SECONDS.
EVENTUALLY = {"whisperq status demo"}
BUILD_TARGETS = re.compile(
    r"^make (setup|demo|test|test-stress|lint|format|bench|wheel|system-deps)\b"
)
FOREGROUND = re.compile(r"^whisperq (worker|ingest)\s*$")


@dataclass(frozen=True)
class Command:
    document: str
    line: int
    text: str  # without its comment, continuation lines joined
    comment: str
    needs_aws: bool  # its block is marked, or its document is about AWS

    @property
    def where(self) -> str:
        return f"{self.document}:{self.line}"

    @property
    def expected_exit(self) -> int:
        found = re.search(r"\bexits (\d+)\b", self.comment)
        return int(found.group(1)) if found else 0


def split_comment(line: str) -> tuple[str, str]:
    """(command, comment): a `#` at the start or after a blank, outside quotes."""
    quote = None
    for index, char in enumerate(line):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (index == 0 or line[index - 1].isspace()):
            return line[:index].rstrip(), line[index + 1 :].strip()
    return line.rstrip(), ""


def commands_of(document: str, markdown: str) -> Iterator[Command]:
    """The commands of every ```bash block, in order."""
    lines = markdown.splitlines()
    index = 0
    while index < len(lines):
        if lines[index].strip() != "```bash":
            index += 1
            continue
        marked = index > 0 and lines[index - 1].strip() == NEEDS_AWS_MARK
        needs_aws = marked or document in NEEDS_AWS_DOCUMENTS
        index += 1
        pending: list[str] = []
        comments: list[str] = []
        start = index
        while index < len(lines) and lines[index].strip() != "```":
            text, comment = split_comment(lines[index])
            comments += [comment] if comment else []
            if not pending:
                start = index
            continued = text.endswith("\\")
            pending.append(text.removesuffix("\\").strip())
            if not continued:
                joined = " ".join(part for part in pending if part)
                if joined:
                    yield Command(document, start + 1, joined, " ".join(comments), needs_aws)
                pending, comments = [], []
            index += 1
        index += 1


def needs_aws(command: Command) -> bool:
    text = command.text
    return (
        command.needs_aws
        or re.match(r"^\(?(cd \S+ && )?(pulumi|packer)\b", text) is not None
        or (re.search(r"(^|\s)aws\s", text) is not None and "--endpoint-url" not in text)
        or text.startswith(("make deploy", "whisperq config from-stack"))
    )


def skip_reason(command: Command) -> str | None:
    """Why ``command`` is not run (None: it is run)."""
    if needs_aws(command):
        return "needs AWS" + (
            f" ({NEEDS_AWS_DOCUMENTS[command.document]})"
            if command.document in NEEDS_AWS_DOCUMENTS
            else ""
        )
    if BUILD_TARGETS.match(command.text):
        return "installs, tests or builds: done already (make demo is this walk)"
    if command.text.startswith((". .venv/bin/activate", "source .venv/bin/activate")):
        return ".venv/bin is on PATH"
    return NOT_RUN.get(command.text)


def runnable(command: Command) -> bool:
    """A command this walk knows how to run on the local stack."""
    text = re.sub(r"^(\w+=\S+\s+)+", "", command.text)  # VAR=value prefixes
    return text.startswith(("whisperq ", "aws --endpoint-url")) or text == "whisperq"


# --- the walk ---------------------------------------------------------------------------------


# What a fresh clone has not: the virtualenv, git's files, build output, caches, and what
# earlier runs wrote in the repository's root (the demo's transcripts, a .env).
NOT_IN_A_CLONE = {".venv", ".git", "build", "dist", "transcripts", "review", ".env"}


def _copy_of_the_repository(target: Path) -> Path:
    def ignored(folder: str, names: list[str]) -> set[str]:
        at_root = Path(folder) == ROOT
        return {
            name
            for name in names
            if (at_root and name in NOT_IN_A_CLONE)
            or name == "__pycache__"
            or name.endswith((".egg-info", "_cache"))
        }

    shutil.copytree(ROOT, target, ignore=ignored, symlinks=True)
    return target


def _fresh_environment(home: Path) -> dict[str, str]:
    """A new user's shell: their locale and temporary folder, nothing of whisperq, AWS or
    this test run; HOME is ``home``; the repository's .venv/bin first on PATH."""
    kept = ("LANG", "LC_ALL", "LC_CTYPE", "TERM", "TMPDIR", "TZ")
    env = {name: os.environ[name] for name in kept if name in os.environ}
    path = [str(VENV_BIN), "/usr/local/bin", "/usr/bin", "/bin"]
    aws = shutil.which("aws")
    if aws is not None:  # e.g. a pyenv shim: it finds pyenv by PYENV_ROOT, not by HOME
        path.append(str(Path(aws).parent))
        if "/.pyenv/" in aws:
            env["PYENV_ROOT"] = aws.split("/.pyenv/")[0] + "/.pyenv"
    env |= {"HOME": str(home), "PATH": ":".join(path), "COLUMNS": "200"}
    return env


@dataclass
class Walk:
    cwd: Path
    env: dict[str, str]
    port: str | None = None

    def shell(self, text: str, timeout: float = COMMAND_TIMEOUT) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["bash", "-c", text],
            cwd=self.cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    @property
    def settings(self) -> Settings:
        return Settings(state_dir=Path(self.env["HOME"]) / ".whisperq")  # its default

    def read_port(self) -> None:
        found = re.search(r"http://127\.0\.0\.1:(\d+)", json.dumps(self.read_state()))
        self.port = found.group(1) if found else None

    def read_state(self) -> dict | None:
        return local_stack.read_state(self.settings)

    def text_of(self, command: Command) -> str:
        if "PORT" in command.text:
            assert self.port, f"{command.where}: PORT, but no local stack is up"
            return command.text.replace("PORT", self.port)
        return command.text

    def run(self, command: Command) -> str | None:
        """Run ``command``; the problem, or None when it exited as the text says."""
        text = self.text_of(command)
        if FOREGROUND.match(text):
            return self.foreground(command, text)
        deadline = time.monotonic() + (EVENTUALLY_SECONDS if command.text in EVENTUALLY else 0)
        while True:
            try:
                done = self.shell(text)
            except subprocess.TimeoutExpired:
                return f"{command.where}: `{text}` still running after {COMMAND_TIMEOUT}s"
            if done.returncode == command.expected_exit:
                if text.startswith("whisperq local up"):
                    self.read_port()
                return None
            if time.monotonic() >= deadline:
                return (
                    f"{command.where}: `{text}` exited {done.returncode}, the text says "
                    f"{command.expected_exit}\n{done.stdout[-2000:]}{done.stderr[-2000:]}"
                )
            time.sleep(1)

    def foreground(self, command: Command, text: str) -> str | None:
        process = subprocess.Popen(
            ["bash", "-c", f"exec {text}"],
            cwd=self.cwd,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        try:
            process.wait(timeout=FOREGROUND_SECONDS)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGINT)  # Ctrl-C
            try:
                process.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.communicate()
            return None
        output = process.communicate()[0]
        return f"{command.where}: `{text}` exited {process.returncode} at once\n{output[-2000:]}"


def all_commands() -> list[Command]:
    return [
        command
        for document in DOCUMENTS
        for command in commands_of(document, (ROOT / document).read_text(encoding="utf-8"))
    ]


def test_every_command_is_run_or_skipped_with_a_reason():
    """Runs without the stack: a command the walk would neither run nor skip fails here."""
    commands = all_commands()
    unknown = [
        f"{command.where}: {command.text}"
        for command in commands
        if skip_reason(command) is None and not runnable(command)
    ]
    assert not unknown, "neither run nor skipped (see the module's docstring):\n" + "\n".join(
        unknown
    )
    readme = [c.text for c in commands if c.document == "README.md" and skip_reason(c) is None]
    assert readme[0] == "whisperq local up" and readme[-1] == "whisperq local down"
    # what this test cannot reach is named, not silently dropped
    assert set(NOT_RUN) <= {command.text for command in commands}


def test_the_reader_of_blocks():
    markdown = "\n".join(
        [
            "```bash",
            "whisperq status   # every batch; `whisperq status weekly` for one",
            "A=1 B='x # y' \\",
            "  whisperq wait weekly   # exits 1 when one failed",
            "```",
            NEEDS_AWS_MARK,
            "```bash",
            "whisperq submit calls/",
            "```",
        ]
    )
    first, second, third = commands_of("X.md", markdown)
    assert (first.text, first.line, first.expected_exit) == ("whisperq status", 2, 0)
    assert second.text == "A=1 B='x # y' whisperq wait weekly" and second.expected_exit == 1
    assert third.needs_aws and skip_reason(third) == "needs AWS"
    aws = Command("X.md", 1, "aws s3 ls s3://bucket", "", False)
    local = Command("X.md", 1, "A=1 aws --endpoint-url http://127.0.0.1:PORT s3 ls", "", False)
    assert skip_reason(aws) == "needs AWS" and skip_reason(local) is None and runnable(local)


@pytest.mark.e2e
def test_the_readme_and_docs_work_as_written(tmp_path):
    """The walk itself: README.md's commands, then docs/*.md's, on one local stack."""
    walk = Walk(_copy_of_the_repository(tmp_path / "whisperq"), {})
    home = tmp_path / "home"
    home.mkdir()
    walk.env = _fresh_environment(home)
    commands = [command for command in all_commands() if skip_reason(command) is None]
    if shutil.which("aws") is None:  # the docs' `aws --endpoint-url` examples need the AWS CLI
        commands = [command for command in commands if " aws " not in f" {command.text} "]
    final = [c for c in commands if c.document == "README.md" and c.text == "whisperq local down"]
    walk_order = [c for c in commands if c not in final] + final
    problems: list[str] = []
    try:
        for command in walk_order:
            started = time.monotonic()
            problem = walk.run(command)
            print(f"{time.monotonic() - started:6.1f}s  {command.where}  {command.text}")
            if problem is not None:
                problems.append(problem)
                break  # later commands build on this one
    finally:
        state = walk.read_state()
        down = walk.shell("whisperq local down", timeout=90)
        for process in local_stack.managed_processes(state or {}):
            if local_stack.is_alive(process):  # what `local down` left: not ours to keep
                os.killpg(process.pid, signal.SIGKILL)
        assert down.returncode == 0, down.stderr
    assert not problems, "\n".join(problems)
    # what the text says the commands leave behind
    assert sorted(walk.cwd.glob("transcripts/examples/calls/*/call-0001.wav.txt")), (
        "results wrote no transcripts"
    )
    assert (walk.cwd / "review" / "index.html").exists(), "report --html wrote no site"
