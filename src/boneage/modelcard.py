"""The model card every exported model carries in its ONNX ``metadata_props``.

The card is versioned apart from the package (``SCHEMA_VERSION``). Its checksum covers the
whole file with the checksum's own 64 characters zeroed, so it can live inside the file it
protects and needs no ONNX parser to check.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import from_json

from boneage.age import MAX_AGE_MONTHS
from boneage.calibration import IntervalCalibration
from boneage.configs import PreprocessConfig
from boneage.errors import ChecksumMismatchError, InvalidModelError, validation_problems
from boneage.onnxwire import varint

SCHEMA_VERSION = "1.1"  # 1.1: providers
SUPPORTED_SCHEMAS = ("1.0", "1.1")
CARD_KEY = "boneage.card"
CHECKSUM_KEY = "boneage.sha256"
PLACEHOLDER = "0" * 64
MAX_CARD_BYTES = 1 << 20  # a real card is a few kB
IMAGE_INPUT = "image"
SEX_INPUT = "male"
OUTPUT = "boneage_months"
# How a release is named, here at the bottom so that a card's own name and version are held to what the
# registry (boneage.release, which re-exports them) and export accept.
VERSION = re.compile(r"([0-9]{1,9})\.([0-9]{1,9})\.([0-9]{1,9})([-+][0-9A-Za-z.-]{1,64})?")  # fullmatch
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")  # fullmatch
MAX_NAME = 128  # an exported name (at most 100) and its "-int8"
LICENCE = (
    "Trained on the RSNA Pediatric Bone Age Challenge data: research and education only, "
    "non-commercial, with attribution (Halabi et al., Radiology 2019;290(2):498-503)."
)


def semantic_version(value: str) -> str:
    """``value`` if it is X.Y.Z, as cards, the registry and export require, else a ValueError quoting it
    escaped (a card took "latest" and "0.4.0\\n", and showed them)."""
    if not VERSION.fullmatch(value):
        raise ValueError(f"version {_shown(value)} is not semantic (X.Y.Z)")
    return value


def is_plain_name(value: str, limit: int = MAX_NAME) -> bool:
    """Whether ``value`` can name a release: export joins it into file names (``NAME-VERSION.onnx``), so
    ASCII letters, digits, ``.``, ``_`` and ``-`` only, starting with a letter or digit, no ``..``: never
    a path, a hidden file or a control character."""
    return len(value) <= limit and NAME.fullmatch(value) is not None and ".." not in value


class TrainingData(BaseModel):
    """What the model was trained on: the data sets (by name, with their pixel checksums where the run
    recorded them), the image counts and the split with its seed, so a user can tell whether an image
    may have been in training. Extra keys are kept, so older and newer exporters' cards both read."""

    model_config = ConfigDict(extra="allow")

    sources: list[str] = Field(default_factory=list)
    train_images: int = 0
    val_images: int = 0
    split_seed: int | None = None
    val_fraction: float | None = None


