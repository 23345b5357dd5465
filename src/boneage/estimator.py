"""The facade: ``BoneAgeEstimator().predict(image, male=True)``.

The estimator loads and verifies its model once, builds the preprocessing from the model's own
card, and is safe to share between threads (no state changes after construction).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from boneage.age import check_age
from boneage.containment import plugin_code
from boneage.decoded import Loaded
from boneage.defaults import BATCH_SIZE, MAX_BATCH_SIZE, MAX_MODEL_INPUTS, MAX_THREADS, MAX_VIEWS
from boneage.errors import (
    BoneAgeError,
    ConfigError,
    InputError,
    InvalidModelError,
    ModelOutputError,
    PluginError,
    failures_as,
)
from boneage.imageio import ImageInput, read_image, source_name
from boneage.models import ModelFile, open_model
from boneage.patient import resolve
from boneage.plugins import Plugins, get_plugins
from boneage.prediction import Prediction, checked_estimate
from boneage.preprocess import build_pipeline
from boneage.preprocess.builtin import to_uint8_gray
from boneage.preprocess.crop import downscale, is_uniform
from boneage.preprocess.crop_classical import ClassicalParams, find_hand
from boneage.preprocess.inversion import looks_inverted
from boneage.preprocess.pipeline import Notes, check_output
from boneage.preprocess.screening import screen
from boneage.preprocess.views import grid_views
from boneage.references import compare, load_reference
from boneage.runtimes import checked_months
from boneage.sex import check_male
from boneage.specs import Runtime, RuntimeSpec

if TYPE_CHECKING:
    from boneage.explain import Explanation

CHECK_SIZE = 256
# Below this share of the model's input side, an image is enlarged to it and the estimate moves beyond
# the resampling noise: copies of the 76 validation radiographs of rsna-512 (the 100-px model, area
# resize) moved 2.5 months on average at a short side of 100 px and 3.3 at 80 (the noise of any
# resampling), but 4.9 at 64, 7.1 at 48 and 15.7 at 32 (up to 60 months).
SMALL_SHARE = 0.8
Prepared = tuple[bool, float | None, np.ndarray, Notes]


def default_workers() -> int:
    """Threads that prepare images: enough to keep the model fed, few enough not to crowd it."""
    return min(4, os.cpu_count() or 1)


def input_warnings(image: np.ndarray, steps: set[str], small: np.ndarray | None = None) -> list[str]:
    """Cheap checks that flag an input the model will answer anyway but should not be trusted on.
    Checks that a pipeline step does itself (``invert``, ``hand_crop``) are left to it."""
    # cheap on the hot path; ``small``: that working copy, when the caller has made it already
    gray = small if small is not None else downscale(to_uint8_gray(image), CHECK_SIZE)[0]
    if is_uniform(gray):
        return ["the image is blank or nearly uniform: no radiograph to read"]
    warnings = []
    if "invert" not in steps and looks_inverted(gray):
        warnings.append("the image looks inverted (bright background); radiographs have a dark one")
    if "hand_crop" not in steps and find_hand(gray, ClassicalParams()) is None:
        warnings.append("no hand-sized bright region found: is this a hand radiograph?")
    return warnings


def size_warnings(image: np.ndarray, input_size: int) -> list[str]:
    """A warning for an image whose short side is under SMALL_SHARE of the model's input side (80 px for a
    100-px model): the model then reads an enlarged thumbnail, whose estimate moved 5 months on average at
    64 px and 16 at 32 on the validation radiographs (see SMALL_SHARE)."""
    height, width = image.shape[:2]
    smallest = round(SMALL_SHARE * input_size)
    if min(height, width) >= smallest:
        return []
    return [f"the image is only {width}x{height} pixels: under {smallest} px a side it is enlarged to the model's "
            f"{input_size}-px input, and estimates from such thumbnails are less reliable (the shipped model's moved "
            "5 months on average at 64 px, 16 at 32): use the full-size radiograph"]


def check_sequence(name: str, given: object) -> None:
    """``images``, ``male`` and ``ages`` of the batch methods: one item per image, in a list or the
    like. A str or a path is one image, not a sequence of them: ``predict_many("r.png", ...)`` read
    each character as a file name; a bool or None had no len (TypeError)."""
    one = (str, bytes, bytearray, memoryview, os.PathLike, Mapping)
    if isinstance(given, one) or not (hasattr(given, "__len__") and hasattr(given, "__getitem__")):
        raise InputError(f"{name} must be a sequence with one item per image (a list or a tuple), not a "
                         f"{type(given).__name__}; for one image, use predict()")


def _count(name: str, value: object, high: int, error: type[BoneAgeError]) -> int:
    """``value`` if it is a whole number (Python's or NumPy's, not a bool) from 1 to ``high``, else ``error``."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool) and 1 <= value <= high:
        return int(value)
    raise error(f"{name} must be a whole number from 1 to {high}, not {value!r}"[:200])


