"""Data for training and evaluation: labels, the split by id, and the tf.data pipeline."""

from __future__ import annotations

import csv
import hashlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import numpy as np

from boneage.columns import ColumnsError, csv_rows
from boneage.defaults import MAX_LABELS_BYTES
from boneage.errors import BoneAgeError, ConfigError, printable
from boneage.files import FileTooLargeError, NotRegularFileError, read_regular_file
from boneage.sex import parse_sex
from boneage.training.config import Augment, DataSource, TrainConfig

log = logging.getLogger(__name__)
MAX_LABEL_MONTHS = 300  # 25 years: bone age is read up to about 19


@dataclass(frozen=True)
class Record:
    """One labelled radiograph: its id, its image file (``.png``, else ``.dcm``), bone age in months, and sex."""
    id: str
    path: Path
    boneage: float
    male: bool


def inside_folder(image_id: object) -> bool:
    """Whether ``<id>.png`` names a file in the images folder (or a folder below it): an id of
    ``../../x`` or ``/home/x`` read and scored that file, and listed its path in the reports."""
    if not isinstance(image_id, str):
        return True  # a missing cell: the row's own check refuses it
    for parse in (PurePosixPath, PureWindowsPath):  # a labels file may come from either system
        name = parse(image_id)
        if name.is_absolute() or name.anchor or ".." in name.parts:
            return False
    return True


def read_labels(path: Path) -> bytes:
    """A labels file's bytes: a regular file of at most :data:`~boneage.defaults.MAX_LABELS_BYTES`, else a
    :class:`~boneage.errors.ConfigError` that says what it is (a FIFO was "not found"; ``/dev/zero`` filled
    memory, as a file of gigabytes would)."""
    try:
        return read_regular_file(path, MAX_LABELS_BYTES)
    except FileNotFoundError as exc:
        raise ConfigError(f"labels file {path} not found") from exc
    except IsADirectoryError as exc:
        raise ConfigError(f"labels file {path} is a directory, not a CSV") from exc
    except NotRegularFileError as exc:
        raise ConfigError(f"labels file {path} is not a regular file (a device, FIFO or socket): "
                          "give a CSV file") from exc
    except FileTooLargeError as exc:
        raise ConfigError(f"labels file {path} is larger than {MAX_LABELS_BYTES // 2**20} MiB: "
                          "no labels file is that large (about 20 bytes a radiograph)") from exc
    except (OSError, ValueError) as exc:  # no permission, a NUL in the name, ...
        raise ConfigError(f"labels file {path} cannot be read: {getattr(exc, 'strerror', None) or exc}") from exc


def read_source(source: DataSource) -> list[Record]:
    """The records of one labelled data set; ids without an image file are skipped with a warning.

    A missing or non-UTF-8 labels file, a missing column, a row that does not read, a bone age outside 0 to
    :data:`MAX_LABEL_MONTHS` or no image at all is a :class:`~boneage.errors.ConfigError` that never echoes a
    cell's value (labels may hold personal data by mistake)."""
    records, missing = [], 0
    try:
        # "id, boneage, male" or "ID,BoneAge,Male" as spreadsheets write them: matched as --csv matches
        # its columns, stripped and case-insensitively (they were refused as lacking "boneage")
        rows = [(row.line, row.cells) for row in csv_rows(read_labels(source.labels))]
    except ColumnsError as exc:
        raise ConfigError(f"labels file {source.labels}: {exc}") from exc
    except (UnicodeDecodeError, csv.Error) as exc:  # a UTF-16 export was an internal error (exit 70)
        raise ConfigError(f"labels file {source.labels} is not a UTF-8 CSV ({type(exc).__name__})") from exc
    for _, row in rows:  # " 1394" as spreadsheets write it: the id of 1394.png (it was "no image: skipped")
        if row.get("id") is not None:
            row["id"] = (row["id"] or "").strip()
    check_unique_ids(source.labels, rows)
    for line, row in rows:
        # A cell's value is never echoed: a labels file may hold a name or a date where a number goes
        if not inside_folder(row.get("id")):  # before any file is looked up by it
            raise ConfigError(f"{source.labels}:{line}: its id is a path that leads out of {source.images} "
                              "(absolute, or through ..): ids name images in that folder (not shown)")
        try:
            image_id = row["id"] or ""  # a short row: no image, skipped as missing
            path = source.images / f"{image_id}.png"
            if not path.is_file() and (source.images / f"{image_id}.dcm").is_file():
                path = source.images / f"{image_id}.dcm"  # DICOM (extra: dicom), for evaluate
            months = float(row["boneage"] or "")
            male = parse_sex(row["male"] or "")
        except KeyError as exc:
            raise ConfigError(f"{source.labels}: needs the columns id,boneage,male (lacks {exc})") from exc
        except (TypeError, ValueError) as exc:  # SexError is a ValueError
            raise ConfigError(f"{source.labels}:{line}: needs id, boneage (months) and male (true/false, "
                              "M/F ...); this row's values do not read as such (not shown)") from exc
        if not 0 <= months <= MAX_LABEL_MONTHS:  # NaN too: it gave NaN metrics (exit 0), -1e308 exit 70
            raise ConfigError(f"{source.labels}:{line}: its boneage is not a number of months from 0 to "
                              f"{MAX_LABEL_MONTHS}")
        record = Record(image_id, path, months, male)
        if path.is_file():
            records.append(record)
        else:
            missing += 1
    if not records:
        raise ConfigError(f"no images of {source.labels} found in {source.images}")
    if missing:
        log.warning("%d of the %d ids in %s have no image in %s: skipped", missing, missing + len(records),
                    source.labels, source.images)
    return records


