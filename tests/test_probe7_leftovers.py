"""What the seventh outside probe (issue 19) noticed and left, fixed one test each."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from boneage.errors import ConfigError, InputError

HUGE_KEY = "k" * 5_000_000


def test_a_labels_header_is_matched_as_spreadsheets_write_it(tmp_path: Path) -> None:
    # "id, boneage, male" or "ID,BoneAge,Male" was refused as lacking the boneage column, while
    # predict --csv matched its own columns stripped and case-insensitively
    from boneage.training.config import DataSource
    from boneage.training.data import read_source

    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "1377.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    labels = tmp_path / "labels.csv"
    for header in ("id, boneage, male", "ID,BoneAge,Male", " Id ,boneage ,MALE"):
        labels.write_text(f"{header}\n1377, 120, 1\n")
        (record,) = read_source(DataSource(labels=labels, images=tmp_path / "images"))
        assert (record.id, record.boneage, record.male) == ("1377", 120.0, True)
    labels.write_text("id,age,male\n1377,120,1\n")
    with pytest.raises(ConfigError, match="needs the columns id,boneage,male"):
        read_source(DataSource(labels=labels, images=tmp_path / "images"))


def test_a_huge_unknown_key_is_not_echoed_whole(tmp_path: Path) -> None:
    # pydantic's message quoted the unknown key: a 5 MB key became a 5 MB error line
    from boneage.preprocess import PreprocessConfig, build_pipeline
    from boneage.training.config import load_config

    source = {"sources": [{"labels": "labels.csv", "images": "images"}]}
    with pytest.raises(ConfigError, match=r"kkkk\.\.\. \(5,000,000 characters\): Extra inputs") as raised:
        load_config(None, {**source, HUGE_KEY: 1})
    assert len(str(raised.value)) < 300
    with pytest.raises(ConfigError, match="characters") as raised:
        build_pipeline(PreprocessConfig.model_validate({"steps": [{"name": "resize", "params": {HUGE_KEY: 1}}]}))
    assert len(str(raised.value)) < 300
    with pytest.raises(ConfigError, match=r"and 17 more") as raised:  # twenty errors: three shown
        load_config(None, {**source, **{f"unknown{i}": 1 for i in range(20)}})
    with pytest.raises(ConfigError, match=r"\\x1b\[2J: Extra inputs"):  # escaped, not obeyed
        load_config(None, {**source, "\x1b[2J": 1})


def test_a_malformed_upload_prints_nothing_on_the_services_terminal(tmp_path: Path) -> None:
    # python-multipart warns through logging; with no handler configured, Python printed
    # "Expected boundary character ..." to the service's stderr for every malformed request.
    # In a fresh interpreter: pytest's own log handler would hide the fault here.
    pytest.importorskip("fastapi", reason="needs the serve extra")
    pytest.importorskip("httpx", reason="FastAPI's TestClient needs httpx")
    script = textwrap.dedent("""
        import time

        from fastapi.testclient import TestClient
        from boneage.serve.app import create_app
        from boneage.serve.settings import ServeSettings

        with TestClient(create_app(ServeSettings()), raise_server_exceptions=False) as client:
            for _ in range(400):  # the shipped model loads in a thread
                if client.get("/readyz").status_code == 200:
                    break
                time.sleep(0.05)
            body = b"--XYQ\\r\\nfemale"  # another boundary than the one declared
            answer = client.post("/v1/predict", content=body,
                                 headers={"Content-Type": "multipart/form-data; boundary=XYZ"})
            print(answer.status_code)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-1] == "400"  # the body was parsed, and refused
    assert "boundary" not in done.stderr


def test_serve_bounds_its_open_connections(monkeypatch: pytest.MonkeyPatch) -> None:
    # uvicorn ran without limit_concurrency: every idle or slow connection held a socket and a task
    pytest.importorskip("fastapi", reason="needs the serve extra")
    uvicorn = pytest.importorskip("uvicorn", reason="needs the serve extra")
    from boneage.cli import serve
    from boneage.cli.main import parser

    given: dict[str, object] = {}
    monkeypatch.setattr(uvicorn.Server, "run", lambda server, **kwargs: given.update(vars(server.config)))
    assert serve.run(parser().parse_args(["serve"])) == 0
    # uvicorn counts the connection asking among the open ones: N + 1 serves N (test_probe12_cli)
    assert given["limit_concurrency"] == 101
    serve.run(parser().parse_args(["serve", "--max-connections", "7"]))
    assert given["limit_concurrency"] == 8
    with pytest.raises(InputError, match="max-connections"):
        serve.settings(argparse.Namespace(**{**vars(parser().parse_args(["serve"])), "max_connections": 10**6}))


