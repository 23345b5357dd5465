"""The built-in backbones, and :func:`build_model` for plugins that add one. Keras is imported
only when a backbone is built."""

from __future__ import annotations

import contextlib
import io
import json
import math
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from boneage.errors import BoneAgeError, InvalidModelError, failures_as, printable
from boneage.extras import TRAIN, require
from boneage.finite import finite_float
from boneage.hookspecs import hookimpl
from boneage.modelcard import OUTPUT, one_line
from boneage.specs import BackboneSpec


def build_model(name: str, input_size: int, features: Callable[[Any], Any], **options: Any) -> Any:
    """A boneage model around ``features``: what a backbone plugin's ``build`` returns.

    ``features`` maps the ``image`` input, a Keras tensor (N, ``input_size``, ``input_size``, 1)
    in [0, 1], to a pooled feature vector (N, C). This adds what every boneage model shares, so
    that training, export and both runtimes take the plugin's model as they take a built-in one:
    the ``male`` input through a small dense layer, fused with the features, a dense head and one
    output ``boneage_months`` scaled back from the RSNA mean and SD. ``options`` (keywords, with
    their defaults): ``dropout=0.3``, ``l2=0.0`` (weight decay of the head), ``head_units=256``,
    ``sex_units=16``, ``age_mean=127.0`` and ``age_std=41.0`` (months). Returns an uncompiled
    ``keras.Model`` named ``name``; needs Keras (extra: train). See docs/plugins.md."""
    require("keras", TRAIN, "building a model")
    from boneage.backbones.head import build_model as build

    return build(name, input_size, features, **options)


def _densenet121(input_size: int, **options: Any) -> Any:
    from boneage.backbones.densenet import build_densenet121

    return build_densenet121(input_size, **options)


def _resnet34_cbam(input_size: int, **options: Any) -> Any:
    from boneage.backbones.resnet_cbam import build_resnet34_cbam

    return build_resnet34_cbam(input_size, **options)


# A weight in the archive is read whole before Keras compares its shape with the variable it fills: one whose
# shape no variable of the model has is refused unread, unless it is this small (scalars, counters).
SMALL_WEIGHT_BYTES = 1 << 20
MAX_WEIGHT_OBJECTS = 100_000  # groups and datasets in model.weights.h5: a DenseNet121 checkpoint has ~8,000


# backbone_options come from files (a card's notes, a run's config.json, a training config), and Keras allocates
# what they ask before any weight is compared: {"head_units": 10**6} or a huge growth took gigabytes. A built-in
# backbone takes only the options it has, within these bounds; a plugin's, scalars with numbers up to PLUGIN_NUMBER.
MAX_OPTION_UNITS = 4096
MAX_GROWTH = 128
PLUGIN_NUMBER = 65_536
PLUGIN_TEXT = 200


def _number(low: float, high: float, *, whole: bool = False, above: bool = False,
            below: bool = False) -> Callable[[Any], str | None]:
    """A check of one option: a (whole) number from ``low`` to ``high`` (``above``/``below``: excluding them)."""
    def check(value: Any) -> str | None:
        number = finite_float(value)
        if number is None or (whole and not isinstance(value, int)) or number < low or number > high \
                or (above and number == low) or (below and number == high):
            left, right = "(" if above else "[", ")" if below else "]"
            return f"{'a whole' if whole else 'a'} number in {left}{low:g}, {high:g}{right}"
        return None

    return check


_plugin_number_problem = _number(-PLUGIN_NUMBER, PLUGIN_NUMBER)
_HEAD_OPTIONS: dict[str, Callable[[Any], str | None]] = {
    "dropout": _number(0, 1, below=True),
    "l2": _number(0, 1),
    "sex_units": _number(1, MAX_OPTION_UNITS, whole=True),
    "age_mean": _number(-10_000, 10_000),
    "age_std": _number(0, 10_000, above=True),
}
# by builder, not by name: a plugin registering another backbone is checked as a plugin
_BUILTIN_OPTIONS: dict[Callable[..., Any], dict[str, Callable[[Any], str | None]]] = {
    _densenet121: {**_HEAD_OPTIONS, "head_units": _number(1, MAX_OPTION_UNITS, whole=True),
                   "growth": _number(1, MAX_GROWTH, whole=True), "compression": _number(0, 1, above=True)},
    _resnet34_cbam: _HEAD_OPTIONS,  # its head has 512 units, fixed
}


