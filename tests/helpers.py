"""Tiny real ONNX models and synthetic radiographs for tests that need no TensorFlow or data."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from boneage.modelcard import ModelCard
from boneage.preprocess import PreprocessConfig

# The tiny model answers OFFSET + SCALE * mean(image) + MALE_BONUS * male, in months.
OFFSET, SCALE, MALE_BONUS = 50.0, 100.0, 10.0


def tiny_proto(size: int, input_names: tuple[str, str] = ("image", "male")):  # type: ignore[no-untyped-def]
    import onnx
    from onnx import TensorProto, helper

    image, male = input_names
    nodes = [
        helper.make_node("ReduceMean", [image, "axes"], ["mean"], keepdims=0),
        helper.make_node("Unsqueeze", ["mean", "one_axis"], ["mean2"]),
        helper.make_node("Mul", ["mean2", "scale"], ["scaled"]),
        helper.make_node("Mul", [male, "bonus"], ["sex_term"]),
        helper.make_node("Add", ["scaled", "sex_term"], ["sum"]),
        helper.make_node("Add", ["sum", "offset"], ["boneage_months"]),
    ]
    inits = [
        helper.make_tensor("axes", TensorProto.INT64, [3], [1, 2, 3]),
        helper.make_tensor("one_axis", TensorProto.INT64, [1], [1]),
        helper.make_tensor("scale", TensorProto.FLOAT, [], [SCALE]),
        helper.make_tensor("bonus", TensorProto.FLOAT, [], [MALE_BONUS]),
        helper.make_tensor("offset", TensorProto.FLOAT, [], [OFFSET]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [
            helper.make_tensor_value_info(image, TensorProto.FLOAT, ["batch", size, size, 1]),
            helper.make_tensor_value_info(male, TensorProto.FLOAT, ["batch", 1]),
        ],
        [helper.make_tensor_value_info("boneage_months", TensorProto.FLOAT, ["batch", 1])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def tiny_card(size: int = 64, **changes: object) -> ModelCard:
    card = ModelCard(
        name="tiny",
        version="1.0.0",
        backbone="tiny-mean",
        input_size=size,
        preprocessing=PreprocessConfig.default(size),
        metrics={"validation": {"mae": 99.0}},
    )
    return card.model_copy(update=changes)


def write_tiny_model(path: Path, size: int = 64, card: ModelCard | None = None, **kw: object) -> Path:
    from boneage.export.onnxcard import attach_card

    path.write_bytes(attach_card(tiny_proto(size, **kw), card or tiny_card(size)))  # type: ignore[arg-type]
    return path


def register(path: Path, models_dir: Path) -> Path:
    """Make the model at ``path`` a known release: a copy in ``models_dir`` and its sha256 in the
    registry there, as the shipped models are. Returns the registered copy."""
    from boneage.modelcard import file_sha256, read_card
    from boneage.models import RegistryEntry, load_registry, save_registry

    data = path.read_bytes()
    card = read_card(data, str(path))
    copy = models_dir / f"{card.ref}.onnx"
    copy.write_bytes(data)
    registry = load_registry(models_dir)
    entry = RegistryEntry(name=card.name, version=card.version, file=copy.name, sha256=file_sha256(copy),
                          size=len(data), backbone=card.backbone)
    registry.models = [e for e in registry.models if e.file != copy.name] + [entry]
    save_registry(registry, models_dir)
    return copy


def expected_months(image01: np.ndarray, male: bool) -> float:
    return OFFSET + SCALE * float(image01.mean()) + MALE_BONUS * male


def synthetic_radiograph(h: int = 300, w: int = 240, seed: int = 0) -> np.ndarray:
    """A bright hand-like shape (palm and five fingers) on a dark, noisy background."""
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 25, (h, w), dtype=np.uint8)
    cv2.ellipse(img, (w // 2, int(h * 0.65)), (w // 5, h // 6), 0, 0, 360, 190, -1)
    for i in range(5):
        x = int(w * (0.32 + 0.09 * i))
        cv2.line(img, (x, int(h * 0.55)), (x, int(h * 0.25)), 170, max(3, w // 30))
    return img


def write_png(path: Path, image: np.ndarray) -> Path:
    assert cv2.imwrite(str(path), image)
    return path


def special_files(folder: Path, name: str = "fifo") -> list[Path]:
    """A device that never ends (``/dev/zero``) and a FIFO with no writer (``folder/name``): what a
    reader must refuse rather than read until memory runs out, or wait on forever."""
    fifo = folder / name
    os.mkfifo(fifo)
    return [Path("/dev/zero"), fifo]
