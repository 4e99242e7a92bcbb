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


# --- figures name the command that produced them -------------------------------------------

# A measured figure: a speed ratio, milliseconds, megabytes or a percentage (WER, shares).
FIGURE = re.compile(r"\d(?:\.\d+)?x\b|\d ?ms\b|\d ?MB\b|\d(?:\.\d+)?%")
BENCHMARK_SCRIPT = re.compile(r"(?<![\w/])benchmarks/[\w/]+\.py")
MAKE_TARGET = re.compile(r"`make ([\w-]+)")
WHISPERQ_COMMAND = re.compile(r"`whisperq ([a-z][\w-]*)")
BENCHMARKS_LINK = re.compile(r"\]\((?:\.\./)?BENCHMARKS\.md#([\w-]+)\)")
# Figures that no command of ours produces, each with why it may stand: (file, text, reason).
NOT_MEASURED = [
    ("docs/deploy.md", "100% spot", "a setting of the Auto Scaling group, not a measurement"),
    (
        "docs/deploy.md",
        "about 8% on top of a c6a.xlarge's typical spot price, 2% of a g4dn.xlarge's",
        "AWS's published prices: $0.005 per address-hour against the instances' spot prices",
    ),
    ("docs/call-analytics.md", "2.6 MB", "the size of ge2e.npz (a test below checks it)"),
]


def paragraphs(markdown: str) -> list[str]:
    """The text outside code blocks, cut at blank lines and at each list item."""
    text = re.sub(r"^```.*?^```", "\n", markdown, flags=re.MULTILINE | re.DOTALL)
    units = []
    for block in re.split(r"\n\s*\n", text):
        units += [u for u in re.split(r"\n(?=\s*(?:[-*]|\d+\.) )", block) if u.strip()]
    return units


def _sections(markdown: str) -> dict[str, str]:
    """Each heading's anchor -> its text up to the next heading of its level or above."""
    headings = list(re.finditer(r"^(#{1,6}) +(.+?) *$", markdown, re.M))
    sections = {}
    for number, heading in enumerate(headings):
        level = len(heading.group(1))
        end = next(
            (h.start() for h in headings[number + 1 :] if len(h.group(1)) <= level), len(markdown)
        )
        slug = re.sub(r"[^\w\- ]", "", heading.group(2).lower()).replace(" ", "-")
        sections.setdefault(slug, markdown[heading.start() : end])
    return sections


def _make_targets() -> set[str]:
    return set(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(encoding="utf-8"), re.M))


def _whisperq_commands() -> set[str]:
    import typer

    from whisperq.cli import app

    return set(typer.main.get_command(app).commands)  # type: ignore[attr-defined]


def unsourced_figures(markdown: str, allowed: list[str] = ()) -> list[str]:
    """The paragraphs of ``markdown`` with a figure (inline code aside) but no command:
    an existing ``benchmarks/*.py``, a ``make`` target of the Makefile, a ``whisperq``
    command, or a link to a BENCHMARKS.md section that names its ``benchmarks/*.py``;
    and every such command that does not exist. ``allowed``: texts whose figures stand."""
    sections = _sections((ROOT / "BENCHMARKS.md").read_text(encoding="utf-8"))
    targets, commands = _make_targets(), _whisperq_commands()
    problems = []
    for unit in paragraphs(markdown):
        for name in BENCHMARK_SCRIPT.findall(unit):
            if not (ROOT / name).is_file():
                problems.append(f"no such benchmark: {name}")
        problems += [
            f"no such make target: {t}" for t in MAKE_TARGET.findall(unit) if t not in targets
        ]
        sources = [
            *(n for n in BENCHMARK_SCRIPT.findall(unit) if (ROOT / n).is_file()),
            *(t for t in MAKE_TARGET.findall(unit) if t in targets),
            *(c for c in WHISPERQ_COMMAND.findall(unit) if c in commands),
            *(
                a
                for a in BENCHMARKS_LINK.findall(unit)
                if BENCHMARK_SCRIPT.search(sections.get(a, ""))
            ),
        ]
        prose = " ".join(re.sub(r"`[^`]*`", "", unit).split())
        for text in allowed:
            prose = prose.replace(text, "")
        if FIGURE.search(prose) and not sources:
            problems.append(f"a figure with no command: {' '.join(unit.split())[:160]}")
    return problems


@pytest.mark.parametrize("path", GUIDES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_figure_names_the_command_that_produced_it(path: Path):
    """A speed ratio, ms, MB or % in README.md or docs/ comes with, in its paragraph (or
    list item, or table), the command that measured it; the command must exist."""
    name = path.relative_to(ROOT).as_posix()
    allowed = [text for file, text, _ in NOT_MEASURED if file == name]
    markdown = path.read_text(encoding="utf-8")
    flat = " ".join(markdown.split())
    assert all(text in flat for text in allowed), "an allowed figure is gone: drop it"
    assert unsourced_figures(markdown, allowed) == []


def test_the_figure_check_reports_what_has_no_command():
    markdown = (
        "Fast: 3.5x the baseline.\n\n"
        "- 40 MB per hour (`benchmarks/diarization.py`)\n"
        "- 60 ms per file\n\n"
        "| a | b |\n| --- | --- |\n| 12% | `make bench` |\n\n"
        "Measured: 7.1x ([BENCHMARKS.md](BENCHMARKS.md#redaction-benchmarksredactionpy)).\n\n"
        "Told: 2x ([BENCHMARKS.md](BENCHMARKS.md#calls-that-switch-language---multilingual)).\n\n"
        "A price: 87x (`whisperq cost`); in code `%Y` and `1.5x` are not figures.\n\n"
        "Gone: `benchmarks/nothing.py` and `make nothing`.\n\n"
        "```\nin a code block 99%\n```\n"
    )
    assert unsourced_figures(markdown) == [
        "a figure with no command: Fast: 3.5x the baseline.",
        "a figure with no command: - 60 ms per file",
        "a figure with no command: Told: 2x ([BENCHMARKS.md]"
        "(BENCHMARKS.md#calls-that-switch-language---multilingual)).",
        "no such benchmark: benchmarks/nothing.py",
        "no such make target: nothing",
    ]


def test_the_speaker_model_is_the_size_the_docs_say():
    size = (ROOT / "whisperq" / "data" / "speaker_encoder" / "ge2e.npz").stat().st_size
    assert f"{size / 1e6:.1f} MB" == "2.6 MB"


def test_the_simulated_day_in_the_docs_is_what_simulate_prints():
    """docs/costs.md shows `whisperq simulate`'s built-in day: the code still prints it (all
    but the time the run took)."""
    from whisperq.fleet.simulation_report import DayOptions, run_day

    costs = (ROOT / "docs" / "costs.md").read_text(encoding="utf-8")
    shown = re.search(r"^```\n(built-in day x1:.*?)^simulated in .*?\n```", costs, re.M | re.S)
    assert shown is not None
    printed = run_day(DayOptions()).text()
    assert printed.startswith(shown.group(1)) and "\nsimulated in " in printed


@pytest.mark.parametrize("path", GUIDES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_shown_outputs_are_marked_as_examples(path: Path):
    """A transcript, timing or report shown in README.md or docs/ is one run's on one
    machine: the text says "example output" and that it varies, never "real output" (a
    shown output the docs test regenerates, like the simulated day, says so instead)."""
    text = " ".join(path.read_text(encoding="utf-8").split()).lower()
    assert "real output" not in text
    for found in re.finditer(r"example output", text):
        assert re.search(r"var(y|ies)", text[found.start() : found.start() + 400]), found
