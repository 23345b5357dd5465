"""int8 static quantization with ONNX Runtime, calibrated on real preprocessed training radiographs.

The stem (the first convolution, with its batch norm folded in) stays in float: quantizing it
shifted the 0.2.0 DenseNet's outputs by +12 months (MAE 18.8 against 13.9 in fp32); keeping it, int8
is within 0.1 months. The head's matrix products made no difference.

int8 still read about 2 months high (0.5.0 on its 1,214 validation images: bias +1.85 against fp32's
-0.05; +2.53 against +0.98 on the same ids at higher resolution). The shift builds up over dense
blocks 1-3 (no single layer; a float head or last block changes nothing) and grows with coarser
activation steps (MinMax on 1,024 images: +3.41). So the output is corrected by the int8 model's
mean shift from fp32 on the calibration images (:func:`correct_bias`; no labels): bias -0.04 and
+0.64, MAE 10.83 and 9.52 against fp32's 10.80 and 9.40, same speed and size. Percentile and
symmetric calibration shrank the shift less and cost MAE at higher resolution (or speed). Measured in
docs/benchmarks.md (benchmarks/int8_variants.py).
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from boneage.calibration import calibrate
from boneage.export.onnxcard import attach_card
from boneage.export.publish import int8_file, onnx_predict, register
from boneage.metrics import summary
from boneage.modelcard import ModelCard
from boneage.models import RegistryEntry

log = logging.getLogger(__name__)
MAX_MAE_LOSS = 0.5  # months: a quantized model worse than this is exported but not recommended
CALIBRATION_IMAGES = 256


class _Reader:
    def __init__(self, images: np.ndarray, male: np.ndarray, batch: int = 16) -> None:
        self._batches = iter(
            [{"image": images[i : i + batch], "male": male[i : i + batch]} for i in range(0, len(images), batch)]
        )

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)


def prepare(fp32_path: Path, prepared: Path) -> list[str]:
    """ONNX Runtime's pre-processing (shape inference, fusions); returns the stem: the name of the
    first convolution, to keep in float."""
    import onnx
    from onnxruntime.quantization.shape_inference import quant_pre_process

    quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
    return [n.name for n in onnx.load(str(prepared)).graph.node if n.op_type == "Conv"][:1]


def static_int8(prepared: Path, out: Path, calibration: tuple[np.ndarray, np.ndarray], **options: Any) -> None:
    """The recipe: static QDQ, per-channel int8 weights, uint8 activations, MinMax calibration on
    (image, male); ``options`` override any of it (benchmarks/int8_variants.py compares them)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    recipe: dict[str, Any] = {
        "quant_format": QuantFormat.QDQ,
        "per_channel": True,
        "weight_type": QuantType.QInt8,
        "activation_type": QuantType.QUInt8,
        "calibrate_method": CalibrationMethod.MinMax,
    }
    quantize_static(str(prepared), str(out), _Reader(*calibration), **{**recipe, **options})


def correct_bias(prepared: Path, quantized: Path, calibration: tuple[np.ndarray, np.ndarray]) -> float:
    """Subtract the int8 model's mean shift from the fp32 one on the calibration images (training
    images: no labels used) from its output, with a float Add at the end of the graph; returns the shift."""
    import onnx
    from onnx import helper, numpy_helper

    shift = float(np.mean(onnx_predict(quantized.read_bytes(), *calibration) - onnx_predict(prepared.read_bytes(), *calibration)))
    proto: Any = onnx.load(str(quantized))
    out = proto.graph.output[0].name
    last = next(n for n in proto.graph.node if out in n.output)
    last.output[list(last.output).index(out)] = f"{out}_int8"
    proto.graph.initializer.append(numpy_helper.from_array(np.array(-shift, np.float32), f"{out}_correction"))
    proto.graph.node.append(helper.make_node("Add", [f"{out}_int8", f"{out}_correction"], [out], name="int8_bias_correction"))
    onnx.save(proto, str(quantized))
    return shift


def quantize_int8(
    fp32_path: Path,
    card: ModelCard,
    calibration: tuple[np.ndarray, np.ndarray],
    validation: tuple[np.ndarray, np.ndarray, np.ndarray, list[str]],
    out_dir: Path,
) -> RegistryEntry:
    """Calibrate on training images (image, male), measure on the validation ones (image, male,
    age, id), and calibrate the int8 model's own intervals there; return the registered entry."""
    import onnx

    out = out_dir / int8_file(card.name, card.version)
    with tempfile.TemporaryDirectory() as tmp:
        prepared, quantized = Path(tmp) / "prep.onnx", Path(tmp) / "int8.onnx"
        stem = prepare(fp32_path, prepared)
        static_int8(prepared, quantized, calibration, nodes_to_exclude=stem)
        shift = correct_bias(prepared, quantized, calibration)
        proto: Any = onnx.load(str(quantized))
    images, male, ages, ids = validation
    fp32 = card.metrics["validation"]
    unsealed = proto.SerializeToString()
    predicted = onnx_predict(unsealed, images, male)
    metrics = summary(ages, predicted)
    metrics["mae_change_vs_fp32"] = metrics["mae"] - fp32["mae"]
    recommended = metrics["mae_change_vs_fp32"] <= MAX_MAE_LOSS
    if not recommended:
        log.warning("int8 model is %.2f months worse than fp32: exported, not recommended", metrics["mae_change_vs_fp32"])
    qcard = card.model_copy(
        update={
            "name": f"{card.name}-int8",
            "metrics": {"validation": metrics, "fp32_validation": fp32},
            "interval": calibrate(predicted, ages, ids, male.reshape(-1) > 0.5),
            "keras_sha256": None,
            "notes": {**card.notes, "quantization": {"type": "int8 static QDQ, per-channel weights, MinMax, bias-corrected",
                                                     "float_nodes": stem,
                                                     "bias_correction_months": -shift,
                                                     "calibration_images": len(calibration[0]),
                                                     "calibration_data": "training split",
                                                     "recommended": recommended}},
        }
    )
    out.write_bytes(attach_card(proto, qcard))
    return register(out_dir, out, qcard, False, None, quantized="int8", recommended=recommended)
