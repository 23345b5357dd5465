"""What the twelfth outside probe (issue 19) found in the command line and the service: SIGTERM, the
connection limit and stalled bodies, the Parquet file's mode, and misleading messages; one test each."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from boneage.cli.main import main
from boneage.errors import ConfigError, InvalidModelError
from boneage.estimator import BoneAgeEstimator
from boneage.signals import Terminated
from tests.helpers import synthetic_radiograph, write_png, write_tiny_model

ROOT = Path(__file__).resolve().parents[1]


def files(tmp_path: Path, n: int) -> list[str]:
    first = write_png(tmp_path / "r0.png", synthetic_radiograph())
    for i in range(1, n):
        shutil.copy(first, tmp_path / f"r{i}.png")
    return [str(tmp_path / f"r{i}.png") for i in range(n)]


# --- 1. SIGTERM is handled as Ctrl-C ---------------------------------------------------------------

# boneage predict, with the process sending itself SIGTERM when the CLI asks for the third batch: what
# timeout, docker stop, systemd, Kubernetes and Slurm send, at a known point
SIGTERM_ON_THIRD_BATCH = """
import os, signal, sys
from boneage.cli.main import main
from boneage.estimator import BoneAgeEstimator

original = BoneAgeEstimator.iter_predictions

def batches(self, *args, **kwargs):
    for i, batch in enumerate(original(self, *args, **kwargs), 1):
        if i == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        yield batch

BoneAgeEstimator.iter_predictions = batches
sys.exit(main(sys.argv[1:]))
"""


def test_sigterm_during_predict_prints_the_finished_results_and_exits_143(tiny_model: Path, tmp_path: Path) -> None:
    # SIGTERM ended the process at once: no output, no "stopped after" line (Ctrl-C printed 840 answers)
    inputs = files(tmp_path, 10)
    done = subprocess.run([sys.executable, "-c", SIGTERM_ON_THIRD_BATCH, "predict", *inputs, "--sex", "m", "--model",
                           str(tiny_model), "--batch-size", "2", "--json"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 143, done.stderr[-2000:]
    printed = json.loads(done.stdout)
    assert 2 <= len(printed) < 10 and [r["source"] for r in printed] == inputs[:len(printed)]
    assert f"stopped after {len(printed)} of 10 inputs" in done.stderr and "Traceback" not in done.stderr


def test_sigterm_from_outside_keeps_the_output_file_and_says_to_resume(tiny_model: Path, tmp_path: Path) -> None:
    # a real SIGTERM from another process while results stream to --output; --resume then finishes
    first = write_png(tmp_path / "r0.png", synthetic_radiograph())
    listing = tmp_path / "list.csv"
    listing.write_text("path,sex\n" + "r0.png,m\n" * 20000)  # far more than it answers before the signal
    results = tmp_path / "results.jsonl"
    command = [sys.executable, "-m", "boneage.cli.main", "predict", "--csv", str(listing), "--model", str(tiny_model),
               "--batch-size", "4", "--output", str(results)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and process.poll() is None:
            if results.exists() and results.read_text().count("\n") >= 8:
                break
            time.sleep(0.1)
        assert process.poll() is None, "it finished (or failed) before the signal"
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=300)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 143, err[-2000:]
    written = results.read_text().count("\n")
    assert re.search(rf"stopped after {written} of 20000 inputs \(run again with --resume to finish\)", err), err
    assert f"{written} results written to" in err and "Traceback" not in err
    assert first.exists()


def test_the_sigterm_handler_is_put_back_and_a_terminated_predict_exits_143(
        tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    original = BoneAgeEstimator.iter_predictions

    def terminated_on_second(self: BoneAgeEstimator, *args: Any, **kwargs: Any) -> Iterator[Any]:
        for i, batch in enumerate(original(self, *args, **kwargs), 1):  # type: ignore[arg-type]
            if i == 2:
                raise Terminated
            yield batch

    before = signal.getsignal(signal.SIGTERM)
    monkeypatch.setattr(BoneAgeEstimator, "iter_predictions", terminated_on_second)
    code = main(["predict", *files(tmp_path, 5), "--sex", "f", "--model", str(tiny_model), "--batch-size", "2",
                 "--json"])
    out = capsys.readouterr()
    assert code == 143 and len(json.loads(out.out)) == 2 and "stopped after 2 of 5" in out.err
    assert signal.getsignal(signal.SIGTERM) is before
    monkeypatch.setattr(BoneAgeEstimator, "__init__", lambda *a, **k: (_ for _ in ()).throw(Terminated()))
    assert main(["predict", *files(tmp_path, 1), "--sex", "f"]) == 143  # while the model loads: no results yet
    assert "boneage: terminated (SIGTERM)" in capsys.readouterr().err


@pytest.mark.tensorflow
def test_sigterm_during_training_keeps_the_run_for_resume_and_exits_143(
        data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    # Ctrl-C kept the finished epochs (exit 130); SIGTERM lost the run's "continue with --resume" and exited 143
    keras = pytest.importorskip("keras", reason="needs Keras and TensorFlow (extra: train)")
    from tests import tiny_backbone

    tiny_backbone.register()

    def terminated(*args: Any, **kwargs: Any) -> Any:
        raise Terminated

    monkeypatch.setattr(keras.Model, "fit", terminated)
    run = tmp_path / "run"
    code = main(["train", "--backbone", "tiny_cnn", "--data", f"{data_dir / 'rsna-100/labels.csv'}:{data_dir / 'rsna-100'}",
                 "--input-size", "32", "--limit", "16", "--val-limit", "8", "--batch-size", "8", "--epochs", "1",
                 "--output", str(run)])
    err = capsys.readouterr().err
    assert code == 143, err
    assert "terminated (SIGTERM); 0 epochs are saved" in err and "--resume" in err


# --- 6. --max-connections N serves N; a body that stalls is closed ------------------------------------

class Served:
    """``boneage serve --port 0`` in a subprocess, with the port it printed."""

    def __init__(self, tmp_path: Path, *args: str) -> None:
        (tmp_path / "models").mkdir(exist_ok=True)
        model = write_tiny_model(tmp_path / "tiny.onnx")
        env = {**os.environ, "BONEAGE_MODELS_DIR": str(tmp_path / "models"), "OMP_NUM_THREADS": "1"}
        self.log = tmp_path / "serve.log"
        with self.log.open("w") as log:
            self.process = subprocess.Popen([sys.executable, "-m", "boneage", "serve", "--port", "0", "--model",
                                             str(model), *args], stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and self.process.poll() is None:
            found = re.search(r"serving on http://127\.0\.0\.1:(\d+)/", self.log.read_text())
            if found:
                self.port = int(found.group(1))
                return
            time.sleep(0.1)
        self.stop()
        raise AssertionError(f"not serving: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(60)


def status_of(port: int) -> int:
    """The status of ``GET /healthz`` on a connection of its own, which then closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
    return int(answer.split(b" ", 2)[1])


