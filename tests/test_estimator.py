"""The facade on a real ONNX Runtime path, with tiny models built here."""

from __future__ import annotations

import json
import struct
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest

from boneage import BoneAgeEstimator, Prediction
from boneage.errors import (
    ChecksumMismatchError,
    ImageReadError,
    InputError,
    InvalidModelError,
    ModelNotFoundError,
    NotARadiographError,
    SexError,
)
from boneage.export.onnxcard import attach_card
from boneage.modelcard import file_sha256
from boneage.models import Registry, RegistryEntry, save_registry
from boneage.preprocess import build_pipeline
from tests.helpers import expected_months, synthetic_radiograph, tiny_card, tiny_proto, write_tiny_model


def reference(estimator: BoneAgeEstimator, image: np.ndarray, male: bool) -> float:
    return expected_months(build_pipeline(estimator.card.preprocessing)(image), male)


def test_predict_from_path_bytes_and_array(tiny_model: Path, radiograph: np.ndarray, radiograph_png: Path) -> None:
    est = BoneAgeEstimator(tiny_model)
    want = reference(est, radiograph, True)
    for source in (radiograph_png, str(radiograph_png), radiograph_png.read_bytes(), radiograph):
        p = est.predict(source, male=True)
        assert p.bone_age_months == pytest.approx(want, abs=0.01)
        assert p.bone_age_years == pytest.approx(want / 12, abs=0.01)
    assert (p.model_name, p.model_version, p.runtime) == ("tiny", "1.0.0", "onnx")


def test_sex_changes_the_answer(tiny_model: Path, radiograph: np.ndarray) -> None:
    est = BoneAgeEstimator(tiny_model)
    diff = est.predict(radiograph, male=True).bone_age_months - est.predict(radiograph, male=False).bone_age_months
    assert diff == pytest.approx(10.0, abs=0.01)


def test_rgb_rgba_and_16_bit_arrays(tiny_model: Path, radiograph: np.ndarray) -> None:
    est = BoneAgeEstimator(tiny_model)
    gray = est.predict(radiograph, True).bone_age_months
    assert est.predict(cv2.cvtColor(radiograph, cv2.COLOR_GRAY2RGB), True).bone_age_months == pytest.approx(gray, abs=0.5)
    assert est.predict(cv2.cvtColor(radiograph, cv2.COLOR_GRAY2RGBA), True).bone_age_months == pytest.approx(gray, abs=0.5)
    # the same picture in 16 bits (x 257) is the same image; as 12-bit data in 16 bits, it is read as 12 bits
    assert est.predict(radiograph.astype(np.uint16) * 257, True).bone_age_months == gray
    assert est.predict(radiograph.astype(np.uint16) * 16, True).bone_age_months == pytest.approx(gray, abs=0.5)


def test_prediction_is_json(tiny_model: Path, radiograph_png: Path) -> None:
    p = BoneAgeEstimator(tiny_model).predict(radiograph_png, male=False)
    data = json.loads(p.model_dump_json())
    assert data["source"] == str(radiograph_png) and data["male"] is False
    assert Prediction.model_validate(data) == p


def test_batch_calls_and_matches_single(tiny_model: Path, radiograph: np.ndarray) -> None:
    est = BoneAgeEstimator(tiny_model)
    images = [radiograph, np.flipud(radiograph), radiograph[:200]]
    sexes = [True, False, True]
    calls = []
    original = est.runtime.predict
    est.runtime.predict = lambda i, m: calls.append(len(i)) or original(i, m)  # type: ignore[method-assign]
    batch = est.predict_batch(images, sexes)
    assert calls == [3]
    assert [b.bone_age_months for b in batch] == [est.predict(i, s).bone_age_months for i, s in zip(images, sexes, strict=False)]
    calls.clear()
    chunked = est.predict_many(images + ["missing.png"], sexes + [True], batch_size=2)  # bounded memory
    assert calls == [2, 1] and isinstance(chunked[3], ImageReadError)
    assert [c.bone_age_months for c in chunked[:3]] == [b.bone_age_months for b in batch]  # type: ignore[union-attr]


def test_batch_length_mismatch(tiny_model: Path, radiograph: np.ndarray) -> None:
    with pytest.raises(InputError):
        BoneAgeEstimator(tiny_model).predict_batch([radiograph], [True, False])


@pytest.mark.parametrize("bad", [None, "yes", "male", 2, 0.5])
def test_bad_sex(tiny_model: Path, radiograph: np.ndarray, bad: object) -> None:
    with pytest.raises(SexError):
        BoneAgeEstimator(tiny_model).predict(radiograph, male=bad)


def test_shared_between_threads(tiny_model: Path) -> None:
    """One estimator, 8 threads, 1,000 predictions: exactly the sequential numbers."""
    images = [synthetic_radiograph(90, 70, seed=k) for k in range(50)]
    jobs = [(k % 50, k % 3 == 0) for k in range(1000)]
    est = BoneAgeEstimator(tiny_model)
    sequential = [est.predict(images[i], m).bone_age_months for i, m in jobs]
    with ThreadPoolExecutor(8) as pool:
        parallel = list(pool.map(lambda job: est.predict(images[job[0]], job[1]).bone_age_months, jobs))
    assert parallel == sequential and len(set(sequential)) > 50


def test_doubtful_inputs_are_flagged(tiny_model: Path, radiograph: np.ndarray) -> None:
    est = BoneAgeEstimator(tiny_model)
    assert est.predict(radiograph, True).warnings == ()
    with pytest.raises(NotARadiographError, match="blank"):  # refused by default (issue 18)
        est.predict(np.full((100, 100), 128, np.uint8), True)
    assert "blank" in BoneAgeEstimator(tiny_model, check_input=False).predict(np.full((100, 100), 128, np.uint8), True).warnings[0]
    assert any("inverted" in w for w in est.predict(255 - radiograph, True).warnings)
    noise = np.random.default_rng(0).integers(0, 256, (120, 120), dtype=np.uint8)
    assert any("no hand" in w for w in est.predict(noise, True).warnings)


