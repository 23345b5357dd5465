"""The model registry: ``registry.json`` beside the exported models, with their checksums.

Models are looked up in ``$BONEAGE_MODELS_DIR``, else in the copy packaged in the wheel
(``boneage/exported``), else in the repository's ``exported/`` (editable installs).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from boneage.errors import ChecksumMismatchError, InvalidModelError, ModelNotFoundError
from boneage.modelcard import ModelCard, file_sha256, read_card, verify_embedded

MODELS_DIR_ENV = "BONEAGE_MODELS_DIR"
REGISTRY_FILE = "registry.json"


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

    @property
    def ref(self) -> str:
        return f"{self.name}-{self.version}"


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
        return Registry.model_validate_json(path.read_text())
    except (ValidationError, ValueError, OSError) as exc:
        raise InvalidModelError(f"model registry {path} is unreadable or invalid: {exc}") from exc


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
    return max(named, key=lambda e: tuple(int(p) for p in e.version.split(".") if p.isdigit()), default=None)


@dataclass(frozen=True)
class ModelFile:
    """A verified model: its path, its bytes (loaded once, so what was checked is what runs),
    its card and its registry entry if it has one."""

    path: Path
    data: bytes
    card: ModelCard
    entry: RegistryEntry | None


def resolve(model: str | os.PathLike[str] | None) -> tuple[Path, RegistryEntry | None]:
    directory = models_dir()
    registry = load_registry(directory)
    if model is None:
        if registry.default is None:
            raise ModelNotFoundError(f"no default model in {directory / REGISTRY_FILE}; pass model=PATH")
        model = registry.default
    entry = find_entry(registry, str(model)) if not isinstance(model, Path) else None
    if entry is not None:
        return directory / entry.file, entry
    path = Path(model)
    if path.suffix not in (".onnx", ".keras") and not path.exists():
        known = ", ".join(e.ref for e in registry.models) or "none"
        raise ModelNotFoundError(f"no model named {str(model)!r} (registered: {known})")
    by_file = [e for e in registry.models if (directory / e.file).resolve() == path.resolve()]
    return path, (by_file[0] if by_file else None)


def open_model(model: str | os.PathLike[str] | None) -> ModelFile:
    path, entry = resolve(model)
    if not path.is_file():
        raise ModelNotFoundError(f"model file {path} not found")
    if path.suffix == ".keras":
        return ModelFile(path, b"", card_from_run(path), None)
    data = path.read_bytes()
    if entry is not None:
        actual = hashlib.sha256(data).hexdigest()
        if actual != entry.sha256:
            raise ChecksumMismatchError(
                f"{path} does not match the registry: expected sha256 {entry.sha256}, found {actual}"
            )
    card = read_card(data, str(path))  # first, so a foreign file is named as such
    verify_embedded(data, path)
    return ModelFile(path, data, card, entry)


def card_from_run(path: Path) -> ModelCard:
    """An unexported ``.keras`` model from a run folder: its card comes from the run's config, so it
    can be evaluated through the facade (on the TensorFlow runtime) before export."""
    from boneage.training.config import TrainConfig

    config_path = path.parent / "config.json"
    if not config_path.is_file():
        raise InvalidModelError(f"{path}: a .keras model needs the config.json of its run folder beside it")
    try:
        config = TrainConfig.model_validate_json(config_path.read_text())
    except (ValidationError, OSError) as exc:
        raise InvalidModelError(f"{config_path} is not a valid run config: {exc}") from exc
    return ModelCard(name=f"run:{path.parent.name}", version="0.0.0", backbone=config.backbone,
                     input_size=config.input_size, preprocessing=config.resolved_preprocessing(), keras_sha256=None)


__all__ = ["ModelFile", "Registry", "RegistryEntry", "file_sha256", "load_registry", "open_model", "resolve"]
