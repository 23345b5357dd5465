"""Build a callable pipeline from a :class:`PreprocessConfig` through the plugin registry."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydantic import BaseModel, ValidationError

from boneage.configs import PreprocessConfig
from boneage.containment import plugin_code
from boneage.decoded import MAX_DECODED_BYTES, MAX_PIXELS
from boneage.errors import (
    BoneAgeError,
    ConfigError,
    PluginError,
    PreprocessError,
    failure_text,
    failures_as,
    validation_problems,
)
from boneage.plugins import BUILTIN, Plugins, get_plugins
from boneage.specs import ConfiguredSpec, StepSpec, Transform

# What one image's notes may hold: a step that warned 100,000 times an image, 1,000 characters each,
# held 742 MB and printed a 100 MB note per row. Boneage's own steps add one or two.
MAX_NOTES = 64  # warnings kept by Notes.warn; the rest only counted
MAX_STEP_NOTES = 8  # warnings (or applied notes) kept from one step, then one line saying how many more
MAX_NOTE_CHARS = 500
# A step's output: an image no larger than one that may be read (decoded.MAX_PIXELS), of 1 to 4 channels, of
# at most 4 times the bytes one may decode to (a float64 copy of a 16-bit image). Its values: finite, some of
# them grey levels (0-65535), none past MAX_MAGNITUDE. A step in float may overshoot that range a little (a
# sharpening step such as the mobilenet plugin's `unsharp`: up to 3 times the image's range), so a value
# under 0 alone is not refused; an image with nothing but negative values (or nothing but values past
# 65535), or with 1e12 in it, is no radiograph.
MAX_STEP_BYTES = 4 * MAX_DECODED_BYTES
MAX_GREY = 65535
MAX_MAGNITUDE = 2**20


@dataclass
class Notes:
    """What the reading and the steps noticed about one image (warnings: doubts about the answer)
    and did to it (applied: e.g. an EXIF rotation), passed on to the prediction. ``dropped``: warnings
    past ``MAX_NOTES``, counted, not kept."""

    warnings: list[str] = field(default_factory=list)
    applied: list[str] = field(default_factory=list)
    dropped: int = 0

    def warn(self, message: str) -> None:
        """For a step that answers but doubts its input; the message reaches the prediction's warnings
        (at most ``MAX_NOTE_CHARS`` of it, and no more than ``MAX_STEP_NOTES`` a step)."""
        if len(self.warnings) >= MAX_NOTES:
            self.dropped += 1
            return
        self.warnings.append(_note(message))


def _note(message: object) -> str:
    """A step's note as text of at most ``MAX_NOTE_CHARS`` characters (never its ``str()``: plugin code)."""
    if not isinstance(message, str):
        return f"(a note that is a {type(message).__name__}, not text)"
    return message if len(message) <= MAX_NOTE_CHARS else f"{message[:MAX_NOTE_CHARS]}... ({len(message):,} characters)"


def bound_notes(notes: Notes, name: str, warnings: int, applied: int, dropped: int) -> None:
    """What step ``name`` added to ``notes`` (which held ``warnings`` warnings, ``applied`` notes and
    ``dropped`` dropped before it), held to ``MAX_STEP_NOTES`` of each kind and ``MAX_NOTE_CHARS`` each,
    whether it called :meth:`Notes.warn` or appended to the lists."""
    for items, start, uncounted in ((notes.warnings, warnings, notes.dropped - dropped), (notes.applied, applied, 0)):
        if len(items) == start and not uncounted:
            continue
        added = items[start:]
        kept = [_note(item) for item in added[:MAX_STEP_NOTES]]
        more = len(added) - len(kept) + uncounted
        if more:
            kept.append(f"preprocessing step {name!r} gave {more:,} more note(s) of this kind, left out")
        items[start:] = kept