class Provider(BaseModel):
    """Which plugin provided a preprocessing step (or a cropper) when the model was exported, so
    that a model whose steps come from a plugin says which package, and which release, it needs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: str = Field(description="preprocess_step or cropper")
    name: str
    plugin: str = Field(description="the plugin's registered name, e.g. boneage.preprocess.builtin")
    source: str = Field(description="'built-in', or the distribution and version it was installed from")
    version: str = ""


class ModelCard(BaseModel):
    """Everything inference needs to know about a model, carried inside the model file: its name and
    version, input size and preprocessing (so an image is always prepared as in training), metrics,
    interval calibration, provenance and licence. Unknown fields are refused: a card this boneage
    cannot fully read is not half-trusted."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    schema_version: str = SCHEMA_VERSION
    name: str
    version: str
    backbone: str
    input_size: int = Field(gt=0, le=4096)
    preprocessing: PreprocessConfig
    output_unit: Literal["months"] = Field("months", description="the only unit boneage reads: a card saying "
                                          "years was answered as months")
    training_data: TrainingData = Field(default_factory=TrainingData)
    metrics: dict[str, Any] = Field(default_factory=dict)
    interval: IntervalCalibration | None = Field(None, description="prediction intervals; None in cards before 0.4")
    created: str = ""
    package_version: str = ""
    git_commit: str = ""
    licence: str = LICENCE
    keras_sha256: str | None = Field(None, description="the .keras file beside it, for the TensorFlow runtime")
    providers: list[Provider] = Field(default_factory=list, description="who provided each preprocessing step "
                                      "and cropper at export; empty in cards before schema 1.1")
    notes: dict[str, Any] = Field(default_factory=dict)

    @field_validator("version")
    @classmethod
    def _semantic(cls, value: str) -> str:
        return semantic_version(value)

    @property
    def ref(self) -> str:
        """``name-version``: how the registry, messages and predictions name the model."""
        return f"{self.name}-{self.version}"

    @model_validator(mode="after")
    def _consistent(self) -> ModelCard:
        """The preprocessing must resize to the size the model takes, or every image would fail."""
        resized = self.preprocessing.input_size
        if resized is not None and resized != self.input_size:
            raise ValueError(f"input_size is {self.input_size} but the preprocessing resizes to {resized}")
        other = [step.params.get("size", 256) for step in self.preprocessing.steps if step.name == "resize"]
        other = [size for size in other if size != self.input_size]
        if other:  # a resize up to 2048 px between two to 100 px multiplied the cost of every image
            raise ValueError(f"every resize step must resize to the input_size {self.input_size}, not to {_shown(other[0])}")
        if self.interval is not None:
            _check_bands(self.interval)
        named = [f"{step.name}.{key}" for step in self.preprocessing.steps for key in _file_options(step.params)]
        if named:  # a model file would otherwise choose what boneage opens on the user's machine
            raise ValueError(f"the preprocessing names files to read ({', '.join(named)}); a card may not: "
                             "give such files through their environment variable (e.g. BONEAGE_MEDIAPIPE_MODEL)")
        return self


def _check_bands(interval: IntervalCalibration) -> None:
    """Bands in the order calibration writes them, by rising upper edge, only the last one open (None):
    a band after an open one, or below a lower edge, is never used, so the card says what it does not do.
    Edges and half-widths are ages, of at most ``MAX_AGE_MONTHS``: a width of 1e308 was answered."""
    edges = [band.below_months for band in interval.bands]
    if any(edge is not None and not 0 < edge <= MAX_AGE_MONTHS for edge in edges) or any(
            band.half_width_months > MAX_AGE_MONTHS for band in interval.bands):
        raise ValueError(f"the interval bands' edges and half-widths must be ages from 0 to {MAX_AGE_MONTHS:g} months")
    if None in edges[:-1]:
        raise ValueError("only the last interval band may be open (below_months null)")
    closed = [edge for edge in edges if edge is not None]
    if any(b <= a for a, b in zip(closed, closed[1:], strict=False)):
        raise ValueError("the interval bands must be in rising order of below_months")


FILE_OPTIONS = ("model_path",)


def _file_options(params: Any) -> list[str]:
    """The options, at any depth, that name a file (the MediaPipe cropper's hand model)."""
    if isinstance(params, dict):
        found = [k for k, v in params.items() if k in FILE_OPTIONS and v is not None]
        return found + [f"{k}.{sub}" for k, v in params.items() for sub in _file_options(v)]
    return []


def parse_card(metadata: dict[str, str], what: str) -> ModelCard:
    """The card from ``metadata_props``; refuse files without one or of another schema."""
    if CARD_KEY not in metadata:
        raise InvalidModelError(f"{what} carries no boneage model card; it was not exported by boneage")
    text = metadata[CARD_KEY]
    if len(text) > MAX_CARD_BYTES:
        raise InvalidModelError(f"{what}: the model card is larger than {MAX_CARD_BYTES:,} bytes")
    try:  # pydantic's parser bounds the nesting depth, where json.loads would hit RecursionError
        raw = from_json(text)
    except ValueError as exc:
        raise InvalidModelError(f"{what}: the model card is not valid JSON ({exc})") from exc
    schema = raw.get("schema_version") if isinstance(raw, dict) else None
    if schema not in SUPPORTED_SCHEMAS:
        raise InvalidModelError(
            f"{what}: model card schema {_shown(schema)} is not supported by this boneage "
            f"(supported: {', '.join(SUPPORTED_SCHEMAS)}); upgrade boneage or re-export the model"
        )
    try:
        card = ModelCard.model_validate(raw)
    except (ValidationError, ValueError) as exc:
        raise InvalidModelError(f"{what}: invalid model card: {one_line(exc)}") from exc
    if not is_plain_name(card.name):  # an unexported run's card ("run:FOLDER") is made, never read from a file
        raise InvalidModelError(f"{what}: invalid model card: name {_shown(card.name)} is not a plain name "
                                f"(at most {MAX_NAME} letters, digits, '.', '_' and '-', as export writes it)")
    return card