SHOWN_REPEATS = 3  # repeated ids named in the error


def check_unique_ids(labels: Path, rows: list[tuple[int, dict[str, str | None]]]) -> None:
    """A :class:`~boneage.errors.ConfigError` naming each id listed on more than one line of a labels
    file, with its lines: it was scored (and trained on) once a line, even with contradictory sexes.
    The ids are shown, as the reports list them; no other cell is. One id in two labels files (two
    resolutions of one data set) is allowed."""
    lines: dict[str, list[int]] = {}
    for line, row in rows:
        if row.get("id"):
            lines.setdefault(row["id"] or "", []).append(line)
    repeated = [(image_id, at) for image_id, at in lines.items() if len(at) > 1]
    if repeated:
        shown = "; ".join(f"'{_id_shown(image_id)}' on lines {', '.join(map(str, at[:SHOWN_REPEATS]))}"
                          f"{' ...' if len(at) > SHOWN_REPEATS else ''}" for image_id, at in repeated[:SHOWN_REPEATS])
        more = f"; and {len(repeated) - SHOWN_REPEATS:,} more" if len(repeated) > SHOWN_REPEATS else ""
        raise ConfigError(f"{labels}: {len(repeated):,} id(s) listed more than once (each image must be labelled on "
                          f"one line): {shown}{more}")


def _id_shown(image_id: str, limit: int = 40) -> str:
    text = printable(image_id)
    return text if len(text) <= limit else f"{text[:limit]}..."


def pixels_sha256(ids: Iterable[str], load: Any) -> str:
    """A checksum of the content, ids and decoded pixels, so the same images re-encoded (PNG to
    lossless WebP and back, as for a GPU box) keep it. ``load(id)`` gives the pixel array, or
    raises a :class:`BoneAgeError` for an image training skips: that image counts as its error's name."""
    h = hashlib.sha256()
    for image_id in ids:
        try:
            pixels = np.ascontiguousarray(load(image_id)).tobytes()
        except BoneAgeError as exc:
            pixels = b"\0refused\0" + type(exc).__name__.encode()
        h.update(image_id.encode() + b"\0" + pixels)
    return h.hexdigest()


def fingerprint(source: DataSource, records: list[Record]) -> dict[str, Any]:
    """What a model card says of a data source: its folder's name and checksums, never a local path. The
    pixels are those training reads (``load_image``, with every check of the library's reader): a raw
    ``cv2.imread`` here decoded what the reader refuses (a 497 KB PNG: 32 s and 1 GB), and hashed the
    address of None for a file it could not read, a new checksum each run (probe 16)."""
    from boneage.imageio import load_image

    paths = {r.id: r.path for r in records}
    return {
        "name": source.images.name,
        "images": len(paths),
        "labels_sha256": hashlib.sha256(source.labels.read_bytes()).hexdigest(),
        "pixels_sha256": pixels_sha256(sorted(paths), lambda i: load_image(paths[i])),
    }


