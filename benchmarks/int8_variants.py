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

import onnx
from onnxruntime.quantization import CalibrationMethod, QuantType

from boneage.export.export import onnx_predict, preprocessed
from boneage.export.quantize import prepare, static_int8
from boneage.metrics import summary
from boneage.training.config import load_config
from boneage.training.data import prepare_data, thin


def main() -> None:
    fp32, run, only = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:]
    config = load_config(run / "config.json")
    train, val = prepare_data(config)
    images, male, ages = preprocessed(val, config)
    cal_images, cal_male, _ = preprocessed(thin(train, 512, 0), config)
    print(f"fp32 MAE {summary(ages, onnx_predict(fp32.read_bytes(), images, male))['mae']:.2f}", flush=True)

    tmp = Path(tempfile.mkdtemp())
    prepared = tmp / "prep.onnx"
    stem = prepare(fp32, prepared)
    head = [n.name for n in onnx.load(str(prepared)).graph.node if n.op_type in ("Gemm", "MatMul")]
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
        started, out = time.time(), tmp / f"{name}.onnx"
        static_int8(prepared, out, calibration, **options)  # the export recipe, all int8, unless overridden
        s = summary(ages, onnx_predict(out.read_bytes(), images, male))
        print(f"{name}: MAE {s['mae']:.2f} bias {s['bias']:+.2f} ({time.time() - started:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