def checked_output(image: object, name: str, trusted: bool) -> np.ndarray:
    """A step's result, if it is an image the next step (and the model) can take: a numeric array of 2 or 3
    dimensions, 1 to 4 channels, at most ``MAX_PIXELS`` pixels and ``MAX_STEP_BYTES`` bytes (checked from its
    shape: a broadcast view of 60000x60000 took 7.1 GB once used) and, unless it comes from a built-in step
    (``trusted``), finite values, not all below 0 nor all above 65535, none past ``MAX_MAGNITUDE``: a
    plugin's NaN became a black image in ``clahe``, and -1 everywhere or 1e12 was answered. Else a
    :class:`PreprocessError` naming the step."""
    if not isinstance(image, np.ndarray) or image.ndim not in (2, 3) or image.dtype.kind not in "uif":
        raise PreprocessError(f"preprocessing step {name!r} returned a {type(image).__name__}, not an image array")
    height, width = image.shape[:2]
    channels = image.shape[2] if image.ndim == 3 else 1
    if not height or not width or not 1 <= channels <= 4:
        raise PreprocessError(f"preprocessing step {name!r} returned an array of shape {image.shape}, not an image "
                              "(height, width) or (height, width, 1 to 4 channels)")
    if height * width > MAX_PIXELS or height * width * channels * image.dtype.itemsize > MAX_STEP_BYTES:
        raise PreprocessError(f"preprocessing step {name!r} returned a {width}x{height} image of {channels} "
                              f"{image.dtype} channel(s): more than the {MAX_PIXELS:,} pixels or "
                              f"{MAX_STEP_BYTES // 2**20:,} MiB an image may take")
    if trusted or (image.dtype.kind == "u" and image.dtype.itemsize <= 2):  # uint8, uint16: every value is a grey level
        return image
    low, high = image.min(), image.max()  # NaN, if any, is the minimum and maximum
    if not (np.isfinite(low) and np.isfinite(high)):
        raise PreprocessError(f"preprocessing step {name!r} returned NaN or infinite values")
    if high < 0 or low > MAX_GREY or max(-float(low), float(high)) > MAX_MAGNITUDE:
        raise PreprocessError(f"preprocessing step {name!r} returned values from {float(low):.6g} to {float(high):.6g}, "
                              f"not an image: grey levels lie within 0-{MAX_GREY} (a step may overshoot them a little)")
    return image


def _plugin_label(plugin: str, source: str) -> str:
    """"plugin NAME (SOURCE)", the source left out where the name holds it (an installed plugin's)."""
    return f"plugin {plugin}" if source in plugin else f"plugin {plugin} ({source})"


def read_only(image: np.ndarray) -> np.ndarray:
    """A view of ``image`` that cannot be written to (the array itself stays writable): what the steps get, so a
    step that writes into its input (``image[...] = 0``) fails instead of changing the caller's array; a
    2-D uint8 image passes the ``grayscale`` step uncopied."""
    if not isinstance(image, np.ndarray) or not image.flags.writeable:
        return image
    view = image.view()
    view.flags.writeable = False
    return view


def _as_given(image: np.ndarray, given: np.ndarray, shown: np.ndarray) -> np.ndarray:
    """The pipeline's output as it was before the steps got a read-only view (``shown``) of ``given``: the input
    itself where no step changed it, a writable view of it where a step cut it (when NumPy allows)."""
    if image is shown:
        return given
    if not image.flags.writeable and isinstance(given, np.ndarray) and given.flags.writeable \
            and np.may_share_memory(image, given):
        try:
            image.flags.writeable = True
        except ValueError:
            image = image.copy()
    return image


def wrote_into_input(exc: BaseException) -> bool:
    """Whether ``exc`` is NumPy's (or OpenCV's) refusal to write into a read-only array: NumPy's ValueError
    ("assignment destination is read-only", "output array is read-only"), OpenCV's error for an output
    argument "marked as readonly". Only those: any text with "read-only" in it (an ``OSError: Read-only file
    system`` from a cropper's cache) blamed the step and stopped the batch, where it is this image's failure."""
    import cv2

    if type(exc) is not ValueError and not isinstance(exc, cv2.error):
        return False
    try:
        text = str(exc)
    except Exception:  # noqa: BLE001 - a plugin's exception may not even print
        return False
    if isinstance(exc, cv2.error):
        return "NumPy array marked as readonly" in text
    return text.endswith("is read-only")


def validated(params_model: type[BaseModel], params: dict[str, object], what: str) -> BaseModel:
    """``params`` checked against a step's or cropper's params model; a :class:`ConfigError` naming
    ``what`` instead of pydantic's own error."""
    try:
        return params_model.model_validate(params)
    except ValidationError as exc:
        raise ConfigError(f"invalid parameters for {what}: {validation_problems(exc.errors())}") from exc
    except (BoneAgeError, KeyboardInterrupt):
        raise
    except BaseException as exc:  # a plugin's validator: sys.exit(), RecursionError, a TypeError pydantic lets out
        raise PluginError(f"the parameters of {what} could not be checked: {failure_text(exc)}") from exc


def build_item(spec: ConfiguredSpec, params: BaseModel, registry: Plugins) -> Any:
    """``spec.build(params)``; a spec with ``takes_plugins`` also gets ``plugins=registry``, the
    registry its pipeline was built from, so a step that looks up other parts (``hand_crop`` its
    cropper) finds them there and not in the process-wide one."""
    return spec.build(params, plugins=registry) if spec.takes_plugins else spec.build(params)