def test_missing_model(models_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError):
        BoneAgeEstimator(tmp_path / "absent.onnx")
    with pytest.raises(ModelNotFoundError, match="no default model"):
        BoneAgeEstimator()
    with pytest.raises(ModelNotFoundError, match="no model named"):
        BoneAgeEstimator("no-such-model")


def test_unknown_runtime(tiny_model: Path) -> None:
    from boneage.errors import PluginNotFoundError

    with pytest.raises(PluginNotFoundError, match="registered: onnx, tensorflow"):
        BoneAgeEstimator(tiny_model, runtime="nope")


def test_tampered_model_refused(tiny_model: Path) -> None:
    data = bytearray(tiny_model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    tiny_model.write_bytes(bytes(data))
    with pytest.raises((ChecksumMismatchError, InvalidModelError)):
        BoneAgeEstimator(tiny_model)


def test_changed_weight_refused(tiny_model: Path) -> None:
    data = tiny_model.read_bytes()
    changed = data.replace(struct.pack("<f", 100.0), struct.pack("<f", 101.0), 1)
    assert changed != data
    tiny_model.write_bytes(changed)
    with pytest.raises(ChecksumMismatchError, match="sha256"):
        BoneAgeEstimator(tiny_model)


def test_truncated_model_refused(tiny_model: Path) -> None:
    data = tiny_model.read_bytes()
    tiny_model.write_bytes(data[: len(data) // 2])
    with pytest.raises(InvalidModelError):
        BoneAgeEstimator(tiny_model)


def test_model_without_card_refused(tmp_path: Path, models_dir: Path) -> None:
    path = tmp_path / "plain.onnx"
    path.write_bytes(tiny_proto(64).SerializeToString())
    with pytest.raises(InvalidModelError, match="no boneage model card"):
        BoneAgeEstimator(path)


def test_other_schema_refused(tmp_path: Path, models_dir: Path) -> None:
    path = write_tiny_model(tmp_path / "future.onnx", card=tiny_card(schema_version="9.0"))
    with pytest.raises(InvalidModelError, match="schema '9.0' is not supported"):
        BoneAgeEstimator(path)


def test_wrong_input_names_refused(tmp_path: Path, models_dir: Path) -> None:
    path = write_tiny_model(tmp_path / "odd.onnx", input_names=("pixels", "sex"))
    with pytest.raises(InvalidModelError, match="has inputs"):
        BoneAgeEstimator(path)


def test_not_onnx_at_all(tmp_path: Path, models_dir: Path) -> None:
    path = tmp_path / "junk.onnx"
    path.write_bytes(b"\x00garbage" * 50)
    with pytest.raises(InvalidModelError):
        BoneAgeEstimator(path)


def registered(models_dir: Path) -> Path:
    path = write_tiny_model(models_dir / "tiny-1.0.0.onnx")
    entry = RegistryEntry(name="tiny", version="1.0.0", file=path.name, sha256=file_sha256(path),
                          size=path.stat().st_size, backbone="tiny-mean")
    save_registry(Registry(default="tiny-1.0.0", models=[entry]), models_dir)
    return path


def test_default_and_named_models_from_registry(models_dir: Path, radiograph: np.ndarray) -> None:
    registered(models_dir)
    for ref in (None, "tiny", "tiny-1.0.0", "tiny@1.0.0"):
        assert BoneAgeEstimator(ref).card.ref == "tiny-1.0.0"


def test_registry_checksum_checked_also_by_path(models_dir: Path) -> None:
    path = registered(models_dir)
    # a validly sealed but different model under the registered file name
    path.write_bytes(attach_card(tiny_proto(64), tiny_card(version="1.0.0", notes={"other": True})))
    for ref in (None, path):
        with pytest.raises(ChecksumMismatchError, match="expected sha256"):
            BoneAgeEstimator(ref)


def test_estimator_loads_once_and_is_reusable(tiny_model: Path, radiograph: np.ndarray) -> None:
    est = BoneAgeEstimator(tiny_model)
    tiny_model.unlink()  # the model was read once; later calls do not touch the file
    answers = [est.predict(radiograph, male).bone_age_months for male in (True, False, True)]
    assert answers[0] == answers[2] == pytest.approx(reference(est, radiograph, True), abs=0.01)
    assert answers[1] == pytest.approx(reference(est, radiograph, False), abs=0.01)
    assert repr(est) == f"BoneAgeEstimator(model={est.card.ref!r}, runtime='onnx')" and "tiny" in est.card.ref


def test_threaded_preparation_gives_the_same_results_in_order(tiny_model: Path, tmp_path: Path) -> None:
    """Issue 21: the next batch is decoded while the model runs; nothing may move or change."""
    from tests.helpers import synthetic_radiograph, write_png

    files = [write_png(tmp_path / f"r{i}.png", synthetic_radiograph(seed=i)) for i in range(7)]
    images = [files[0], tmp_path / "missing.png", *files[1:4], b"not an image", *files[4:]]
    male = [True, True, "yes", False, True, False, True, False, True]
    est = BoneAgeEstimator(tiny_model)
    sequential = est.predict_many(images, male, batch_size=3, workers=0)
    for workers in (1, 2, 4):
        threaded = est.predict_many(images, male, batch_size=3, workers=workers)
        assert [type(r) for r in threaded] == [type(r) for r in sequential]
        assert [getattr(r, "bone_age_months", str(r)) for r in threaded] == [getattr(r, "bone_age_months", str(r)) for r in sequential]
