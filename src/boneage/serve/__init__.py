"""``boneage serve``: the estimator as an HTTP service and a single web page (extra: serve).

Nothing here imports FastAPI or uvicorn on ``import boneage``: the core install does not need them,
and :func:`require_serve` names the extra when they are missing. See docs/serve.md.
"""

from __future__ import annotations

from boneage.extras import require

SERVE = 'pip install "boneage[serve]"'
"""FastAPI, uvicorn and python-multipart: ``boneage serve``."""


def require_serve() -> None:
    """Raise :class:`~boneage.errors.MissingDependencyError` naming the extra, before any work."""
    for module in ("fastapi", "uvicorn", "python_multipart"):
        require(module, SERVE, "boneage serve")
