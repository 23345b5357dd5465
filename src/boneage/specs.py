"""What plugins hand over: small frozen records, one per registered item.

Builders are called only when the item is used, so registering never imports a heavy library.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from pydantic import BaseModel

if TYPE_CHECKING:
    from boneage.models import ModelFile


class Trace(Protocol):
    """Collects what preprocessing noticed (e.g. no hand found) for the prediction."""

    def warn(self, message: str) -> None: ...


Transform = Callable[[np.ndarray, Trace], np.ndarray]


class Cropper(Protocol):
    def __call__(self, image: np.ndarray, trace: Trace) -> np.ndarray: ...


class Runtime(Protocol):
    """Runs a model on a preprocessed batch: images NHWC float32 in [0,1], male (N, 1) float32."""

    name: str

    def predict(self, images: np.ndarray, male: np.ndarray) -> np.ndarray: ...


class EmptyParams(BaseModel):
    model_config = {"extra": "forbid"}


@dataclass(frozen=True)
class ConfiguredSpec:
    """An item built from pydantic-validated parameters: ``build(params)``."""

    name: str
    build: Callable[[Any], Any]
    params: type[BaseModel] = EmptyParams
    doc: str = ""


@dataclass(frozen=True)
class StepSpec(ConfiguredSpec):
    """A preprocessing step: ``build(params)`` returns a :data:`Transform`."""


@dataclass(frozen=True)
class CropperSpec(ConfiguredSpec):
    """A hand cropper: ``build(params)`` returns a :class:`Cropper`."""


@dataclass(frozen=True)
class BackboneSpec:
    """``build(input_size, **options)`` returns an uncompiled Keras model with inputs
    ``image`` (H, W, 1) and ``male`` (1,) and one output in months."""

    name: str
    build: Callable[..., Any]
    default_input_size: int = 256
    doc: str = ""


@dataclass(frozen=True)
class RuntimeSpec:
    """``load(model, threads)`` returns a :class:`Runtime` for a verified :class:`ModelFile`."""

    name: str
    load: Callable[[ModelFile, int | None], Runtime]
    doc: str = ""
