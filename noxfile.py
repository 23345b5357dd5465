"""nox sessions: tests over every installed Python, lint, typecheck, and the built wheel.

``nox -s tests`` runs the core suite (no TensorFlow) on each Python; ``nox -s tests_full``
adds the training extra on one Python, so TensorFlow is installed once. ``nox -s wheel`` builds
the wheel and predicts with it as a user would.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import nox

ROOT = Path(__file__).resolve().parent
ALL_PYTHONS = ["3.10", "3.11", "3.12", "3.13"]
FULL_PYTHON = "3.11"
nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.reuse_existing_virtualenvs = True
# On CI (.ci/run sets CI) a Python that must be covered and is missing fails the run; a developer's
# machine with fewer Pythons skips it.
nox.options.error_on_missing_interpreters = "CI" in os.environ

PASS_ENV = ("BONEAGE_DATA", "BONEAGE_MEDIAPIPE_MODEL")


def _env() -> dict[str, str]:
    return {k: os.environ[k] for k in PASS_ENV if k in os.environ}


@nox.session(python=ALL_PYTHONS)
def tests(session: nox.Session) -> None:
    """The core suite: inference, plugins, preprocessing, CLI, DICOM input. TensorFlow tests skip."""
    session.install("-e", ".[dev,dicom]")
    session.run("pytest", "-m", "not tensorflow and not keras and not ray", *session.posargs, env=_env())


@nox.session(python=FULL_PYTHON)
def tests_full(session: nox.Session) -> None:
    """Everything, with TensorFlow and MediaPipe: training, export, parity, int8; and JAX, to
    show that a model trained on another Keras backend exports and serves here."""
    session.install("-e", ".[all]", "jax")
    session.run("pytest", *session.posargs, env=_env())


@nox.session(python=FULL_PYTHON)
def tests_torch(session: nox.Session) -> None:
    """Training on PyTorch with no TensorFlow installed, as on a GPU box (extra: train-torch).
    torch==2.13.0 first: the CPU build that this machine keeps on disk, not a CUDA download."""
    session.install("torch==2.13.0")
    session.install("-e", ".[train-torch,dev]")
    session.run("python", "-c", "import importlib.util as u, sys; sys.exit(u.find_spec('tensorflow') is not None)")
    session.run("pytest", "-m", "keras", *session.posargs, env={**_env(), "KERAS_BACKEND": "torch"})


SAMPLE, SAMPLE_MONTHS = ROOT / "samples" / "1377.png", 180.0  # female; see samples/README.md
# No network: a proxy that refuses, so that anything trying to download fails instead.
OFFLINE = {"http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9", "no_proxy": ""}


@nox.session(python=FULL_PYTHON, reuse_venv=False)
def wheel(session: nox.Session) -> None:
    """What a user gets from ``pip install boneage``: the wheel, installed (not editable) into a
    fresh venv, predicting offline from another folder with the model packaged inside it."""
    tmp = Path(session.create_tmp()).resolve()
    session.install(str(_build_wheel(session, tmp / "dist")))
    session.chdir(tmp)  # away from the checkout: nothing can come from src/ or exported/
    _check_installed(session, tmp)
    result = tmp / "1377.jsonl"
    result.unlink(missing_ok=True)
    session.run("boneage", "predict", str(SAMPLE), "--sex", "female", "--output", str(result),
                env=_outside_env(tmp), include_outer_env=False)
    _check_prediction(session, result)
    _check_dicom_needs_extra(session, tmp)


def _check_dicom_needs_extra(session: nox.Session, tmp: Path) -> None:
    """Without the dicom extra, a DICOM file gets the typed error (exit 5) that names the extra."""
    scan = tmp / "scan.dcm"
    scan.write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 64)  # the marker is enough: pydicom is asked for first
    said = session.run("boneage", "predict", str(scan), "--sex", "female", success_codes=[5], silent=True,
                       env=_outside_env(tmp), include_outer_env=False)
    if 'boneage[dicom]' not in str(said):
        session.error(f"a DICOM without the dicom extra should name it, got: {said}")


def _build_wheel(session: nox.Session, dist: Path) -> Path:
    """One fresh wheel from the working tree (pip builds it with hatchling in isolation)."""
    shutil.rmtree(dist, ignore_errors=True)
    session.run("python", "-m", "pip", "wheel", str(ROOT), "--no-deps", "--wheel-dir", str(dist))
    (built,) = dist.glob("boneage-*.whl")
    session.log(f"{built.name}: {built.stat().st_size / 2**20:.1f} MiB")
    return built


def _outside_env(tmp: Path) -> dict[str, str | None]:
    """Only the venv and a HOME of its own: no BONEAGE_MODELS_DIR, PYTHONPATH or proxy from outside."""
    return {"HOME": str(tmp), "LANG": "C.UTF-8", **OFFLINE}


def _check_installed(session: nox.Session, tmp: Path) -> None:
    """boneage is imported from this venv's site-packages, not from the checkout."""
    where = session.run("python", "-c", "import boneage; print(boneage.__file__)", silent=True,
                        env=_outside_env(tmp), include_outer_env=False)
    location = Path(str(where).strip().splitlines()[-1]).resolve()
    if Path(session.virtualenv.location).resolve() not in location.parents:
        session.error(f"boneage was imported from {location}, not from the installed wheel")


