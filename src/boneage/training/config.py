"""The training config, validated at the boundary and written into every run folder."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from boneage.configs import ModelConfig, plain_scalars
from boneage.defaults import MAX_BATCH_SIZE, MAX_CONFIG_BYTES, MAX_THREADS
from boneage.errors import ConfigError, validation_problems
from boneage.files import read_regular_file

MAX_CONFIG_DEPTH = 32  # groups within groups: a config has three levels
MAX_CONFIG_VALUES = 100_000  # every value, a YAML alias counted each time it is used
MAX_SEED = 2**32 - 1  # NumPy takes no negative seed, TensorFlow none past 2**63: a 32-bit seed is plenty
MAX_WARMUP_EPOCHS = 1000  # steps_per_epoch * 1e308 overflowed the schedule's integer step count
MAX_EPOCHS = 100_000  # a count past any real schedule: a 401-digit one overflowed the schedule (exit 70)
MAX_STEPS_PER_EPOCH = 10_000_000  # 640 M images an epoch at batch 64; beyond, the step count overflowed a float
MAX_IMAGES = 10**9  # --limit and --val-limit: more images than any labels file this project reads may hold
MAX_TIME_LIMIT = 366 * 24 * 3600  # seconds: a limit past a year limits nothing, and inf turned fit_epochs_to_time NaN


class DataSource(BaseModel):
    """One labelled data set: a labels CSV and the folder of its images (``--data LABELS.csv:IMAGES_DIR``)."""
    model_config = ConfigDict(extra="forbid", frozen=True)

    labels: Path = Field(description="CSV with columns id,boneage,male")
    images: Path = Field(description="folder of <id>.png (or <id>.dcm: extra dicom)")


class Augment(BaseModel):
    """Ranges of the random augmentation of training images: rotation in degrees, shift and zoom as shares of the
    image, brightness as a shift on the [0, 1] intensity scale, contrast as a factor of 1 ± ``contrast``; all zero and
    no ``hflip`` turns it off."""
    model_config = ConfigDict(extra="forbid", frozen=True)

    rotation_deg: float = Field(10.0, ge=0, le=45)
    shift: float = Field(0.05, ge=0, le=0.3)
    zoom: float = Field(0.1, ge=0, le=0.5)
    brightness: float = Field(0.1, ge=0, le=0.5)
    contrast: float = Field(0.1, ge=0, le=0.9)
    hflip: bool = False
    noise: float = Field(
        0.0, ge=0, le=0.2, description="standard deviation of Gaussian noise added to the model's input (the [0, 1] "
        "scale, after every preprocessing step): a model trained without it moved its answer by up to 10.8 months "
        "under noise of one grey level, the cause of the largest changes under JPEG, crops and rescaling (issue 18)"
    )
    before_preprocessing: bool = Field(
        False, description="augment the resized image before the steps after the resize (CLAHE), as at inference "
        "those steps see shifted and re-encoded images; arrays data path only; changes training, not inference"
    )

    @property
    def enabled(self) -> bool:
        """Whether any augmentation is on; when none is, batches skip the per-image warp altogether."""
        return any((self.rotation_deg, self.shift, self.zoom, self.brightness, self.contrast, self.hflip, self.noise))


class TrainConfig(ModelConfig):
    """Everything a training run depends on, validated when read (unknown keys are refused) and written resolved
    into the run folder's ``config.json``, from which ``--resume`` continues. Ages are in months, ``time_limit``
    in seconds. The backbone, input size and preprocessing, and their checks, come from
    :class:`boneage.configs.ModelConfig`, which is all inference reads of a run. Every float is finite: pydantic
    took Infinity (and wrote it to config.json as null, so the run could not be resumed)."""
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    backbone_options: dict[str, Any] = Field(default_factory=dict)
    sources: list[DataSource] = Field(min_length=1)
    val_fraction: float = Field(0.1, gt=0, lt=1)
    split_seed: int = 42
    limit: int | None = Field(None, ge=2, le=MAX_IMAGES, description="use only this many training images (quick runs)")
    val_limit: int | None = Field(None, ge=1, le=MAX_IMAGES)
    batch_size: int = Field(64, ge=1, le=MAX_BATCH_SIZE)
    epochs: int = Field(30, ge=1, le=MAX_EPOCHS)
    steps_per_epoch: int | None = Field(None, ge=1, le=MAX_STEPS_PER_EPOCH)
    learning_rate: float = Field(1e-3, gt=0)
    warmup_epochs: float = Field(1.0, ge=0, le=MAX_WARMUP_EPOCHS)
    weight_decay: float = Field(1e-4, ge=0)
    loss: Literal["huber", "l1_mse"] = Field(
        "huber", description="huber: Huber on months with huber_delta; l1_mse: |e| + e^2 with e the error in units "
        "of the training labels' standard deviation"
    )
    huber_delta: float = Field(15.0, gt=0)
    patience: int = Field(6, ge=1, le=MAX_EPOCHS)
    augment: Augment = Field(default_factory=Augment)
    seed: int = Field(0, ge=0, le=MAX_SEED, description="shuffling, augmentation and the thinning of --limit; "
                      "NumPy refuses a negative seed (-1 was an internal error once the data had loaded)")
    data_pipeline: Literal["auto", "tf.data", "arrays"] = Field(
        "auto", description="tf.data on the TensorFlow backend, else in-memory arrays (no TensorFlow needed)"
    )
    jit_compile: bool | Literal["auto"] = Field("auto", description="XLA (TensorFlow, JAX) or torch.compile; Keras decides by default")
    precision: Literal["float32", "mixed_bfloat16"] = Field(
        "float32", description="mixed_bfloat16: layers compute in bfloat16 with float32 weights (faster on CPUs with "
        "AVX512-BF16 or AMX, and on GPUs); the output and the loss stay float32, and export is float32 either way"
    )
    data_parallel: bool = Field(
        False, description="split each batch over every visible device (JAX: keras.distribution.DataParallel; "
        "TensorFlow: MirroredStrategy)"
    )
    bn_recalibration: int = Field(
        0, ge=0, le=100_000, description="training images (augmented as in training) over which the batch-norm "
        "statistics are recomputed, as an exact mean, before each validation; 0: the running averages of the "
        "last batches (docs/training.md)"
    )
    workers: int = Field(4, ge=1, le=MAX_THREADS, description=f"threads that decode and augment images (as --threads: 1-{MAX_THREADS})")
    checkpoint_minutes: float = Field(
        10.0, ge=0, description="also checkpoint inside an epoch this often, so a kill loses at most this much (0: off)"
    )
    time_limit: float | None = Field(
        None, gt=0, le=MAX_TIME_LIMIT, description="seconds of training in this process (at most a year); stops "
        "cleanly (resumable) before it"
    )
    fit_epochs_to_time: bool = Field(
        False, description="with time_limit: set epochs from the measured epoch time so the whole schedule fits "
        "(epochs is then the most it may be)"
    )
    init_weights: Path | None = Field(
        None, description="start from this trained .keras model (fine-tuning); optimizer and schedule start fresh"
    )
    output_dir: Path = Path("runs/run")

    @field_validator("backbone_options", mode="before")
    @classmethod
    def plain_options(cls, options: Any) -> Any:
        return plain_scalars(options)

    @model_validator(mode="after")
    def _recalibration_on_one_device(self) -> TrainConfig:
        """Recalibration runs the model eagerly, outside the distribution that splits batches over devices."""
        if self.bn_recalibration and self.data_parallel:
            raise ConfigError("bn_recalibration runs on one device: it does not go with data_parallel")
        return self

    @model_validator(mode="after")
    def _augment_before_preprocessing(self) -> TrainConfig:
        """Augmenting before the later steps is done by the arrays data path only (tf.data augments its
        cached pipeline output), and needs a resize step to split the preprocessing at."""
        if self.augment.before_preprocessing:
            if self.data_pipeline == "tf.data":
                raise ConfigError('augment.before_preprocessing needs data_pipeline "arrays" (or "auto"), not "tf.data"')
            self.resolved_preprocessing().split_at_resize()
        return self


def _read(path: Path) -> dict[str, Any]:
    """A regular file of at most MAX_CONFIG_BYTES, read without blocking (``/dev/zero`` filled memory,
    a FIFO with no writer hung), parsed and held to :func:`check_shape`."""
    data = _parse(path, read_regular_file(path, MAX_CONFIG_BYTES).decode("utf-8-sig"))
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of settings, not a {type(data).__name__}")
    return data


def check_shape(data: Any, what: str) -> None:
    """At most MAX_CONFIG_DEPTH groups deep and MAX_CONFIG_VALUES values in all, counted as the
    structure is walked (so before pydantic or ``json.dumps`` walk it): nine YAML aliases of nine
    (``b: [*a, *a, ...]``) load in microseconds as shared lists but are a billion values to every
    later walk (minutes, then MemoryError), and an alias to its own list nests without end."""
    count = 0
    stack: list[tuple[Any, int]] = [(data, 0)]
    while stack:
        item, depth = stack.pop()
        count += 1
        if count > MAX_CONFIG_VALUES:
            raise ConfigError(f"{what} holds more than {MAX_CONFIG_VALUES:,} values (YAML aliases count each "
                              "time they are used): it cannot be a training config")
        if isinstance(item, (dict, list, tuple)):
            if depth >= MAX_CONFIG_DEPTH:
                raise ConfigError(f"{what} nests groups or lists more than {MAX_CONFIG_DEPTH} deep: it cannot be "
                                  "a training config")
            values = item.values() if isinstance(item, dict) else item
            stack.extend((value, depth + 1) for value in values)


def _parse(path: Path, text: str) -> Any:
    """The file's settings by its suffix (TOML, YAML, else JSON). Nesting past the parser's recursion
    limit (``[[[[...`` 100,000 deep) is a ConfigError (was RecursionError: internal error, exit 70)."""
    try:
        return _parse_text(path, text)
    except RecursionError as exc:
        raise ConfigError(f"cannot read config {path}: it nests deeper than a config can") from exc


def _parse_text(path: Path, text: str) -> Any:
    if path.suffix == ".toml":
        if sys.version_info >= (3, 11):
            import tomllib
        else:
            import tomli as tomllib
        return tomllib.loads(text)
    if path.suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError as exc:
            raise ConfigError("YAML configs need PyYAML (pip install pyyaml)") from exc
        try:
            return yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"cannot read config {path}: {exc}") from exc
    return json.loads(text)


def _set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    *parents, last = key.split(".")
    for part in parents:
        data = data.setdefault(part, {})
        if not isinstance(data, dict):
            raise ConfigError(f"cannot set {key}: {part} is a value, not a group of settings")
    data[last] = value


def load_config(path: Path | None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """A config file (TOML, YAML or JSON) with ``dotted.key=value`` overrides on top."""
    try:
        data = _read(path) if path else {}
    except ConfigError:  # already clear; it is a ValueError too, so it must not be wrapped below
        raise
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read config {path}: {exc}") from exc
    for key, value in (overrides or {}).items():
        if value is not None:
            _set_dotted(data, key, value)
    check_shape(data, f"config {path}" if path else "the config")
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"invalid training config: {validation_problems(exc.errors())}") from exc
