"""``boneage train``: one run folder per run, a checkpoint every epoch, ``--resume`` after any stop.

The run folder holds config.json (resolved), data.json (split summary and validation ids),
history.csv, state.json, checkpoint.keras (last epoch, with optimizer state), best.keras and
learning_curve.png.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import numpy as np

from boneage.backbones import build_backbone, checked_options, load_keras_weights
from boneage.errors import BoneAgeError, ConfigError, failures_as
from boneage.errors import TrainingInterrupted as TrainingInterrupted  # re-exported: its home before errors.py
from boneage.models import MAX_MODEL_BYTES, RunModel, run_model
from boneage.plugins import Plugins, get_plugins
from boneage.preprocess import build_pipeline
from boneage.signals import interrupt_exit_code, stopped_by
from boneage.training.config import TrainConfig
from boneage.training.data import Record, fingerprint, prepare_data, read_source, thin
from boneage.training.losses import build_loss
from boneage.training.precision import precision_policy
from boneage.training.schedule import WarmupCosine
from boneage.training.state import read_state, write_state
from boneage.whole import remove_leftovers, write_whole

log = logging.getLogger(__name__)
# A run's own checkpoint holds the optimizer's state beside the weights (Adam: two more copies), so it
# may be larger than a model to load (MAX_MODEL_BYTES); still bounded, packed and unpacked.
CHECKPOINT_BYTES = 4 * MAX_MODEL_BYTES


def data_summary(config: TrainConfig, train: list[Record], val: list[Record]) -> dict[str, Any]:
    """The run's ``data.json``: each source's checksums, the split and its validation ids, so that
    ``boneage evaluate --ids`` and the model card can name exactly the images held out."""
    return {
        "sources": [fingerprint(s, read_source(s)) for s in config.sources],
        "train_images": len(train),
        "val_images": len(val),
        "train_ids": len({r.id for r in train}),
        "val_ids": len({r.id for r in val}),
        "split": {"method": "sha256(seed:id) < fraction", "seed": config.split_seed, "val_fraction": config.val_fraction},
        "val_id_list": sorted({r.id for r in val}),
    }


def build_and_compile(config: TrainConfig, train: list[Record], steps_per_epoch: int,
                      plugins: Plugins | None = None, scale: dict[str, float] | None = None) -> Any:
    """A new model of the configured backbone in the configured precision, its output scaled by the training
    labels' mean and SD (months; or ``scale``'s ``age_mean`` and ``age_std``: a checkpoint's), compiled with
    AdamW on the :class:`~boneage.training.schedule.WarmupCosine` schedule. The backbone comes from
    ``plugins`` (default: the process-wide registry)."""
    spec = get_plugins(plugins).get("backbones", config.backbone).spec
    options = {"age_mean": float(np.mean([r.boneage for r in train])), "age_std": age_std(train),
               **checked_options(spec, config.backbone_options, ConfigError), **(scale or {})}
    # before anything is written: a bad option was a TypeError or ValueError (exit 70), or built and failed
    # at the first training step once the run folder held a run
    with precision_policy(config.precision), \
            failures_as(ConfigError, f"the {config.backbone} backbone cannot be built with these backbone_options"):
        model = spec.build(config.input_size, **options)  # layers keep the policy (and a checkpoint stores it)
    schedule = WarmupCosine(config.learning_rate, int(steps_per_epoch * config.warmup_epochs),
                            steps_per_epoch * config.epochs)
    optimizer = keras.optimizers.AdamW(learning_rate=schedule, weight_decay=config.weight_decay)
    return compile_model(model, config, optimizer, options["age_std"])


def age_std(records: list[Record]) -> float:
    """The training labels' standard deviation in months (1 if they are all one age): the model's output scale."""
    return float(np.std([r.boneage for r in records]) or 1.0)


def compile_model(model: Any, config: TrainConfig, optimizer: Any, label_std: float) -> Any:
    """Compile with the run's loss (``label_std``: the training labels' SD, which scales L1 + MSE)."""
    model.compile(
        optimizer=optimizer,
        loss=build_loss(config.loss, config.huber_delta, label_std),
        # weighted: the padding that evens out a data-parallel batch weighs nothing (weights are 1 otherwise)
        weighted_metrics=[keras.metrics.MeanAbsoluteError(name="mae"), keras.metrics.RootMeanSquaredError(name="rmse")],
        jit_compile=config.jit_compile,
    )
    return model


def _check_run(config: TrainConfig, resume: bool) -> dict[str, Any] | None:
    """The saved state to resume from, or None for a new run in a free folder; writes nothing and
    reads no data, so a damaged state.json is refused before any work."""
    run = config.output_dir
    state_path = run / "state.json"
    if resume:
        if not state_path.is_file():
            raise ConfigError(f"nothing to resume in {run} (no state.json)")
        state = read_state(state_path)
        if (state["epoch"] or state.get("batch", 0)) and not (run / "checkpoint.keras").is_file():
            # a fresh model would have gone on counting the epochs of the lost one
            raise ConfigError(f"{state_path} counts {state['epoch']} finished epochs, but {run} has no checkpoint.keras "
                              f"to go on from: {_restart(run)}")
        return state
    if state_path.exists():
        raise ConfigError(f"{run} already holds a run; pass --resume to continue it or choose another --output")
    if run.is_dir() and any(run.iterdir()):
        raise ConfigError(f"{run} is not empty; choose another --output (nothing in it was changed)")
    if config.init_weights and not config.init_weights.is_file():
        raise ConfigError(f"init_weights: no model file {config.init_weights}")
    return None


def _restart(run: Path) -> str:
    """What to do when a run cannot go on: a new run, from its best weights where it has some."""
    best = run / "best.keras"
    return f"start a new run (--init-weights {best} keeps its best weights)" if best.is_file() else "start a new run"


def save_model(model: Any, path: Path) -> None:
    """Save through a temporary file, so a kill during the write keeps the previous file whole."""
    if hasattr(model, "jax_state_sync"):
        model.jax_state_sync()  # JAX keeps the live weights outside the variables during fit()
    write_whole(path, model.save)


class _TimeUp(Exception):
    """Raised inside fit() at the deadline, after a checkpoint: no validation of half an epoch."""


class _Diverged(Exception):
    """Raised inside fit() at the first batch whose loss is not finite, before any checkpoint of it."""


class StepCheckpoint(keras.callbacks.Callback):  # type: ignore[misc]
    """Inside an epoch: save the checkpoint every ``every`` seconds and at the deadline, so a kill
    loses minutes, not an epoch (a CPU epoch of DenseNet121 takes 10-25 minutes)."""

    def __init__(self, save: Any, every: float, deadline: float | None, first_batch: int) -> None:
        """``save(batches_done)`` writes the checkpoint; ``deadline`` is a ``time.monotonic()`` value
        (None: no time limit); ``first_batch``: batches of this epoch done before a resume."""
        super().__init__()
        self.save, self.every, self.deadline, self.first_batch = save, every, deadline, first_batch
        self.last = time.monotonic()

    def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
        """Checkpoint when ``every`` seconds have passed; at the deadline, checkpoint and stop the epoch;
        a loss that is not finite stops it with nothing saved (the epoch's mean stays NaN from then on)."""
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            raise _Diverged(f"the training loss is {float(loss)} at batch {self.first_batch + batch + 1}")
        now = time.monotonic()
        if self.deadline is not None and now >= self.deadline:
            self.save(self.first_batch + batch + 1)
            raise _TimeUp
        if self.every and now - self.last >= self.every:
            self.save(self.first_batch + batch + 1)
            self.last = time.monotonic()


def _begin_run(config: TrainConfig) -> tuple[TrainConfig, dict[str, Any]]:
    """Write the resolved config and an epoch-0 state, so --resume works even inside epoch 1."""
    run = config.output_dir
    run.mkdir(parents=True, exist_ok=True)
    config = config.model_copy(update={"preprocessing": config.resolved_preprocessing()})
    (run / "config.json").write_text(config.model_dump_json(indent=2))
    state: dict[str, Any] = {"epoch": 0, "best_val_mae": None, "best_epoch": None, "wait": 0, "seconds": 0.0}
    write_state(run, state)
    return config, state


def load_saved(path: Path, failure: str, limit: int | None = None, config: TrainConfig | None = None, *,
               build: Callable[[dict[str, float]], Any] | None = None, optimizer: bool = False) -> Any:
    """The weights of a saved .keras model in boneage's own model of its backbone (uncompiled, float32): the
    backbone, input size and backbone_options of ``config``, by default those of the config.json of the run
    folder the file is in (:func:`boneage.models.run_model`); or in the model ``build(scale)`` returns, as it
    builds it (with ``optimizer``, its optimizer's state too). The file's own architecture is never built
    (:func:`boneage.backbones.load_keras_weights`, which checks the archive first: at most ``limit`` bytes
    packed or unpacked, default 1 GiB, and no decompression bomb).
    ``ConfigError("{failure}: reason")`` for any file that does not load."""
    if not zipfile.is_zipfile(path):
        raise ConfigError(f"{failure}: not a .keras model archive (empty, cut short, or another kind of file)")

    def own(scale: dict[str, float]) -> Any:
        run: TrainConfig | RunModel = config if config is not None else run_model(path)
        return build_backbone(run.backbone, run.input_size, run.backbone_options, scale, error=ConfigError)

    what = f"{config.backbone} model" if config is not None else "model of its run's backbone"
    try:
        return load_keras_weights(path, build or own, what, error=ConfigError, limit=limit, optimizer=optimizer)
    except BoneAgeError as exc:
        raise ConfigError(f"{failure}: {exc}") from exc


def resume_model(config: TrainConfig, checkpoint: Path, train: list[Record], steps: int) -> Any:
    """The run's model built and compiled as a new one (:func:`build_and_compile`), with the weights and the
    optimizer state of ``checkpoint``: the checkpoint's own architecture is never built, and its output layer
    keeps the months it was trained on."""
    def build(scale: dict[str, float]) -> Any:
        model = build_and_compile(config, train, steps, scale=scale)
        model.optimizer.build(model.trainable_variables)  # its variables, for the checkpoint's state to fill
        return model

    try:
        return load_saved(checkpoint, f"{checkpoint} cannot be loaded (damaged?)", CHECKPOINT_BYTES, config,
                          build=build, optimizer=True)
    except ConfigError as exc:
        raise ConfigError(f"{exc}; {_restart(config.output_dir)}") from exc


def warm_start(model: Any, path: Path, config: TrainConfig) -> None:
    """Fine-tuning: a trained model's weights, not its optimizer state, loaded into this run's backbone. The
    input size may differ (the backbones are convolutional with global pooling), so a small-image run can seed
    a larger one."""
    source = load_saved(path, f"cannot start from {path}", config=config)
    with failures_as(ConfigError, f"cannot start from {path}: not a trained model of this backbone"):
        model.set_weights(source.get_weights())


def recalibration(config: TrainConfig, train: list[Record]) -> list[Any]:
    """The callback that recomputes batch-norm statistics before each validation on
    ``config.bn_recalibration`` training images (a seeded sample, augmented once as in training),
    or none."""
    if not config.bn_recalibration:
        return []
    if _backend() == "jax":  # fit() keeps JAX's live weights outside the variables that recalibration sets
        raise ConfigError("bn_recalibration needs the TensorFlow or PyTorch backend, not JAX")
    from boneage.training.arrays import ArrayBatches
    from boneage.training.batchnorm import RecalibrateBatchNorm

    data = training_arrays(config, thin(train, config.bn_recalibration, config.seed))
    batches = ArrayBatches(data, config.batch_size, aug=config.augment, seed=config.seed + 1, workers=config.workers)
    inputs = [batches[i][0] for i in range(len(batches))]
    images, male = (np.concatenate([x[key] for x in inputs]) for key in ("image", "male"))
    log.info("batch-norm statistics recomputed before each validation on %d augmented training images", len(images))
    return [RecalibrateBatchNorm(images, male, config.batch_size)]


def training_arrays(config: TrainConfig, records: list[Record]) -> Any:
    """Training images in memory, as the run's batches augment them: split at the resize when
    ``augment.before_preprocessing`` (the later steps run per batch), else the whole pipeline's output."""
    from boneage.training.arrays import load_arrays, load_split_arrays

    if config.augment.before_preprocessing and config.augment.enabled:
        return load_split_arrays(records, config.resolved_preprocessing(), config.workers)
    return load_arrays(records, build_pipeline(config.resolved_preprocessing()), config.workers)


def uses_arrays(config: TrainConfig) -> bool:
    """tf.data where it is native (the TensorFlow backend); in-memory arrays elsewhere, so that
    PyTorch and JAX train without TensorFlow installed, and wherever ``augment.before_preprocessing``
    is on (only the arrays path does it; the config refuses it with tf.data)."""
    if config.data_pipeline != "auto":
        return config.data_pipeline == "arrays"
    return config.augment.before_preprocessing or _backend() != "tensorflow"


def _backend() -> str:
    return str(keras.backend.backend())


def datasets(config: TrainConfig, train_records: list[Record], val_records: list[Record]) -> tuple[int, Any, Any]:
    """(readable training images, (epoch, first batch) -> training batches, validation batches)."""
    pipeline = build_pipeline(config.resolved_preprocessing())
    if uses_arrays(config):
        from boneage.training.arrays import ArrayBatches, load_arrays

        arrays = training_arrays(config, train_records)  # validation stays the whole pipeline's output
        # JAX shards each batch evenly over the devices (tf.distribute splits uneven batches itself)
        multiple = len(keras.distribution.list_devices()) if config.data_parallel and _backend() == "jax" else 1
        val = ArrayBatches(load_arrays(val_records, pipeline, config.workers), config.batch_size, multiple=multiple,
                           workers=config.workers)

        def array_batches(epoch: int, first: int = 0) -> Any:
            return ArrayBatches(arrays, config.batch_size, aug=config.augment, seed=config.seed, epoch=epoch,
                                steps=config.steps_per_epoch, first=first, multiple=multiple, workers=config.workers)

        return len(arrays), array_batches, val

    from boneage.training.data import preprocessed_dataset, training_batches

    cached = preprocessed_dataset(train_records, pipeline)
    count = int(cached.cardinality())  # the readable training images

    def tf_batches(epoch: int, first: int = 0) -> Any:
        batches = training_batches(cached, count, config.batch_size, config.augment, config.seed + epoch)
        batches = batches.repeat().take(config.steps_per_epoch) if config.steps_per_epoch else batches
        return batches.skip(first)  # a run resumed inside an epoch goes on from the next batch

    return count, tf_batches, preprocessed_dataset(val_records, pipeline).batch(config.batch_size)


def fit_epochs_to_time(config: TrainConfig, model: Any, state: dict[str, Any], steps: int, used: float,
                       epoch_seconds: float) -> TrainConfig:
    """Stretch or shrink the schedule so that it ends inside the time limit, measured on the
    epoch just done (the second corrects the first, whose time includes compiling)."""
    schedule = model.optimizer._learning_rate
    assert config.time_limit is not None
    if not isinstance(schedule, WarmupCosine):
        log.warning("fit_epochs_to_time needs the WarmupCosine schedule; this checkpoint has another: not fitted")
        return config
    most = state.setdefault("max_epochs", config.epochs)
    fits = state["epoch"] + int((config.time_limit - used) // max(1.05 * epoch_seconds, 1e-9))  # 5% to spare
    epochs = min(most, max(state["epoch"] + 1, fits))
    if epochs != config.epochs:
        schedule.total_steps = steps * epochs
        model.make_train_function(force=True)  # the schedule may be traced into the step (JAX, TensorFlow)
        config = config.model_copy(update={"epochs": epochs})
        (config.output_dir / "config.json").write_text(config.model_dump_json(indent=2))
        log.info("%.0f s per epoch: the schedule now ends after epoch %d", epoch_seconds, epochs)
    return config


def _tune_backend() -> None:
    """cuDNN picks the fastest convolution for each input shape (PyTorch leaves this off)."""
    if _backend() == "torch":
        import torch

        torch.backends.cudnn.benchmark = True


def distribution_scope(config: TrainConfig) -> Any:
    """Where the model is built and loaded: data-parallel over every visible device when asked,
    on the engines Keras already has (a no-op context otherwise)."""
    if not config.data_parallel:
        return contextlib.nullcontext()
    backend = _backend()
    if backend == "jax":
        keras.distribution.set_distribution(keras.distribution.DataParallel())
        log.info("data-parallel over %d devices", len(keras.distribution.list_devices()))
        return contextlib.nullcontext()
    if backend == "tensorflow":
        import tensorflow as tf

        strategy = tf.distribute.MirroredStrategy()
        log.info("data-parallel over %d devices", strategy.num_replicas_in_sync)
        return strategy.scope()
    raise ConfigError(f"data_parallel needs the JAX or TensorFlow backend, not {backend}")


def train(config: TrainConfig, resume: bool = False, verbose: int | str = "auto") -> Path:
    """Train and return the run folder. Interrupting (Ctrl-C) keeps the last finished epoch."""
    _tune_backend()
    state = _check_run(config, resume)
    # Data and model are checked before the run folder is touched: a bad --data or
    # init_weights leaves nothing behind.
    train_records, val_records = prepare_data(config)
    if not val_records:
        raise ConfigError("the validation split is empty: raise val_fraction or add data")
    count, epoch_batches, val = datasets(config, train_records, val_records)
    steps = config.steps_per_epoch or math.ceil(count / config.batch_size)

    checkpoint = config.output_dir / "checkpoint.keras"
    with distribution_scope(config):
        if resume and checkpoint.is_file():
            model = resume_model(config, checkpoint, train_records, steps)
        else:
            keras.utils.set_random_seed(config.seed)
            model = build_and_compile(config, train_records, steps)
            if config.init_weights:
                warm_start(model, config.init_weights, config)
    run = config.output_dir
    if state is None:
        config, state = _begin_run(config)
        # once per run: the checksums decode every image of every source, and a resume has the same data
        (run / "data.json").write_text(json.dumps(data_summary(config, train_records, val_records), indent=1))
    else:  # a hard kill in the middle of a save left its temporary behind
        for name in ("checkpoint.keras", "best.keras", "state.json"):
            for leftover in remove_leftovers(run / name):
                log.info("removed %s, left by a save that was killed", leftover.name)
    # One fit() per epoch: the logger must append, or each epoch would overwrite the last.
    history = keras.callbacks.CSVLogger(str(run / "history.csv"), append=True)
    process_start = time.monotonic()
    deadline = process_start + config.time_limit if config.time_limit else None

    def save_inside_epoch(batches_done: int) -> None:
        save_model(model, checkpoint)
        state["batch"] = batches_done
        write_state(run, state)

    callbacks = [history, *recalibration(config, train_records)]
    try:
        while state["epoch"] < config.epochs:
            epoch, first = state["epoch"], state.get("batch", 0)
            if first >= steps:
                # The epoch's position no longer exists (another batch size, limit or steps_per_epoch, or a
                # checkpoint at its last batch): skipping it all trained nothing and logged a broken history row.
                # The checkpoint's weights are sound, so the epoch is trained again rather than refused.
                log.warning("state.json says %d batches of epoch %d are done, but the epoch has %d: it starts over "
                            "from its first batch", first, epoch + 1, steps)
                first = state["batch"] = 0
            keras.utils.set_random_seed(config.seed + epoch)
            inside = StepCheckpoint(save_inside_epoch, config.checkpoint_minutes * 60, deadline, first)
            started = time.monotonic()
            try:
                result = model.fit(epoch_batches(epoch, first), validation_data=val, initial_epoch=epoch,
                                   epochs=epoch + 1, callbacks=[*callbacks, inside], verbose=verbose,
                                   shuffle=False)  # shuffled per epoch already
            except _TimeUp:
                state["seconds"] += time.monotonic() - started
                write_state(run, state)
                log.info("time limit: stopped inside epoch %d; continue with --resume", epoch + 1)
                break
            except _Diverged as exc:
                raise _divergence(config, epoch, str(exc)) from exc
            for key in ("loss", "val_loss", "val_mae"):  # validation can overflow where training did not
                value = float(result.history[key][-1])
                if not math.isfinite(value):
                    raise _divergence(config, epoch, f"the {key} is {value}")
            val_mae = float(result.history["val_mae"][-1])
            if state["best_val_mae"] is None or val_mae < state["best_val_mae"]:
                save_model(model, run / "best.keras")
                state.update(best_val_mae=val_mae, best_epoch=epoch + 1, wait=0)
            else:
                state["wait"] += 1
            state["epoch"], state["batch"] = epoch + 1, 0
            save_model(model, checkpoint)
            epoch_seconds = time.monotonic() - started
            state["seconds"] += epoch_seconds
            used = time.monotonic() - process_start
            if config.time_limit and config.fit_epochs_to_time and state["epoch"] <= 2 and not first:
                config = fit_epochs_to_time(config, model, state, steps, used, epoch_seconds)
            write_state(run, state)
            log.info("epoch %d/%d val MAE %.2f (best %.2f at %d)", epoch + 1, config.epochs, val_mae,
                     state["best_val_mae"], state["best_epoch"])
            if state["wait"] >= config.patience:
                log.info("early stopping: no better validation MAE for %d epochs", config.patience)
                break
            if config.time_limit and state["epoch"] < config.epochs and used + epoch_seconds > config.time_limit:
                log.info("time limit: stopped after epoch %d of %d; continue with --resume", state["epoch"],
                         config.epochs)
                break
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM under the CLI (boneage.signals.Terminated)
        stopped = TrainingInterrupted(
            f"{stopped_by(exc)}; {state['epoch']} epochs are saved in {run}: continue with --resume"
        )
        stopped.exit_code = interrupt_exit_code(exc)  # 130, or 143 for SIGTERM
        raise stopped from exc
    finally:
        _draw_learning_curve(run)
    return run


def _divergence(config: TrainConfig, epoch: int, what: str) -> ConfigError:
    """The error for a run gone to NaN or infinity: it exited 0 with a NaN "best model", and no later epoch
    could replace a NaN best (nothing compares below NaN). Nothing of the epoch is saved."""
    return ConfigError(f"training diverged in epoch {epoch + 1}: {what}; nothing of this epoch was saved. Lower "
                       f"learning_rate (now {config.learning_rate:g}) and {_restart(config.output_dir)}")


def _draw_learning_curve(run: Path) -> None:
    """:func:`plot_history` from train()'s ``finally``: the chart is a convenience, so a failure is a warning,
    never an error that ends a finished run or replaces the one in flight (a history.csv that did not parse
    was exit 70 on every resume of the run, and turned Ctrl-C's exit 130 into 70)."""
    if not (run / "history.csv").is_file():
        return
    try:
        plot_history(run)
    except Exception as exc:  # whatever it is, the exception in flight (or none) is the run's outcome
        reason = str(exc) if isinstance(exc, BoneAgeError) else f"{type(exc).__name__}: {exc}"
        log.warning("learning_curve.png not drawn: %s", reason)


def plot_history(run: Path) -> None:
    """Write ``learning_curve.png`` (training and validation MAE in months by epoch) from ``history.csv``; nothing
    when no epoch is logged yet."""
    import csv

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = run / "history.csv"
    try:
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
        epochs = [int(r["epoch"]) + 1 for r in rows]
        series = {key: [float(r[key]) for r in rows] for key in ("mae", "val_mae") if rows and key in rows[0]}
    except (ValueError, TypeError, KeyError, csv.Error) as exc:  # TypeError: a short row's missing cells are None
        raise ConfigError(f"{path} does not read as a training history: {type(exc).__name__}: {exc}"[:500]) from exc
    if not rows:
        return
    fig, ax = plt.subplots(figsize=(6, 4))
    for key, label in (("mae", "train MAE"), ("val_mae", "validation MAE")):
        if key in series:
            ax.plot(epochs, series[key], marker="o", label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("MAE (months)")
    ax.set_title(run.name)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(run / "learning_curve.png", dpi=100)
    plt.close(fig)