def _check_prediction(session: nox.Session, result: Path) -> None:
    """One row with a bone age near the clinical reading, made by the default model of the registry
    that the wheel packages (exported/registry.json)."""
    rows = [json.loads(line) for line in result.read_text().splitlines() if line.strip()]
    row = rows[0] if len(rows) == 1 else {}
    months, model = row.get("bone_age_months"), f"{row.get('model_name')}-{row.get('model_version')}"
    default = json.loads((ROOT / "exported" / "registry.json").read_text())["default"]
    if not isinstance(months, float) or abs(months - SAMPLE_MONTHS) > 24 or model != default:
        session.error(f"expected one bone age near {SAMPLE_MONTHS} months by {default} in {result}, got {rows}")
    session.log(f"{SAMPLE.name}: {months} months by {model}")


@nox.session(python=FULL_PYTHON)
def tests_ray(session: nox.Session) -> None:
    """The Ray Data engine against the local one, on a local Ray the tests start (extra: ray).
    Without TensorFlow: Ray and TensorFlow need not agree on protobuf."""
    session.install("-e", ".[ray,parquet,dicom,dev]")
    session.run("pytest", "-m", "ray", *session.posargs, env=_env())


@nox.session(python=FULL_PYTHON)
def tests_serve(session: nox.Session) -> None:
    """``boneage serve`` (extra: serve): the API through FastAPI's test client, and the page in
    Debian's headless Chromium through Playwright (never Playwright's own browser download). Without
    a Chromium binary the browser test skips, and this session says so."""
    session.install("-e", ".[serve,plot,dev]", "httpx", "playwright")
    chromium = os.environ.get("BONEAGE_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    session.log(f"browser test: Chromium at {chromium}" if chromium else
                "browser test: NO Chromium (apt-get install -y chromium, or set BONEAGE_CHROMIUM): it will be SKIPPED")
    env = {**_env(), "PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD": "1", **({"BONEAGE_CHROMIUM": chromium} if chromium else {})}
    session.run("pytest", "-rs", "tests/test_serve.py", "tests/test_serve_browser.py", *session.posargs, env=env)


@nox.session(python=FULL_PYTHON)
def lint(session: nox.Session) -> None:
    """ruff, then the layering contracts in pyproject.toml ([tool.importlinter]). lint-imports parses
    the source and imports none of it, so ``src`` on the path is all it needs: no dependencies."""
    session.install("ruff>=0.5", "import-linter>=2.17")
    session.run("ruff", "check", "src", "tests", "benchmarks", "tools", "noxfile.py")
    session.run("lint-imports", "--no-cache", env={"PYTHONPATH": str(ROOT / "src")})


@nox.session(python=FULL_PYTHON)
def docs(session: nox.Session) -> None:
    """The documentation site with its API reference from the docstrings (mkdocs.yml); strict, so a
    broken link or a docstring mkdocstrings cannot read fails the session. Output: build/site."""
    session.install("-e", ".[docs]")
    session.run("mkdocs", "build", "--strict")


@nox.session(python=FULL_PYTHON)
def typecheck(session: nox.Session) -> None:
    session.install("-e", ".[dev,dicom,serve]")  # serve: FastAPI's types, or its decorators are untyped
    session.run("python", "-m", "mypy")  # the module, not the console script: a reused venv once lost the script
