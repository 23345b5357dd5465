"""The batch job on Ray Data (extra: ray), for archives that one machine cannot score in time.

The inputs (path, sex, age) become a dataset in blocks of whole batches; a fixed pool of actors,
each holding one :class:`~boneage.estimator.BoneAgeEstimator` (one ONNX Runtime session, made once),
reads, decodes and scores the files with ``map_batches``, one core per actor. Every batch is the
same batch the local engine would run, and each actor calls the same ``predict_many``, so both
engines give the same outcome for every input, failures included (a bad file is its own row).

The files must be readable on every node at the same path (a shared or mounted filesystem);
relative paths are taken from the caller's working directory, as the local engine takes them.
"""

from __future__ import annotations

import logging
import math
import os
import pickle
from collections.abc import Iterator, Sequence
from typing import Any

from boneage.age import check_age
from boneage.errors import BoneAgeError, InputError, MissingDependencyError
from boneage.prediction import Prediction
from boneage.rows import flat
from boneage.sex import check_male

Outcome = Prediction | BoneAgeError
INSTALL = 'pip install "boneage[ray]"'
MAX_BLOCKS = 1000  # enough to keep every actor busy; more only adds scheduling overhead


def _ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401  (pyarrow, pandas: the data extra)
    except ImportError as exc:
        raise MissingDependencyError(f"the Ray engine needs Ray Data: {INSTALL} ({exc})") from exc
    return ray


def connect(address: str | None = None) -> None:
    """Join the cluster at ``address`` (else ``RAY_ADDRESS``, else a new local Ray) unless this
    process already joined one; said as a typed error, before any work, when that fails."""
    ray = _ray()
    if ray.is_initialized():
        return
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    except (ConnectionError, RuntimeError, ValueError, TimeoutError) as exc:
        raise InputError(f"cannot start or join Ray at {address or os.environ.get('RAY_ADDRESS') or 'a local instance'}: {exc}") from exc


class Predictor:
    """One Ray actor: its estimator is made once and scores every batch it is given. An error
    of the model (not of an image) comes back as a fatal row, so the caller gets it typed."""

    def __init__(self, model: str | None, runtime: str | None, threads: int | None, settings: dict[str, str],
                 cwd: str, options: dict[str, Any]) -> None:
        """``settings``: the caller's ``BONEAGE_*`` variables and ``cwd`` its folder, applied in the
        actor's process (which may be on another machine) before the estimator is made; ``options``
        the estimator's other arguments (``check_input``, ``views``)."""
        os.environ.update(settings)  # the caller's model registry and plugin switches hold here too
        if os.path.isdir(cwd):
            os.chdir(cwd)  # relative paths mean what they mean to the caller
        from boneage.estimator import BoneAgeEstimator

        self.error: BoneAgeError | None = None
        try:
            self.estimator = BoneAgeEstimator(model, runtime=runtime, threads=threads, **options)
        except BoneAgeError as exc:  # e.g. the model is not on this node
            self.error = exc

    def __call__(self, batch: Any) -> Any:
        """Score one batch (a pyarrow table of index, path, male, age) for ``map_batches``: a table of index, the
        pickled outcome and whether it is fatal, as pickling keeps each error's type."""
        import pyarrow as pa

        rows = batch.to_pylist()
        fatal = self.error is not None
        outcomes: Sequence[Outcome | None] = [self.error] * len(rows)
        if self.error is None:
            try:
                outcomes = self.estimator.predict_many([r["path"] for r in rows], [r["male"] for r in rows], len(rows),
                                                       ages=[r["age"] for r in rows], workers=0)
            except BoneAgeError as exc:
                outcomes, fatal = [exc] * len(rows), True
        return pa.table({"index": pa.array([r["index"] for r in rows], pa.int64()),
                         "outcome": pa.array([pickle.dumps(o) for o in outcomes], pa.binary()),
                         "fatal": pa.array([fatal] * len(rows), pa.bool_())})


def _checked(male: Any, age: float | None) -> tuple[bool | None, float | None, BoneAgeError | None]:
    """A row's sex and age as plain values, or the error the local engine would give for them.
    A missing sex goes on to the actor, which reads it from a DICOM header or refuses the row."""
    try:
        return None if male is None else check_male(male), None if age is None else check_age(age), None
    except InputError as exc:
        return None, None, exc


