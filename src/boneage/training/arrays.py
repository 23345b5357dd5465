"""A data path without TensorFlow: decoded images held in memory, batches from a Keras PyDataset.

Any Keras backend (PyTorch and JAX on a GPU box with no TensorFlow) trains from it. Augmentation
is done here in NumPy/OpenCV, one affine warp per image, with a random stream fixed by
(seed, epoch, batch): the same run draws the same batches whatever the worker count, and a
resumed run continues exactly. With ``augment.before_preprocessing`` the steps up to the resize
run once at load and the later ones (CLAHE, normalize) per image after the augmentation, as at
inference they see the shifted and re-encoded image.
"""

from __future__ import annotations

import logging
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import cv2
import keras
import numpy as np

from boneage.errors import BoneAgeError, ConfigError
from boneage.preprocess import PreprocessConfig, build_pipeline
from boneage.training.config import Augment
from boneage.training.data import Record

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Arrays:
    """A data set decoded and preprocessed once, held in memory, so that epochs re-read no file: images, sex
    (1.0 male) and bone ages in months, row for row. With ``post`` the images are what the steps up to the
    resize give, in their own dtype (uint8: a quarter of float32's memory), and each batch runs ``post``
    (a :class:`~boneage.preprocess.Pipeline` of the later steps) on every image after augmenting it."""
    images: np.ndarray  # (n, size, size, 1) float32 in [0, 1], the pipeline's output; with post (n, size, size) uint8
    male: np.ndarray  # (n, 1) float32
    ages: np.ndarray  # (n, 1) float32, months
    post: Any = None

    def __len__(self) -> int:
        return len(self.images)


def load_arrays(records: list[Record], pipeline: Any, workers: int = 8, *, post: Any = None) -> Arrays:
    """Decode and preprocess once with the library's own pipeline (OpenCV releases the GIL, so
    threads scale). An unreadable image is skipped with a warning naming it. With ``post``,
    ``pipeline`` is the part up to the resize and its output is kept as it is (:func:`load_split_arrays`)."""
    from boneage.imageio import load_image

    def one(record: Record) -> np.ndarray | None:
        try:
            image = load_image(record.path)
            return np.asarray(pipeline(image), np.float32) if post is None else pipeline.raw(image)
        except BoneAgeError as exc:
            log.warning("skipped %s: %s", record.path, exc)
            return None

    with ThreadPoolExecutor(max(1, workers)) as pool:
        read = [(r, image) for r, image in zip(records, pool.map(one, records), strict=True) if image is not None]
    if not read:
        raise BoneAgeError("no readable image in the data")
    if post is not None:
        _check_one_kind([image for _, image in read])
    return Arrays(
        images=np.stack([image for _, image in read]),
        male=np.array([[float(r.male)] for r, _ in read], np.float32),
        ages=np.array([[r.boneage] for r, _ in read], np.float32),
        post=post,
    )


def load_split_arrays(records: list[Record], config: PreprocessConfig, workers: int = 8) -> Arrays:
    """Training data for ``augment.before_preprocessing``: the config split at its resize step, the part up
    to it run once here (uint8 in memory for the usual grayscale + resize, float32 with ``keep_float``),
    the rest on every batch."""
    pre, post = config.split_at_resize()
    return load_arrays(records, build_pipeline(pre), workers, post=build_pipeline(post))


def _check_one_kind(images: list[np.ndarray]) -> None:
    """Augmenting before the later steps needs one channel of one kind and shape from every image: 8 or 16 bits,
    or float32 on the 0-255 scale (a ``keep_float`` resize); np.stack would silently widen a mix of uint8 and
    uint16 without rescaling."""
    kinds = {(image.dtype, image.shape) for image in images}
    dtype, shape = next(iter(kinds))
    if len(kinds) > 1 or dtype not in (np.uint8, np.uint16, np.float32) or not (len(shape) == 2 or shape[2:] == (1,)):
        found = ", ".join(sorted(f"{d} {s}" for d, s in kinds)[:3])
        raise ConfigError("augment.before_preprocessing needs the steps up to the resize to give one channel of "
                          f"one kind and size for every image (a grayscale step first); they gave {found}")


def augment_before(image: np.ndarray, post: Any, aug: Augment | None, rng: np.random.Generator | None) -> np.ndarray:
    """``post`` (the later steps) on the resized image, augmented first when ``aug`` is given: on the [0, 1]
    scale by :func:`augment_image` (same ranges, same draws), then back on the image's own scale: rounded to
    its integer dtype, which OpenCV's CLAHE needs, or kept float (0-255) after a ``keep_float`` resize."""
    if aug is not None and rng is not None:
        floating = image.dtype == np.float32
        scale = np.float32(255.0 if floating else np.iinfo(image.dtype).max)
        plane = augment_image(image.reshape(*image.shape[:2], 1).astype(np.float32) / scale, aug, rng) * scale
        image = (plane if floating else np.rint(plane).astype(image.dtype)).reshape(image.shape)
    return np.asarray(post(image), np.float32)


