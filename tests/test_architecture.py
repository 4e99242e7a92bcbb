"""The package's shape stays what docs/architecture.md draws: subpackages by role, imports
in one direction only, no import cycle (imports inside functions count), small modules."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "whisperq"

# Which parts of whisperq each part may import. "root" is the shared contracts directly in
# whisperq/ (errors, keys, schemas, settings, ...): everything may import them, and they
# import nothing else of whisperq. The cli, at the top, may import everything.
MAY_IMPORT: dict[str, set[str]] = {
    "root": {"root"},
    "transcripts": {"root"},
    "speech": {"root"},
    "stacks": {"root"},
    "batches": {"root"},
    "redaction": {"root", "speech"},  # the redacted audio copy decodes with speech's decoder
    "fleet": {"root", "batches"},  # status and cost read batches' listings
    "worker": {"root", "speech", "transcripts", "redaction"},
    "cli": {"root", "batches", "fleet", "stacks", "transcripts", "worker", "speech", "cli"},
}
MAX_MODULE_LINES = 700
MAX_CLASS_LINES = 300
MAX_ROOT_MODULES = 12


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _part(module: str) -> str:
    """'whisperq.speech.engine' -> 'speech'; 'whisperq.keys' and 'whisperq' -> 'root'."""
    if module == "whisperq.__main__":  # `python -m whisperq`: the CLI's entry point
        return "cli"
    parts = module.split(".")
    if len(parts) > 2 or (len(parts) == 2 and (PACKAGE / parts[1]).is_dir()):
        return parts[1]
    return "root"


def _imports(path: Path, module: str) -> Iterator[tuple[str, int]]:
    return _imports_in(path.read_text(encoding="utf-8"), module, path.name == "__init__.py")


def _imports_in(source: str, module: str, is_package: bool) -> Iterator[tuple[str, int]]:
    """(whisperq module, line) for every import in ``source``, those inside functions and
    ``if TYPE_CHECKING:`` blocks too; ``from pkg import name`` counts ``pkg.name`` when
    that is a module."""
    modules = _modules()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "whisperq":
                    yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")
                anchor = anchor if is_package else anchor[:-1]
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            if base.split(".")[0] != "whisperq":
                continue
            for alias in node.names:
                named = f"{base}.{alias.name}"
                yield (named if named in modules else base), node.lineno


@cache
def _graph() -> dict[str, frozenset[str]]:
    modules = _modules()
    return {
        module: frozenset(
            target
            for target, _ in _imports(path, module)
            if target != module and target in modules and target != "whisperq"
        )
        for module, path in modules.items()
    }


def test_each_part_imports_only_the_parts_below_it():
    wrong = []
    for module, path in _modules().items():
        part = _part(module)
        for target, line in _imports(path, module):
            if target == "whisperq":
                continue
            allowed = MAY_IMPORT[part] | {part}
            if _part(target) not in allowed:
                wrong.append(f"{path.relative_to(ROOT)}:{line} ({part}) imports {target}")
    assert wrong == [], "see MAY_IMPORT (and docs/architecture.md)"


def test_every_part_has_a_rule():
    parts = {_part(module) for module in _modules()}
    assert parts <= set(MAY_IMPORT), parts - set(MAY_IMPORT)


def test_there_is_no_import_cycle():
    graph = _graph()
    visiting: list[str] = []
    done: set[str] = set()
    cycles: list[list[str]] = []

    def visit(module: str) -> None:
        if module in done:
            return
        if module in visiting:
            cycles.append([*visiting[visiting.index(module) :], module])
            return
        visiting.append(module)
        for target in sorted(graph[module]):
            visit(target)
        visiting.pop()
        done.add(module)

    for module in sorted(graph):
        visit(module)
    assert cycles == []


@pytest.mark.parametrize(
    "path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: p.relative_to(ROOT).as_posix()
)
def test_modules_and_classes_stay_small(path: Path):
    text = path.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= MAX_MODULE_LINES
    big = [
        f"{node.name}: {node.end_lineno - node.lineno + 1} lines"
        for node in ast.walk(ast.parse(text))
        if isinstance(node, ast.ClassDef) and node.end_lineno - node.lineno + 1 > MAX_CLASS_LINES
    ]
    assert big == []


def test_the_root_holds_only_the_shared_contracts():
    root = [p.name for p in PACKAGE.glob("*.py") if p.name not in ("__init__.py", "__main__.py")]
    assert len(root) <= MAX_ROOT_MODULES, sorted(root)


def test_subpackage_inits_are_docstrings_only():
    """What a subpackage holds is imported from its modules: an __init__ that imported them
    would pull every module in (the ingest Lambda ships what is imported)."""
    for init in PACKAGE.glob("*/__init__.py"):
        body = ast.parse(init.read_text(encoding="utf-8")).body
        assert body, f"{init} needs a docstring saying what the subpackage holds"
        assert isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
        if init.parent.name != "cli":  # the CLI's package assembles its commands
            assert len(body) == 1, f"{init.relative_to(ROOT)}: a docstring only"


def test_the_rules_catch_a_wrong_import():
    """The checks above can fail: a lower part importing a higher one, inside a function
    or relatively, is seen."""
    source = "def f():\n    from whisperq.worker import runner\n    from ..batches import submit\n"
    found = list(_imports_in(source, "whisperq.speech.engine", is_package=False))
    assert found == [("whisperq.worker.runner", 2), ("whisperq.batches.submit", 3)]
    assert not {_part(target) for target, _ in found} & MAY_IMPORT["speech"]


def test_every_folder_of_code_is_a_package():
    """A folder of modules without __init__.py imports (as a namespace package) but is
    left out of the wheel the worker image installs."""
    folders = {path.parent for path in PACKAGE.rglob("*.py")}
    assert sorted(str(f) for f in folders if not (f / "__init__.py").is_file()) == []
