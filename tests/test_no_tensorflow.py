"""ONNX inference never imports TensorFlow or Keras (checked in a fresh interpreter)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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
