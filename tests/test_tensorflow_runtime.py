"""The TensorFlow runtime calls a graph traced once, not the Keras model op by op per call."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from boneage.modelcard import ModelCard
from boneage.preprocess import PreprocessConfig

pytest.importorskip("tensorflow", reason="needs TensorFlow (extra: train)")
pytestmark = pytest.mark.tensorflow

SIZE = 32


def card(size: int = SIZE) -> ModelCard:
    return ModelCard(name="tiny", version="0.1.0", backbone="tiny_cnn", input_size=size,
                     preprocessing=PreprocessConfig.default(size))


@pytest.fixture(autouse=True)
def _tiny_backbone() -> None:
    from tests import tiny_backbone

    tiny_backbone.register()  # the runtime builds the card's backbone, then reads the file's weights into it


@pytest.fixture(scope="module")
def keras_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests import tiny_backbone

    path = tmp_path_factory.mktemp("tf") / "tiny.keras"
    tiny_backbone.build(SIZE).save(path)
    return path


def test_traced_once_for_every_batch_size(keras_file: Path) -> None:
    from boneage.runtimes.tensorflow import TensorFlowRuntime

    runtime = TensorFlowRuntime(keras_file.with_suffix(".onnx"), card())
    rng = np.random.default_rng(0)
    for n in (1, 3, 2, 5):
        images, male = rng.random((n, SIZE, SIZE, 1), np.float32), (rng.random((n, 1)) > 0.5).astype(np.float32)
        months = runtime.predict(images, male)
        eager = np.asarray(runtime.model({"image": images, "male": male}, training=False)).reshape(-1)
        assert months.shape == (n,) and np.allclose(months, eager, atol=1e-3)
    assert runtime.traces == 1  # at load, on a blank image; never again


def test_the_model_takes_the_cards_image_size(keras_file: Path) -> None:
    # the runtime builds the card's backbone at the card's size and reads only the weights from the file (its
    # own architecture, with its own input size, is never built): a convolutional backbone's weights fit any size
    from boneage.runtimes.tensorflow import TensorFlowRuntime, image_shape

    runtime = TensorFlowRuntime(keras_file.with_suffix(".onnx"), card(48))
    assert image_shape(runtime.model, keras_file) == (48, 48, 1)
    assert runtime.predict(np.zeros((2, 48, 48, 1), np.float32), np.ones((2, 1), np.float32)).shape == (2,)
