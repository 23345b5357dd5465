"""Which int8 recipe keeps an exported model's accuracy: validation MAE of each variant.

    BONEAGE_DATA=../shared/data python benchmarks/int8_variants.py exported/MODEL.onnx runs/RUN [VARIANT ...]

The run folder gives the split and preprocessing; calibration uses 512 training images unless
the variant says otherwise. Results for DenseNet121 0.2.0 are in docs/benchmarks.md.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

from boneage.export.export import onnx_predict, preprocessed
from boneage.metrics import summary
from boneage.training.config import load_config
from boneage.training.data import prepare_data, thin


class Reader:
    def __init__(self, images: np.ndarray, male: np.ndarray, batch: int = 16) -> None:
        self.batches = iter([{"image": images[i : i + batch], "male": male[i : i + batch]}
                             for i in range(0, len(images), batch)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self.batches, None)


def main() -> None:
    fp32, run, only = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:]
    config = load_config(run / "config.json")
    train, val = prepare_data(config)
    images, male, ages = preprocessed(val, config)
    cal_images, cal_male, _ = preprocessed(thin(train, 512, 0), config)
    print(f"fp32 MAE {summary(ages, onnx_predict(fp32.read_bytes(), images, male))['mae']:.2f}", flush=True)

    tmp = Path(tempfile.mkdtemp())
    prepared = tmp / "prep.onnx"
    quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
    nodes = onnx.load(str(prepared)).graph.node
    stem = [n.name for n in nodes if n.op_type == "Conv"][:1]
    head = [n.name for n in nodes if n.op_type in ("Gemm", "MatMul")]
    variants: dict[str, dict[str, Any]] = {
        "minmax-val128": {"calibration": (images[:128], male[:128])},
        "minmax-train512": {},
        "percentile": {"calibrate_method": CalibrationMethod.Percentile, "extra_options": {"CalibPercentile": 99.99}},
        "entropy": {"calibrate_method": CalibrationMethod.Entropy},
        "s8s8": {"activation_type": QuantType.QInt8},
        "float-head": {"nodes_to_exclude": head},
        "float-stem": {"nodes_to_exclude": stem},
        "float-stem-and-head": {"nodes_to_exclude": stem + head},
    }
    for name in only or variants:
        options = dict(variants[name])
        calibration = options.pop("calibration", (cal_images, cal_male))
        args: dict[str, Any] = {"quant_format": QuantFormat.QDQ, "per_channel": True, "weight_type": QuantType.QInt8,
                                "activation_type": QuantType.QUInt8, "calibrate_method": CalibrationMethod.MinMax}
        started, out = time.time(), tmp / f"{name}.onnx"
        quantize_static(str(prepared), str(out), Reader(*calibration), **{**args, **options})
        s = summary(ages, onnx_predict(out.read_bytes(), images, male))
        print(f"{name}: MAE {s['mae']:.2f} bias {s['bias']:+.2f} ({time.time() - started:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