def checked_options(spec: BackboneSpec, options: Any, error: type[BoneAgeError]) -> dict[str, Any]:
    """``options`` read from a file, checked before ``spec.build`` allocates what they ask: for a built-in
    backbone only its own options, each within its bounds (``error`` for an unknown key or a value out of
    range); for a plugin's, scalars (bool, number, text up to 200 characters, null) with no number beyond
    ±65,536."""
    def refuse(reason: str) -> BoneAgeError:
        return error(f"the {spec.name} backbone cannot be built with these backbone_options: {reason}")

    if not isinstance(options, dict) or not all(isinstance(k, str) for k in options):
        raise refuse("they are not a mapping of names")
    allowed = _BUILTIN_OPTIONS.get(spec.build)
    for key, value in options.items():
        shown = printable(key)[:60]
        if allowed is not None:
            if key not in allowed:
                raise refuse(f"{shown!r} is not one of its options ({', '.join(sorted(allowed))})")
            wanted = allowed[key](value)
            if wanted:
                raise refuse(f"{shown} must be {wanted}, not {printable(str(value))[:40]}")
        elif not (value is None or isinstance(value, bool)
                  or (isinstance(value, str) and len(value) <= PLUGIN_TEXT)
                  or not _plugin_number_problem(value)):
            raise refuse(f"{shown} must be a boolean, a finite number within ±{PLUGIN_NUMBER:,}, text up to "
                         f"{PLUGIN_TEXT} characters or null, not {type(value).__name__} {printable(str(value)[:40])}")
    return dict(options)


def build_backbone(backbone: str, input_size: int, options: Any, scale: dict[str, float] | None = None, *,
                   error: type[BoneAgeError] = InvalidModelError) -> Any:
    """The registered ``backbone`` built at ``input_size`` with ``options`` read from a file (checked first:
    :func:`checked_options`) and ``scale`` (an archive's ``age_mean`` and ``age_std``, checked where read);
    any failure of the builder is ``error``."""
    from boneage.plugins import get_plugins

    spec = get_plugins().get("backbones", backbone).spec
    options = checked_options(spec, options, error)
    with failures_as(error, f"the {backbone} backbone cannot be built with these backbone_options"):
        return spec.build(input_size, **{**options, **(scale or {})})


def load_keras_model(path: Path, backbone: str, input_size: int, options: Any = None, *,
                     sha256: str | None = None, error: type[BoneAgeError] = InvalidModelError,
                     limit: int | None = None) -> Any:
    """The registered ``backbone`` built at ``input_size`` with ``options`` (uncompiled, float32; checked:
    :func:`checked_options`), holding the weights of the ``.keras`` file at ``path``: see
    :func:`load_keras_weights`, which checks the file."""
    def build(scale: dict[str, float]) -> Any:  # once the archive is checked: a bad file is refused as such
        return build_backbone(backbone, input_size, {} if options is None else options, scale, error=error)

    return load_keras_weights(path, build, f"{backbone} model", sha256=sha256, error=error, limit=limit)


def load_keras_weights(path: Path, build: Callable[[dict[str, float]], Any], what: str, *,
                       sha256: str | None = None, error: type[BoneAgeError] = InvalidModelError,
                       limit: int | None = None, optimizer: bool = False) -> Any:
    """The model ``build(scale)`` returns, with the weights (and, with ``optimizer``, the optimizer's state) of
    the ``.keras`` file at ``path``; ``what`` names the model in messages. The archive's own architecture is
    never built: a 64 KB file declaring a layer of 3 GB made Keras allocate 10 GB before it found that the
    weights did not fit. Only the weights store is read, into the variables of boneage's own model:

    - the archive is checked first (:func:`boneage.models.check_keras_archive`: at most ``limit`` bytes,
      default 1 GiB, packed and unpacked; its members' count, names and ratios), as ``error``;
    - ``scale`` is what the model's weights cannot carry: the ``age_mean`` and ``age_std`` (months) of its
      output layer, read from the archive's config (``{}`` where it has none; ``error`` where they are not
      finite numbers), so a model answers in the months it was trained on;
    - a stored weight whose shape none of the model's variables has (over ``SMALL_WEIGHT_BYTES``), one that
      is not a number or not stored as Keras stores it (compressed, or in other files), or an optimizer
      state that is not the model's, is ``error`` before anything is read;
      any other mismatch is Keras's, raised as ``error``.

    With ``sha256`` the file is read once, its bytes are checked against it (:class:`ChecksumMismatchError`)
    and Keras reads those very bytes from a private temporary copy: a file swapped after the check is never
    loaded."""
    require("keras", TRAIN, "a .keras model")
    with _checked_copy(path, sha256, error, limit) as archive:
        model = build(_output_scale(archive, path, error))
        _check_weights(model, archive, path, error, what, optimizer)
        try:
            model.load_weights(archive)
        except BoneAgeError:
            raise
        except Exception as exc:  # Keras's ValueError for a count or shape that does not fit, h5py's own
            raise error(f"{path} does not hold the weights of a {what}: {one_line(exc)}"[:800]) from exc
    return model


