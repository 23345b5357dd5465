"""What the seventh outside probe (issue 19) found, one test each."""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import pytest

from boneage.errors import ConfigError
from tests.helpers import special_files

SOURCE = 'sources = [{labels = "labels.csv", images = "images"}]\n'


def test_a_training_config_is_read_bounded_and_its_nesting_is_typed(tmp_path: Path) -> None:
    # train --config /dev/zero filled memory (MemoryError, exit 70), a FIFO with no writer hung, and
    # lists nested 100,000 deep (TOML, JSON, YAML, or a --set value) were a RecursionError (exit 70)
    from boneage.cli.main import parser
    from boneage.cli.train import overrides
    from boneage.training.config import load_config

    for name in special_files(tmp_path, "fifo.toml"):
        with pytest.raises(ConfigError, match="not a regular file"):
            load_config(name)
    deep = "[" * 100_000 + "]" * 100_000
    yaml = "x: " + "{a: " * 5_000 + "1" + "}" * 5_000
    cases = [(".toml", f"{SOURCE}x = {deep}\n"), (".json", f'{{"x": {deep}}}')]
    if importlib.util.find_spec("yaml") is not None:  # YAML configs need PyYAML (the train extra)
        cases.append((".yaml", yaml))
    for suffix, text in cases:
        path = tmp_path / f"deep{suffix}"
        path.write_text(text)
        with pytest.raises(ConfigError, match="nests deeper"):
            load_config(path)
    nested: list[object] = []
    for _ in range(40):  # past the depth a config has, short of Python's recursion limit
        nested = [nested]
    with pytest.raises(ConfigError, match="nests"):
        load_config(None, {"sources": [{"labels": "labels.csv", "images": "images"}], "backbone_options": {"x": nested}})
    args = parser().parse_args(["train", "--set", f"backbone_options={{\"x\": {deep}}}"])
    with pytest.raises(ConfigError, match="nests deeper"):
        overrides(args)
    (tmp_path / "ok.toml").write_text(SOURCE + "epochs = 3\n")
    assert load_config(tmp_path / "ok.toml").epochs == 3


def test_yaml_aliases_cannot_make_a_config_of_billions_of_values(tmp_path: Path) -> None:
    # nine aliases of nine lists: loaded in microseconds as shared lists, then walked by pydantic for
    # two minutes into MemoryError (under backbone_options, which takes anything) or into a repr of a
    # billion values (an unknown key's error message); an alias to its own list nested without end
    pytest.importorskip("yaml", reason="YAML configs need PyYAML (the train extra)")
    from boneage.training.config import load_config

    lists = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
        f"{b}: &{b} [{', '.join([f'*{a}'] * 9)}]\n" for a, b in zip("abcdefgh", "bcdefghi", strict=True))
    bomb = tmp_path / "bomb.yaml"
    for text in ("sources: [{labels: l.csv, images: i}]\nbackbone_options:\n  " + lists.replace("\n", "\n  "),
                 "sources: [{labels: l.csv, images: i}]\n" + lists,
                 "sources: [{labels: l.csv, images: i}]\nbackbone_options: {x: &x [1, *x]}\n"):
        bomb.write_text(text)
        start = time.process_time()
        with pytest.raises(ConfigError, match="more than 100,000 values|nests"):
            load_config(bomb)
        assert time.process_time() - start < 10  # was minutes; a bound far above the walk's cost
    bomb.write_text("sources: [{labels: l.csv, images: i}]\naugment: &aug {noise: 0.01}\n")  # an alias used once is fine
    assert load_config(bomb).augment.noise == 0.01


@pytest.mark.parametrize("setting", [{"seed": -1}, {"seed": 2**70}, {"workers": 10**9}])
def test_seed_and_workers_are_bounded_in_the_config(setting: dict[str, int]) -> None:
    # --seed -1 passed the config and failed once the data had loaded: NumPy's "expected non-negative
    # integer", internal error (exit 70); workers=10**9 asked Keras for a pool of a billion threads
    from boneage.training.config import load_config

    source = {"sources": [{"labels": "labels.csv", "images": "images"}]}
    with pytest.raises(ConfigError, match=next(iter(setting))):
        load_config(None, {**source, **setting})
    assert load_config(None, {**source, "seed": 2**32 - 1, "workers": 256}).seed == 2**32 - 1


@pytest.mark.parametrize("image_id", ["../outside/secret", "{outside}/secret", "..\\outside\\secret", "sub/../../outside/secret"])
def test_a_labels_id_cannot_lead_out_of_the_images_folder(tmp_path: Path, image_id: str) -> None:
    # evaluate --data labels.csv:images (and train) read <id>.png wherever the id led: ../x or /x was
    # read, scored and listed in the reports, a file the user never named
    from boneage.training.config import DataSource
    from boneage.training.data import read_source

    for folder in ("images", "images/sub", "outside"):
        (tmp_path / folder).mkdir()
    for name in ("images/1377.png", "images/sub/1378.png", "outside/secret.png"):
        (tmp_path / name).write_bytes(b"\x89PNG\r\n\x1a\n")
    labels = tmp_path / "labels.csv"
    source = DataSource(labels=labels, images=tmp_path / "images")
    labels.write_text("id,boneage,male\n1377,120,1\nsub/1378,100,0\n")
    assert [r.id for r in read_source(source)] == ["1377", "sub/1378"]  # a folder below it is inside
    labels.write_text(f"id,boneage,male\n1377,120,1\n{image_id.format(outside=tmp_path / 'outside')},100,0\n")
    with pytest.raises(ConfigError, match=r"labels.csv:3: its id is a path that leads out of") as raised:
        read_source(source)
    assert "secret" not in str(raised.value)


