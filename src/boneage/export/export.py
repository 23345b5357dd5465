"""``boneage export``: a trained run -> a versioned, sealed ONNX model in the registry."""

from __future__ import annotations

import datetime as dt
import json
import logging
import subprocess
from pathlib import Path
from typing import Any

import numpy as np

from boneage._version import __version__
from boneage.backbones import load_keras_model
from boneage.calibration import calibrate
from boneage.defaults import MAX_IDS_BYTES
from boneage.errors import ConfigError, ModelNotFoundError
from boneage.errors import ExportError as ExportError  # re-exported: its home before errors.py
from boneage.export.convert import OPSET, keras_to_onnx
from boneage.export.halve import halve_keras, halve_weights
from boneage.export.onnxcard import attach_card
from boneage.export.publish import int8_file, register
from boneage.export.publish import onnx_predict as onnx_predict  # re-exported: its home before publish.py
from boneage.files import read_regular_file
from boneage.metrics import summary
from boneage.modelcard import IMAGE_INPUT, ModelCard, Provider, TrainingData, file_sha256
from boneage.models import RegistryEntry
from boneage.plugins import Plugins, get_plugins
from boneage.preprocess import PreprocessConfig, build_pipeline
from boneage.preprocess.pipeline import check_output
from boneage.release import VERSION, is_plain_name
from boneage.training.config import TrainConfig, load_config
from boneage.training.data import Record, prepare_data, thin
from boneage.training.precision import as_float32
from boneage.training.state import read_state

log = logging.getLogger(__name__)
PARITY_LIMIT = 0.05  # months
HALF_LIMIT = 0.5  # months: float16 weights moved s13's answers by 0.22 at most on 512 validation images
MAX_NAME = 100  # NAME-int8-VERSION.onnx stays well under the 255 bytes file systems allow


def check_name(name: str) -> str:
    """``name`` if it can go into the release's file names (:func:`boneage.release.is_plain_name`), else a
    :class:`ConfigError`: ``--name ../escaped`` wrote the model outside ``--output``, ``sub/x`` failed
    after the conversion, and an escape sequence ended up in a file name and on the terminal."""
    if not is_plain_name(name, MAX_NAME):
        shown = repr(name[:40]) + (f"... ({len(name):,} characters)" if len(name) > 40 else "")
        raise ConfigError(f"name {shown} is not a plain name: at most {MAX_NAME} letters, digits, '.', '_' "
                          "and '-', starting with a letter or digit, without '..'")
    return name


def git_commit() -> str:
    """The checkout's commit, for the card, so a model can be traced to the code that exported it;
    "" outside a git checkout (an installed package) rather than failing the export."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True)
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def locate_run(source: Path) -> tuple[Path, Path]:
    """(run folder, .keras file) from a run folder or a .keras file inside one."""
    run, keras_file = (source, source / "best.keras") if source.is_dir() else (source.parent, source)
    if not keras_file.is_file():
        raise ModelNotFoundError(f"{keras_file} not found")
    for needed in ("config.json", "data.json"):
        if not (run / needed).is_file():
            raise ConfigError(f"{run} has no {needed}: export needs the run folder the model was trained in")
    return run, keras_file


def with_preprocessing(config: TrainConfig, preprocessing: PreprocessConfig | None) -> TrainConfig:
    """The run's config with ``preprocessing`` in place of its own (``boneage export --preprocessing``),
    refused now if it resizes to another size or names a step or parameter nothing registers: the card
    must describe a pipeline that will run on the model it travels with."""
    if preprocessing is None:
        return config
    if preprocessing.input_size != config.input_size:
        raise ConfigError(f"the preprocessing resizes to {preprocessing.input_size}, but the model was trained "
                          f"on {config.input_size}x{config.input_size} inputs")
    build_pipeline(preprocessing)  # unknown steps and bad parameters are refused before anything is written
    return config.model_copy(update={"preprocessing": preprocessing})


def check_shapes(model: Any, config: TrainConfig, what: Path) -> None:
    """The pipeline's output against the model's image input, once, before anything is written:
    the ONNX graph takes ``config.input_size`` (see :func:`keras_to_onnx`), and so must both."""
    from boneage.runtimes.tensorflow import image_shape

    size = config.input_size
    shape = image_shape(model, what)
    if any(d not in (None, size) for d in shape[:2]) or shape[2] not in (None, 1):
        raise ExportError(f"{what} takes images of shape {shape}, but the run's input size is {size}")
    check_output(build_pipeline(config.resolved_preprocessing()), size, ConfigError, f"export of {what}")


def providers(preprocessing: PreprocessConfig, plugins: Plugins | None = None) -> list[Provider]:
    """The plugin (and its version) behind each step and cropper in ``plugins`` (default: the
    process-wide registry), for the card: a model whose preprocessing needs a plugin says which one
    it was exported with."""
    from boneage.preprocess.builtin import HandCropParams

    manager = get_plugins(plugins)
    found: list[Provider] = []
    for step in preprocessing.steps:
        items = [("preprocess_step", manager.get("preprocess_steps", step.name))]
        if step.name == "hand_crop":
            items.append(("cropper", manager.get("croppers", HandCropParams.model_validate(step.params).cropper)))
        for kind, item in items:
            provider = Provider(kind=kind, name=item.name, plugin=item.plugin, source=item.source, version=item.version)
            if provider not in found:
                found.append(provider)
    return found


def onnx_image_shape(proto: Any) -> tuple[int | None, ...]:
    """(H, W, C) of the graph's image input; None for a symbolic dimension."""
    image = next(i for i in proto.graph.input if i.name == IMAGE_INPUT)
    return tuple(d.dim_value or None for d in image.type.tensor_type.shape.dim[1:])