def outcomes(paths: Sequence[str], male: Sequence[Any], ages: Sequence[float | None] | None = None, *,
             model: str | os.PathLike[str] | None = None, runtime: str | None = None, threads: int | None = None,
             actors: int | None = None, batch_size: int = 16, address: str | None = None,
             progress: bool = True, check_input: bool = True, views: int = 1) -> Iterator[Outcome]:
    """:meth:`~boneage.estimator.BoneAgeEstimator.predict_many` on Ray: each input's prediction or
    error, in input order, as the actors finish. ``actors`` defaults to one per core of the cluster;
    ``threads`` is each actor's ONNX Runtime threads (default: the one core Ray gives it);
    ``check_input`` and ``views`` as for the estimator.
    Model errors are raised. Joins Ray as :func:`connect` does and leaves it running."""
    ages = [None] * len(paths) if ages is None else list(ages)
    if not len(paths) == len(male) == len(ages):
        raise InputError(f"{len(paths)} paths, {len(male)} sexes and {len(ages)} ages: one each")
    from boneage.estimator import BoneAgeEstimator, check_batch_size

    batch_size = check_batch_size(batch_size)
    if actors is not None and actors < 1:
        raise InputError(f"actors must be at least 1, not {actors}")
    if not paths:
        return iter(())

    options: dict[str, Any] = {"check_input": check_input, "views": views}
    BoneAgeEstimator(model, runtime=runtime, threads=1, **options)  # a bad model, runtime or option is said here, not on every node
    ray = _ray()
    connect(address)
    checked = [_checked(m, a) for m, a in zip(male, ages, strict=True)]
    blocks = _blocks(paths, checked, batch_size)
    ds = ray.data.from_arrow(blocks)
    if not progress:  # the caller shows its own: no bars, and only Ray Data's errors
        ds.context.enable_progress_bars = False
        logging.getLogger("ray.data").setLevel(logging.ERROR)
    settings = {k: v for k, v in os.environ.items() if k.startswith("BONEAGE_")}
    actors = min(actors or max(1, int(ray.cluster_resources().get("CPU", 1))), len(blocks))  # none idle
    pool = ray.data.ActorPoolStrategy(size=actors)
    ds = ds.map_batches(Predictor, batch_size=batch_size, batch_format="pyarrow", num_cpus=1, compute=pool,
                        fn_constructor_kwargs={"model": None if model is None else os.fspath(model), "runtime": runtime,
                                               "threads": threads, "settings": settings, "cwd": os.getcwd(),
                                               "options": options})
    return _in_order(ds, [error for _, _, error in checked])


def _blocks(paths: Sequence[str], checked: list[tuple[bool | None, float | None, BoneAgeError | None]],
            batch_size: int) -> list[Any]:
    """Blocks of whole batches, so each batch holds the same inputs as the local engine's: at
    most :data:`MAX_BLOCKS` of them, however many files."""
    import pyarrow as pa

    per_block = batch_size * math.ceil(len(paths) / (batch_size * MAX_BLOCKS))
    schema = pa.schema([("index", pa.int64()), ("path", pa.string()), ("male", pa.bool_()), ("age", pa.float64())])
    return [pa.table({"index": list(range(start, end)), "path": [str(p) for p in paths[start:end]],
                      "male": [c[0] for c in checked[start:end]], "age": [c[1] for c in checked[start:end]]},
                     schema=schema)
            for start in range(0, len(paths), per_block) for end in [min(start + per_block, len(paths))]]


def _in_order(ds: Any, errors: list[BoneAgeError | None]) -> Iterator[Outcome]:
    """Outcomes in input order, whatever order the actors finish in; a row refused for its sex or
    age gets the error it was refused with (the actor only saw a missing sex)."""
    waiting: dict[int, tuple[bytes, bool]] = {}
    done = 0
    for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
        columns = (batch.column(name).to_pylist() for name in ("index", "outcome", "fatal"))
        waiting.update({i: (blob, fatal) for i, blob, fatal in zip(*columns, strict=True)})
        while done in waiting:
            blob, fatal = waiting.pop(done)
            outcome: Outcome = pickle.loads(blob)  # written by this job's own actors
            if fatal and isinstance(outcome, BaseException):
                raise outcome
            yield errors[done] or outcome
            done += 1
    if done != len(errors):
        raise RuntimeError(f"Ray returned {done} of {len(errors)} results")


def result(source: str, outcome: Outcome) -> dict[str, Any]:
    """What the command line writes for one input: the prediction, or its source and error."""
    if isinstance(outcome, Prediction):
        return outcome.model_dump(mode="json")
    return {"source": source, "error": {"type": type(outcome).__name__, "message": str(outcome)}}


def predict_files(paths: Sequence[str], male: Sequence[Any], ages: Sequence[float | None] | None = None, *,
                  model: str | os.PathLike[str] | None = None, runtime: str | None = None, threads: int | None = None,
                  actors: int | None = None, batch_size: int = 16, address: str | None = None) -> list[dict[str, Any]]:
    """Score ``paths`` on Ray: one flat row per input, in input order, as ``boneage predict
    --output`` writes them (:func:`boneage.rows.flat`; a failure has ``error_type`` and
    ``error``). See :func:`outcomes` for the arguments."""
    found = outcomes(paths, male, ages, model=model, runtime=runtime, threads=threads, actors=actors,
                     batch_size=batch_size, address=address)
    return [flat(result(str(p), o)) for p, o in zip(paths, found, strict=True)]
