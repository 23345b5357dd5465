"""Where the model looked: occlusion sensitivity, drawn over the radiograph.

Why occlusion: it needs nothing but the model's answers, so it works through any runtime the
estimator serves (ONNX Runtime on a box without TensorFlow, a plugin's runtime) and any backbone.
Gradient methods (saliency, Grad-CAM) need gradients and a chosen convolution layer, which an ONNX
Runtime session does not give. And it measures what the picture claims: how many months the estimate
moves when a region is hidden. Its price is one batched model call of about 150 copies of the
image, and a resolution no finer than the patch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from boneage.age import check_age
from boneage.configs import PreprocessConfig
from boneage.decoded import Loaded
from boneage.errors import InputError
from boneage.files import refuse_link
from boneage.imageio import ImageInput, read_image, source_name
from boneage.modelcard import ModelCard
from boneage.patient import resolve
from boneage.prediction import Prediction, readable, years_and_months
from boneage.preprocess.builtin import to_uint8_gray
from boneage.preprocess.orientation import turn_upright
from boneage.preprocess.pipeline import Notes
from boneage.preprocess.screening import turns_applied
from boneage.sex import check_male

PATCH_FRACTION = 0.16  # 16 px at the shipped 100 px input (stride 8): 145 model runs
PIXELWISE = {"grayscale", "invert", "clahe", "normalize"}  # steps that move no pixel
MIN_WIDTH = 64  # pixels of a rendered picture: the strip above it needs some for its text
Run = Callable[[np.ndarray], np.ndarray]


class Explainable(Protocol):
    """What explaining needs of a model: its card, its preprocessing, a batch run and the prediction
    it would make. :class:`boneage.estimator.BoneAgeEstimator` is one; a protocol, so that this module
    sits below the facade that offers ``explain()`` instead of importing it back."""

    card: ModelCard

    def model_inputs(self, image: Loaded) -> tuple[np.ndarray, Notes]:
        """The model inputs of one decoded image, one per sampling grid (the image's own first),
        and the notes a prediction carries (the reading's first)."""

    def run(self, images: np.ndarray, male: Sequence[bool]) -> np.ndarray:
        """Months for a preprocessed batch: every occluded copy goes through here."""

    def make_prediction(self, months: float, male: bool, source: str | None, notes: Notes,
                        age_months: float | None = None) -> Prediction:
        """The prediction for the unoccluded image, made as ``predict()`` makes it."""


def positions(size: int, patch: int, stride: int) -> list[int]:
    """Patch offsets along one side, the last one flush with the edge so every pixel is covered."""
    last = size - patch
    return sorted({*range(0, last + 1, stride), last})


def occlusion_map(run: Run, image: np.ndarray, patch: int, stride: int, fill: float,
                  batch_size: int = 64) -> tuple[float, np.ndarray]:
    """The unoccluded answer, and per pixel the mean |change in months| over the patches that hide it.

    ``image`` is one model input (H, W, 1); ``run`` answers months for a batch of them."""
    h, w = image.shape[:2]
    if not 1 <= patch <= min(h, w) or stride < 1:
        raise InputError(f"patch {patch} and stride {stride} do not fit a {h}x{w} input")
    boxes = [(y, x) for y in positions(h, patch, stride) for x in positions(w, patch, stride)]
    batch = np.repeat(image[None], len(boxes) + 1, axis=0)  # copy 0 stays whole: the baseline
    for i, (y, x) in enumerate(boxes, start=1):
        batch[i, y : y + patch, x : x + patch] = fill
    months = np.concatenate([run(batch[s : s + batch_size]) for s in range(0, len(batch), batch_size)])
    baseline = float(months[0])
    heat, count = np.zeros((h, w), np.float64), np.zeros((h, w), np.float64)
    for (y, x), value in zip(boxes, months[1:], strict=True):
        heat[y : y + patch, x : x + patch] += abs(float(value) - baseline)
        count[y : y + patch, x : x + patch] += 1
    return baseline, (heat / count).astype(np.float32)


def background_level(image: np.ndarray) -> float:
    """The fill for a hidden patch: the image's own dark background (its 5th percentile), so a
    hidden region looks like no hand there rather than a grey block the model never saw."""
    return float(np.percentile(image, 5))


def to_original(heat: np.ndarray, config: PreprocessConfig, shape: tuple[int, int]) -> np.ndarray | None:
    """The heatmap on the original radiograph's pixels, or None where the pipeline moves pixels in
    a way that cannot be undone by scaling (a hand crop, a plugin's step)."""
    geometric = [s for s in config.steps if s.name not in PIXELWISE]
    if len(geometric) != 1 or geometric[0].name != "resize":
        return None
    h, w = shape
    if geometric[0].params.get("mode", "pad") == "pad":  # as builtin.resize: scaled to fit, centred
        size = heat.shape[0]
        scale = size / max(h, w)
        new_h, new_w = max(1, round(h * scale)), max(1, round(w * scale))
        top, left = (size - new_h) // 2, (size - new_w) // 2
        heat = heat[top : top + new_h, left : left + new_w]
    return np.asarray(cv2.resize(heat, (w, h), interpolation=cv2.INTER_LINEAR))


@dataclass(frozen=True)
class Explanation:
    """A prediction and where it came from: ``heatmap`` is months of change per pixel of the
    model input; ``image``/``heat`` are what :meth:`render` draws (the radiograph when the
    preprocessing can be undone by scaling, else the model input: ``on_original`` says which)."""

    prediction: Prediction
    heatmap: np.ndarray
    model_input: np.ndarray
    image: np.ndarray
    heat: np.ndarray
    on_original: bool
    patch: int
    stride: int

    def render(self, max_side: int = 1024) -> np.ndarray:
        """A BGR picture: the radiograph tinted by the heat (JET, scaled to this image's maximum;
        zero heat leaves the radiograph as it is), under a strip with the estimate. ``max_side``: 64 to
        16384 pixels; a picture narrower than the strip's text is padded to :data:`MIN_WIDTH`."""
        if type(max_side) is not int or not 64 <= max_side <= 16384:
            raise InputError(f"max_side must be a whole number of pixels from 64 to 16384, not {max_side!r}"[:200])
        image, heat = self.image, self.heat
        scale = (max_side if self.on_original else min(max_side, 512)) / max(image.shape[:2])
        if scale < 1 or not self.on_original:  # large plates shrink; a 100 px input grows to be seen
            # at least 1 px a side: a 100000x32 image shrank to a height of 0 (a cv2.error, exit 70)
            size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
            image = cv2.resize(image, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
            heat = cv2.resize(heat, size, interpolation=cv2.INTER_LINEAR)
        top = float(heat.max())
        norm = np.clip(heat / top, 0, 1) if top > 0 else np.zeros_like(heat)
        colour = cv2.applyColorMap(np.rint(norm * 255).astype(np.uint8), cv2.COLORMAP_JET).astype(np.float32)
        gray = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR).astype(np.float32)
        alpha = (0.65 * norm)[..., None]
        picture = np.rint(gray * (1 - alpha) + colour * alpha).astype(np.uint8)
        if picture.shape[1] < MIN_WIDTH:  # a very tall, narrow image: room for the strip's text and colour bar
            picture = cv2.copyMakeBorder(picture, 0, 0, 0, MIN_WIDTH - picture.shape[1], cv2.BORDER_CONSTANT)
        return np.vstack([self._strip(picture.shape[1], top), picture])

    def _strip(self, width: int, top: float) -> np.ndarray:
        p = self.prediction
        lines = [f"bone age {readable(p.bone_age_months)} months ({years_and_months(p.bone_age_months)}), "
                 f"{'male' if p.male else 'female'}"]
        if p.interval is not None:
            lines.append(f"{p.interval.level:.0%} interval {readable(p.interval.low_months, '.0f')}-"
                         f"{readable(p.interval.high_months, '.0f')} months")
        if p.comparison is not None:
            c = p.comparison
            # the digits the category is of
            sds = c.note or f"SDS {'-' if c.sds is None else readable(c.sds, '+.2f')} ({c.category})"
            lines.append(f"age {c.chronological_age_months:.0f} months: BA-CA "
                         f"{readable(c.bone_age_minus_age_months, '+.1f')}; {sds}")
        where = "" if self.on_original else " (on the model input)"
        lines.append(f"colour: months moved when hidden{where}, 0 to {top:.1f}")
        font, scale = cv2.FONT_HERSHEY_SIMPLEX, max(0.35, min(0.6, width / 900))
        lines = [part for line in lines for part in _wrap(line, width - 12, font, scale)]
        step = round(26 * scale / 0.6)
        strip = np.zeros((step * len(lines) + step // 2, width, 3), np.uint8)
        for i, line in enumerate(lines):
            cv2.putText(strip, line, (6, step * (i + 1)), font, scale, (255, 255, 255), 1, cv2.LINE_AA)
        bar = cv2.applyColorMap(np.linspace(0, 255, max(1, width // 4)).astype(np.uint8)[None].repeat(6, 0), cv2.COLORMAP_JET)
        strip[-8:-2, width - bar.shape[1] - 6 : width - 6] = bar
        return strip

    def save(self, path: str | Path) -> Path:
        """Write :meth:`render` as a PNG (replaces an existing file: the CLI asks first); a symbolic link,
        dangling or not, is an :class:`InputError`, as for ``explain --output``: it was written through."""
        path = Path(path)
        refuse_link(path)
        ok, data = cv2.imencode(".png", self.render(), [cv2.IMWRITE_PNG_COMPRESSION, 9])
        if not ok:
            raise InputError(f"cannot encode the heatmap for {path}")
        try:
            path.write_bytes(data.tobytes())
        except OSError as exc:
            raise InputError(f"cannot write {path}: {exc.strerror or exc}") from exc
        return path


def _wrap(text: str, width: int, font: int, scale: float) -> list[str]:
    """Words to lines no wider than ``width`` pixels: OpenCV draws past the edge otherwise."""
    lines = [""]
    for word in text.split():
        candidate = f"{lines[-1]} {word}".strip()
        if lines[-1] and cv2.getTextSize(candidate, font, scale, 1)[0][0] > width:
            lines.append(word)
        else:
            lines[-1] = candidate
    return lines


def explain(estimator: Explainable, image: ImageInput, male: object, age_months: float | None = None,
            patch: int | None = None, stride: int | None = None) -> Explanation:
    """Occlusion sensitivity of one radiograph: every patch hidden in turn, all copies through the
    estimator's one session, 64 at a time. Patch default: 16% of the input side, stride half a patch."""
    if male is not None:
        check_male(male)  # refused before the image is decoded
    age_months = None if age_months is None else check_age(age_months)
    loaded = read_image(image)
    patient = resolve(male, age_months, loaded.patient)  # a DICOM header fills what was not given
    sex, age_months = patient.male, patient.age_months
    inputs, notes = estimator.model_inputs(loaded)  # the Loaded: its array would be read again as a new input
    prepared = inputs[0]  # the heatmap is of the image's own grid
    notes.applied[len(loaded.notes) : len(loaded.notes)] = patient.notes  # after the reading's notes, as before
    notes.warnings.extend(patient.warnings)
    size = prepared.shape[0]
    patch = patch or max(2, round(size * PATCH_FRACTION))
    stride = stride or max(1, patch // 2)
    baseline, heatmap = occlusion_map(lambda batch: estimator.run(batch, [sex] * len(batch)),
                                      prepared, patch, stride, background_level(prepared))
    source = source_name(image)  # a DirEntry's path, not "<DirEntry ...>"
    # the estimate is predict()'s: averaged over the estimator's views where it has several
    months = baseline if len(inputs) == 1 else float(np.mean(estimator.run(inputs, [sex] * len(inputs))))
    prediction = estimator.make_prediction(months, sex, source, notes, age_months)
    gray = turn_upright(to_uint8_gray(loaded.image), turns_applied(notes))  # as the model saw it
    mapped = to_original(heatmap, estimator.card.preprocessing, gray.shape[:2])
    if mapped is None:
        shown = np.rint(prepared[..., 0] * 255).astype(np.uint8)
        return Explanation(prediction, heatmap, prepared[..., 0], shown, heatmap, False, patch, stride)
    return Explanation(prediction, heatmap, prepared[..., 0], gray, mapped, True, patch, stride)
