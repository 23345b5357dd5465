"""int8 static quantization with ONNX Runtime, calibrated on real preprocessed radiographs."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from boneage.export.onnxcard import attach_card
from boneage.metrics import summary
from boneage.modelcard import ModelCard
from boneage.models import RegistryEntry

log = logging.getLogger(__name__)
MAX_MAE_LOSS = 0.5  # months: a quantized model worse than this is exported but not recommended
CALIBRATION_IMAGES = 128


class _Reader:
    def __init__(self, images: np.ndarray, male: np.ndarray, batch: int = 16) -> None:
        self._batches = iter(
            [{"image": images[i : i + batch], "male": male[i : i + batch]} for i in range(0, len(images), batch)]
        )

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)


def quantize_int8(
    fp32_path: Path, card: ModelCard, images: np.ndarray, male: np.ndarray, ages: np.ndarray, out_dir: Path
) -> RegistryEntry:
    """Calibrate on the first images, measure on all of them; return the registered entry."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from boneage.export.export import _register, onnx_predict

    out = out_dir / f"{card.name}-int8-{card.version}.onnx"
    with tempfile.TemporaryDirectory() as tmp:
        prepared, quantized = Path(tmp) / "prep.onnx", Path(tmp) / "int8.onnx"
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared),
            str(quantized),
            _Reader(images[:CALIBRATION_IMAGES], male[:CALIBRATION_IMAGES]),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            weight_type=QuantType.QInt8,
            activation_type=QuantType.QUInt8,
            calibrate_method=CalibrationMethod.MinMax,
        )
        proto: Any = onnx.load(str(quantized))
    fp32 = card.metrics["validation"]
    unsealed = proto.SerializeToString()
    metrics = summary(ages, onnx_predict(unsealed, images, male))
    metrics["mae_change_vs_fp32"] = metrics["mae"] - fp32["mae"]
    recommended = metrics["mae_change_vs_fp32"] <= MAX_MAE_LOSS
    if not recommended:
        log.warning("int8 model is %.2f months worse than fp32: exported, not recommended", metrics["mae_change_vs_fp32"])
    qcard = card.model_copy(
        update={
            "name": f"{card.name}-int8",
            "metrics": {"validation": metrics, "fp32_validation": fp32},
            "keras_sha256": None,
            "notes": {**card.notes, "quantization": {"type": "int8 static QDQ, per-channel weights, MinMax",
                                                     "calibration_images": min(len(images), CALIBRATION_IMAGES),
                                                     "recommended": recommended}},
        }
    )
    out.write_bytes(attach_card(proto, qcard))
    return _register(out_dir, out, qcard, False, None, quantized="int8", recommended=recommended)
