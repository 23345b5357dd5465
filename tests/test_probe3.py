"""What was left after the second probe (issue 19): memory that grew with a crafted input, and a
model card that could choose a file to open. One test each."""

from __future__ import annotations

import csv
import json
import shutil
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from boneage import onnxwire
from boneage.cli.main import main
from boneage.modelcard import ModelCard
from boneage.onnxwire import WireError, external_tensors
from boneage.preprocess.builtin import to_uint8_gray
from tests.helpers import tiny_card


def length_delimited(number: int, payload: bytes) -> bytes:
    key, size, length = bytes([number << 3 | 2]), bytearray(), len(payload)
    while True:
        size.append((length & 0x7F) | (0x80 if length >> 7 else 0))
        length >>= 7
        if not length:
            return key + bytes(size) + payload


def peak_bytes(fn: object, *args: object) -> int:
    tracemalloc.start()
    try:
        fn(*args)  # type: ignore[operator]
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_model_of_many_empty_nodes_is_scanned_in_constant_memory() -> None:
    model = length_delimited(7, b"\x0a\x00" * 200_000)  # a graph of 200,000 empty nodes: 400 KB
    assert peak_bytes(external_tensors, model) < 1_000_000  # was 26 MB: one pending span per node


def test_messages_nested_deeper_than_protobuf_parses_are_refused() -> None:
    inner = b""
    for _ in range(200):  # node -> attribute -> subgraph -> node ...
        inner = length_delimited(1, length_delimited(5, length_delimited(6, inner)))
    with pytest.raises(WireError, match="nested more than"):
        external_tensors(length_delimited(7, inner))


def test_the_field_count_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(onnxwire, "MAX_FIELDS", 1000)
    external_tensors(length_delimited(7, b"\x0a\x00" * 900))
    with pytest.raises(WireError, match="more than 1,000 protobuf fields"):
        external_tensors(length_delimited(7, b"\x0a\x00" * 1100))


def test_sixteen_bit_to_eight_bit_makes_no_float_copy() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(1000, 50_000, (1000, 1000)).astype(np.uint16)
    lo, hi = int(image.min()), int(image.max())
    expected = np.clip(np.rint((image.astype(np.float64) - lo) * (255 / (hi - lo))), 0, 255).astype(np.uint8)
    assert np.abs(to_uint8_gray(image).astype(int) - expected).max() <= 1
    assert peak_bytes(to_uint8_gray, image) < image.nbytes  # three 4 MB float copies before


@pytest.mark.parametrize("options", [{"model_path": "/etc/passwd"}, {"fallback": {}, "model_path": "../x.task"}])
def test_a_card_cannot_name_a_file_to_open(options: dict[str, object]) -> None:
    steps = [{"name": "hand_crop", "params": {"cropper": "mediapipe", "options": options}},
             *tiny_card().model_dump(mode="json")["preprocessing"]["steps"]]
    with pytest.raises(ValueError, match=r"names files to read \(hand_crop.options.model_path\)"):
        ModelCard.model_validate({**tiny_card().model_dump(mode="json"), "preprocessing": {"steps": steps}})


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_resume_tries_again_what_failed(tiny_model: Path, radiograph_png: Path, tmp_path: Path, suffix: str,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    if suffix == ".parquet":
        pytest.importorskip("pyarrow", reason="Parquet output needs the parquet extra")
    late = tmp_path / "late.png"  # missing on the first run, there on the second
    results = tmp_path / f"results{suffix}"
    command = ["predict", str(radiograph_png), str(late), "--sex", "f", "--model", str(tiny_model),
               "--output", str(results)]
    assert main(command) == 2
    shutil.copy(radiograph_png, late)
    assert main([*command, "--resume"]) == 0
    rows = read_rows(results)
    assert [(Path(r["source"]).name, bool(r.get("error_type") or r.get("error"))) for r in rows] == [
        (radiograph_png.name, False), ("late.png", True), ("late.png", False)]
    capsys.readouterr()


def read_rows(path: Path) -> list[dict[str, object]]:
    if path.suffix == ".csv":
        return list(csv.DictReader(path.open()))
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text().splitlines()]
    import pyarrow.parquet as pq

    return list(pq.read_table(path).to_pylist())


def test_csv_list_columns_match_whatever_their_case(tiny_model: Path, radiograph_png: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    listing = tmp_path / "list.csv"
    listing.write_text(f" Path ,SEX,Age\n{radiograph_png.name},F,10y\n")
    assert main(["predict", "--csv", str(listing), "--model", str(tiny_model), "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["male"] is False and row["comparison"]["chronological_age_months"] == 120
