"""What the tenth outside probe (issue 19) found, one test each (those fixed so far)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from boneage.errors import ConfigError, SexError

ROOT = Path(__file__).resolve().parents[1]


def test_a_reference_with_non_finite_values_is_refused_and_never_called_normal() -> None:
    # a plugin's table with NaN means or an infinite SD was accepted, and an SDS of NaN fell through
    # to "normal" (a NaN is neither < -2 nor > 2), with no warning
    from pydantic import ValidationError

    from boneage.references import ReferenceTable, compare

    rows = ((0.0, 10.0, 5.0), (240.0, 230.0, 10.0))
    for bad in (((0.0, float("nan"), 5.0), rows[1]), ((0.0, 10.0, float("inf")), rows[1])):
        with pytest.raises(ValidationError):
            ReferenceTable(name="x", title="x", source="x", male=bad, female=rows)
    table = ReferenceTable(name="x", title="x", source="x", male=rows, female=rows)
    object.__setattr__(table, "male", ((0.0, float("nan"), 5.0), rows[1]))  # past the checks, as a plugin might
    comparison = compare(184.0, 100.0, True, table)
    assert comparison.category is None and comparison.sds is None and "no usable reference" in (comparison.note or "")


def test_make_prediction_checks_the_sex_and_age_as_predict_does(tiny_model: Path) -> None:
    # male="f" was labelled female and compared with the boys' reference; NaN or negative ages passed
    from boneage import BoneAgeEstimator
    from boneage.errors import AgeError, InputError
    from boneage.preprocess.pipeline import Notes

    estimator = BoneAgeEstimator(str(tiny_model))
    for sex in ("f", "no", "yes", None):
        with pytest.raises(SexError):
            estimator.make_prediction(150.0, sex, None, Notes(), age_months=100.0)  # type: ignore[arg-type]
    for age in (float("nan"), -5.0, 1e9):
        with pytest.raises(AgeError):
            estimator.make_prediction(150.0, False, None, Notes(), age_months=age)
    with pytest.raises(InputError):
        estimator.make_prediction(150.0, False, 5, Notes())  # type: ignore[arg-type]
    girl = estimator.make_prediction(150.0, False, None, Notes(), age_months=100.0)
    assert girl.male is False and girl.comparison is not None


def test_model_inputs_checks_its_views(tiny_model: Path, radiograph: np.ndarray) -> None:
    # -1 and 100 were an untyped ValueError from zip, "2" and 2.5 a TypeError, 0 silently one view
    from boneage import BoneAgeEstimator

    estimator = BoneAgeEstimator(str(tiny_model))
    for views in (-1, 0, 100, "2", 2.5, True):
        with pytest.raises(ConfigError, match="views"):
            estimator.model_inputs(radiograph, views=views)  # type: ignore[arg-type]
    assert estimator.model_inputs(radiograph, views=2)[0].shape[0] == 2


def test_a_malformed_upload_prints_nothing_even_with_a_root_log_handler() -> None:
    # the CLI's own logging.basicConfig gave python-multipart's warning a handler: "Expected boundary
    # character 122, got 68" (a byte of the client's body) reached the service's terminal
    pytest.importorskip("fastapi", reason="needs the serve extra")
    pytest.importorskip("httpx", reason="FastAPI's TestClient needs httpx")
    script = textwrap.dedent("""
        import logging
        import time

        logging.basicConfig(level=logging.INFO)
        from fastapi.testclient import TestClient
        from boneage.serve.app import create_app
        from boneage.serve.settings import ServeSettings

        with TestClient(create_app(ServeSettings()), raise_server_exceptions=False) as client:
            deadline = time.monotonic() + 600  # the real model: slow to load on a loaded machine
            while (ready := client.get("/readyz")).status_code != 200:
                if time.monotonic() > deadline:
                    raise SystemExit(f"not ready: {ready.text}")
                time.sleep(0.1)
            answer = client.post("/v1/predict", content=b"--XYQ\\r\\nfemale",
                                 headers={"Content-Type": "multipart/form-data; boundary=XYZ"})
            print(answer.status_code)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]  # "not ready: ..." when the model never loaded
    assert done.stdout.split()[-1] == "400" and "boundary" not in done.stderr


def test_serve_prints_its_host_escaped(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("fastapi", reason="needs the serve extra")
    uvicorn = pytest.importorskip("uvicorn", reason="needs the serve extra")
    from boneage.cli import serve
    from boneage.cli.main import parser

    monkeypatch.setattr(uvicorn.Server, "run", lambda server, **kwargs: None)
    serve.run(parser().parse_args(["serve", "--host", "\x1b[31mRED"]))
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\\x1b[31mRED" in out


@pytest.mark.parametrize("tool", ["average_weights.py", "recalibrate_bn.py"])
def test_a_tool_refuses_an_output_that_is_a_dangling_link(tmp_path: Path, tool: str) -> None:
    # exists() is False for a dangling link: the tool wrote a 30 MB model through it to its target
    link = tmp_path / "out.keras"
    link.symlink_to(tmp_path / "created_by_link.keras")
    args = [str(link), "a.keras"] if tool == "average_weights.py" else ["a.keras", "--run", str(tmp_path),
                                                                         "--output", str(link)]
    done = subprocess.run([sys.executable, str(ROOT / "tools" / tool), *args], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2 and "exists" in done.stderr
    assert not (tmp_path / "created_by_link.keras").exists()


def test_run_refuses_a_batch_the_caller_got_wrong(tiny_model: Path) -> None:
    # a batch of another length than its sexes, an empty one or another size was "the model failed on a
    # batch" (a model error, exit 3, with ONNX Runtime's red log line); an all-NaN batch was answered
    from boneage import BoneAgeEstimator
    from boneage.errors import InputError

    estimator = BoneAgeEstimator(str(tiny_model))
    size = estimator.card.input_size
    ok = np.zeros((1, size, size, 1), np.float32)
    for images, male in ((np.zeros((2, size, size, 1), np.float32), [True]), (ok[:0], []),
                         (np.zeros((1, size + 1, size, 1), np.float32), [True]), (np.full_like(ok, np.nan), [True])):
        with pytest.raises(InputError):
            estimator.run(images, male)
    assert estimator.run(ok, [True]).shape == (1,)


def test_plot_of_something_that_is_not_a_prediction_is_typed(tiny_model: Path, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="needs the plot extra")
    from boneage import BoneAgeEstimator
    from boneage.errors import InputError

    estimator = BoneAgeEstimator(str(tiny_model))
    for prediction, path in ((None, tmp_path / "c.png"), ({}, tmp_path / "c.png")):
        with pytest.raises(InputError, match="needs a Prediction"):
            estimator.plot(prediction, path)  # type: ignore[arg-type]


def test_serve_that_cannot_start_is_a_usage_error_not_a_model_error(monkeypatch: pytest.MonkeyPatch) -> None:
    # a port in use: uvicorn exited 1 (or 3, its STARTUP_FAILURE) after "serving on ...", and boneage
    # passed on 3, its own code for a broken model
    pytest.importorskip("fastapi", reason="needs the serve extra")
    uvicorn = pytest.importorskip("uvicorn", reason="needs the serve extra")
    from boneage.cli import serve
    from boneage.cli.main import parser
    from boneage.errors import InputError

    for code in (1, 3):
        def refuse(server: object, code: int = code, **kwargs: object) -> None:
            raise SystemExit(code)

        monkeypatch.setattr(uvicorn.Server, "run", refuse)
        with pytest.raises(InputError, match="cannot serve on 127.0.0.1:8000"):
            serve.run(parser().parse_args(["serve"]))
