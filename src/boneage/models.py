"""The model registry: ``registry.json`` beside the exported models, with their checksums.

Models are looked up in ``$BONEAGE_MODELS_DIR``, else in the copy packaged in the wheel
(``boneage/exported``), else in the repository's ``exported/`` (editable installs).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from pydantic import ValidationError

from boneage.configs import ModelConfig
from boneage.defaults import MAX_CONFIG_BYTES
from boneage.errors import ChecksumMismatchError, ConfigError, InvalidModelError, ModelNotFoundError
from boneage.files import FileTooLargeError, NotRegularFileError, lookup_errors, read_regular_file
from boneage.modelcard import ModelCard, file_sha256, one_line, read_card, verify_embedded
from boneage.onnxwire import external_tensors
from boneage.release import ModelFile, Registry, RegistryEntry

MODELS_DIR_ENV = "BONEAGE_MODELS_DIR"
REGISTRY_FILE = "registry.json"
# The shipped models are about 30 MB; protobuf itself cannot go past 2 GiB.
MAX_MODEL_BYTES = 1 << 30


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
    the card its run's config describes (:func:`card_from_run`) and is read by its runtime."""
    path, entry = resolve(model)
    if path.suffix == ".keras":
        if not path.is_file():
            raise ModelNotFoundError(f"model file {path} not found")
        return ModelFile(path, b"", card_from_run(path), None)
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


def card_from_run(path: Path) -> ModelCard:
    """An unexported ``.keras`` model from a run folder: its card comes from the run's config, so it
    can be evaluated through the facade (on the TensorFlow runtime) before export. Only the part of
    the config that fixes the model is read (:class:`boneage.configs.ModelConfig`): the registry
    does not import training."""
    config_path = path.parent / "config.json"
    if not config_path.is_file():
        raise InvalidModelError(f"{path}: a .keras model needs the config.json of its run folder beside it")
    try:
        config = ModelConfig.model_validate_json(read_bounded(config_path, MAX_CONFIG_BYTES, "run config"))
    except (ValidationError, OSError) as exc:
        raise InvalidModelError(f"{config_path} is not a valid run config: {one_line(exc)}") from exc
    return ModelCard(name=f"run:{path.parent.name}", version="0.0.0", backbone=config.backbone,
                     input_size=config.input_size, preprocessing=config.resolved_preprocessing(), keras_sha256=None)


__all__ = ["ModelFile", "Registry", "RegistryEntry", "file_sha256", "load_registry", "open_model", "release_of", "resolve"]