def test_a_request_past_the_queue_is_refused_before_its_upload_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    # the upload was read whole into memory (up to the body limit, 64 MiB) and only then refused 503:
    # a burst of requests past the queue held that much memory each
    pytest.importorskip("fastapi", reason="needs the serve extra")
    pytest.importorskip("httpx", reason="FastAPI's TestClient needs httpx")
    import threading

    from fastapi.testclient import TestClient
    from starlette.datastructures import UploadFile  # what the form parser makes (FastAPI's is a subclass)

    from boneage.estimator import BoneAgeEstimator
    from boneage.serve.app import create_app
    from boneage.serve.settings import ServeSettings

    real = BoneAgeEstimator()
    go, inside = threading.Event(), threading.Event()

    class Blocking:
        def __getattr__(self, name: str) -> object:
            return getattr(real, name)

        def predict_many(self, *args: object, **kwargs: object) -> object:
            inside.set()
            assert go.wait(30)
            return real.predict_many(*args, **kwargs)  # type: ignore[arg-type]

    reads: list[int] = []
    read = UploadFile.read

    async def counted(self: UploadFile, size: int = -1) -> bytes:
        data = await read(self, size)
        reads.append(len(data))
        return data

    monkeypatch.setattr(UploadFile, "read", counted)
    data = (Path(__file__).resolve().parents[1] / "samples" / "1377.png").read_bytes()
    app = create_app(ServeSettings(max_concurrent=1, queue=0), load=lambda: Blocking())  # type: ignore[arg-type,return-value]
    with TestClient(app, raise_server_exceptions=False) as client:
        for _ in range(200):
            if client.get("/readyz").status_code == 200:
                break
            time.sleep(0.05)
        form = {"files": {"file": ("x.png", data, "image/png")}, "data": {"sex": "female"}}
        first: list[int] = []
        thread = threading.Thread(target=lambda: first.append(client.post("/v1/predict", **form).status_code))  # type: ignore[arg-type]
        thread.start()
        try:
            assert inside.wait(30)
            for path in ("/v1/predict", "/v1/explain"):
                refused = client.post(path, **form)  # type: ignore[arg-type]
                assert refused.status_code == 503 and refused.json()["error"]["code"] == "overloaded"
            assert reads == [len(data)]  # the first request's upload only
        finally:
            go.set()
            thread.join(30)
    assert first == [200]


@pytest.mark.parametrize(("name", "content"), [("state.json", "{not json"), ("state.json", "[1, 2]"),
                                               ("state.json", '{"seconds": "3600"}'), ("data.json", "[" * 100_000)])
def test_export_reads_a_runs_state_and_data_before_writing(tmp_path: Path, name: str, content: str) -> None:
    # a state.json that did not read (a JSONDecodeError, an AttributeError on a list, a TypeError from
    # round("3600")) failed the export with an internal error (exit 70) after the model had been
    # converted and the release's .keras written; a data.json nested 100,000 deep was a RecursionError
    pytest.importorskip("keras", reason="needs the train extra")
    from boneage.export.export import export_run

    run = tmp_path / "run"
    run.mkdir()
    (run / "best.keras").write_bytes(b"not a model: never loaded")
    (run / "config.json").write_text('{"sources": [{"labels": "labels.csv", "images": "images"}]}')
    (run / "data.json").write_text('{"train_images": 9, "val_images": 1, "sources": [{"images": "images"}]}')
    (run / name).write_text(content)
    with pytest.raises(ConfigError, match=f"{name} is not a run's"):
        export_run(run, "0.2.0", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_evaluate_quotes_odd_ids_in_its_csv_and_escapes_its_summary_on_the_terminal(
        tmp_path: Path, tiny_model: Path, radiograph: object, capsys: pytest.CaptureFixture[str]) -> None:
    # an id with a comma was written raw into predictions.csv (one row read back as five columns), and the
    # summary, which names the --data folder, reached the terminal with its escape sequences
    import csv

    from boneage.cli.main import main
    from tests.helpers import write_png

    images = tmp_path / "x\x1b[2Jy"
    images.mkdir()
    write_png(images / "a,b.png", radiograph)  # type: ignore[arg-type]
    (tmp_path / "labels.csv").write_text('id,boneage,male\n"a,b",120,1\n')
    out = tmp_path / "report"
    assert main(["evaluate", str(tiny_model), "--data", f"{tmp_path / 'labels.csv'}:{images}", "--output", str(out)]) == 0
    with (out / "predictions.csv").open(newline="") as f:
        (row,) = list(csv.DictReader(f))
    assert row["id"] == "a,b" and row["boneage"] == "120.0"
    printed = capsys.readouterr().out
    assert "\x1b" not in printed and "x\\x1b[2Jy" in printed
