"""ONNX inference never imports TensorFlow or Keras, and commands that need them say which extra
installs them (checked in fresh interpreters)."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from boneage.errors import MissingDependencyError
from boneage.extras import TRAIN, require

CODE = """
import sys
from boneage import BoneAgeEstimator
from boneage.cli.main import main
est = BoneAgeEstimator(sys.argv[1])
print(est.predict(sys.argv[2], male=True).bone_age_months)
main(["predict", sys.argv[2], "--sex", "female", "--model", sys.argv[1]])
heavy = [m for m in ("tensorflow", "keras", "tf2onnx") if m in sys.modules]
assert not heavy, heavy
print("clean")
"""


def test_onnx_path_imports_no_tensorflow(tiny_model: Path, radiograph_png: Path) -> None:
    out = subprocess.run([sys.executable, "-c", CODE, str(tiny_model), str(radiograph_png)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("clean")


# A fresh interpreter in which the training extra's packages cannot be imported, as in a core install.
WITHOUT_TRAIN_EXTRA = """
import importlib.abc
import sys

class Hide(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in {"keras", "tensorflow", "tf2onnx"}:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, Hide())
from boneage.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


def fake_run(folder: Path) -> Path:
    """A run folder as training leaves it: config.json beside best.keras, a well-formed archive (its
    members are checked before anything opens it; their contents are never read here)."""
    folder.mkdir()
    source = {"labels": str(folder / "labels.csv"), "images": str(folder)}
    (folder / "config.json").write_text(json.dumps({"backbone": "densenet121", "sources": [source]}))
    (folder / "data.json").write_text(json.dumps({"val_id_list": ["1"]}))
    (folder / "labels.csv").write_text("id,boneage,male\n1,100,true\n")
    with zipfile.ZipFile(folder / "best.keras", "w") as archive:
        for member in ("metadata.json", "config.json", "model.weights.h5"):
            archive.writestr(member, b"{}")
    return folder / "best.keras"


@pytest.mark.parametrize("command", ["train", "export", "evaluate"])
def test_commands_without_the_train_extra_name_it(command: str, tmp_path: Path) -> None:
    """Exit 5 and the extra to install, never "internal error: ModuleNotFoundError" (exit 70)."""
    model = fake_run(tmp_path / "run")
    data = f"{model.parent / 'labels.csv'}:{model.parent}"
    args = {
        "train": ["train", "--data", data, "--output", str(tmp_path / "new"), "--epochs", "1"],
        "export": ["export", str(model.parent), "--version", "1.0.0", "--output", str(tmp_path / "models")],
        "evaluate": ["evaluate", str(model), "--data", data, "--output", str(tmp_path / "eval")],
    }[command]
    out = subprocess.run([sys.executable, "-c", WITHOUT_TRAIN_EXTRA, *args], capture_output=True, text=True)
    assert out.returncode == 5, out.stderr
    assert 'pip install "boneage[train]"' in out.stderr and "internal error" not in out.stderr
    assert not (tmp_path / "new").exists() and not (tmp_path / "models").exists()


def test_require_names_the_extra() -> None:
    with pytest.raises(MissingDependencyError, match=r"export needs no_such_module_xyz: pip install "):
        require("no_such_module_xyz", TRAIN, "export")