def checked_views(views: object) -> int:
    """``views`` from 1 to MAX_VIEWS, else a :class:`ConfigError` (``model_inputs`` took -1 or 100 into an
    untyped ValueError from zip, and 0 as 1)."""
    return _count("views", views, MAX_VIEWS, ConfigError)


def check_batch_size(batch_size: object) -> int:
    """``batch_size`` from 1 to MAX_BATCH_SIZE, else an :class:`InputError` (memory grows with it: 10**9
    tried to hold that many images at once)."""
    return _count("batch_size", batch_size, MAX_BATCH_SIZE, InputError)


def _source(image: ImageInput) -> str | None:
    return source_name(image)  # a DirEntry's path, a bytes path decoded; None for bytes and arrays


class BoneAgeEstimator:
    """Estimate bone age in months from a hand radiograph and the child's sex."""

    def __init__(
        self,
        model: str | os.PathLike[str] | None = None,
        runtime: str | None = None,
        threads: int | None = None,
        reference: str | None = None,
        check_input: bool = True,
        plugins: Plugins | None = None,
        views: int = 1,
    ) -> None:
        """``runtime`` defaults to ONNX Runtime, or TensorFlow for a ``.keras`` model; ``reference``
        (default Greulich & Pyle / Brush) is what a bone age is compared with when an age is given.
        ``check_input`` (see :mod:`boneage.preprocess.screening`): refuse images that cannot be a
        radiograph and turn quarter-turned ones upright; False answers anyway, with warnings.
        ``plugins``: the registry the runtime, reference and preprocessing steps come from (default:
        the process-wide one), e.g. a private :class:`~boneage.plugins.Plugins` with a part of its own.
        ``views`` (1 to 8): average each estimate over this many sampling grids of the image
        (:mod:`boneage.preprocess.views`), for that many times the model's work."""
        # a programmer's mistakes, said as such: "no" is truthy, so check_input="no" left the checks on
        if not isinstance(check_input, (bool, np.bool_)):
            raise ConfigError(f"check_input must be True or False, not a {type(check_input).__name__}")
        self.check_input = bool(check_input)
        self.views = checked_views(views)
        self.plugins = get_plugins(plugins)
        self.model: ModelFile = open_model(model)
        self.reference = load_reference(reference, self.plugins)
        runtime = runtime or ("tensorflow" if self.model.path.suffix == ".keras" else "onnx")
        spec: RuntimeSpec = self.plugins.get("runtimes", runtime).spec
        self.card = self.model.card
        try:  # the card's steps: a parameter out of bounds is the model's fault, not the caller's (exit 3, not 2)
            self.pipeline = build_pipeline(self.card.preprocessing, self.plugins)
        except ConfigError as exc:
            raise InvalidModelError(f"{self.card.ref}: its preprocessing cannot be built: {exc}") from exc
        check_output(self.pipeline, self.card.input_size, InvalidModelError, self.card.ref)  # once, not per image
        self._steps = {step.name for step in self.card.preprocessing.steps}
        with failures_as(PluginError, f"runtime {runtime!r} could not load {self.model.card.ref}"), plugin_code():
            self.runtime: Runtime = spec.load(self.model, threads)
        self.runtime_name = runtime

    def __repr__(self) -> str:
        return f"BoneAgeEstimator(model={self.card.ref!r}, runtime={self.runtime_name!r})"

    @property
    def path(self) -> Path:
        """The model file in use, after the default or a registry name was resolved."""
        return self.model.path

    def preprocess(self, image: ImageInput | Loaded) -> tuple[np.ndarray, Notes]:
        """The model input for one image, and notes on it: warnings (the steps' own, and the input
        checks') and what was applied on the way (e.g. an EXIF rotation)."""
        inputs, notes = self.model_inputs(image, 1)
        return inputs[0], notes

    def model_inputs(self, image: ImageInput | Loaded, views: int | None = None) -> tuple[np.ndarray, Notes]:
        """(views, H, W, 1): the model input of each sampling grid of the image, the first the image's
        own (``views`` defaults to the estimator's), and the notes, as :meth:`preprocess`."""
        views = self.views if views is None else checked_views(views)
        loaded = image if isinstance(image, Loaded) else read_image(image)
        notes = Notes(applied=list(loaded.notes), warnings=[*loaded.warnings, *size_warnings(loaded.image, self.card.input_size)])
        pixels, small = screen(loaded.image, notes, strict=self.check_input)  # may turn it upright, or refuse it
        notes.warnings.extend(input_warnings(pixels, self._steps, small))
        view_notes = [notes] + [Notes() for _ in range(views - 1)]  # one copy of the steps' warnings, not views
        inputs = np.stack([self.pipeline(v, n) for v, n in zip(grid_views(pixels, views), view_notes, strict=True)])
        if views > 1:
            notes.applied.append(f"averaged over {views} sampling grids")
        return inputs, notes  # the pipeline's output shape was checked at load

    def run(self, images: np.ndarray, male: Sequence[bool]) -> np.ndarray:
        """Months for a batch that is already preprocessed (N, H, W, 1), one sex per image. A batch of
        another shape, of another length than ``male``, or with NaN or infinite values is the caller's
        :class:`InputError` (it was blamed on the model, and an all-NaN batch was answered 74 months)."""
        images = np.asarray(images)
        size = self.card.input_size
        if images.ndim != 4 or not len(images) or images.shape[1:] != (size, size, 1) or len(images) != len(male):
            raise InputError(f"run needs a batch of shape (N, {size}, {size}, 1) and N sexes, not {images.shape} "
                             f"and {len(male)} sexes: preprocess() makes one image's input")
        if images.dtype.kind not in "fiu" or not np.isfinite(images).all():
            raise InputError("the batch holds NaN, infinite or non-numeric values: preprocess() makes the model's input")
        sexes = np.array([[float(check_male(m))] for m in male], dtype=np.float32)
        with failures_as(ModelOutputError, f"runtime {self.runtime_name!r} failed on {self.card.ref}"), plugin_code():
            out = self.runtime.predict(np.ascontiguousarray(images, dtype=np.float32), sexes)
        return checked_months(out, len(sexes))  # NaN or a wrong shape is the model's fault: exit 3

    def make_prediction(self, months: float, male: bool, source: str | None, notes: Notes,
                        age_months: float | None = None) -> Prediction:
        """One model output as a :class:`Prediction`, with this model's interval, card and warnings;
        public so code that runs the model itself (:mod:`boneage.explain`) answers the same way. ``male`` and
        ``age_months`` are checked as :meth:`predict` checks them ("f" was labelled female and compared with
        the boys' reference); ``months`` as :func:`~boneage.prediction.checked_estimate` does (NaN or infinity is a
        :class:`ModelOutputError`, a negative answer is given as 0 with a warning)."""
        months, clamped = checked_estimate(months)  # NaN or infinity: ModelOutputError; below 0: 0, warned
        male = check_male(male)
        age_months = None if age_months is None else check_age(age_months)
        if not isinstance(notes, Notes) or (source is not None and not isinstance(source, str)):
            raise InputError("make_prediction needs notes as a Notes and source as a str or None")
        return Prediction.make(
            months,
            male=male,
            interval=self.card.interval.interval(months) if self.card.interval else None,
            comparison=None if age_months is None else compare(months, age_months, male, self.reference),
            model_name=self.card.name,
            model_version=self.card.version,
            runtime=self.runtime_name,
            source=source,
            # e.g. not a known release; a negative answer given as 0
            warnings=[*self.model.warnings, *notes.warnings, *([clamped] if clamped else [])],
            notes=tuple(notes.applied),
        )

    def predict(self, image: ImageInput, male: Any = None, age_months: float | None = None) -> Prediction:
        """Bone age for one image: a path, encoded bytes, an array (uint8/uint16, gray/RGB/RGBA,
        or float in [0, 1]) or a PIL image (read as its file would be: :func:`boneage.imageio.read_pil`). With the child's age in months (see :mod:`boneage.age` for years and
        dates) the prediction also compares the bone age with it. A DICOM's header gives the sex and
        age left as None (see docs/dicom.md). A thumbnail whose short side is under 80% of the model's
        input (80 px for a 100-px model) is answered with a warning (:func:`size_warnings`)."""
        return self.predict_batch([image], [male], ages=None if age_months is None else [age_months])[0]

    def explain(self, image: ImageInput, male: Any = None, age_months: float | None = None) -> Explanation:
        """The prediction and where the model looked: occlusion sensitivity (see :mod:`boneage.explain`)."""
        from boneage.explain import explain

        return explain(self, image, male, age_months)

    def plot(self, prediction: Prediction, path: str | os.PathLike[str]) -> Path:
        """A growth chart of ``prediction`` (made with an age) against this estimator's reference;
        needs matplotlib (extra: plot). See :mod:`boneage.chart`."""
        from boneage.chart import growth_chart

        return growth_chart(prediction, self.reference, path)

    def predict_batch(self, images: Sequence[ImageInput], male: Sequence[Any], batch_size: int = BATCH_SIZE, *,
                      ages: Sequence[float | None] | None = None) -> list[Prediction]:
        """Many images, ``batch_size`` per model call; raises the first bad input's error (see :meth:`predict_many`)."""
        results = self.predict_many(images, male, batch_size, ages=ages)
        for result in results:
            if isinstance(result, BoneAgeError):
                raise result
        return results  # type: ignore[return-value]

    def predict_many(self, images: Sequence[ImageInput], male: Sequence[Any], batch_size: int = BATCH_SIZE, *,
                     ages: Sequence[float | None] | None = None,
                     workers: int | None = None) -> list[Prediction | BoneAgeError]:
        """Like :meth:`predict_batch`, but keeps going: a bad input gets its error in its place.
        See :meth:`iter_predictions` for the arguments."""
        return [r for batch in self.iter_predictions(images, male, batch_size, ages=ages, workers=workers) for r in batch]

    def iter_predictions(self, images: Sequence[ImageInput], male: Sequence[Any], batch_size: int = BATCH_SIZE, *,
                         ages: Sequence[float | None] | None = None,
                         workers: int | None = None) -> Iterator[list[Prediction | BoneAgeError]]:
        """Each batch's results as soon as it is done, in input order; ``batch_size`` images are read
        at a time (the model gets each one's views, at most MAX_MODEL_INPUTS inputs a call), so memory
        stays bounded for any number. ``ages``: the children's ages in
        months (None where unknown). ``workers`` threads decode and preprocess the next batch while
        the model runs this one (OpenCV and ONNX Runtime release the GIL); 0 does everything in the
        caller's thread."""
        check_sequence("images", images)
        check_sequence("male", male)
        if ages is not None:
            check_sequence("ages", ages)
        if len(images) != len(male):
            raise InputError(f"{len(images)} images but {len(male)} sexes")
        ages = [None] * len(images) if ages is None else list(ages)
        if len(ages) != len(images):
            raise InputError(f"{len(images)} images but {len(ages)} ages")
        batch_size = check_batch_size(batch_size)
        chunks = [range(start, min(start + batch_size, len(images))) for start in range(0, len(images), batch_size)]
        if workers is not None and (type(workers) is not int or not 0 <= workers <= MAX_THREADS):
            raise InputError(f"workers must be a whole number from 0 to {MAX_THREADS} (or None), not {workers!r}"[:200])
        workers = default_workers() if workers is None else workers
        if workers < 1:
            for chunk in chunks:
                yield self._finish([images[i] for i in chunk], [self._prepare(images[i], male[i], ages[i]) for i in chunk])
            return
        pool = ThreadPoolExecutor(workers, thread_name_prefix="boneage-prepare")
        try:
            pending: tuple[range, list[Future[Prepared | InputError]]] | None = None
            for chunk in chunks:  # this batch is prepared while the previous one runs: two in flight at most
                futures = [pool.submit(self._prepare, images[i], male[i], ages[i]) for i in chunk]
                if pending is not None:
                    yield self._finish([images[i] for i in pending[0]], [f.result() for f in pending[1]])
                pending = (chunk, futures)
            if pending is not None:
                yield self._finish([images[i] for i in pending[0]], [f.result() for f in pending[1]])
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def _prepare(self, image: ImageInput, male: Any, age: float | None) -> Prepared | InputError:
        """One input ready for the model, or its own error (a model's or a plugin's error is raised)."""
        try:
            if male is not None:
                check_male(male)  # a bad sex is refused before the image is decoded
            checked_age = None if age is None else check_age(age)
            loaded = read_image(image)
            patient = resolve(male, checked_age, loaded.patient)  # a DICOM header fills what was not given
            prepared, notes = self.model_inputs(loaded)
            notes.applied.extend(patient.notes)
            notes.warnings.extend(patient.warnings)
            return (patient.male, patient.age_months, prepared, notes)
        except InputError as exc:
            return exc

    def _finish(self, images: Sequence[ImageInput], prepared: Sequence[Prepared | InputError]) -> list[Prediction | BoneAgeError]:
        """One model call for the inputs that are ready; each error stays in its place."""
        ready = [(i, p) for i, p in enumerate(prepared) if not isinstance(p, InputError)]
        results: list[Prediction | BoneAgeError | None] = [p if isinstance(p, InputError) else None for p in prepared]
        if ready:
            inputs = np.concatenate([p[2] for _, p in ready])  # each image's views, in turn
            sexes = [p[0] for _, p in ready for _ in range(self.views)]
            # at most MAX_MODEL_INPUTS a call, whatever batch_size x views comes to
            months = np.concatenate([self.run(inputs[i : i + MAX_MODEL_INPUTS], sexes[i : i + MAX_MODEL_INPUTS])
                                     for i in range(0, len(inputs), MAX_MODEL_INPUTS)])
            months = months.reshape(len(ready), self.views).mean(axis=1)
            for (i, (sex, age, _, notes)), value in zip(ready, months, strict=True):
                results[i] = self.make_prediction(value, sex, _source(images[i]), notes, age)
        return results  # type: ignore[return-value]
