"""Mixed bfloat16 training: it learns, its output stays float32, the policy does not leak, and
its export is the same float32 ONNX a float32 run gives."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from boneage.errors import ConfigError
from boneage.training.config import load_config
from tests.test_training import small_config, tiny_backbone  # noqa: F401  (the fixture)

pytestmark = pytest.mark.tensorflow


def test_precision_is_validated() -> None:
    sources = [{"labels": "l.csv", "images": "i"}]
    assert load_config(None, {"sources": sources}).precision == "float32"
    assert load_config(None, {"sources": sources, "precision": "mixed_bfloat16"}).precision == "mixed_bfloat16"
    with pytest.raises(ConfigError, match="precision"):
        load_config(None, {"sources": sources, "precision": "mixed_float16"})  # would need loss scaling: not offered


def test_mixed_bfloat16_trains_and_exports_float32(data_dir: Path, tmp_path: Path, tiny_backbone: None) -> None:  # noqa: F811
    import keras
    import onnx

    from boneage.export.export import export_run, onnx_predict, preprocessed
    from boneage.modelcard import read_card
    from boneage.training.data import prepare_data
    from boneage.training.train import train

    config = small_config(data_dir, tmp_path / "run", epochs=2, limit=256, val_limit=64, precision="mixed_bfloat16",
                          jit_compile=False)  # the candidate recipe (and no XLA compile in a test)
    run = train(config, verbose=0)
    assert keras.mixed_precision.global_policy().name == "float32"  # restored: later models are float32
    assert json.loads((run / "config.json").read_text())["precision"] == "mixed_bfloat16"

    model = keras.saving.load_model(run / "best.keras", compile=False)  # the policies the file stores
    policies = {layer.name: layer.dtype_policy.name for layer in model.layers}
    assert policies["head_dense"] == "mixed_bfloat16" and policies["head_out"] == policies["boneage_months"] == "float32"
    with (run / "history.csv").open() as f:
        losses = [float(row["loss"]) for row in csv.DictReader(f)]
    assert losses[1] < 0.9 * losses[0], losses  # it learns (the loss is computed on the float32 output)
    _, val = prepare_data(config)
    images, male, ages = preprocessed(val, config)
    output = model({"image": images, "male": male}, training=False)
    assert keras.backend.standardize_dtype(output.dtype) == "float32"

    (entry,) = export_run(run, "0.0.1", tmp_path / "models")
    proto = onnx.load_from_string((tmp_path / "models" / entry.file).read_bytes())
    float32 = onnx.TensorProto.FLOAT
    assert all(v.type.tensor_type.elem_type == float32 for v in (*proto.graph.input, *proto.graph.output))
    floats = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16, onnx.TensorProto.DOUBLE}
    assert {i.data_type for i in proto.graph.initializer} & floats == {float32}  # the weights
    casts = {a.i for n in proto.graph.node if n.op_type == "Cast" for a in n.attribute if a.name == "to"}
    assert onnx.TensorProto.BFLOAT16 not in casts and onnx.TensorProto.FLOAT16 not in casts
    # the float32 rebuild predicts what the bfloat16-trained model predicts, to bfloat16's rounding
    onnx_months = onnx_predict((tmp_path / "models" / entry.file).read_bytes(), images, male)
    assert np.abs(onnx_months - np.asarray(output).reshape(-1)).max() < 0.5  # months (0.13 measured)
    assert abs(entry.metrics["mae"] - np.abs(np.asarray(output).reshape(-1) - ages).mean()) < 0.2
    card = read_card((tmp_path / "models" / entry.file).read_bytes(), entry.file)
    assert card.notes["training"]["precision"] == "mixed_bfloat16"
    released = keras.saving.load_model(tmp_path / "models" / entry.file.replace(".onnx", ".keras"), compile=False)
    assert {layer.dtype_policy.name for layer in released.layers} == {"float32"}
