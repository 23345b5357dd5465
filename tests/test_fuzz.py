"""Property-based fuzzing of image loading and preprocessing: any input either works or raises a
BoneAgeError; nothing else escapes. Bounded by example counts and sizes, not by time: how long a
decode takes depends on the machine, so a deadline made the results depend on its load. The
examples are the same on every run (tests/conftest.py), so a failure is a failure of the code."""

from __future__ import annotations

import os

import cv2
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from boneage.errors import BoneAgeError
from boneage.imageio import load_image
from boneage.preprocess import PreprocessConfig, StepConfig, build_pipeline
from tests.helpers import synthetic_radiograph

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
PNG = cv2.imencode(".png", synthetic_radiograph(96, 80))[1].tobytes()
JPEG = cv2.imencode(".jpg", synthetic_radiograph(96, 80))[1].tobytes()


def check(source: object) -> None:
    try:
        image = load_image(source)  # type: ignore[arg-type]
    except BoneAgeError:
        return
    assert isinstance(image, np.ndarray) and image.ndim in (2, 3)


@FUZZ
@given(st.binary(max_size=4096))
def test_random_bytes(data: bytes) -> None:
    check(data)


@FUZZ
@given(st.sampled_from([PNG, JPEG]), st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=8),
       st.integers(0, 4096))
def test_corrupted_png_and_jpeg(base: bytes, flips: list[tuple[int, int]], cut: int) -> None:
    data = bytearray(base[: max(0, len(base) - cut)])
    for pos, value in flips:
        if data:
            data[pos % len(data)] = value
    check(bytes(data))


PIPELINE = PreprocessConfig(steps=(
    StepConfig(name="grayscale"), StepConfig(name="invert"), StepConfig(name="hand_crop"),
    StepConfig(name="resize", params={"size": 64, "mode": "pad"}), StepConfig(name="clahe"), StepConfig(name="normalize"),
))


@FUZZ
@given(arrays(st.sampled_from([np.uint8, np.uint16, np.float32]),
              st.tuples(st.integers(1, 120), st.integers(1, 120)) | st.tuples(st.integers(1, 90), st.integers(1, 90), st.sampled_from([1, 2, 3, 4, 5])),
              elements=st.integers(0, 255)))
def test_arrays_through_the_pipeline(array: np.ndarray) -> None:
    pipeline = build_pipeline(PIPELINE)
    try:
        image = load_image(array)
    except BoneAgeError:
        return
    out = pipeline(image)
    assert out.shape == (64, 64, 1) and out.dtype == np.float32 and np.isfinite(out).all()
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0


FUZZ_TESTS = [test_random_bytes, test_corrupted_png_and_jpeg, test_arrays_through_the_pipeline]


def test_fuzz_results_do_not_depend_on_machine_speed_or_earlier_runs() -> None:
    for test in FUZZ_TESTS:
        used = test._hypothesis_internal_use_settings  # type: ignore[attr-defined]
        assert used.deadline is None, f"{test.__name__}: a deadline fails on a slow or busy machine"
        if os.environ.get("BONEAGE_HYPOTHESIS_PROFILE", "deterministic") == "deterministic":
            assert used.derandomize and used.database is None, f"{test.__name__}: replays what an earlier run stored"
