"""The model registry: ``registry.json`` beside the exported models, with their checksums.

Models are looked up in ``$BONEAGE_MODELS_DIR``, else in the copy packaged in the wheel
(``boneage/exported``), else in the repository's ``exported/`` (editable installs).
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import struct
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from pydantic import ValidationError

from boneage.configs import ModelConfig
from boneage.defaults import MAX_CONFIG_BYTES
from boneage.errors import (
    BoneAgeError,
    ChecksumMismatchError,
    ConfigError,
    InvalidModelError,
    ModelNotFoundError,
    printable,
)
from boneage.files import FileTooLargeError, NotRegularFileError, lookup_errors, read_regular_file
from boneage.modelcard import ModelCard, file_sha256, one_line, read_card, verify_embedded
from boneage.onnxwire import external_tensors
from boneage.release import ModelFile, Registry, RegistryEntry

MODELS_DIR_ENV = "BONEAGE_MODELS_DIR"
REGISTRY_FILE = "registry.json"
# The shipped models are about 30 MB; protobuf itself cannot go past 2 GiB. A .keras model is held
# to the same size, packed and unpacked (:func:`check_keras_archive`).
MAX_MODEL_BYTES = 1 << 30
# A .keras archive (a ZIP): the shipped one holds 3 members, all stored (not compressed): metadata.json
# (64 bytes), config.json (0.4 MB for DenseNet121's 427 layers) and model.weights.h5 (30 MB). Keras's own
# bomb guard starts at 4 GiB a member, so a 5.5 MB file inflating a 1.2 GB config.json took 3 GB and 27 s.
KERAS_MEMBERS = 64  # assets of custom layers may add a few
KERAS_JSON_BYTES = 16 * 2**20  # config.json and metadata.json, read whole and parsed by json.loads
KERAS_RATIO = 100  # inflated / stored, for a member over KERAS_RATIO_FLOOR (HDF5 weights barely compress)
KERAS_RATIO_FLOOR = 4 * 2**20
KERAS_DIRECTORY_BYTES = KERAS_MEMBERS * 4096  # the central directory: names of a few dozen bytes


def models_dir() -> Path:
    """Where models are looked up, in the order the module docstring gives: the environment wins,
    so a deployment can pin its own models without touching the installed package."""
    env = os.environ.get(MODELS_DIR_ENV)
    if env:
        return Path(env)
    packaged = Path(__file__).parent / "exported"
    if (packaged / REGISTRY_FILE).is_file():
        return packaged
    return Path(__file__).resolve().parents[2] / "exported"


def load_registry(directory: Path | None = None) -> Registry:
    """The registry of ``directory`` (default: :func:`models_dir`); an empty one where there is no
    ``registry.json`` yet (a fresh export folder), an :class:`InvalidModelError` where it is damaged or is
    not a regular file (a FIFO, a directory or a link to ``/dev/zero`` was taken for no registry, silently)."""
    path = (directory or models_dir()) / REGISTRY_FILE
    if not _exists(path):  # a dangling link too: nothing there
        return Registry()
    try:
        return Registry.model_validate_json(read_bounded(path, MAX_CONFIG_BYTES, "model registry"))
    except (ValidationError, ValueError, OSError) as exc:
        raise InvalidModelError(f"model registry {path} is unreadable or invalid: {one_line(exc)}") from exc


def save_registry(registry: Registry, directory: Path) -> None:
    """Write ``registry.json`` into ``directory`` (made if missing), as export does after each model."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / REGISTRY_FILE).write_text(registry.model_dump_json(indent=2) + "\n")


def find_entry(registry: Registry, ref: str) -> RegistryEntry | None:
    """By ``name-version``, ``name@version``, or ``name`` (the newest version)."""
    ref = ref.replace("@", "-")
    exact = [e for e in registry.models if e.ref == ref]
    if exact:
        return exact[0]
    named = [e for e in registry.models if e.name == ref]
    return max(named, key=lambda e: e.version_key, default=None)


def inside(directory: Path, name: str) -> Path:
    """``directory / name``, refused if it leads outside ``directory`` (through ``..`` or a symlink)."""
    path = directory / name
    try:
        path.resolve().relative_to(directory.resolve())
    except (ValueError, OSError) as exc:
        raise InvalidModelError(f"registry entry {name!r} leads outside the models folder {directory}") from exc
    return path