def test_max_connections_n_serves_n_connections(tmp_path: Path) -> None:
    # uvicorn counts the connection asking among the open ones: --max-connections 4 served 3
    pytest.importorskip("fastapi", reason="needs the serve extra")
    pytest.importorskip("uvicorn", reason="needs the serve extra")
    server = Served(tmp_path, "--max-connections", "2", "--read-timeout", "600")
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=60):  # one open, idle connection
            time.sleep(0.2)  # accepted by the server (an order, not a bound: a later accept only delays the 503)
            assert status_of(server.port) == 200  # the second of 2: was 503
            with socket.create_connection(("127.0.0.1", server.port), timeout=60):
                deadline = time.monotonic() + 60
                while status_of(server.port) != 503:  # a third while two are open: refused
                    assert time.monotonic() < deadline, "a third connection was served"
                    time.sleep(0.1)
        deadline = time.monotonic() + 60
        while status_of(server.port) != 200:  # both closed: served again
            assert time.monotonic() < deadline
            time.sleep(0.1)
    finally:
        server.stop()


def closed_after(port: int, sent: bytes, wait: float = 120) -> float:
    """Seconds until the server closes a connection that sent ``sent`` and then nothing (a socket timeout
    here means it was held open)."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as sock:
        sock.sendall(sent)
        start = time.monotonic()
        assert sock.recv(1024) == b""
        return time.monotonic() - start


def test_a_body_that_stalls_half_way_is_closed_after_the_read_timeout(tmp_path: Path) -> None:
    # headers in, 7 bytes of a 100,000-byte body, then nothing: held open for good, so that 3 such
    # clients kept --max-connections 4 at 503 for everyone
    pytest.importorskip("fastapi", reason="needs the serve extra")
    pytest.importorskip("uvicorn", reason="needs the serve extra")
    server = Served(tmp_path, "--read-timeout", "1")
    try:
        head = (b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=XYZ\r\n"
                b"Content-Length: 100000\r\n\r\n")
        part = b'--XYZ\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n\r\n'
        assert closed_after(server.port, head + b"--XYZ\r\n") >= 0.5  # not at once: after the read timeout
        assert closed_after(server.port, head + part + b"\x89PNG" * 5000) >= 0.5  # 20 KB, then a stall
        assert status_of(server.port) == 200  # the service is unharmed
    finally:
        server.stop()
    assert "Traceback" not in server.log.read_text()


class FakeTransport(asyncio.Transport):
    """A socket's transport as the protocol sees it, logging what the protocol does to it."""

    def __init__(self, log: list[tuple[str, bytes]], lost: Callable[[], None]) -> None:
        super().__init__()
        self.log, self.lost, self.closing = log, lost, False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 5555)}.get(name, default)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.log.append(("write", bytes(data)))

    def close(self) -> None:
        if not self.closing:
            self.closing = True
            self.log.append(("close", b""))
            asyncio.get_running_loop().call_soon(self.lost)

    def is_closing(self) -> bool:
        return self.closing

    def pause_reading(self) -> None:
        self.log.append(("pause", b""))

    def resume_reading(self) -> None:
        self.log.append(("resume", b""))


