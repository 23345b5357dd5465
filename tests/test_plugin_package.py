"""plugins/boneage-mobilenet, installed into a fresh environment, trains, exports and serves with
no change to the core; uninstalling it removes it again."""

from __future__ import annotations

import json
import os
import site
import subprocess
import venv
from pathlib import Path

import pytest

pytest.importorskip("tf2onnx", reason="needs TensorFlow and tf2onnx (extra: train)")
pytestmark = [pytest.mark.tensorflow, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = ROOT / "plugins" / "boneage-mobilenet"


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new venv that sees this one's packages (boneage, TensorFlow) but installs its own."""
    path = tmp_path_factory.mktemp("pluginenv") / "venv"
    venv.create(path, with_pip=True)
    (lib,) = (path / "lib").glob("python*/site-packages")
    parents = [p for p in site.getsitepackages() if Path(p).is_dir()]
    (lib / "_parent.pth").write_text("".join(f"import site; site.addsitedir({p!r})\n" for p in parents))
    return path


def run(env: Path, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != "BONEAGE_DISABLE_PLUGIN_AUTOLOAD"}
    out = subprocess.run([str(env / "bin" / "python"), *args], capture_output=True, text=True, env=environ,
                         cwd=cwd, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out


def test_install_train_export_predict_uninstall(env: Path, data_dir: Path, tmp_path: Path) -> None:
    cli = ("-m", "boneage.cli.main")
    run(env, "-m", "pip", "install", "-q", "--no-deps", str(PLUGIN))
    listed = run(env, *cli, "plugins").stdout
    assert "mobilenet_v3_small" in listed and "boneage-mobilenet 0.2.0" in listed and "unsharp" in listed
    assert "backbones, preprocess_steps" in listed  # the plugin's row: its hooks

    labels = data_dir / "rsna-100" / "labels.csv"
    run(env, *cli, "train", "--backbone", "mobilenet_v3_small", "--data", f"{labels}:{labels.parent}",
        "--input-size", "64", "--limit", "64", "--val-limit", "16", "--epochs", "1", "--batch-size", "16",
        "--set", 'preprocessing={"steps": [{"name": "grayscale"}, {"name": "resize", "params": {"size": 64, "mode": "stretch"}}, {"name": "unsharp"}, {"name": "normalize"}]}',
        "--output", str(tmp_path / "run"))
    run(env, *cli, "export", str(tmp_path / "run"), "--version", "0.0.1", "--output", str(tmp_path / "models"))

    model = tmp_path / "models" / "boneage-mobilenet_v3_small-0.0.1.onnx"
    card = json.loads(run(env, "-c", f"from boneage.modelcard import read_card; from pathlib import Path; "
                                     f"print(read_card(Path({str(model)!r}).read_bytes(), 'm').model_dump_json())").stdout)
    unsharp = next(p for p in card["providers"] if p["name"] == "unsharp")
    assert (unsharp["source"], unsharp["version"]) == ("boneage-mobilenet 0.2.0", "0.2.0")
    image = str(data_dir / "rsna-100" / "1378.png")
    out = json.loads(run(env, *cli, "predict", image, "--sex", "female", "--model", str(model), "--json").stdout)
    assert out[0]["model_name"] == "boneage-mobilenet_v3_small" and out[0]["bone_age_months"] > 0
    code = f"from boneage import BoneAgeEstimator; print(BoneAgeEstimator({str(model)!r}).predict({image!r}, male=False).bone_age_months)"
    assert abs(float(run(env, "-c", code).stdout) - out[0]["bone_age_months"]) < 0.01

    run(env, "-m", "pip", "uninstall", "-q", "-y", "boneage-mobilenet")
    assert "mobilenet_v3_small" not in run(env, *cli, "plugins").stdout
