"""The README stays true to the tree: its code map lists every module, and every file it
names exists."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _code_map() -> str:
    return README.split("### Code map", 1)[1].split("\n## ", 1)[0]


def test_the_code_map_lists_every_module():
    listed = set(re.findall(r"`(whisperq/[\w/]+\.py)`", _code_map()))
    cli = re.search(r"`whisperq/cli/`[^\n]*", _code_map())
    assert cli is not None
    listed |= {f"whisperq/cli/{name}" for name in re.findall(r"`(\w+\.py)`", cli.group(0))}
    modules = {
        path.relative_to(ROOT).as_posix()
        for path in (ROOT / "whisperq").rglob("*.py")
        if path.name not in ("__init__.py", "__main__.py")
    }
    assert modules - listed == set(), "add these to README's code map"
    assert listed - modules == set(), "the code map names modules that do not exist"


def test_every_file_the_readme_names_exists():
    named = set(
        re.findall(r"`((?:whisperq|tests|benchmarks|infra_pulumi|ami|scripts)/[\w./-]+)`", README)
    )
    missing = sorted(path for path in named if not (ROOT / path).exists())
    assert missing == []