def read_bounded(path: Path, limit: int, what: str) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes (see :mod:`boneage.files`)."""
    try:
        return read_regular_file(path, limit)
    except FileNotFoundError as exc:
        raise ModelNotFoundError(f"{what} {path} not found") from exc
    except (NotRegularFileError, IsADirectoryError) as exc:
        raise InvalidModelError(f"{what} {path} is not a regular file") from exc
    except FileTooLargeError as exc:
        raise InvalidModelError(f"{what} {path} is larger than {limit:,} bytes") from exc
    except (OSError, ValueError) as exc:
        raise InvalidModelError(f"{what} {path} cannot be read: {getattr(exc, 'strerror', None) or exc}") from exc


def resolve(model: str | os.PathLike[str] | None) -> tuple[Path, RegistryEntry | None]:
    """Where ``model`` is, and its registry entry if it is a release: None means the registry's
    default, a str a registered name (``name``, ``name-version``, ``name@version``) or else a path;
    a path to a registered file gets its entry too, so its checksum is checked."""
    if model is not None and not isinstance(model, str) and not (
            isinstance(model, os.PathLike) and isinstance(os.fspath(model), str)):
        # model=5 or model=b"..." (the model's bytes, or a bytes path) raised a bare TypeError from Path
        raise ConfigError(f"model must be a registered name or a path (a str or a pathlib.Path), not a "
                          f"{type(model).__name__}; to use a model's bytes, write them to a file and pass its path")
    directory = models_dir()
    registry = load_registry(directory)
    if model is None:
        if registry.default is None:
            raise ModelNotFoundError(f"no default model in {directory / REGISTRY_FILE}; pass model=PATH")
        model = registry.default
    entry = find_entry(registry, str(model)) if not isinstance(model, Path) else None
    if entry is not None:
        return inside(directory, entry.file), entry
    path = Path(model)
    if path.suffix not in (".onnx", ".keras") and not _exists(path):
        known = ", ".join(e.ref for e in registry.models) or "none"
        raise ModelNotFoundError(f"no model named {str(model)!r} (registered: {known})")
    by_file = [e for e in registry.models if _same_file(inside(directory, e.file), path)]
    return path, (by_file[0] if by_file else None)


def _exists(path: Path, file: bool = False) -> bool:
    """``path.exists()`` (``is_file()``), raising :class:`InvalidModelError` where the name cannot be
    looked up: a name too long for the file system (``--model`` or ``$BONEAGE_MODELS_DIR`` of 5,000
    characters) made ``Path.exists`` raise ``OSError`` (internal error, exit 70)."""
    with lookup_errors(InvalidModelError, f"model path {path} cannot be looked up"):
        return path.is_file() if file else path.exists()


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


def release_of(data: bytes, registry: Registry) -> RegistryEntry | None:
    """The registered release with exactly these bytes, if any."""
    digest = hashlib.sha256(data).hexdigest()
    return next((e for e in registry.models if e.sha256 == digest), None)


def open_model(model: str | os.PathLike[str] | None) -> ModelFile:
    """The model resolved, read once and verified: registry checksum, sealed checksum, card, no
    external data. What is checked is the bytes that will run. A ``.keras`` from a run folder gets
    the card its run's config describes (:func:`card_from_run`) and is read by its runtime; one chosen
    through the registry is checked against its registry sha256 first, as any release is."""
    path, entry = resolve(model)
    if path.suffix == ".keras":
        if not path.is_file():
            raise ModelNotFoundError(f"model file {path} not found")
        if entry is None:
            check_keras_file(path)  # now, not after the card and the pipeline: its runtime loads it
            return ModelFile(path, b"", card_from_run(path), None)
        # a registered .keras: its bytes must have the registry's sha256 (ChecksumMismatchError), now, and its
        # runtime reads the weights from bytes found to have it (the card carries the sha256 to it); a run
        # model is never a known release
        read_keras_file(path, entry.sha256)
        card = card_from_run(path).model_copy(update={"keras_sha256": entry.sha256})
        return ModelFile(path, b"", card, None)
    data = read_bounded(path, MAX_MODEL_BYTES, "model file")
    if entry is not None:
        actual = hashlib.sha256(data).hexdigest()
        if actual != entry.sha256:
            raise ChecksumMismatchError(
                f"{path} does not match the registry: expected sha256 {entry.sha256}, found {actual}"
            )
    else:
        entry = release_of(data, load_registry())  # a copy of a release, passed by path
    card = read_card(data, str(path))  # first, so a foreign file is named as such
    verify_embedded(data, path)
    check_self_contained(data, path)
    if entry is not None and (entry.name, entry.version) != (card.name, card.version):
        raise InvalidModelError(f"registry entry {entry.ref} holds a model whose card says {card.ref}")
    return ModelFile(path, data, card, entry)


def check_self_contained(data: bytes, path: Path) -> None:
    """Refuse models whose tensors point at other files (ONNX external data): ONNX Runtime would
    read them relative to the current directory, so a crafted model could read any file."""
    count = external_tensors(data)
    if count:
        raise InvalidModelError(f"{path} keeps {count} tensor(s) in external files; boneage only loads "
                                "self-contained models")


def check_keras_file(path: Path, error: type[BoneAgeError] = InvalidModelError, limit: int | None = None) -> None:
    """Refuse a ``.keras`` file that Keras should not open (:func:`check_keras_archive`), reading its
    end record and central directory only. ``error`` for what is wrong with it (``ConfigError`` where
    training starts from it); ``limit``: its most bytes, packed or unpacked (default ``MAX_MODEL_BYTES``)."""
    limit = MAX_MODEL_BYTES if limit is None else limit
    try:
        flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
        fd = os.open(path, flags)  # without blocking on a FIFO; checked on the open descriptor
    except FileNotFoundError as exc:
        raise ModelNotFoundError(f"model file {path} not found") from exc
    except (OSError, ValueError) as exc:
        raise error(f"Keras model {path} cannot be read: {getattr(exc, 'strerror', None) or exc}") from exc
    with os.fdopen(fd, "rb") as file:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise error(f"Keras model {path} is not a regular file")
        check_keras_archive(file, info.st_size, path, error, limit)


def read_keras_file(path: Path, sha256: str, error: type[BoneAgeError] = InvalidModelError,
                    limit: int | None = None) -> bytes:
    """The bytes of a ``.keras`` file, read once, found to have this ``sha256`` (else
    :class:`ChecksumMismatchError`) and checked as :func:`check_keras_file` checks a file: for a caller
    that has Keras load these very bytes."""
    limit = MAX_MODEL_BYTES if limit is None else limit
    try:
        data = read_bounded(path, limit, "Keras model")
    except (InvalidModelError, ModelNotFoundError) as exc:
        if error is InvalidModelError or isinstance(exc, ModelNotFoundError):
            raise
        raise error(str(exc)) from exc
    actual = hashlib.sha256(data).hexdigest()
    if actual != sha256:
        raise ChecksumMismatchError(f"{path} does not match its registry entry or card: expected sha256 {sha256}, "
                                    f"found {actual}")
    check_keras_archive(io.BytesIO(data), len(data), path, error, limit)
    return data


def check_keras_archive(file: BinaryIO, size: int, path: Path, error: type[BoneAgeError], limit: int) -> None:
    """A ``.keras`` archive (a ZIP) that Keras may open: at most ``limit`` bytes on disk and unpacked
    in all, at most ``KERAS_MEMBERS`` members whose names stay inside it, its JSON members at most
    ``KERAS_JSON_BYTES``, and no member over ``KERAS_RATIO_FLOOR`` unpacking to more than
    ``KERAS_RATIO`` times its packed size. Only the end record and the central directory are read
    (the member sizes they declare are all Python's zipfile will unpack); the members' data is not."""
    if size > limit:
        raise error(f"Keras model {path} is larger than {limit:,} bytes")
    problem = _directory_problem(file, size)
    if problem:
        raise error(f"{path} is not a usable .keras model archive: {problem}")
    try:
        file.seek(0)
        with zipfile.ZipFile(file) as archive:
            members = archive.infolist()
    except MemoryError as exc:  # the directory is bounded above; should zipfile still run out, it is this file's fault
        raise error(f"{path} is not a usable .keras model archive: reading its directory ran out of memory") from exc
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, struct.error, NotImplementedError) as exc:
        raise error(f"{path} is not a .keras model archive (empty, cut short, or another kind of file): "
                    f"{one_line(exc)}") from exc
    problem = _members_problem(members, limit)
    if problem:
        raise error(f"{path} is not a usable .keras model archive: {problem}")


def _directory_problem(file: BinaryIO, size: int) -> str | None:
    """What is wrong with the archive's end record: how many members it declares and how large its
    central directory is, read before zipfile reads (and holds) that directory whole."""
    tail_size = min(size, 20 + 22 + 0xFFFF)  # a ZIP64 locator, the end record and its comment
    file.seek(size - tail_size)
    tail = file.read(tail_size)
    # where zipfile looks: a record that ends the file, else the last one in the comment's reach
    at = len(tail) - 22 if tail[-22:-18] == b"PK\x05\x06" and tail[-2:] == b"\0\0" else tail.rfind(b"PK\x05\x06")
    if at < 0 or len(tail) - at < 22:
        return "no ZIP end record (empty, cut short, or another kind of file)"
    entries, directory = struct.unpack("<HI", tail[at + 10 : at + 16])
    locator = tail[at - 20 : at] if at >= 20 else b""
    if locator[:4] == b"PK\x06\x07":  # ZIP64: its own end record holds the counts zipfile uses
        # zipfile reads the record just before the locator (not where the locator points): that one is
        # checked, and a locator pointing anywhere else (a second, benign record) is refused
        start = size - tail_size + at - 20 - 56
        (offset,) = struct.unpack("<Q", locator[8:16])
        if start < 0:
            return "a ZIP64 end record before the start of the file"
        file.seek(start)
        record = file.read(56)
        if record[:4] != b"PK\x06\x06":
            return "a ZIP64 locator without its end record"
        if offset != start:
            return (f"its ZIP64 locator points at offset {offset:,}, but its ZIP64 end record is at {start:,} "
                    "(two end records?)")
        entries, directory = struct.unpack("<QQ", record[32:48])
    if entries > KERAS_MEMBERS:
        return f"it declares {entries:,} members, more than the {KERAS_MEMBERS} a model may hold"
    if directory > KERAS_DIRECTORY_BYTES or directory > size:
        return f"its central directory declares {directory:,} bytes, more than {KERAS_MEMBERS} members need"
    return None


def _members_problem(members: list[zipfile.ZipInfo], limit: int) -> str | None:
    if len(members) > KERAS_MEMBERS:
        return f"it holds {len(members):,} members, more than the {KERAS_MEMBERS} a model may hold"
    names: set[str] = set()
    for info in members:
        name = info.filename
        pure = PurePosixPath(name)
        if not name or pure.is_absolute() or ".." in pure.parts or any(c in name for c in "\\:\0"):
            return f"its member {printable(name)[:80]!r} names a path outside the archive"
        if name in names:
            return f"it holds two members named {printable(name)[:80]!r}"
        names.add(name)
        if info.flag_bits & 1:  # zipfile raises RuntimeError for it, past every caller's except (probe 14)
            return f"its member {printable(name)[:80]!r} is encrypted"
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):  # Keras writes these two only
            return f"its member {printable(name)[:80]!r} is compressed with method {info.compress_type}, not stored or deflated"
        if name in ("config.json", "metadata.json") and info.file_size > KERAS_JSON_BYTES:
            return f"its {name} unpacks to {info.file_size:,} bytes, more than the {KERAS_JSON_BYTES:,} allowed"
        if info.file_size > KERAS_RATIO_FLOOR and info.file_size > KERAS_RATIO * max(info.compress_size, 1):
            return (f"its member {printable(name)[:80]!r} unpacks to {info.file_size:,} bytes from "
                    f"{info.compress_size:,} (more than {KERAS_RATIO} times: a decompression bomb?)")
    total = sum(info.file_size for info in members)
    if total > limit:
        return f"its members unpack to {total:,} bytes, more than the {limit:,} allowed"
    return None


class RunModel(ModelConfig):
    """What a run's config says about its model, with the options its backbone was built with."""

    backbone_options: dict[str, Any] = {}


def run_model(path: Path) -> RunModel:
    """The model config of the run folder that holds the ``.keras`` file at ``path`` (its ``config.json``):
    the backbone, input size and options its weights belong to. Only that part is read: the registry does
    not import training."""
    config_path = path.parent / "config.json"
    if not config_path.is_file():
        raise InvalidModelError(f"{path}: a .keras model needs the config.json of its run folder beside it")
    try:
        return RunModel.model_validate_json(read_bounded(config_path, MAX_CONFIG_BYTES, "run config"))
    except (ValidationError, OSError) as exc:
        raise InvalidModelError(f"{config_path} is not a valid run config: {one_line(exc)}") from exc


def card_from_run(path: Path) -> ModelCard:
    """An unexported ``.keras`` model from a run folder: its card comes from the run's config
    (:func:`run_model`), so it can be evaluated through the facade (on the TensorFlow runtime) before
    export; the card's notes carry the run's ``backbone_options``, for the runtime to build its backbone."""
    config = run_model(path)
    options = {"backbone_options": config.backbone_options} if config.backbone_options else {}
    return ModelCard(name=f"run:{path.parent.name}", version="0.0.0", backbone=config.backbone,
                     input_size=config.input_size, preprocessing=config.resolved_preprocessing(), keras_sha256=None,
                     notes=options)


__all__ = ["ModelFile", "Registry", "RegistryEntry", "file_sha256", "load_registry", "open_model", "release_of", "resolve"]
