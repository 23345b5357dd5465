"""The records of a model release: what ``registry.json`` says about each exported model
(:class:`Registry`, :class:`RegistryEntry`) and a verified model file (:class:`ModelFile`).

Records only, below the registry that finds, reads and checks them (:mod:`boneage.models`, which
re-exports them) and below the plugin specs, whose runtimes are handed a :class:`ModelFile`: a plugin
author's contract then needs no registry code.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, field_validator, model_validator

from boneage.finite import finite_float
from boneage.modelcard import MAX_NAME as MAX_NAME  # re-exported: defined with the card, which checks them too
from boneage.modelcard import NAME as NAME
from boneage.modelcard import VERSION as VERSION
from boneage.modelcard import ModelCard, semantic_version
from boneage.modelcard import is_plain_name as is_plain_name

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
    """One released model file: its name and semantic version, its sha256 and size (checked before it
    runs), its backbone and validation metrics, whether it is quantized or recommended, and the
    ``.keras`` beside it for the TensorFlow runtime. File names must stay inside the models folder, the
    name must be one export could have written (:func:`is_plain_name`), and metrics are numbers a float
    holds (a text MAE, or a 400-digit one, made ``boneage models`` an internal error)."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    name: str
    version: str
    file: str
    sha256: str
    size: int
    backbone: str
    metrics: dict[str, StrictInt | StrictFloat] = Field(default_factory=dict)  # listed and compared as numbers
    recommended: bool = True
    quantized: str | None = None
    keras_file: str | None = None
    keras_sha256: str | None = None

    @field_validator("name")
    @classmethod
    def _plain(cls, value: str) -> str:
        if not is_plain_name(value):
            raise ValueError("not a plain name (letters, digits, '.', '_', '-')")
        return value

    @field_validator("version")
    @classmethod
    def _semantic(cls, value: str) -> str:
        return semantic_version(value)

    @field_validator("metrics")
    @classmethod
    def _floats(cls, value: dict[str, int | float]) -> dict[str, int | float]:
        """Whole numbers past float range refused (NaN and infinities, which a metric of no images is, load):
        listing and comparing one raised OverflowError, an internal error."""
        for key, number in value.items():
            if isinstance(number, int) and finite_float(number) is None:
                raise ValueError(f"metric {key[:60]!r} is a whole number of {len(str(abs(number)))} digits, "
                                 "past what a float holds")
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
        """``name-version``, as the card's own :attr:`boneage.modelcard.ModelCard.ref`."""
        return f"{self.name}-{self.version}"

    @property
    def version_key(self) -> tuple[int, int, int]:
        """(major, minor, patch) as numbers, so "newest" orders 0.10.0 after 0.9.0."""
        match = VERSION.fullmatch(self.version)
        assert match is not None  # validated
        return int(match[1]), int(match[2]), int(match[3])


class Registry(BaseModel):
    """``registry.json``: the released models and the one used when none is named. Unknown keys are
    refused, so a registry from a newer boneage is not half read; so is a release listed twice."""

    model_config = ConfigDict(extra="forbid")

    default: str | None = None
    models: list[RegistryEntry] = Field(default_factory=list)

    @model_validator(mode="after")
    def _once_each(self) -> Registry:
        """One entry per release: a second one of the same name and version was listed as the default
        too, and only the first was ever loaded."""
        seen: set[str] = set()
        for entry in self.models:
            if entry.ref in seen:
                raise ValueError(f"the registry lists {entry.ref} twice")
            seen.add(entry.ref)
        return self


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