@contextlib.contextmanager
def _checked_copy(path: Path, sha256: str | None, error: type[BoneAgeError], limit: int | None) -> Iterator[Path]:
    """``path`` checked as a .keras archive, or (with ``sha256``) a private copy of the bytes that were hashed."""
    from boneage.models import check_keras_file, read_keras_file

    if path.suffix != ".keras":  # Keras reads the weights of a .keras by its name
        raise error(f"{path} is not a .keras file")
    if sha256 is None:
        check_keras_file(path, error, limit)
        yield path
        return
    data = read_keras_file(path, sha256, error, limit)
    with tempfile.TemporaryDirectory(prefix="boneage-keras-") as folder:  # the caller's own (mode 0700)
        copy = Path(folder) / "model.keras"
        copy.write_bytes(data)
        del data
        yield copy


def _output_scale(archive: Path, path: Path, error: type[BoneAgeError]) -> dict[str, float]:
    """``age_mean`` and ``age_std`` from the archive's output layer (``Rescaling`` named ``boneage_months``,
    as :func:`build_model` makes it); ``{}`` for a model without one. The config is at most
    ``KERAS_JSON_BYTES`` (checked with the archive); only this layer's two numbers are taken from it."""
    try:
        with zipfile.ZipFile(archive) as files:
            config = json.loads(files.read("config.json"))
    except KeyError as exc:
        raise error(f"{path} is not a Keras model archive: it holds no config.json") from exc
    except (OSError, ValueError, RecursionError, zipfile.BadZipFile) as exc:
        raise error(f"{path} has a config.json that does not read as JSON: {one_line(exc)}"[:500]) from exc
    stack = [config]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, dict):
            layer = item.get("config")
            if item.get("class_name") == "Rescaling" and isinstance(layer, dict) and layer.get("name") == OUTPUT:
                mean, std = layer.get("offset"), layer.get("scale")
                months, spread = finite_float(mean), finite_float(std)
                if months is None or spread is None or not spread > 0:
                    raise error(f"{path}: its output layer scales by {str(std)[:40]} from {str(mean)[:40]}, "
                                "not by finite months above 0")
                return {"age_mean": months, "age_std": spread}
            stack.extend(item.values())
    return {}