def is_validation(image_id: str, fraction: float, seed: int) -> bool:
    """Stable for an id whatever else is in the data set, so every resolution of one id
    lands on the same side."""
    digest = hashlib.sha256(f"{seed}:{image_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def split(records: Iterable[Record], fraction: float, seed: int) -> tuple[list[Record], list[Record]]:
    """(train, validation) by :func:`is_validation`, in the records' order: an id's side depends on the id and
    the seed only, so adding data never moves an image from one side to the other."""
    train: list[Record] = []
    val: list[Record] = []
    for r in records:
        (val if is_validation(r.id, fraction, seed) else train).append(r)
    return train, val


def thin(records: list[Record], limit: int | None, seed: int) -> list[Record]:
    """A random ``limit`` of the records, fixed by ``seed`` and kept in their order (all when ``limit`` is None or
    not smaller), for quick runs and calibration subsets."""
    if limit is None or limit >= len(records):
        return records
    order = np.random.default_rng(seed).permutation(len(records))[:limit]
    return [records[i] for i in sorted(order)]


def prepare_data(config: TrainConfig) -> tuple[list[Record], list[Record]]:
    """(train, validation) records from every source, split by id."""
    records = [r for source in config.sources for r in read_source(source)]
    train, val = split(records, config.val_fraction, config.split_seed)
    return thin(train, config.limit, config.seed), thin(val, config.val_limit, config.seed)


def preprocessed_dataset(records: list[Record], pipeline: Any) -> Any:
    """Decode and preprocess with the library's own pipeline (so training and inference cannot
    drift), cached after the first pass. An unreadable image is skipped with a warning naming
    it, not a TensorFlow error half-way through an epoch."""
    import tensorflow as tf

    from boneage.imageio import load_image

    size = pipeline.config.input_size

    def load(path: bytes) -> np.ndarray:
        try:
            return np.asarray(pipeline(load_image(Path(path.decode()))), np.float32)
        except BoneAgeError as exc:
            log.warning("skipped %s: %s", path.decode(), exc)
            return np.full((size, size, 1), np.nan, np.float32)

    paths = tf.constant([str(r.path) for r in records])
    male = tf.constant([[float(r.male)] for r in records], tf.float32)
    ages = tf.constant([[r.boneage] for r in records], tf.float32)

    def decode(path: Any, m: Any, y: Any) -> Any:
        image = tf.numpy_function(load, [path], tf.float32)
        image.set_shape((size, size, 1))
        return {"image": image, "male": m}, y

    ds = tf.data.Dataset.from_tensor_slices((paths, male, ages))
    readable = ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE).filter(
        lambda x, y: tf.reduce_all(tf.math.is_finite(x["image"]))
    ).cache()
    # One pass fills the cache and counts what was readable: Keras needs a known length to
    # run an epoch without "ran out of data" warnings, and the filter made it unknown.
    count = int(readable.reduce(np.int64(0), lambda n, *_: n + 1))
    return readable.apply(tf.data.experimental.assert_cardinality(count))


def augmenter(aug: Augment, seed: int) -> Any:
    """Keras preprocessing layers, run inside tf.data on batches (never inside the model)."""
    import keras

    steps: list[Any] = []
    if aug.hflip:
        steps.append(keras.layers.RandomFlip("horizontal", seed=seed))
    if aug.rotation_deg:
        steps.append(keras.layers.RandomRotation(aug.rotation_deg / 360.0, fill_mode="constant", seed=seed + 1))
    if aug.shift:
        steps.append(keras.layers.RandomTranslation(aug.shift, aug.shift, fill_mode="constant", seed=seed + 2))
    if aug.zoom:
        steps.append(keras.layers.RandomZoom(aug.zoom, fill_mode="constant", seed=seed + 3))
    if aug.brightness:
        steps.append(keras.layers.RandomBrightness(aug.brightness, value_range=(0, 1), seed=seed + 4))
    if aug.contrast:
        steps.append(keras.layers.RandomContrast(aug.contrast, value_range=(0, 1), seed=seed + 5))
    # Pipeline, not Sequential: it stays in tf.data on every Keras backend (JAX, PyTorch too).
    return keras.layers.Pipeline(steps) if steps else None


def training_batches(cached: Any, count: int, batch_size: int, aug: Augment, seed: int) -> Any:
    """One epoch: shuffled with a seed of its own so a resumed run sees the same order."""
    import tensorflow as tf

    ds = cached.shuffle(count, seed=seed, reshuffle_each_iteration=False).batch(batch_size)
    layer = augmenter(aug, seed) if aug.enabled else None

    def augment(x: dict[str, Any], y: Any) -> tuple[dict[str, Any], Any]:
        image = x["image"] if layer is None else tf.clip_by_value(layer(x["image"], training=True), 0.0, 1.0)
        if aug.noise:  # after the clip: background included, as in the arrays path
            image += tf.random.normal(tf.shape(image), stddev=aug.noise, seed=seed + 6)
        return {"image": image, "male": x["male"]}, y

    if layer is not None or aug.noise:
        ds = ds.map(augment, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)
