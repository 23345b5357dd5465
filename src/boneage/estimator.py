"""The facade: ``BoneAgeEstimator().predict(image, male=True)``.

The estimator loads and verifies its model once, builds the preprocessing from the model's own
card, and is safe to share between threads (no state changes after construction).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from boneage import plugins
from boneage.age import check_age
from boneage.errors import BoneAgeError, InputError, InvalidModelError, PluginError
from boneage.imageio import ImageInput, read_image
from boneage.models import ModelFile, open_model
from boneage.prediction import Prediction
from boneage.preprocess import build_pipeline
from boneage.preprocess.builtin import to_uint8_gray
from boneage.preprocess.crop import downscale, is_uniform
from boneage.preprocess.crop_classical import ClassicalParams, find_hand
from boneage.preprocess.inversion import looks_inverted
from boneage.preprocess.pipeline import Notes
from boneage.references import compare, load_reference
from boneage.runtimes import checked_months
from boneage.sex import check_male
from boneage.specs import Runtime, RuntimeSpec

if TYPE_CHECKING:
    from boneage.explain import Explanation

CHECK_SIZE = 256


def input_warnings(image: np.ndarray, steps: set[str]) -> list[str]:
    """Cheap checks that flag an input the model will answer anyway but should not be trusted on.
    Checks that a pipeline step does itself (``invert``, ``hand_crop``) are left to it."""
    gray, _ = downscale(to_uint8_gray(image), CHECK_SIZE)  # cheap on the hot path
    if is_uniform(gray):
        return ["the image is blank or nearly uniform: no radiograph to read"]
    warnings = []
    if "invert" not in steps and looks_inverted(gray):
        warnings.append("the image looks inverted (bright background); radiographs have a dark one")
    if "hand_crop" not in steps and find_hand(gray, ClassicalParams()) is None:
        warnings.append("no hand-sized bright region found: is this a hand radiograph?")
    return warnings


def _source(image: ImageInput) -> str | None:
    return str(image) if isinstance(image, (str, os.PathLike)) else None


class BoneAgeEstimator:
    """Estimate bone age in months from a hand radiograph and the child's sex."""

    def __init__(
        self,
        model: str | os.PathLike[str] | None = None,
        runtime: str | None = None,
        threads: int | None = None,
        reference: str | None = None,
    ) -> None:
        """``runtime`` defaults to ONNX Runtime, or TensorFlow for a ``.keras`` model; ``reference``
        (default Greulich & Pyle / Brush) is what a bone age is compared with when an age is given."""
        self.model: ModelFile = open_model(model)
        self.reference = load_reference(reference)
        runtime = runtime or ("tensorflow" if self.model.path.suffix == ".keras" else "onnx")
        spec: RuntimeSpec = plugins.get("runtimes", runtime)
        self.card = self.model.card
        self.pipeline = build_pipeline(self.card.preprocessing)
        self._steps = {step.name for step in self.card.preprocessing.steps}
        try:
            self.runtime: Runtime = spec.load(self.model, threads)
        except (BoneAgeError, MemoryError):
            raise
        except Exception as exc:  # a plugin runtime that fails to load: typed, naming it
            raise PluginError(f"runtime {runtime!r} could not load {self.model.card.ref}: {type(exc).__name__}: {exc}") from exc
        self.runtime_name = runtime

    def __repr__(self) -> str:
        return f"BoneAgeEstimator(model={self.card.ref!r}, runtime={self.runtime_name!r})"

    @property
    def path(self) -> Path:
        return self.model.path

    def preprocess(self, image: ImageInput) -> tuple[np.ndarray, Notes]:
        """The model input for one image, and notes on it: warnings (the steps' own, and the input
        checks') and what was applied on the way (e.g. an EXIF rotation)."""
        loaded = read_image(image)
        notes = Notes(applied=list(loaded.notes))
        notes.warnings.extend(input_warnings(loaded.image, self._steps))
        prepared = self.pipeline(loaded.image, notes)
        size = self.card.input_size
        if prepared.shape != (size, size, 1) or not 0.0 <= float(prepared.min()) <= float(prepared.max()) <= 1.0:
            raise InvalidModelError(
                f"the preprocessing of {self.card.ref} gives {prepared.shape} in "
                f"[{prepared.min():g}, {prepared.max():g}], not ({size}, {size}, 1) in [0, 1]: its card is inconsistent"
            )
        return prepared, notes

    def run(self, images: np.ndarray, male: Sequence[bool]) -> np.ndarray:
        """Months for a batch that is already preprocessed (N, H, W, 1)."""
        sexes = np.array([[float(check_male(m))] for m in male], dtype=np.float32)
        out = self.runtime.predict(np.ascontiguousarray(images, dtype=np.float32), sexes)
        return checked_months(out, len(sexes))  # NaN or a wrong shape is the model's fault: exit 3

    def make_prediction(self, months: float, male: bool, source: str | None, notes: Notes,
                        age_months: float | None = None) -> Prediction:
        months = float(months)
        return Prediction.make(
            months,
            male=male,
            interval=self.card.interval.interval(months) if self.card.interval else None,
            comparison=None if age_months is None else compare(months, age_months, male, self.reference),
            model_name=self.card.name,
            model_version=self.card.version,
            runtime=self.runtime_name,
            source=source,
            warnings=[*self.model.warnings, *notes.warnings],  # e.g. not a known release
            notes=tuple(notes.applied),
        )

    def predict(self, image: ImageInput, male: Any, age_months: float | None = None) -> Prediction:
        """Bone age for one image: a path, encoded bytes, or an array (uint8/uint16, gray/RGB/RGBA,
        or float in [0, 1]). With the child's age in months (see :mod:`boneage.age` for years and
        dates) the prediction also compares the bone age with it."""
        return self.predict_batch([image], [male], ages=None if age_months is None else [age_months])[0]

    def explain(self, image: ImageInput, male: Any, age_months: float | None = None) -> Explanation:
        """The prediction and where the model looked: occlusion sensitivity (see :mod:`boneage.explain`)."""
        from boneage.explain import explain

        return explain(self, image, male, age_months)

    def plot(self, prediction: Prediction, path: str | os.PathLike[str]) -> Path:
        """A growth chart of ``prediction`` (made with an age) against this estimator's reference;
        needs matplotlib (extra: plot). See :mod:`boneage.chart`."""
        from boneage.chart import growth_chart

        return growth_chart(prediction, self.reference, path)

    def predict_batch(self, images: Sequence[ImageInput], male: Sequence[Any], batch_size: int = 64, *,
                      ages: Sequence[float | None] | None = None) -> list[Prediction]:
        """Many images, ``batch_size`` per model call; raises the first bad input's error (see :meth:`predict_many`)."""
        results = self.predict_many(images, male, batch_size, ages=ages)
        for result in results:
            if isinstance(result, BoneAgeError):
                raise result
        return results  # type: ignore[return-value]

    def predict_many(self, images: Sequence[ImageInput], male: Sequence[Any], batch_size: int = 64, *,
                     ages: Sequence[float | None] | None = None) -> list[Prediction | BoneAgeError]:
        """Like :meth:`predict_batch`, but keeps going: a bad input gets its error in its place.
        Runs the model ``batch_size`` images at a time, so memory stays bounded for any number.
        ``ages``: the children's ages in months (None where unknown)."""
        if len(images) != len(male):
            raise InputError(f"{len(images)} images but {len(male)} sexes")
        ages = [None] * len(images) if ages is None else list(ages)
        if len(ages) != len(images):
            raise InputError(f"{len(images)} images but {len(ages)} ages")
        if batch_size < 1:
            raise InputError(f"batch_size must be at least 1, not {batch_size}")
        results: list[Prediction | BoneAgeError] = []
        for start in range(0, len(images), batch_size):
            end = start + batch_size
            results += self._predict_chunk(images[start:end], male[start:end], ages[start:end])
        return results

    def _predict_chunk(self, images: Sequence[ImageInput], male: Sequence[Any],
                       ages: Sequence[float | None]) -> list[Prediction | BoneAgeError]:
        results: list[Prediction | BoneAgeError | None] = [None] * len(images)
        prepared: list[tuple[int, bool, float | None, np.ndarray, Notes]] = []
        for i, (image, m, age) in enumerate(zip(images, male, ages, strict=True)):
            try:
                sex = check_male(m)
                checked_age = None if age is None else check_age(age)
                prepared.append((i, sex, checked_age, *self.preprocess(image)))
            except InputError as exc:  # this input's fault; a model's or a plugin's error ends the batch
                results[i] = exc
        if prepared:
            months = self.run(np.stack([p[3] for p in prepared]), [p[1] for p in prepared])
            for (i, sex, age, _, notes), value in zip(prepared, months, strict=True):
                results[i] = self.make_prediction(value, sex, _source(images[i]), notes, age)
        return results  # type: ignore[return-value]
