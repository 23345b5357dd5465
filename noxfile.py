"""nox sessions: tests over every installed Python, lint, typecheck.

``nox -s tests`` runs the core suite (no TensorFlow) on each Python; ``nox -s tests_full``
adds the training extra on one Python, so TensorFlow is installed once.
"""

from __future__ import annotations

import os

import nox

ALL_PYTHONS = ["3.10", "3.11", "3.12", "3.13"]
FULL_PYTHON = "3.11"
nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.reuse_existing_virtualenvs = True
nox.options.error_on_missing_interpreters = False

PASS_ENV = ("BONEAGE_DATA", "BONEAGE_MEDIAPIPE_MODEL")


def _env() -> dict[str, str]:
    return {k: os.environ[k] for k in PASS_ENV if k in os.environ}


@nox.session(python=ALL_PYTHONS)
def tests(session: nox.Session) -> None:
    """The core suite: inference, plugins, preprocessing, CLI. TensorFlow tests skip."""
    session.install("-e", ".[dev]")
    session.run("pytest", "-m", "not tensorflow and not keras", *session.posargs, env=_env())


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


@nox.session(python=FULL_PYTHON)
def lint(session: nox.Session) -> None:
    session.install("ruff>=0.5")
    session.run("ruff", "check", "src", "tests", "benchmarks", "tools", "noxfile.py")


@nox.session(python=FULL_PYTHON)
def typecheck(session: nox.Session) -> None:
    session.install("-e", ".[dev]")
    session.run("mypy")
