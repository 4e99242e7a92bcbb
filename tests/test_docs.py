"""The docs stay true to the tree: every relative link resolves (file and heading), every file
they name exists, the code map lists every module, the architecture diagram is
tests/test_architecture.py's MAY_IMPORT, and README.md stays a short front door to docs/."""

import ast
import re
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GUIDES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
DOCS = [*GUIDES, ROOT / "BENCHMARKS.md", ROOT / "CHANGELOG.md"]
README = (ROOT / "README.md").read_text(encoding="utf-8")
ARCHITECTURE = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")

LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
NAMED_PATH = re.compile(
    r"`((?:whisperq|tests|benchmarks|infra_pulumi|ami|scripts|docs|examples)/[\w./-]*)`"
)


def _without_code_blocks(markdown: str) -> str:
    return re.sub(r"^```.*?^```", "", markdown, flags=re.MULTILINE | re.DOTALL)


def _anchors(markdown: str) -> set[str]:
    """GitHub's heading slugs: lower case, punctuation dropped, spaces to hyphens, and a
    repeated heading gets -1, -2, ..."""
    seen: Counter[str] = Counter()
    anchors = set()
    for heading in re.findall(r"^#{1,6} +(.+?) *$", _without_code_blocks(markdown), re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        anchors.add(f"{slug}-{seen[slug]}" if seen[slug] else slug)
        seen[slug] += 1
    return anchors


def broken_links(path: Path, markdown: str) -> list[str]:
    """The relative links in ``markdown`` (the text of ``path``) that lead nowhere."""
    broken = []
    for target in LINK.findall(_without_code_blocks(markdown)):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:, ...
            continue
        name, _, fragment = target.partition("#")
        linked = (path.parent / name).resolve()
        if name and not linked.exists():
            broken.append(f"{target} (no such file)")
        elif fragment and (not name or linked.suffix == ".md"):
            text = linked.read_text(encoding="utf-8") if name else markdown
            if fragment not in _anchors(text):
                broken.append(f"{target} (no such heading)")
    return broken


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_relative_link_resolves(path: Path):
    assert broken_links(path, path.read_text(encoding="utf-8")) == []


@pytest.mark.parametrize("path", GUIDES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_file_named_exists(path: Path):
    """In README and docs/ (CHANGELOG.md is history; BENCHMARKS.md names files the
    benchmarks write)."""
    named = set(NAMED_PATH.findall(path.read_text(encoding="utf-8")))
    assert sorted(name for name in named if not (ROOT / name).exists()) == []


def test_the_link_checker_reports_what_is_broken():
    markdown = (
        "# Here\n\n[ok](../README.md#whisperq) [self](#here) [web](https://example.com)\n"
        "[gone](missing.md) [bad](../README.md#no-such-heading) [lost](#nowhere)\n"
        "```\n[in code](ignored.md)\n```\n"
    )
    assert broken_links(ROOT / "docs" / "example.md", markdown) == [
        "missing.md (no such file)",
        "../README.md#no-such-heading (no such heading)",
        "#nowhere (no such heading)",
    ]


def test_the_code_map_lists_every_module():
    code_map = ARCHITECTURE.split("\n## Code map\n", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"`(whisperq/[\w/]+\.py)`", code_map))
    modules = {
        path.relative_to(ROOT).as_posix()
        for path in (ROOT / "whisperq").rglob("*.py")
        if path.name not in ("__init__.py", "__main__.py")
    }
    assert sorted(modules - listed) == [], "add these to the code map in docs/architecture.md"
    assert sorted(listed - modules) == [], "the code map names modules that do not exist"


def test_the_architecture_diagram_is_may_import():
    source = (ROOT / "tests" / "test_architecture.py").read_text(encoding="utf-8")
    rule = next(
        node.value
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.AnnAssign) and getattr(node.target, "id", "") == "MAY_IMPORT"
    )
    may_import = ast.literal_eval(rule)
    diagram = ARCHITECTURE.split("## Who may import whom", 1)[1].split("```")[1]
    arrows = {
        part: {target.strip() for target in targets.split(",")}
        for part, targets in re.findall(r"(\w+) → ([\w, ]+)", diagram)
    }
    for part, allowed in may_import.items():
        assert re.search(rf"\b{part}\b", diagram), f"{part} is not in the diagram"
        assert arrows.get(part, set()) | {"root"} == allowed - {part} | {"root"}, part


def test_the_readme_is_a_short_front_door_to_every_doc():
    assert len(README.splitlines()) < 400
    linked = set(re.findall(r"\]\((docs/[\w.-]+\.md)\)", README))
    assert linked == {f"docs/{path.name}" for path in (ROOT / "docs").glob("*.md")}
