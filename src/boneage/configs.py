"""Config records that travel with a model: its preprocessing (a list of named steps with their
parameters, plain JSON, which every model card carries) and the part of a training config that fixes
the model (:class:`ModelConfig`), from which an unexported run's card is read.

Records only, at the bottom of the package: the model card, the registry and the training config all
build on them, and none of them needs the pipeline, the plugins or TensorFlow to do so. Step names
and parameters are checked against the registered steps when the pipeline is built, so a plugin's
step is as valid here as a built-in one.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from boneage.errors import ConfigError

# A card is data from the model file, and every image (and the model's load) runs all of its steps: 4,300
# steps fit in the 1 MiB a card may take, about an hour an image (probe 13). A real pipeline has 4 to 7
# (grayscale, invert, hand_crop, resize, clahe, a plugin's step, normalize); 16 leaves room for more.
MAX_STEPS = 16
# The same step at most twice: a second resize (after a crop) or a second CLAHE may make sense, a third
# only multiplies the cost (CLAHE in float on a 5 MP radiograph: 3 s, each time).
MAX_REPEATS = 2


def plain_scalars(options: Any, depth: int = 32) -> Any:
    """NumPy scalars and arrays, down to ``depth`` levels of mappings and lists (a config file may nest 32: a list
    holding itself is left to pydantic's own refusal), as the Python numbers and lists they hold, so options stay
    plain JSON: an API caller's ``np.float32(0.1)`` was checked and trained on, then could not be written to
    config.json."""
    if depth and isinstance(options, dict):
        return {k: plain_scalars(v, depth - 1) for k, v in options.items()}
    if depth and isinstance(options, (list, tuple)):
        return [plain_scalars(v, depth - 1) for v in options]
    if isinstance(options, (np.generic, np.ndarray)):
        return options.tolist()
    return options


class StepConfig(BaseModel):
    """One step by its registered name; ``params`` stay plain JSON here and are checked against the
    step's own params model when the pipeline is built."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("params", mode="before")
    @classmethod
    def plain_params(cls, params: Any) -> Any:
        return plain_scalars(params)


class PreprocessConfig(BaseModel):
    """The steps in order; it travels in the model card, so a model is always preprocessed as it was
    trained. Unknown fields are refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    steps: tuple[StepConfig, ...] = Field(max_length=MAX_STEPS)

    @model_validator(mode="after")
    def _bounded(self) -> PreprocessConfig:
        """No step more than ``MAX_REPEATS`` times: each one costs every image its time again."""
        names = [step.name for step in self.steps]
        repeated = sorted({name for name in names if names.count(name) > MAX_REPEATS})
        if repeated:
            raise ValueError(f"the preprocessing runs {', '.join(repr(name[:40]) for name in repeated[:3])} more than {MAX_REPEATS} times; "
                             "each step may appear at most twice")
        return self

    @property
    def input_size(self) -> int | None:
        """The side of the square the pipeline resizes to, if it has a resize step."""
        for step in self.steps:
            if step.name == "resize":
                size = step.params.get("size", 256)
                if isinstance(size, bool) or not isinstance(size, int):  # a card is data: 100.7 or [1] is refused
                    raise ValueError(f"the resize step's size must be a whole number, not {size!r}")
                return size
        return None

    @classmethod
    def default(cls, size: int = 100) -> PreprocessConfig:
        """What the shipped models were trained with: the whole radiograph squashed to a square
        exactly as the RSNA 100-px images were made (PIL nearest, measured: identical pixels),
        then CLAHE, then scaling to [0,1]."""
        return cls(
            steps=(
                StepConfig(name="grayscale"),
                StepConfig(name="resize", params={"size": size, "mode": "stretch", "interpolation": "nearest_exact"}),
                StepConfig(name="clahe"),
                StepConfig(name="normalize"),
            )
        )

    def with_size(self, size: int) -> PreprocessConfig:
        """The resize steps that leave the size out given ``size``. One that names another size is
        refused (it was silently replaced: a 224 became 100, the model trained on another input)."""
        for step in self.steps:
            if step.name == "resize" and "size" in step.params and step.params["size"] != size:
                raise ConfigError(f"the resize step says size {step.params['size']!r}, but the input size is "
                                  f"{size}: give one size (or leave it out of the resize step)")
        steps = tuple(
            StepConfig(name=s.name, params={**s.params, "size": size}) if s.name == "resize" else s
            for s in self.steps
        )
        return PreprocessConfig(steps=steps)

    def split_at_resize(self) -> tuple[PreprocessConfig, PreprocessConfig]:
        """(the steps up to and including the last resize, the steps after it): training augments the
        image between the two, so the later steps (CLAHE) see shifted and rescaled images as at inference.
        Either part builds on its own (a pipeline needs no resize step). No resize step is a ConfigError."""
        last = [i for i, step in enumerate(self.steps) if step.name == "resize"]
        if not last:
            raise ConfigError("the preprocessing has no resize step to split at")
        return PreprocessConfig(steps=self.steps[: last[-1] + 1]), PreprocessConfig(steps=self.steps[last[-1] + 1 :])


class ModelConfig(BaseModel):
    """What a training config says about the model itself: its backbone, its input size and its
    preprocessing. :class:`boneage.training.config.TrainConfig` extends it; the registry reads just
    this from a run folder's ``config.json`` to give an unexported ``.keras`` model its card, so
    inference learns what a run trained on without importing training. Other keys are ignored here
    (the training config refuses unknown ones)."""

    model_config = ConfigDict(extra="ignore")

    backbone: str = "densenet121"
    input_size: int = Field(100, ge=32, le=1024, description="defaults to the size the preprocessing's resize step names")
    preprocessing: PreprocessConfig | None = Field(
        None, description="defaults to PreprocessConfig.default(input_size)"
    )

    @model_validator(mode="after")
    def _one_input_size(self) -> ModelConfig:
        """One input size, refused now when the resize step names another (it used to be replaced
        silently, so a model meant for 224 px trained on 100)."""
        if self.preprocessing is None:
            return self
        named = [s.params["size"] for s in self.preprocessing.steps if s.name == "resize" and "size" in s.params]
        if "input_size" not in self.model_fields_set and named:
            size = named[0]
            if isinstance(size, bool) or not isinstance(size, int) or not 32 <= size <= 1024:
                raise ValueError(f"the resize step's size must be a whole number from 32 to 1024, not {size!r}")
            self.input_size = size
        self.preprocessing.with_size(self.input_size)  # a ConfigError (ValueError) if they disagree
        return self

    def resolved_preprocessing(self) -> PreprocessConfig:
        """The preprocessing with its resize at ``input_size`` (they agree: checked when made)."""
        if self.preprocessing is None:
            return PreprocessConfig.default(self.input_size)
        return self.preprocessing.with_size(self.input_size)