def augment_image(image: np.ndarray, aug: Augment, rng: np.random.Generator) -> np.ndarray:
    """One random affine warp (rotation, shift, zoom, flip) and a brightness/contrast change,
    drawn from the ranges of the Keras layers the tf.data path uses."""
    h, w = image.shape[:2]
    angle = rng.uniform(-aug.rotation_deg, aug.rotation_deg) if aug.rotation_deg else 0.0
    scale = 1.0 / (1.0 + rng.uniform(-aug.zoom, aug.zoom)) if aug.zoom else 1.0  # Keras: +zoom = zoom out
    matrix = np.asarray(cv2.getRotationMatrix2D((w / 2 - 0.5, h / 2 - 0.5), angle, scale), np.float64)
    if aug.shift:
        matrix[:, 2] += rng.uniform(-aug.shift, aug.shift, 2) * np.array([w, h])
    if aug.hflip and rng.random() < 0.5:
        matrix[0] = -matrix[0]
        matrix[0, 2] += w - 1
    plane = cv2.warpAffine(image[..., 0], matrix, (w, h), flags=cv2.INTER_LINEAR, borderValue=0.0)
    if aug.contrast:
        mean = plane.mean()
        plane = (plane - mean) * rng.uniform(1 - aug.contrast, 1 + aug.contrast) + mean
    if aug.brightness:
        plane = plane + rng.uniform(-aug.brightness, aug.brightness)
    return np.clip(plane, 0.0, 1.0)[..., None].astype(np.float32, copy=False)


class ArrayBatches(keras.utils.PyDataset):  # type: ignore[misc]
    """Batches of in-memory arrays: shuffled per epoch (seed + epoch) and augmented when ``aug``
    is given, or in order and untouched (validation)."""

    def __init__(self, data: Arrays, batch_size: int, *, aug: Augment | None = None, seed: int = 0,
                 epoch: int = 0, steps: int | None = None, first: int = 0, multiple: int = 1,
                 workers: int = 4) -> None:
        """``steps``: batches per epoch (default one pass); ``first``: batches of this epoch already
        trained, skipped when a run resumes inside it; ``multiple``: pad batches to a multiple of this
        (the devices of a data-parallel run), the padding weighted 0."""
        super().__init__(workers=workers, use_multiprocessing=False)
        self.data, self.batch_size, self.aug, self.seed, self.epoch = data, batch_size, aug, seed, epoch
        self.first = first  # batches of this epoch already trained (a run resumed inside an epoch)
        self.multiple = multiple  # batches padded to a multiple of this (the devices of a data-parallel run)
        n = len(data)
        self.steps = steps or math.ceil(n / batch_size)  # one pass, the last batch short, unless steps is set
        if aug is None:
            self.order = np.arange(n)
        else:  # enough shuffled passes to fill `steps` batches (steps_per_epoch may exceed one pass)
            passes = math.ceil(self.steps * batch_size / n) if steps else 1
            rng = np.random.default_rng([seed, epoch])
            self.order = np.concatenate([rng.permutation(n) for _ in range(passes)])

    def __len__(self) -> int:
        return self.steps - self.first

    def __getitem__(self, index: int) -> tuple[Any, ...]:
        index += self.first
        idx = self.order[index * self.batch_size : (index + 1) * self.batch_size]
        images = self.data.images[idx]
        aug = self.aug if self.aug is not None and self.aug.enabled else None
        rng = np.random.default_rng([self.seed, self.epoch, index]) if aug is not None else None
        if self.data.post is not None:  # augment.before_preprocessing: the later steps per image, after augmenting
            images = np.stack([augment_before(image, self.data.post, aug, rng) for image in images])
        elif aug is not None and rng is not None:
            images = np.stack([augment_image(image, aug, rng) for image in images])
        if aug is not None and rng is not None and aug.noise:
            images = images + rng.normal(0.0, aug.noise, images.shape).astype(np.float32)
        x, y = {"image": images, "male": self.data.male[idx]}, self.data.ages[idx]
        if self.multiple == 1:
            return x, y
        # Every device needs an equal share: pad a short batch with copies that weigh nothing.
        pad = -len(idx) % self.multiple
        weights = np.concatenate([np.ones(len(idx), np.float32), np.zeros(pad, np.float32)])
        padded = [np.concatenate([a, np.repeat(a[-1:], pad, axis=0)]) for a in (images, x["male"], y)]
        return {"image": padded[0], "male": padded[1]}, padded[2], weights
