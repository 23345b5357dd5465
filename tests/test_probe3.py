"""What was left after the second probe (issue 19): memory that grew with a crafted input, and a
model card that could choose a file to open. One test each."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from boneage import onnxwire
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