SHOWN_CHARACTERS = 20
JSON_KINDS = {list: "array", dict: "object", str: "string", int: "number", float: "number", bool: "boolean"}


def _shown(value: object) -> str:
    """A card's value as an error may quote it: a short string or number escaped (``repr``), a longer
    one as its first characters and its length, anything else as its JSON kind (the value comes from
    the model file and can be as long as the card: up to 1 MiB of it, control characters included, was
    quoted whole)."""
    if value is None or isinstance(value, (bool, float)):
        return repr(value)
    if isinstance(value, int):
        return repr(value) if abs(value) < 10**SHOWN_CHARACTERS else f"a number of more than {SHOWN_CHARACTERS} digits"
    if isinstance(value, str):
        if len(value) <= SHOWN_CHARACTERS:
            return repr(value)
        return f"{value[:SHOWN_CHARACTERS]!r}... ({len(value):,} characters)"
    return f"a JSON {JSON_KINDS.get(type(value), type(value).__name__)}"


def one_line(exc: Exception) -> str:
    """A pydantic error without its multi-line detail, so the CLI message stays on one line."""
    if isinstance(exc, ValidationError):
        return validation_problems(exc.errors())
    return " ".join(str(exc).split())


def metadata_entry(data: bytes, key: str) -> str | None:
    """One ``metadata_props`` value read straight from the serialized model, so reading a card
    needs no ONNX parser and no inference session."""
    k = key.encode()
    at = data.rfind(bytes([0x0A, len(k)]) + k + b"\x12")
    if at < 0:
        return None
    length, start = varint(data, at + 2 + len(k) + 1, len(data))
    if start + length > len(data):
        raise InvalidModelError("truncated metadata entry")
    return data[start : start + length].decode("utf-8", "replace")


def read_card(data: bytes, what: str) -> ModelCard:
    """The card of a serialized model, read from its bytes without an ONNX parser; ``what`` names the
    file in errors. A file without a card is refused as not exported by boneage."""
    value = metadata_entry(data, CARD_KEY)
    return parse_card({} if value is None else {CARD_KEY: value}, what)


def _checksum_span(data: bytes) -> tuple[int, int] | None:
    """Where the checksum value sits: protobuf StringStringEntry key field, then value of 64 bytes."""
    key = CHECKSUM_KEY.encode()
    marker = bytes([0x0A, len(key)]) + key + bytes([0x12, 64])
    at = data.rfind(marker)
    if at < 0:
        return None
    start = at + len(marker)
    return start, start + 64


def content_hash(data: bytes) -> str:
    """sha256 of the file with the embedded checksum zeroed."""
    span = _checksum_span(data)
    if span is not None:
        data = data[: span[0]] + PLACEHOLDER.encode() + data[span[1] :]
    return hashlib.sha256(data).hexdigest()


def seal(data: bytes) -> bytes:
    """Write the content hash into the placeholder left by the exporter."""
    span = _checksum_span(data)
    if span is None or data[span[0] : span[1]] != PLACEHOLDER.encode():
        raise InvalidModelError("no checksum placeholder to seal")
    return data[: span[0]] + content_hash(data).encode() + data[span[1] :]


def verify_embedded(data: bytes, path: Path) -> None:
    """Refuse a model whose content no longer matches the checksum sealed into it at export: a
    damaged or edited file is named as such instead of predicting wrong ages."""
    span = _checksum_span(data)
    if span is None:
        raise InvalidModelError(f"{path} has no embedded checksum ({CHECKSUM_KEY})")
    expected = data[span[0] : span[1]].decode("ascii", "replace")
    actual = content_hash(data)
    if actual != expected:
        raise ChecksumMismatchError(
            f"{path} is damaged or was changed after export: sha256 of its content is {actual}, "
            f"its card expects {expected}"
        )


def file_sha256(path: Path) -> str:
    """sha256 of a file read in 1 MiB blocks, so a 30 MB model or a large ``.keras`` is never held
    whole just to be hashed."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