def preprocessed(records: list[Record], config: TrainConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(images, male (N, 1), ages) of ``records`` through the pipeline the card will carry, so parity,
    metrics and intervals are measured on exactly what inference will feed the model."""
    from boneage.imageio import load_image

    pipeline = build_pipeline(config.resolved_preprocessing())
    images = np.stack([pipeline(load_image(r.path)) for r in records])
    male = np.array([[float(r.male)] for r in records], np.float32)
    return images, male, np.array([r.boneage for r in records])


def export_run(
    source: Path,
    version: str,
    out_dir: Path,
    *,
    name: str | None = None,
    force: bool = False,
    make_default: bool = False,
    quantize: str | None = None,
    parity_images: int = 32,
    preprocessing: PreprocessConfig | None = None,
    with_keras: bool = True,
    float16_weights: bool = False,
) -> list[RegistryEntry]:
    """``preprocessing`` replaces the run's (same input size), e.g. another resize for raw
    radiographs than the one the training images were made with; ``with_keras=False`` leaves the
    30 MB ``.keras`` out of a release (the TensorFlow runtime then needs the run's own file);
    ``float16_weights`` stores the weights in half the bytes (:mod:`boneage.export.halve`), and the
    card's metrics and intervals are measured on that file."""
    # the registry's own pattern, whole: "^...$" with .match took "1.0.0\n" ($ matches before a final
    # newline), so the conversion ran and wrote "NAME-1.0.0\n.onnx" before the registry refused it
    if not VERSION.fullmatch(version):
        raise ConfigError(f"version {version!r} is not semantic (X.Y.Z)")
    if name is not None:
        check_name(name)
    if float16_weights and quantize is not None:  # int8 is calibrated on the float32 graph
        raise ConfigError("float16 weights and int8 are separate exports: give one of them")
    run, keras_file = locate_run(source)
    config = with_preprocessing(load_config(run / "config.json"), preprocessing)
    try:
        data_info = json.loads(read_regular_file(run / "data.json", MAX_IDS_BYTES))
        counts = {"train_images": int(data_info["train_images"]), "val_images": int(data_info["val_images"])}
        # by name and checksum (runs from before the checksums named their folders only)
        sources = [s if "pixels_sha256" in s else {"name": Path(s["images"]).name} for s in data_info["sources"]]
    except (OSError, ValueError, KeyError, TypeError, RecursionError) as exc:
        raise ConfigError(f"{run / 'data.json'} is not a run's data summary: {type(exc).__name__}: {exc}"[:500]) from exc
    state = run_state(run)  # before anything is loaded or written: a broken one failed after the .keras was saved
    name = name if name is not None else check_name(f"boneage-{config.backbone}")  # a plugin's backbone name
    onnx_path = out_dir / f"{name}-{version}.onnx"
    keras_path = out_dir / f"{name}-{version}.keras" if with_keras else None
    check_free([onnx_path, *([keras_path] if keras_path else []),
                *([out_dir / int8_file(name, version)] if quantize == "int8" else [])], force)

    # the run's backbone holding the file's weights (never the file's own architecture), in float32 for ONNX
    # (and the released .keras), however it was trained
    model = as_float32(load_keras_model(keras_file, config.backbone, config.input_size, config.backbone_options))
    check_shapes(model, config, keras_file)
    train_records, val = prepare_data(config)
    images, male, ages = preprocessed(val, config)
    proto = keras_to_onnx(model, config.input_size)
    if onnx_image_shape(proto) != (config.input_size, config.input_size, 1):
        raise ExportError(f"the ONNX graph takes images of shape {onnx_image_shape(proto)}, "
                          f"not the pipeline's ({config.input_size}, {config.input_size}, 1)")
    unsealed = proto.SerializeToString()
    sample = slice(0, parity_images)
    reference = np.asarray(model({"image": images[sample], "male": male[sample]}, training=False)).reshape(-1)
    parity = float(np.abs(onnx_predict(unsealed, images[sample], male[sample]) - reference).max())
    if parity > PARITY_LIMIT:
        raise ExportError(f"ONNX and Keras differ by {parity:.4f} months on real radiographs (limit {PARITY_LIMIT})")
    predicted = onnx_predict(unsealed, images, male)
    halving: dict[str, float] = {}
    if float16_weights:
        try:
            halve_weights(proto.graph)
        except ValueError as exc:
            raise ExportError(f"cannot store the weights in float16: {exc}") from exc
        halved = onnx_predict(proto.SerializeToString(), images, male)
        shift = float(np.abs(halved - predicted).max())
        if shift > HALF_LIMIT:
            raise ExportError(f"float16 weights move answers by {shift:.2f} months (limit {HALF_LIMIT})")
        predicted, halving = halved, {"float16_shift_max_months": shift}
    metrics = {**summary(ages, predicted), "parity_max_abs_months": parity, **halving}
    interval = calibrate(predicted, ages, [r.id for r in val], male.reshape(-1) > 0.5)

    out_dir.mkdir(parents=True, exist_ok=True)
    if keras_path is not None:
        model.save(keras_path)
        if float16_weights:
            try:
                halve_keras(keras_path)
            except ValueError as exc:
                keras_path.unlink(missing_ok=True)  # not left beside no ONNX file
                raise ExportError(f"cannot store the Keras weights in float16: {exc}") from exc
    card = ModelCard(
        name=name,
        version=version,
        backbone=config.backbone,
        input_size=config.input_size,
        preprocessing=config.resolved_preprocessing(),
        providers=providers(config.resolved_preprocessing()),
        training_data=TrainingData(
            sources=[str(s["name"]) for s in sources],
            checksums=sources,
            **counts,
            split_seed=config.split_seed,
            val_fraction=config.val_fraction,
        ),
        metrics={"validation": metrics},
        interval=interval,
        created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        package_version=__version__,
        git_commit=git_commit(),
        keras_sha256=file_sha256(keras_path) if keras_path is not None else None,
        notes={"opset": OPSET, "training": _training_notes(state, config), "weights_sha256": file_sha256(keras_file),
               **({"weights_storage": "float16, computed in float32"} if float16_weights else {}),
               # what the TensorFlow runtime builds the backbone with before it reads the .keras weights into it
               **({"backbone_options": config.backbone_options} if config.backbone_options else {})},
    )
    onnx_path.write_bytes(attach_card(proto, card))
    entries = [register(out_dir, onnx_path, card, make_default, keras_path)]
    if quantize == "int8":
        from boneage.export.quantize import CALIBRATION_IMAGES, quantize_int8

        calibration = thin(train_records, CALIBRATION_IMAGES, config.seed)
        cal_images, cal_male, _ = preprocessed(calibration, config)
        validation = (images, male, ages, [r.id for r in val])
        entries.append(quantize_int8(onnx_path, card, (cal_images, cal_male), validation, out_dir))
    return entries


def check_free(paths: list[Path], force: bool) -> None:
    """Every file the export will write, refused before any work if it exists, unless ``force``: only the
    ``.onnx`` was checked, so a ``.keras`` (or int8 model) of the same name and version was replaced."""
    for path in paths:
        if path.exists() or path.is_symlink():
            if not force:
                raise ExportError(f"{path} exists: bump --version, or pass --force to overwrite it")
            log.warning("overwriting %s (--force)", path)


def run_state(run: Path) -> dict[str, Any]:
    """The run's state.json ({} when there is none), read as ``train --resume`` reads it; a ConfigError when
    it does not read as one (was a JSONDecodeError, ``AttributeError`` or ``TypeError``, exit 70, once the
    model had been converted and the release's .keras written)."""
    path = run / "state.json"
    return read_state(path) if path.is_file() else {}


def _training_notes(state: dict[str, Any], config: TrainConfig) -> dict[str, Any]:
    warm = config.init_weights  # a fine-tune names the model it started from (sha256 while it exists)
    return {
        "init_weights": None if warm is None else {
            "file": f"{warm.parent.name}/{warm.name}", "sha256": file_sha256(warm) if warm.is_file() else None
        },
        "epochs_run": state.get("epoch"),
        "best_epoch": state.get("best_epoch"),
        "train_seconds": round(state.get("seconds", 0.0)),
        "batch_size": config.batch_size,
        "learning_rate": config.learning_rate,
        "augment": config.augment.model_dump(),
        "precision": config.precision,
    }