async def connection(read_timeout: float, app_delay: float, first: bytes,
                     send: Callable[[Any, list[tuple[str, bytes]]], Any] | None = None) -> list[tuple[str, bytes]]:
    """One connection of the serve protocol with ``read_timeout``, to an application that waits ``app_delay``
    seconds (a slot in the queue) before reading the body: the client sends ``first``, then runs ``send``. The
    log, once the connection closes or answers 200."""
    import uvicorn
    from uvicorn.server import ServerState

    from boneage.serve.server import header_timeout

    log: list[tuple[str, bytes]] = []

    async def app(scope: Any, receive: Any, send_: Any) -> None:
        await asyncio.sleep(app_delay)
        log.append(("app reads", b""))
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                log.append(("app disconnected", b""))
                return
            if not message["more_body"]:
                break
        await send_({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send_({"type": "http.response.body", "body": b"ok"})

    config = uvicorn.Config(app, http=header_timeout(read_timeout), log_level="warning", lifespan="off")
    config.load()
    protocol = config.http_protocol_class(config=config, server_state=ServerState(), app_state={},  # type: ignore[call-arg]
                                          _loop=asyncio.get_running_loop())
    protocol.connection_made(FakeTransport(log, lambda: protocol.connection_lost(None)))
    protocol.data_received(first)
    client = asyncio.ensure_future(send(protocol, log)) if send else None
    deadline = time.monotonic() + 60
    while not any(e == "close" or d.startswith(b"HTTP/1.1 200") for e, d in log) and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    if client is not None:
        client.cancel()
    await asyncio.sleep(0.05)  # the application's own end
    return log


def events(log: list[tuple[str, bytes]]) -> list[str]:
    return ["200" if d.startswith(b"HTTP/1.1 200") else "100" if d.startswith(b"HTTP/1.1 100") else e
            for e, d in log if e != "write" or d.startswith(b"HTTP/1.1 ")]


def post(length: int, extra: bytes = b"") -> bytes:
    return b"POST / HTTP/1.1\r\nHost: x\r\n" + extra + b"Content-Length: %d\r\n\r\n" % length


def test_the_body_deadline_closes_a_stall_or_a_trickle_and_never_a_paused_or_steady_body() -> None:
    pytest.importorskip("uvicorn", reason="needs the serve extra")
    # a stall: 7 bytes of 100,000, then nothing (the application reads at once)
    stall = asyncio.run(connection(0.2, 0, post(100_000) + b"1234567"))
    assert events(stall)[-2:] == ["close", "app disconnected"]

    async def trickle(protocol: Any, log: list[tuple[str, bytes]]) -> None:
        while True:  # a byte every 50 ms: 20 B/s, far below the minimum pace
            await asyncio.sleep(0.05)
            protocol.data_received(b"x")

    assert "close" in events(asyncio.run(connection(0.2, 0, post(100_000), trickle)))

    async def rest_once_read(protocol: Any, log: list[tuple[str, bytes]]) -> None:
        while ("app reads", b"") not in log:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.01)
        protocol.data_received(b"y" * 10)

    # 100,000 bytes (over uvicorn's 64 KiB: reading pauses) while the application waits 5 read timeouts before
    # it reads them: the deadline does not run while reading is paused
    paused = events(asyncio.run(connection(0.2, 1.0, post(100_010) + b"x" * 100_000, rest_once_read)))
    assert paused[:2] == ["pause", "app reads"] and "200" in paused and "close" not in paused[:paused.index("200")]

    # Expect: 100-continue: the client waits for the go-ahead, sent when the application reads; only then is
    # its body due (it then sends nothing: closed)
    waiting = events(asyncio.run(connection(0.2, 1.0, post(10, b"Expect: 100-continue\r\n"))))
    assert waiting.index("app reads") < waiting.index("100") < waiting.index("close")

    async def steady(protocol: Any, log: list[tuple[str, bytes]]) -> None:
        for _ in range(50):  # 4 KiB every 20 ms for a second: 5 read timeouts
            await asyncio.sleep(0.02)
            protocol.data_received(b"z" * 4096)

    steadily = events(asyncio.run(connection(0.2, 0, post(50 * 4096), steady)))
    assert "200" in steadily and "close" not in steadily[:steadily.index("200")]


# --- 7. A Parquet results file gets the umask's mode -----------------------------------------------

@pytest.mark.parametrize("umask", [0o022, 0o027], ids=["umask022", "umask027"])
def test_parquet_results_get_the_mode_csv_results_get(tiny_model: Path, tmp_path: Path, umask: int,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    # mkstemp made it 0600 whatever the umask: colleagues could read results.csv but not results.parquet
    pytest.importorskip("pyarrow", reason="extra: parquet")
    inputs = files(tmp_path, 1)
    previous = os.umask(umask)
    try:
        for name in ("r.csv", "r.jsonl", "r.parquet"):
            assert main(["predict", *inputs, "--sex", "m", "--model", str(tiny_model), "--output",
                         str(tmp_path / name)]) == 0
    finally:
        os.umask(previous)
    modes = {name: stat.S_IMODE((tmp_path / name).stat().st_mode) for name in ("r.csv", "r.jsonl", "r.parquet")}
    assert modes == dict.fromkeys(modes, 0o666 & ~umask)
    (tmp_path / "r.parquet").chmod(0o640)  # --resume keeps the mode of the file it replaces
    assert main(["predict", *files(tmp_path, 2), "--sex", "m", "--model", str(tiny_model), "--output",
                 str(tmp_path / "r.parquet"), "--resume"]) == 0
    assert stat.S_IMODE((tmp_path / "r.parquet").stat().st_mode) == 0o640


# --- 10. Misleading messages, and a batch-wide abort --------------------------------------------------

def test_a_labels_file_that_is_not_a_regular_file_or_too_large_says_so(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    # a FIFO was "labels file fifo not found"; a labels file was read whole, whatever its size
    from boneage.training import data
    from boneage.training.config import DataSource

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError, match="is not a regular file"):
        data.read_source(DataSource(labels=fifo, images=tmp_path))
    with pytest.raises(ConfigError, match="is a directory"):
        data.read_source(DataSource(labels=tmp_path, images=tmp_path))
    with pytest.raises(ConfigError, match="not found"):
        data.read_source(DataSource(labels=tmp_path / "missing.csv", images=tmp_path))
    labels = tmp_path / "labels.csv"
    labels.write_text("id,boneage,male\n" + "".join(f"{i},100,true\n" for i in range(100)))
    monkeypatch.setattr(data, "MAX_LABELS_BYTES", 1000)
    with pytest.raises(ConfigError, match="is larger than"):
        data.read_source(DataSource(labels=labels, images=tmp_path))


def test_the_labels_fifo_through_evaluate(tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    code = main(["evaluate", str(tiny_model), "--data", f"{fifo}:{tmp_path}", "--output", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "is not a regular file (a device, FIFO or socket)" in err and "not found" not in err


@pytest.mark.parametrize("kind", ["fifo", "directory", "link to /dev/zero"])
def test_a_registry_that_is_not_a_regular_file_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str], kind: str) -> None:
    # taken for no registry without a word: "no default model in md/registry.json; pass model=PATH"
    from boneage.models import load_registry

    registry = tmp_path / "registry.json"
    if kind == "fifo":
        os.mkfifo(registry)
    elif kind == "directory":
        registry.mkdir()
    else:
        registry.symlink_to("/dev/zero")
    with pytest.raises(InvalidModelError, match="is not a regular file"):
        load_registry(tmp_path)
    monkeypatch.setenv("BONEAGE_MODELS_DIR", str(tmp_path))
    assert main(["models"]) == 3
    assert "registry.json is not a regular file" in capsys.readouterr().err


def test_no_registry_and_a_dangling_link_are_still_an_empty_registry(tmp_path: Path) -> None:
    from boneage.models import load_registry

    assert load_registry(tmp_path).models == []
    (tmp_path / "registry.json").symlink_to(tmp_path / "gone.json")
    assert load_registry(tmp_path).models == []


def test_an_empty_folder_is_its_own_error_and_the_batch_is_answered(tiny_model: Path, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    # the whole batch stopped (exit 2, nothing answered) where a missing file is one failed row
    empty = tmp_path / "empty"
    empty.mkdir()
    (image,) = files(tmp_path, 1)
    code = main(["predict", str(empty), image, str(tmp_path / "missing.png"), "--sex", "m", "--model",
                 str(tiny_model), "--json"])
    out = capsys.readouterr()
    assert code == 2
    rows = json.loads(out.out)
    assert [r["source"] for r in rows] == [str(empty), image, str(tmp_path / "missing.png")]
    assert "error" in rows[0] and "bone_age_months" in rows[1] and "error" in rows[2]
    assert f"boneage: {empty}: no files matching" in out.err


def test_an_absurd_answer_is_shown_in_few_digits(tiny_model: Path) -> None:
    # make_prediction(1.7e308) spelled the number out in 309 digits in its warning, and the table
    # held a 300-digit count of years
    from boneage.cli.predict import table
    from boneage.preprocess.pipeline import Notes

    estimator = BoneAgeEstimator(str(tiny_model))
    prediction = estimator.make_prediction(1.7e308, True, "x.png", Notes(), age_months=100.0)
    shown = " ".join([*prediction.warnings, table([prediction.model_dump(mode="json")])])
    assert "1.7e+308 months" in shown and "1.42e+307y" in shown
    assert not re.search(r"\d{20}", shown), shown
    ordinary = estimator.make_prediction(123.456, True, "x.png", Notes(), age_months=100.0)
    assert "123.5 mo (10y 3m)" in table([ordinary.model_dump(mode="json")])


@pytest.mark.parametrize("kind", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_inside_held_arrives_when_the_block_ends(kind: signal.Signals) -> None:
    # a batch written and counted together: SIGTERM between the two said "stopped after 24" of a file of 28
    from boneage.signals import held, terminate_as_interrupt

    done = []
    with terminate_as_interrupt(), pytest.raises(KeyboardInterrupt) as raised, held():
        os.kill(os.getpid(), kind)
        time.sleep(0.05)  # Python runs a pending handler at the next bytecode: here, the one that only notes it
        done.append("written")
        done.append("counted")
    assert done == ["written", "counted"]
    assert isinstance(raised.value, Terminated) == (kind == signal.SIGTERM)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handlers are put back


def test_a_second_signal_inside_held_is_not_held_and_an_error_wins_over_a_held_one() -> None:
    from boneage.signals import held, terminate_as_interrupt

    done = []
    with terminate_as_interrupt(), pytest.raises(Terminated), held():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)
        done.append("first noted")
        os.kill(os.getpid(), signal.SIGTERM)  # a save that hangs: the second ends it at once
        time.sleep(0.05)
        done.append("not reached")
    assert done == ["first noted"]
    with pytest.raises(OSError, match="disk full"), held():  # the write failed: that is what the user must hear
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)
        raise OSError("disk full")