class Pipeline:
    """Steps applied in order; the result is float32 (H, W, 1) ready for a model. Every step is
    looked up and its params checked when the pipeline is built (:class:`ConfigError`, or a
    :class:`PluginError` from the registry), not on the first image. The estimator calls one
    pipeline from several threads, so a step must be safe to share. ``plugins``: the registry to
    look steps up in (default: the process-wide one, :func:`boneage.plugins.get_plugins`)."""

    def __init__(self, config: PreprocessConfig, plugins: Plugins | None = None) -> None:
        self.config = config
        self.plugins = get_plugins(plugins)
        # (name, transform, trusted, owner): trusted, a built-in step (with a built-in cropper), whose values are
        # not checked; owner, the plugin that provides it, named when it writes into its input
        self._transforms: list[tuple[str, Transform, bool, str]] = []
        for step in config.steps:
            registered = self.plugins.get("preprocess_steps", step.name)
            spec: StepSpec = registered.spec
            with plugin_code():
                params = validated(spec.params, step.params, f"step {step.name!r}")
            with failures_as(PluginError, f"preprocessing step {step.name!r} could not be built"), plugin_code():
                transform: Transform = build_item(spec, params, self.plugins)
            cropper = getattr(params, "cropper", None) if step.name == "hand_crop" else None
            by = self.plugins.get("croppers", cropper) if isinstance(cropper, str) else None
            trusted = registered.source == BUILTIN and (by is None or by.source == BUILTIN)
            owner = _plugin_label(registered.plugin, registered.source)
            if by is not None and by.source != BUILTIN:
                owner = f"its cropper {cropper!r}, {_plugin_label(by.plugin, by.source)}"
            self._transforms.append((step.name, transform, trusted, owner))

    def __call__(self, image: np.ndarray, notes: Notes | None = None) -> np.ndarray:
        """A step that fails on this image raises :class:`PreprocessError` naming it; its warnings go to ``notes``."""
        image = self.raw(image, notes)
        image = image.astype(np.float32, copy=False)
        return image[..., None] if image.ndim == 2 else image

    def raw(self, image: np.ndarray, notes: Notes | None = None) -> np.ndarray:
        """The last step's output as it is (uint8 after grayscale and resize), not yet float32 (H, W, 1): for
        training, which keeps the part up to the resize in memory as uint8 and augments it there."""
        notes = notes if notes is not None else Notes()
        given = image
        image = shown = read_only(image)  # the caller's array: no step may write into it (thirteenth probe)
        for name, transform, trusted, owner in self._transforms:
            counts = len(notes.warnings), len(notes.applied), notes.dropped
            try:
                with plugin_code():  # its print() kept off the CLI's stdout, lock-free (boneage.containment)
                    image = transform(image, notes)
            except (BoneAgeError, KeyboardInterrupt):
                raise
            except BaseException as exc:  # a step (perhaps a plugin's) failed on this image: typed, not a traceback;
                # sys.exit(), RecursionError and MemoryError too: one image's failure, not the whole batch's
                if wrote_into_input(exc):  # the step's fault on every image, not this image's
                    raise PluginError(f"preprocessing step {name!r} ({owner}) writes into the image it is given, "
                                      "which is the caller's: a step must leave its input as it is and return a new "
                                      f"array (image = image.copy() first); {failure_text(exc)}") from exc
                raise PreprocessError(f"preprocessing step {name!r} failed on this image: "
                                      f"{failure_text(exc, with_type=False)}") from exc
            finally:
                bound_notes(notes, name, *counts)
            image = checked_output(image, name, trusted)
        return _as_given(image, given, shown)


def build_pipeline(config: PreprocessConfig, plugins: Plugins | None = None) -> Pipeline:
    """The public way to make a :class:`Pipeline`, e.g. from a model card's ``preprocessing``;
    ``plugins`` as for :class:`Pipeline`."""
    return Pipeline(config, plugins)


def probe_image() -> np.ndarray:
    """A plausible radiograph: a bright palm and five fingers on a dark, noisy background."""
    image = np.random.default_rng(0).integers(0, 25, (320, 256), dtype=np.uint8)
    image[170:290, 70:186] = 190
    for left in range(82, 182, 22):
        image[80:170, left : left + 10] = 170
    return image


def check_output(pipeline: Pipeline, size: int, error: type[BoneAgeError], what: str) -> None:
    """Refuse a pipeline whose output the model cannot take, once (at export and when a model is
    loaded) instead of on every image: it must give (size, size, 1) in [0, 1]."""
    try:
        out = pipeline(probe_image())
    except PluginError:  # a step that writes into its input names its plugin itself
        raise
    except BoneAgeError as exc:
        raise error(f"{what}: its preprocessing could not be checked on a test image: {exc}") from exc
    low, high = float(out.min()), float(out.max())
    if out.shape != (size, size, 1) or not 0.0 <= low <= high <= 1.0:
        raise error(f"{what}: the preprocessing gives {out.shape} in [{low:g}, {high:g}], "
                    f"not ({size}, {size}, 1) in [0, 1]")
