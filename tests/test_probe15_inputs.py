"""What the fifteenth outside probe found in reading images through the API: one PIL image read by several
threads at once (finding 3), arrays converted and scanned before their size was checked, a released
memoryview, and a decoding failure that lost a whole ``predict_many`` (finding 7), a CIELab TIFF (observation)."""

from __future__ import annotations

import io
import threading
import time
import tracemalloc
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from boneage import BoneAgeEstimator, imageio
from boneage.decoded import MAX_ARRAY_BYTES, check_array
from boneage.errors import ImageReadError, ImageTooLargeError, UnsupportedImageError
from boneage.imageio import read_image
from tests.helpers import synthetic_radiograph

# --- 3: one PIL image read by several threads ------------------------------------------------------------


def encoded(image: np.ndarray, fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, fmt)
    return buffer.getvalue()


def spied_load(image: Any, inside: Callable[[], None]) -> None:
    """``image.load`` calls ``inside`` before loading (Pillow's convert and asarray call it too)."""
    load = image.load

    def spy() -> Any:
        inside()
        return load()

    image.load = spy


def test_one_pil_image_is_loaded_by_one_thread_at_a_time() -> None:
    image = Image.open(io.BytesIO(encoded(synthetic_radiograph(), "PNG")))  # lazily: not loaded yet
    active, most = [0], [0]
    guard = threading.Lock()

    def inside() -> None:
        with guard:
            active[0] += 1
            most[0] = max(most[0], active[0])
        time.sleep(0.05)  # a decode's time, for the other thread to come in
        with guard:
            active[0] -= 1

    spied_load(image, inside)
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(read_image, [image] * 4))
    assert most[0] == 1  # was: 2 or more, Pillow's loaders sharing the file and the decoder
    assert all(np.array_equal(r.image, synthetic_radiograph()) for r in results)


def test_different_pil_images_are_loaded_at_once() -> None:
    """The lock is the image's own: two images still decode in parallel (da238d7, row P13-R6)."""
    data = encoded(synthetic_radiograph(), "PNG")
    images = [Image.open(io.BytesIO(data)) for _ in range(2)]
    both = threading.Barrier(2, timeout=10)  # broken if one waited for the other's load
    for image in images:
        spied_load(image, lambda: both.wait() if not both.broken else None)
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(read_image, images))
    assert not both.broken and all(np.array_equal(r.image, synthetic_radiograph()) for r in results)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "TIFF"])
