"""Which int8 recipe keeps an exported model's accuracy: MAE and bias of each variant, its speed and size.

    BONEAGE_DATA=../shared/data python benchmarks/int8_variants.py exported/MODEL.onnx runs/RUN [VARIANT ...]

The run folder gives the split; images are preprocessed as ``boneage evaluate`` does, by the fp32
model's card. (a) is the run's validation images (its own sources), (b) the same ids at higher
resolution (BONEAGE_DATA's rsna-512 and radiographs, where present). Calibration uses
``CALIBRATION_IMAGES`` training images (the export's draw) unless the variant says otherwise.
ms per image: batch 16, 2 threads, each variant timed interleaved with fp32 (median of the rounds).
Results in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnxruntime.quantization import CalibrationMethod, QuantType

from boneage.cli.arguments import existing_file, existing_folder, require, usage_errors
from boneage.estimator import BoneAgeEstimator
from boneage.evaluation import read_ids
from boneage.export.export import preprocessed, with_preprocessing
from boneage.export.quantize import CALIBRATION_IMAGES, correct_bias, prepare, static_int8
from boneage.metrics import report
from boneage.runtimes.onnx import OnnxRuntime
from boneage.training.config import DataSource, load_config
from boneage.training.data import prepare_data, read_source, thin

VARIANTS = ("minmax-256", "minmax-1024", "percentile-99.999", "percentile-99.99", "percentile-99.9999", "entropy",
            "moving-average", "s8s8-symmetric", "float-batchnorm", "float-head", "float-head-and-last-block",
            "int8-to-block1", "int8-to-block2", "int8-to-block3", "minmax-256-corrected", "percentile-99.99-corrected",
            "percentile-99.9999-corrected")
"""The variants main() builds, in its order: the names checked before minutes of preparation."""


def inputs(estimator: BoneAgeEstimator, records: list[Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    images = np.stack([estimator.preprocess(r.path)[0] for r in records]).astype(np.float32)
    male = np.array([[float(r.male)] for r in records], np.float32)
    return images, male, np.array([r.boneage for r in records], float)


def predict(data: bytes, images: np.ndarray, male: np.ndarray) -> np.ndarray:
    runtime = OnnxRuntime(Path("<memory>"), data, threads=2)
    return np.concatenate([runtime.predict(images[i : i + 64], male[i : i + 64]) for i in range(0, len(images), 64)])


def ms_per_image(variant: bytes, fp32: bytes, images: np.ndarray, male: np.ndarray, rounds: int = 5) -> tuple[float, float]:
    """(variant, fp32) ms per image at batch 16, interleaved so both see the same load."""
    runtimes = [OnnxRuntime(Path("<memory>"), d, threads=2) for d in (variant, fp32)]
    times: list[list[float]] = [[], []]
    batch = slice(0, 16)
    for r in runtimes:
        r.predict(images[batch], male[batch])  # warm-up
    for _ in range(rounds):
        for r, t in zip(runtimes, times, strict=True):
            started = time.perf_counter()
            for _ in range(2):
                r.predict(images[batch], male[batch])
            t.append((time.perf_counter() - started) * 1000 / 32)
    return statistics.median(times[0]), statistics.median(times[1])


def row(name: str, sets: list[tuple[np.ndarray, np.ndarray, np.ndarray]], pred: list[np.ndarray], fp32: np.ndarray) -> str:
    cells = []
    for (_, male, ages), p in zip(sets, pred, strict=True):
        r = report(ages, p, male.reshape(-1) > 0.5)
        cells += [f"{r['overall']['mae']:.2f}", f"{r['overall']['bias']:+.2f}"]
    bands = report(sets[0][2], pred[0], sets[0][1].reshape(-1) > 0.5)["by_age"]
    by_age = "/".join(f"{b['bias']:+.1f}" for b in bands.values())
    return f"| {name} | " + " | ".join(cells) + f" | {by_age} | {np.mean(np.abs(pred[0] - fp32)):.2f} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=existing_file, help="the fp32 .onnx of a release")
    parser.add_argument("run", type=existing_folder, help="the training run it was exported from")
    parser.add_argument("variants", nargs="*", metavar="VARIANT", help=f"these only (default: all): {', '.join(VARIANTS)}")
    args = parser.parse_args()
    fp32_path, run, only = args.model, args.run, args.variants
    unknown = [name for name in only if name not in VARIANTS]  # not choices=: argparse then refuses none at all
    if unknown:
        parser.error(f"no variant {', '.join(map(repr, unknown))}: choose from {', '.join(VARIANTS)}")
    require(parser, run / "config.json", run / "data.json", hint="a training run's folder")
    with usage_errors(parser):  # not a model, a config that does not read, its data not there
        estimator = BoneAgeEstimator(str(fp32_path))
        config = with_preprocessing(load_config(run / "config.json"), estimator.card.preprocessing)
        train, val = prepare_data(config)
        ids = read_ids(run / "data.json")
    data = Path(os.environ.get("BONEAGE_DATA", "../shared/data"))
    high = [r for d in ("rsna-512", "radiographs") if (data / d / "labels.csv").is_file()
            for r in read_source(DataSource(labels=data / d / "labels.csv", images=data / d)) if r.id in ids]
    sets = [inputs(estimator, val), inputs(estimator, high)]
    calibration: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    fp32 = fp32_path.read_bytes()
    print(f"(a) {len(val)} images, (b) {len(high)} images; by age: (a)'s bias at 0-2/2-6/6-10/10-14/14-19 y", flush=True)
    print("| variant | (a) MAE | (a) bias | (b) MAE | (b) bias | (a) bias by age | (a) mean abs int8-fp32 | ms/image | vs fp32 | MB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    reference = predict(fp32, *sets[0][:2])
    print(row("fp32", sets, [predict(fp32, i, m) for i, m, _ in sets], reference) + f" - | 1.00 | {len(fp32) / 1e6:.1f} |", flush=True)

    tmp = Path(tempfile.mkdtemp())
    prepared = tmp / "prep.onnx"
    stem = prepare(fp32_path, prepared)
    nodes = onnx.load(str(prepared)).graph.node
    gap = next(i for i, n in enumerate(nodes) if n.op_type == "GlobalAveragePool")
    pools = [i for i, n in enumerate(nodes) if n.op_type == "AveragePool"]  # the transitions' pools
    block4 = pools[-1]
    producer = {o: n for n in nodes for o in n.output}
    backbone, todo = set(), [nodes[gap]]
    while todo:  # the pooling and everything it depends on
        node = todo.pop()
        if node.name not in backbone:
            backbone.add(node.name)
            todo += [producer[i] for i in node.input if i in producer]
    head = [n.name for n in nodes if n.name not in backbone]  # after pooling, and the sex input's branch
    last_block = [n.name for n in nodes[block4 + 1 : gap + 1]]
    print(f"head: {len(head)} nodes, last block: {len(last_block)} nodes", flush=True)
    variants: dict[str, dict[str, Any]] = {
        "minmax-256": {},
        "minmax-1024": {"calibration": 1024},
        "percentile-99.999": {"calibrate_method": CalibrationMethod.Percentile,
                              "extra_options": {"CalibPercentile": 99.999}},
        "percentile-99.99": {"calibrate_method": CalibrationMethod.Percentile,
                             "extra_options": {"CalibPercentile": 99.99}},
        "percentile-99.9999": {"calibrate_method": CalibrationMethod.Percentile,
                               "extra_options": {"CalibPercentile": 99.9999}},
        "entropy": {"calibrate_method": CalibrationMethod.Entropy},
        "moving-average": {"extra_options": {"CalibMovingAverage": True}},
        "s8s8-symmetric": {"activation_type": QuantType.QInt8, "extra_options": {"ActivationSymmetric": True}},
        "float-batchnorm": {"nodes_to_exclude": stem + [n.name for n in nodes if n.op_type in ("Mul", "Add")]},
        "float-head": {"nodes_to_exclude": stem + head},
        "float-head-and-last-block": {"nodes_to_exclude": stem + head + last_block},
        # quantized up to the end of dense block 1, 2, 3 only: where the bias arises
        **{f"int8-to-block{b}": {"nodes_to_exclude": stem + [n.name for n in nodes[pools[b - 1]:]]} for b in (1, 2, 3)},
        # the output less the int8 model's mean shift from fp32 on the calibration images (correct_bias)
        "minmax-256-corrected": {"corrected": True},
        "percentile-99.99-corrected": {"calibrate_method": CalibrationMethod.Percentile, "corrected": True,
                                       "extra_options": {"CalibPercentile": 99.99}},
        "percentile-99.9999-corrected": {"calibrate_method": CalibrationMethod.Percentile, "corrected": True,
                                         "extra_options": {"CalibPercentile": 99.9999}},
    }
    assert tuple(variants) == VARIANTS, "VARIANTS names what is built here"
    for name in only or variants:
        options = dict(variants[name])
        options["nodes_to_exclude"] = options.get("nodes_to_exclude", stem)  # the stem stays float throughout
        count = options.pop("calibration", CALIBRATION_IMAGES)
        if count not in calibration:
            calibration[count] = preprocessed(thin(train, count, config.seed), config)[:2]
        corrected = options.pop("corrected", False)
        out = tmp / f"{name}.onnx"
        static_int8(prepared, out, calibration[count], **options)
        shift = correct_bias(prepared, out, calibration[count]) if corrected else 0.0
        q = out.read_bytes()
        line = row(name + (f" ({-shift:+.2f})" if corrected else ""), sets, [predict(q, i, m) for i, m, _ in sets], reference)
        ms, ms_fp32 = ms_per_image(q, fp32, *sets[0][:2])
        print(f"{line} {ms:.1f} | {ms_fp32 / ms:.2f} | {len(q) / 1e6:.1f} |", flush=True)
    print(f"models in {tmp}", flush=True)


if __name__ == "__main__":
    main()
