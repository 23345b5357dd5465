from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import settings

# Installed third-party plugins must not change test results; plugin tests opt in explicitly.
os.environ["BONEAGE_DISABLE_PLUGIN_AUTOLOAD"] = "1"

# Property tests run the same examples on every run and keep no example database, so a result
# never depends on what an earlier run stored (a stored failure was replayed on every later run).
# BONEAGE_HYPOTHESIS_PROFILE=explore draws new examples each run and keeps them in .hypothesis/.
settings.register_profile("deterministic", derandomize=True, database=None, print_blob=True)
settings.register_profile("explore", print_blob=True)
settings.load_profile(os.environ.get("BONEAGE_HYPOTHESIS_PROFILE", "deterministic"))

from boneage import plugins  # noqa: E402
from tests.helpers import register, synthetic_radiograph, write_png, write_tiny_model  # noqa: E402

DATA_ENV = "BONEAGE_DATA"


@pytest.fixture(autouse=True)
def _fresh_plugins():
    plugins.reset_plugins()
    yield
    plugins.reset_plugins()


@pytest.fixture
def models_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty model folder, so tests never depend on the shipped models."""
    d = tmp_path / "models"
    d.mkdir()
    monkeypatch.setenv("BONEAGE_MODELS_DIR", str(d))
    return d


@pytest.fixture
def tiny_model(tmp_path: Path, models_dir: Path) -> Path:
    """A tiny model passed by path, as a user passes a copy of a release: its sha256 is in the
    registry of ``models_dir``. ``write_tiny_model`` alone makes one that is not a known release."""
    path = write_tiny_model(tmp_path / "tiny.onnx")
    register(path, models_dir)
    return path


@pytest.fixture
def radiograph() -> np.ndarray:
    return synthetic_radiograph()


@pytest.fixture
def radiograph_png(tmp_path: Path, radiograph: np.ndarray) -> Path:
    return write_png(tmp_path / "hand.png", radiograph)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    value = os.environ.get(DATA_ENV)
    if not value:
        pytest.skip(f"{DATA_ENV} is not set: point it at the RSNA bone age data (../shared/data)")
    path = Path(value)
    if not (path / "rsna-100" / "labels.csv").is_file():
        pytest.skip(f"{DATA_ENV}={value} does not hold rsna-100/labels.csv")
    return path