def test_one_pil_image_given_many_times_gets_right_answers(fmt: str, tiny_model: Path, tmp_path: Path) -> None:
    gray = synthetic_radiograph(1500, 1200)
    data = encoded(gray, fmt)
    (tmp_path / f"hand.{fmt}").write_bytes(data)
    estimator = BoneAgeEstimator(tiny_model)
    right = [estimator.predict(tmp_path / f"hand.{fmt}", male=male).bone_age_months for male in (True, False)]
    for copies in (2, 16):
        image = Image.open(io.BytesIO(data))
        results = estimator.predict_many([image] * copies, [True, False] * (copies // 2), workers=4)
        # was: AssertionError out of predict_many (PNG), or wrong answers with no error (JPEG, TIFF)
        assert [r.bone_age_months for r in results] == right * (copies // 2)  # type: ignore[union-attr]


@pytest.mark.parametrize("error", [AssertionError(), IndexError("tile index out of range"), KeyError("mode")])
def test_what_pillow_raises_while_loading_is_an_image_read_error(error: Exception) -> None:
    image = Image.open(io.BytesIO(encoded(synthetic_radiograph(), "PNG")))

    def broken() -> None:
        raise error

    spied_load(image, broken)
    with pytest.raises(ImageReadError, match="the PIL image cannot be read"):
        read_image(image)  # was: the AssertionError itself (Pillow's `assert self.png is not None`)


# --- 7: arrays checked from their shape first; memoryviews; a failure in its place ------------------------


def peak_while(call: Callable[[], object]) -> int:
    """Bytes NumPy (which reports its buffers to tracemalloc) allocated at most during ``call``, which raises."""
    tracemalloc.start()
    try:
        with pytest.raises(ImageTooLargeError):
            call()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("dtype", ["float32", ">f4", ">u2", "float64"])
def test_a_broadcast_array_is_refused_from_its_shape(dtype: str) -> None:
    """9000x9000 pixels of 4 bytes: was converted (big-endian) or scanned for NaN (float) first, 81 to 324 MB."""
    view = np.broadcast_to(np.array(0.5 if np.dtype(dtype).kind == "f" else 5, dtype), (9000, 9000))
    assert peak_while(lambda: read_image(view)) < 2**20


def test_an_array_larger_than_an_image_may_take_is_refused_before_it_is_read() -> None:
    view = np.broadcast_to(np.float32(0.5), (8000, 8000, 3))  # 64 MP: pixels allowed, 768 MiB as float32
    assert view.nbytes > MAX_ARRAY_BYTES
    assert peak_while(lambda: check_array(view)) < 2**20  # was: a 192 MB scan for NaN, then accepted


def test_a_nan_float_array_is_refused_without_an_array_of_flags() -> None:
    image = np.full((3000, 3000), 0.5)
    image[5, 5] = np.nan
    tracemalloc.start()
    try:
        with pytest.raises(UnsupportedImageError, match="NaN or infinite"):
            check_array(image)
        assert tracemalloc.get_traced_memory()[1] < 2**20  # was: np.isfinite's 9 MB of flags
    finally:
        tracemalloc.stop()


def test_arrays_are_read_as_before() -> None:
    gray = synthetic_radiograph()
    wide = gray.astype(np.uint16) * 257
    assert np.array_equal(check_array(wide.astype(">u2")), wide)
    assert check_array((gray / 255).astype(">f8")).dtype == np.float32
    with pytest.raises(UnsupportedImageError, match="not in"):
        check_array(gray / 255 + 1)
    with pytest.raises(UnsupportedImageError, match="has dtype uint32"):
        check_array(wide.astype(">u4"))


def released() -> memoryview:
    view = memoryview(encoded(synthetic_radiograph(), "PNG"))
    view.release()
    return view


def test_a_released_memoryview_is_an_unsupported_image() -> None:
    with pytest.raises(UnsupportedImageError, match="released memoryview"):
        read_image(released())  # was: ValueError "operation forbidden on released memoryview object"


def test_image_bytes_larger_than_a_file_may_be_are_refused_before_they_are_copied(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(imageio, "MAX_BYTES", 1000)
    with pytest.raises(ImageTooLargeError, match="more than the 0 MiB"):
        read_image(memoryview(bytearray(1001)))


def test_running_out_of_memory_while_reading_is_an_image_too_large_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_memory(*args: object, **kwargs: object) -> object:
        raise MemoryError

    monkeypatch.setattr(imageio, "decode", no_memory)
    with pytest.raises(ImageTooLargeError, match="not enough memory"):
        read_image(encoded(synthetic_radiograph(), "PNG"))  # was: MemoryError


@pytest.mark.parametrize("workers", [0, 2])
def test_a_bad_input_keeps_its_place_in_predict_many(workers: int, tiny_model: Path) -> None:
    gray = synthetic_radiograph()
    bad = [np.broadcast_to(np.array(5, ">u2"), (9000, 9000)), released()]
    results = BoneAgeEstimator(tiny_model).predict_many([gray, *bad, gray], [True] * 4, workers=workers)
    # was: the MemoryError or ValueError out of predict_many, every answer lost
    assert [type(r).__name__ for r in results] == ["Prediction", "ImageTooLargeError", "UnsupportedImageError",
                                                  "Prediction"]


# --- observation: a CIELab TIFF ---------------------------------------------------------------------------


def test_a_cielab_tiff_is_refused_as_a_pil_lab_image_is(tmp_path: Path) -> None:
    lab = Image.fromarray(synthetic_radiograph()).convert("RGB").convert("LAB")
    lab.save(tmp_path / "lab.tif")
    with pytest.raises(UnsupportedImageError, match=r"CIELab colour \(photometric 8\)"):
        read_image(tmp_path / "lab.tif")  # was: decoded to a tinted RGB and answered 7 months off
