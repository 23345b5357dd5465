"""What the fifteenth probe's closing note left open, fixed in the next session."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from boneage import BoneAgeEstimator
from boneage.errors import InvalidModelError
from boneage.runtimes.onnxbudget import check_graph_size
from boneage.training.config import TrainConfig
from tests.helpers import synthetic_radiograph, tiny_proto, write_png


def test_numpy_scalars_in_options_are_written_as_plain_json() -> None:
    # np.float32 options were accepted, trained on, then failed writing config.json (PydanticSerializationError)
    steps = [{"name": "grayscale"}, {"name": "resize", "params": {"size": np.int64(100)}},
             {"name": "clahe", "params": {"clip_limit": np.float32(2.0)}}, {"name": "normalize"}]
    config = TrainConfig(backbone="densenet121", backbone_options={"dropout": np.float32(0.25),
                                                                   "plugin": {"sizes": [np.int64(3), np.arange(2)]}},
                         preprocessing={"steps": steps}, sources=[{"labels": "a.csv", "images": "b"}])
    written = json.loads(config.model_dump_json())
    assert written["backbone_options"] == {"dropout": 0.25, "plugin": {"sizes": [3, [0, 1]]}}
    assert [s["params"] for s in written["preprocessing"]["steps"]][1:3] == [{"size": 100}, {"clip_limit": 2.0}]
    assert TrainConfig.model_validate(written) == config  # and read back as it was


# -- Resize: a plugin resampling inside its graph was refused; now allowed with a static output size ---------------

onnx = pytest.importorskip("onnx")
from onnx import helper  # noqa: E402

from tests.test_probe15_onnx import NCHW, SIZE, const, sealed, with_side  # noqa: E402


def resized(sizes: Any, **attributes: Any) -> Any:
    return with_side([NCHW, *sizes, helper.make_node("Resize", ["nchw", "", "", "sizes"], ["side"], **attributes)])


def test_a_graph_may_resize_to_a_static_size(tmp_path: Path, models_dir: Path) -> None:
    plain = BoneAgeEstimator(sealed(tmp_path / "plain.onnx", tiny_proto(SIZE)))
    model = resized([const("sizes", np.array([1, 1, SIZE // 2, SIZE // 3], np.int64))], mode="cubic", antialias=1)
    estimator = BoneAgeEstimator(sealed(tmp_path / "resize.onnx", model))
    image = synthetic_radiograph()
    assert estimator.predict(image, male=True).bone_age_months == pytest.approx(
        plain.predict(image, male=True).bone_age_months)


def test_a_resize_is_charged_what_it_reads_and_makes() -> None:
    def work(side: int) -> int:
        data = resized([const("sizes", np.array([1, 1, side, side], np.int64))], mode="cubic", antialias=1)
        return check_graph_size(data.SerializeToString(), "m", SIZE).work

    # 64 -> 2: each of 4 outputs reads 4 x 32 taps per axis (65,536 in all); 64 -> 64 visits each pixel once
    assert work(2) - work(SIZE) > 12 * SIZE * SIZE
    with pytest.raises(InvalidModelError, match="allocates"):  # 30000 x 30000 floats: 3.4 GiB
        work(30_000)


def test_a_resize_sized_by_the_images_values_is_refused() -> None:
    nodes = [helper.make_node("ReduceMax", ["image"], ["peak"], keepdims=0), const("times", np.float32(1000)),
             helper.make_node("Mul", ["peak", "times"], ["wide_f"]),
             helper.make_node("Cast", ["wide_f"], ["wide"], to=onnx.TensorProto.INT64),
             const("axis", np.array([0], np.int64)), helper.make_node("Unsqueeze", ["wide", "axis"], ["wide_v"]),
             const("head", np.array([1, 1, 8], np.int64)), helper.make_node("Concat", ["head", "wide_v"], ["sizes"], axis=0)]
    with pytest.raises(InvalidModelError, match="has no static size"):
        check_graph_size(resized(nodes, mode="linear").SerializeToString(), "m", SIZE)


# -- a PNG cut before its IEND chunk: refused before libpng prints on the caller's stderr --------------------------


def test_a_png_without_its_iend_is_refused_quietly(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    from boneage.errors import ImageReadError
    from boneage.imageio import read_image

    whole = write_png(tmp_path / "whole.png", synthetic_radiograph()).read_bytes()
    assert whole[-12:-4] == b"\0\0\0\0IEND"
    capfd.readouterr()
    with pytest.raises(ImageReadError, match="ends before its IEND chunk"):
        read_image(whole[:-12])
    assert capfd.readouterr().err == ""  # was "libpng error: PNG input buffer is incomplete"


# -- --resume of a CSV or JSON Lines file of blank lines: memory follows the file's bytes --------------------------


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_resume_reads_blank_lines_in_memory_of_the_files_size(tmp_path: Path, suffix: str) -> None:
    import tracemalloc

    from boneage.cli.results import COLUMNS, ResultFile

    path = tmp_path / f"results{suffix}"
    path.write_text((",".join(COLUMNS) + "\r\n" if suffix == ".csv" else "") + "\n" * 500_000)
    tracemalloc.start()
    try:
        results = ResultFile(path, resume=True, force=False)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    results.close()
    # a list of the records took 70 bytes per byte for CSV (1.5 GB for 20 MB), 8 for JSON Lines; now the text, twice
    assert sum(results.done.values()) == 0 and peak < 6 * path.stat().st_size


def test_a_resize_is_charged_the_tensor_between_its_axes() -> None:
    """64x64 antialiased to 1x7 M: 28 MiB of output, but ONNX Runtime's step between the axes held 64 x 7 M (2.2 GB)."""
    model = resized([const("sizes", np.array([1, 1, 1, 7 * 2**20], np.int64))], mode="cubic", antialias=1)
    with pytest.raises(InvalidModelError, match="allocates"):
        check_graph_size(model.SerializeToString(), "m", SIZE)