def test_a_model_cannot_take_more_memory_than_the_cap() -> None:
    # a crafted graph that expands a scalar to 16000x16000 floats (1 GB; a larger one is killed by the
    # system with the process) ran to the end: ONNX Runtime's memory was not bounded. Capped here at
    # 512 MiB in a fresh interpreter (the cap is registered once a process)
    pytest.importorskip("onnx", reason="builds the crafted model")
    script = textwrap.dedent("""
        import resource
        from pathlib import Path

        import numpy as np
        from onnx import TensorProto, helper

        from boneage.errors import InvalidModelError
        from boneage.runtimes import onnx as runtime
        from boneage.runtimes.onnx import OnnxRuntime

        runtime.check_graph_size = lambda *args: None  # the arena alone, the second line: the graph's size is refused at load

        def model(side):
            ints = helper.make_tensor("side", TensorProto.INT64, [2], [side, side])
            axes = helper.make_tensor("axes", TensorProto.INT64, [3], [1, 2, 3])
            nodes = [helper.make_node("ReduceSum", ["image", "axes"], ["pixels"], keepdims=0),
                     helper.make_node("Expand", ["male", "side"], ["big"]),
                     helper.make_node("ReduceMean", ["big"], ["mean"], keepdims=0),
                     helper.make_node("Add", ["pixels", "mean"], ["months"])]
            graph = helper.make_graph(nodes, "g", [
                helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 100, 100, 1]),
                helper.make_tensor_value_info("male", TensorProto.FLOAT, ["N", 1])],
                [helper.make_tensor_value_info("months", TensorProto.FLOAT, ["N"])], [ints, axes])
            # IR 8: the ONNX Runtime that Python 3.10 gets reads IR versions up to 11, the onnx package writes 14
            return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=8).SerializeToString()

        image, sex = np.zeros((1, 100, 100, 1), np.float32), np.ones((1, 1), np.float32)
        print(OnnxRuntime(Path("small.onnx"), model(100)).predict(image, sex)[0])
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
        try:
            OnnxRuntime(Path("big.onnx"), model(16_000)).predict(image, sex)
        except InvalidModelError as exc:
            print("refused", "BONEAGE_MODEL_MEMORY_MB" in str(exc))
        print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024 - before)
    """)
    env = {**os.environ, "BONEAGE_MODEL_MEMORY_MB": "512"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    small, refused, grown_mb = done.stdout.splitlines()[-3:]
    assert float(small) == 1.0  # a model within the cap answers
    assert refused == "refused True"
    assert int(grown_mb) < 300  # the 1 GB was never taken


@pytest.mark.parametrize("value", ["0", "12x", "-5", "64", str(2**41), "\u00b2", "2G", "1e3"])
def test_the_memory_cap_setting_is_checked(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    # "²" passed isdigit() and failed int(); 64 MiB was accepted and explain then failed on the
    # shipped model with an error that blamed the model
    from boneage.runtimes.onnx import memory_cap

    monkeypatch.setenv("BONEAGE_MODEL_MEMORY_MB", value)
    with pytest.raises(ConfigError, match="BONEAGE_MODEL_MEMORY_MB"):
        memory_cap()
    monkeypatch.setenv("BONEAGE_MODEL_MEMORY_MB", "1024")
    assert memory_cap() == 2**30


def test_a_mistyped_memory_cap_is_an_error_not_no_cap() -> None:
    # eighth probe: the ConfigError was caught with the allocator's own errors, so "2G" or "1e3"
    # turned the cap off altogether, silently (exit 0). A fresh interpreter: the cap is once a process
    script = textwrap.dedent("""
        from boneage import BoneAgeEstimator
        from boneage.errors import ConfigError

        try:
            BoneAgeEstimator()
        except ConfigError as exc:
            print("refused", "BONEAGE_MODEL_MEMORY_MB" in str(exc))
    """)
    env = {**os.environ, "BONEAGE_MODEL_MEMORY_MB": "2G"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env)
    assert done.stdout.split("\n")[-2:] == ["refused True", ""], done.stderr[-2000:]


def test_an_odd_digit_in_omp_num_threads_is_ignored_not_a_broken_model(monkeypatch: pytest.MonkeyPatch) -> None:
    # eighth probe: OMP_NUM_THREADS=² passed isdigit(), failed int(), and was reported as
    # "not a loadable ONNX model" (exit 3)
    from boneage.runtimes.onnx import cores, default_threads

    monkeypatch.setenv("OMP_NUM_THREADS", "\u00b2")
    assert default_threads() == cores()
