"""What plugins hand over: small frozen records, one per registered item, made with keyword
arguments only (``StepSpec(name="flip", build=..., doc="...")``), so fields can be added later
without breaking a plugin.

Builders are called only when the item is used, so registering never imports a heavy library.
"""

from __future__ import annotations

import dataclasses
import reprlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from pydantic import BaseModel

if TYPE_CHECKING:
    from boneage.release import ModelFile


class Trace(Protocol):
    """Collects what preprocessing noticed (e.g. no hand found) for the prediction."""

    def warn(self, message: str) -> None:
        """Add ``message`` to the prediction's warnings: a step that doubts its input says so
        instead of failing the image."""


Transform = Callable[[np.ndarray, Trace], np.ndarray]


class Cropper(Protocol):
    """What a :class:`CropperSpec` builds for the ``hand_crop`` step: the image cut to the hand."""

    def __call__(self, image: np.ndarray, trace: Trace) -> np.ndarray:
        """The hand's region of ``image``; where no hand is found, the image as it was, with a
        warning on ``trace`` rather than an error, so the prediction still comes (and says so)."""


class Runtime(Protocol):
    """Runs a model on a preprocessed batch: images NHWC float32 in [0,1], male (N, 1) float32."""

    name: str

    def predict(self, images: np.ndarray, male: np.ndarray) -> np.ndarray:
        """Months for each image, shape (N,) or (N, 1); checked by the estimator, so a runtime
        that answers NaN or the wrong shape is refused as a model fault, never shown as an age."""


API_VERSION = "1.1"
"""The plugin API that this boneage implements, ``MAJOR.MINOR``. A plugin may declare the version it
was written for as ``BONEAGE_API_VERSION = "1.0"`` (a module or object attribute): another major,
or a newer minor, is refused when the plugin registers. Minor versions only add: 1.1 added
``takes_plugins`` to :class:`StepSpec` and :class:`CropperSpec`."""

API_ATTRIBUTE = "BONEAGE_API_VERSION"


class EmptyParams(BaseModel):
    """The parameters of an item that takes none: any key given is refused, so a typo in a config
    is an error and not silently ignored."""

    model_config = {"extra": "forbid"}


@dataclass(frozen=True, kw_only=True)
class ConfiguredSpec:
    """An item built from pydantic-validated parameters: ``build(params)``. With ``takes_plugins``
    (API 1.1) it is ``build(params, plugins=...)``, given the :class:`boneage.plugins.Plugins` that
    the pipeline is built from, for an item that looks up other parts (as ``hand_crop`` does its
    cropper): it must use that registry, not the process-wide one, so a private one works."""

    name: str
    build: Callable[..., Any]
    params: type[BaseModel] = EmptyParams
    doc: str = ""
    takes_plugins: bool = False


@dataclass(frozen=True, kw_only=True)
class StepSpec(ConfiguredSpec):
    """A preprocessing step: ``build(params)`` returns a :data:`Transform`."""


@dataclass(frozen=True, kw_only=True)
class CropperSpec(ConfiguredSpec):
    """A hand cropper: ``build(params)`` returns a :class:`Cropper`."""


@dataclass(frozen=True, kw_only=True)
class BackboneSpec:
    """``build(input_size, **options)`` returns an uncompiled Keras model with inputs
    ``image`` (H, W, 1) and ``male`` (1,) and one output in months: see
    :func:`boneage.backbones.build_model`, which adds the inputs and the head to a feature extractor."""

    name: str
    build: Callable[..., Any]
    default_input_size: int = 256
    doc: str = ""


@dataclass(frozen=True, kw_only=True)
class RuntimeSpec:
    """``load(model, threads)`` returns a :class:`Runtime` for a verified :class:`ModelFile`."""

    name: str
    load: Callable[[ModelFile, int | None], Runtime]
    doc: str = ""


@dataclass(frozen=True, kw_only=True)
class ReferenceSpec:
    """``load()`` returns a :class:`boneage.references.ReferenceTable`: bone-age norms by age and sex."""

    name: str
    load: Callable[[], Any]
    doc: str = ""


def _is_name(value: object) -> bool:
    return isinstance(value, str) and 0 < len(value) <= 100 and value.isprintable() and value == value.strip()


def _is_params(value: object) -> bool:
    return isinstance(value, type) and issubclass(value, BaseModel)


def _is_size(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


FIELD_CHECKS: dict[str, tuple[Callable[[object], bool], str]] = {
    "name": (_is_name, "a non-empty str (at most 100 printable characters, no surrounding spaces)"),
    "build": (callable, "callable"),
    "load": (callable, "callable"),
    "params": (_is_params, "a pydantic BaseModel subclass"),
    "default_input_size": (_is_size, "a positive int"),
    "doc": (lambda value: isinstance(value, str), "a str"),
    "takes_plugins": (lambda value: isinstance(value, bool), "a bool"),
}


def type_name(value: object) -> str:
    """A value's type for a refusal message ("None", "str", "dict"), never its possibly huge repr."""
    return "None" if value is None else type(value).__name__


def spec_problem(spec: object, expected: type) -> str | None:
    """Why ``spec`` is not a usable ``expected`` spec, or None: checked when a plugin hands it
    over, so a wrong type or fields in the wrong order are refused at once, not met later."""
    if not isinstance(spec, expected) or not dataclasses.is_dataclass(spec):
        return f"{type_name(spec)}, not a {expected.__name__}"
    for field in dataclasses.fields(spec):
        check, wanted = FIELD_CHECKS.get(field.name, (None, ""))
        value = getattr(spec, field.name)
        if check is not None and not check(value):
            return f"{expected.__name__}.{field.name} must be {wanted}, not {reprlib.repr(value)}"
    return None


def _major_minor(version: str) -> tuple[int, int] | None:
    parts = version.split(".")
    if len(parts) != 2 or not all(p.isascii() and p.isdigit() and len(p) <= 4 for p in parts):
        return None
    return int(parts[0]), int(parts[1])


def api_problem(declared: object) -> str | None:
    """Why a plugin that declares ``BONEAGE_API_VERSION = declared`` cannot work with this boneage,
    or None (also when it declares nothing: such a plugin is taken to follow the current API)."""
    if declared is None:
        return None
    wanted = _major_minor(declared) if isinstance(declared, str) else None
    if wanted is None:
        return f"{API_ATTRIBUTE} must be 'MAJOR.MINOR' (e.g. {API_VERSION!r}), not {reprlib.repr(declared)}"
    ours = _major_minor(API_VERSION)
    assert ours is not None
    if wanted[0] != ours[0]:
        return (f"written for boneage plugin API {declared}, but this boneage implements {API_VERSION} "
                f"(another major version): install a release of the plugin made for API {ours[0]}.x")
    if wanted[1] > ours[1]:
        return (f"needs boneage plugin API {declared}, newer than this boneage's {API_VERSION}: "
                "upgrade boneage")
    return None
