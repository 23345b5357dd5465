"""The model registry: ``registry.json`` beside the exported models, with their checksums.

Models are looked up in ``$BONEAGE_MODELS_DIR``, else in the copy packaged in the wheel
(``boneage/exported``), else in the repository's ``exported/`` (editable installs).
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from boneage.errors import ChecksumMismatchError, InvalidModelError, ModelNotFoundError
from boneage.files import FileTooLargeError, NotRegularFileError, read_regular_file
from boneage.modelcard import ModelCard, file_sha256, one_line, read_card, verify_embedded
from boneage.onnxwire import external_tensors

MODELS_DIR_ENV = "BONEAGE_MODELS_DIR"
REGISTRY_FILE = "registry.json"
# The shipped models are about 30 MB; protobuf itself cannot go past 2 GiB.
MAX_MODEL_BYTES = 1 << 30
MAX_CONFIG_BYTES = 1 << 20  # a run's config.json, and the registry
VERSION = re.compile(r"([0-9]{1,9})\.([0-9]{1,9})\.([0-9]{1,9})([-+][0-9A-Za-z.-]{1,64})?")  # fullmatch
SHA256 = re.compile(r"[0-9a-f]{64}")


def _file_name(value: str | None) -> str | None:
    """A registry file entry: a plain relative path that stays inside the models folder."""
    if value is None:
        return None
    pure = PurePosixPath(value)
    if not pure.parts or pure.is_absolute() or ".." in pure.parts or any(c in value for c in "\\:\0"):
        raise ValueError(f"{value!r} is not a file name inside the models folder")
    return value


class RegistryEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    name: str
    version: str
    file: str
    sha256: str
    size: int
    backbone: str
    metrics: dict[str, Any] = Field(default_factory=dict)
    recommended: bool = True
    quantized: str | None = None
    keras_file: str | None = None
    keras_sha256: str | None = None

    @field_validator("version")
    @classmethod
    def _semantic(cls, value: str) -> str:
        if not VERSION.fullmatch(value):
            raise ValueError(f"version {value!r} is not semantic (X.Y.Z)")
        return value

    @field_validator("sha256", "keras_sha256")
    @classmethod
    def _hex(cls, value: str | None) -> str | None:
        if value is not None and not SHA256.fullmatch(value):
            raise ValueError("not a sha256 in lowercase hex")
        return value

    @field_validator("file", "keras_file")
    @classmethod
    def _inside(cls, value: str | None) -> str | None:
        return _file_name(value)

    @property
    def ref(self) -> str:
        return f"{self.name}-{self.version}"

    @property
    def version_key(self) -> tuple[int, int, int]:
        match = VERSION.fullmatch(self.version)
        assert match is not None  # validated
        return int(match[1]), int(match[2]), int(match[3])


class Registry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    default: str | None = None
    models: list[RegistryEntry] = Field(default_factory=list)


def models_dir() -> Path:
    env = os.environ.get(MODELS_DIR_ENV)
    if env:
        return Path(env)
    packaged = Path(__file__).parent / "exported"
    if (packaged / REGISTRY_FILE).is_file():
        return packaged
    return Path(__file__).resolve().parents[2] / "exported"


def load_registry(directory: Path | None = None) -> Registry:
    path = (directory or models_dir()) / REGISTRY_FILE
    if not path.is_file():
        return Registry()
    try:
        return Registry.model_validate_json(read_bounded(path, MAX_CONFIG_BYTES, "model registry"))
    except (ValidationError, ValueError, OSError) as exc:
        raise InvalidModelError(f"model registry {path} is unreadable or invalid: {one_line(exc)}") from exc


def save_registry(registry: Registry, directory: Path) -> None:
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


@dataclass(frozen=True)
class ModelFile:
    """A verified model: its path, its bytes (loaded once, so what was checked is what runs),
    its card and its registry entry if it is a known release (its sha256 is in the registry)."""

    path: Path
    data: bytes
    card: ModelCard
    entry: RegistryEntry | None

    @property
    def known_release(self) -> bool:
        """Whether these exact bytes are a release in the model registry. The checksum sealed in an
        ONNX file only shows it is intact: anyone can reseal a changed model."""
        return self.entry is not None

    @property
    def warnings(self) -> tuple[str, ...]:
        """What every prediction of this model should carry: a model outside the registry is only
        what its own card claims to be."""
        if self.known_release:
            return ()
        return (f"model {self.card.ref} is not a known release (its sha256 is not in the model registry): "
                "its name, version and metrics are unverified",)


def resolve(model: str | os.PathLike[str] | None) -> tuple[Path, RegistryEntry | None]:
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
    if path.suffix not in (".onnx", ".keras") and not path.exists():
        known = ", ".join(e.ref for e in registry.models) or "none"
        raise ModelNotFoundError(f"no model named {str(model)!r} (registered: {known})")
    by_file = [e for e in registry.models if _same_file(inside(directory, e.file), path)]
    return path, (by_file[0] if by_file else None)


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
    can be evaluated through the facade (on the TensorFlow runtime) before export."""
    from boneage.training.config import TrainConfig

    config_path = path.parent / "config.json"
    if not config_path.is_file():
        raise InvalidModelError(f"{path}: a .keras model needs the config.json of its run folder beside it")
    try:
        config = TrainConfig.model_validate_json(read_bounded(config_path, MAX_CONFIG_BYTES, "run config"))
    except (ValidationError, OSError) as exc:
        raise InvalidModelError(f"{config_path} is not a valid run config: {one_line(exc)}") from exc
    return ModelCard(name=f"run:{path.parent.name}", version="0.0.0", backbone=config.backbone,
                     input_size=config.input_size, preprocessing=config.resolved_preprocessing(), keras_sha256=None)


__all__ = ["ModelFile", "Registry", "RegistryEntry", "file_sha256", "load_registry", "open_model", "release_of", "resolve"]
