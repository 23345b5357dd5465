"""Build a callable pipeline from a :class:`PreprocessConfig` through the plugin registry."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydantic import BaseModel, ValidationError

from boneage.configs import PreprocessConfig
from boneage.errors import BoneAgeError, ConfigError, PluginError, PreprocessError, failures_as, validation_problems
from boneage.plugins import Plugins, get_plugins
from boneage.specs import ConfiguredSpec, StepSpec, Transform


@dataclass
class Notes:
    """What the reading and the steps noticed about one image (warnings: doubts about the answer)
    and did to it (applied: e.g. an EXIF rotation), passed on to the prediction."""

    warnings: list[str] = field(default_factory=list)
    applied: list[str] = field(default_factory=list)

    def warn(self, message: str) -> None:
        """For a step that answers but doubts its input; the message reaches the prediction's warnings."""
        self.warnings.append(message)


def validated(params_model: type[BaseModel], params: dict[str, object], what: str) -> BaseModel:
    """``params`` checked against a step's or cropper's params model; a :class:`ConfigError` naming
    ``what`` instead of pydantic's own error."""
    try:
        return params_model.model_validate(params)
    except ValidationError as exc:
        raise ConfigError(f"invalid parameters for {what}: {validation_problems(exc.errors())}") from exc


def build_item(spec: ConfiguredSpec, params: BaseModel, registry: Plugins) -> Any:
    """``spec.build(params)``; a spec with ``takes_plugins`` also gets ``plugins=registry``, the
    registry its pipeline was built from, so a step that looks up other parts (``hand_crop`` its
    cropper) finds them there and not in the process-wide one."""
    return spec.build(params, plugins=registry) if spec.takes_plugins else spec.build(params)


class Pipeline:
    """Steps applied in order; the result is float32 (H, W, 1) ready for a model. Every step is
    looked up and its params checked when the pipeline is built (:class:`ConfigError`, or a
    :class:`PluginError` from the registry), not on the first image. The estimator calls one
    pipeline from several threads, so a step must be safe to share. ``plugins``: the registry to
    look steps up in (default: the process-wide one, :func:`boneage.plugins.get_plugins`)."""

    def __init__(self, config: PreprocessConfig, plugins: Plugins | None = None) -> None:
        self.config = config
        self.plugins = get_plugins(plugins)
        self._transforms: list[tuple[str, Transform]] = []
        for step in config.steps:
            spec: StepSpec = self.plugins.get("preprocess_steps", step.name).spec
            params = validated(spec.params, step.params, f"step {step.name!r}")
            with failures_as(PluginError, f"preprocessing step {step.name!r} could not be built"):
                transform: Transform = build_item(spec, params, self.plugins)
            self._transforms.append((step.name, transform))

    def __call__(self, image: np.ndarray, notes: Notes | None = None) -> np.ndarray:
        """A step that fails on this image raises :class:`PreprocessError` naming it; its warnings go to ``notes``."""
        image = self.raw(image, notes)
        image = image.astype(np.float32, copy=False)
        return image[..., None] if image.ndim == 2 else image

    def raw(self, image: np.ndarray, notes: Notes | None = None) -> np.ndarray:
        """The last step's output as it is (uint8 after grayscale and resize), not yet float32 (H, W, 1): for
        training, which keeps the part up to the resize in memory as uint8 and augments it there."""
        notes = notes if notes is not None else Notes()
        for name, transform in self._transforms:
            try:
                image = transform(image, notes)
            except (BoneAgeError, MemoryError):
                raise
            except Exception as exc:  # a step (perhaps a plugin's) failed on this image: typed, not a traceback
                raise PreprocessError(f"preprocessing step {name!r} failed on this image: {exc}") from exc
            if not isinstance(image, np.ndarray) or image.ndim not in (2, 3) or image.dtype.kind not in "uif":
                raise PreprocessError(f"preprocessing step {name!r} returned a {type(image).__name__}, not an image array")
        return image


def build_pipeline(config: PreprocessConfig, plugins: Plugins | None = None) -> Pipeline:
    """The public way to make a :class:`Pipeline`, e.g. from a model card's ``preprocessing``;
    ``plugins`` as for :class:`Pipeline`."""
    return Pipeline(config, plugins)


def probe_image() -> np.ndarray:
    """A plausible radiograph: a bright palm and five fingers on a dark, noisy background."""
    image = np.random.default_rng(0).integers(0, 25, (320, 256), dtype=np.uint8)
    image[170:290, 70:186] = 190
    for left in range(82, 182, 22):
        image[80:170, left : left + 10] = 170
    return image


def check_output(pipeline: Pipeline, size: int, error: type[BoneAgeError], what: str) -> None:
    """Refuse a pipeline whose output the model cannot take, once (at export and when a model is
    loaded) instead of on every image: it must give (size, size, 1) in [0, 1]."""
    try:
        out = pipeline(probe_image())
    except BoneAgeError as exc:
        raise error(f"{what}: its preprocessing could not be checked on a test image: {exc}") from exc
    low, high = float(out.min()), float(out.max())
    if out.shape != (size, size, 1) or not 0.0 <= low <= high <= 1.0:
        raise error(f"{what}: the preprocessing gives {out.shape} in [{low:g}, {high:g}], "
                    f"not ({size}, {size}, 1) in [0, 1]")