def _check_weights(model: Any, archive: Path, path: Path, error: type[BoneAgeError], what: str,
                   optimizer: bool) -> None:
    """Every stored weight of ``model.weights.h5`` against ``model``'s variables, from the HDF5 headers only
    (Keras reads each weight whole, then compares its shape): a shape the model does not have is refused
    unread, so no stored weight takes more memory than the model's largest variable, and so is one stored
    compressed or outside this file (:func:`_storage_problem`). With ``optimizer``,
    the stored optimizer state must be the model's optimizer's (Keras only warns, and keeps a fresh one)."""
    import h5py

    variables = list(model.variables) + (list(model.optimizer.variables) if optimizer else [])
    shapes = {tuple(int(d) for d in v.shape) for v in variables}
    found: dict[str, int] = {"objects": 0, "optimizer": 0}
    problems: list[str] = []

    def visit(name: str, item: Any) -> Any:
        found["objects"] += 1
        if found["objects"] > MAX_WEIGHT_OBJECTS:
            problems.append(f"it holds more than {MAX_WEIGHT_OBJECTS:,} groups and weights")
            return True  # stops the walk
        if not isinstance(item, h5py.Dataset):
            return None
        shape, dtype = tuple(item.shape or ()), item.dtype
        if dtype.kind not in "fiub" or dtype.itemsize > 8:
            problems.append(f"its weight {name[:200]!r} is of type {str(dtype)[:40]}, not a number")
            return True
        if shape not in shapes and math.prod(shape) * dtype.itemsize > SMALL_WEIGHT_BYTES:
            problems.append(f"its weight {name[:200]!r} has shape {str(shape)[:100]}, which no variable of the "
                            f"{what} has")
            return True
        chunk = math.prod(item.chunks) * dtype.itemsize if item.chunks else 0
        if chunk > max(math.prod(shape) * dtype.itemsize, SMALL_WEIGHT_BYTES):  # HDF5 inflates a chunk whole
            problems.append(f"its weight {name[:200]!r} of shape {str(shape)[:100]} is stored in chunks of "
                            f"{chunk:,} bytes, more than the weight itself")
            return True
        stored = _storage_problem(item)
        if stored:
            problems.append(f"its weight {name[:200]!r} {stored}")
            return True
        if name.startswith("optimizer/vars/"):
            found["optimizer"] += 1
        return None

    try:
        with zipfile.ZipFile(archive) as files, _weights_member(files) as member, h5py.File(member, "r") as store:
            store.visititems(visit)
    except KeyError as exc:
        raise error(f"{path} holds no model.weights.h5: only weights in that form are loaded") from exc
    except Exception as exc:  # h5py: not HDF5, cut short
        raise error(f"{path} has a model.weights.h5 that does not read as HDF5: {one_line(exc)}"[:500]) from exc
    if problems:
        raise error(f"{path} does not hold the weights of a {what}: {problems[0]}")
    if optimizer and found["optimizer"] != len(model.optimizer.variables):
        raise error(f"{path} holds {found['optimizer']:,} optimizer variables, but the {what}'s optimizer has "
                    f"{len(model.optimizer.variables):,}: not a checkpoint of this run's model")


def _storage_problem(dataset: Any) -> str | None:
    """How ``dataset`` is stored, if not as Keras stores a weight (its bytes in this file, unfiltered), from its
    header. HDF5 inflates a compressed chunk to the end of its stream whatever size the header declares (3 MB
    of a 256-byte weight inflated to 3 GiB), and external or virtual storage reads the values from files
    the weights name (any path on the machine, a FIFO)."""
    import h5py

    plist = dataset.id.get_create_plist()
    if plist.get_layout() not in (h5py.h5d.CONTIGUOUS, h5py.h5d.CHUNKED, h5py.h5d.COMPACT):
        return "takes its values from other HDF5 files (a virtual dataset), not from this one"
    if plist.get_external_count():
        return "takes its values from a file outside the archive (external storage)"
    if plist.get_nfilters():
        name = printable(bytes(plist.get_filter(0)[3]).decode("ascii", "replace"))[:40]
        return (f"is stored through the HDF5 filter {name!r}: Keras stores weights uncompressed, and a "
                "compressed chunk may inflate far past its declared size")
    return None


@contextlib.contextmanager
def _weights_member(files: zipfile.ZipFile) -> Iterator[Any]:
    """``model.weights.h5`` for h5py: the member as it is where it is stored, in memory where it is compressed.
    h5py seeks back and forth, and each backward seek in a DEFLATE stream decompresses it again from the start
    (10 s against 1.4 s for a DenseNet121); its size was bounded with the archive (``check_keras_archive``)."""
    info = files.getinfo("model.weights.h5")  # KeyError: none
    if info.compress_type == zipfile.ZIP_STORED:
        with files.open(info) as member:
            yield member
        return
    with io.BytesIO(files.read(info)) as member:
        yield member


@hookimpl
def boneage_register_backbones() -> list[BackboneSpec]:
    """Registers the two built-in backbones through the plugin API, as a third-party one would be;
    Keras is imported only when one is built."""
    return [
        BackboneSpec(name="densenet121", build=_densenet121, default_input_size=256,
                     doc="DenseNet121, dense blocks 6-12-24-16, growth 32"),
        BackboneSpec(name="resnet34_cbam", build=_resnet34_cbam, default_input_size=256,
                     doc="ResNet34 (3-4-6-3 basic blocks) with CBAM"),
    ]
