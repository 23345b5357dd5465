"""What ``boneage serve`` is started with: one validated object that the CLI and tests build."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from boneage.defaults import MAX_THREADS, MAX_VIEWS

MIB = 1024 * 1024
# An image file may take 512 MiB (imageio.MAX_BYTES); twice that leaves room for a form's other parts. Without a
# bound, --max-upload-mb 1e20 turned the body limit off (probe 16).
MAX_UPLOAD_BYTES = 1024 * MIB


class ServeSettings(BaseModel):
    """The service's knobs. ``max_concurrent`` predictions run at once in the shared pool and
    ``queue`` more may wait for it; a request beyond both is answered 503 at once, so a burst
    cannot pile up unbounded memory or latency."""

    model_config = ConfigDict(frozen=True, protected_namespaces=())

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    model: str | None = Field(None, description="a registered model name or an .onnx path (default: the shipped model)")
    runtime: str | None = None
    threads: int | None = Field(None, ge=1, le=MAX_THREADS, description="inference threads of the one shared session")
    max_concurrent: int = Field(2, ge=1, le=64, description="predictions running at once")
    queue: int = Field(16, ge=0, le=10_000, description="requests that may wait for a free slot")
    max_upload_bytes: int = Field(64 * MIB, ge=1024, le=MAX_UPLOAD_BYTES, description="the largest request body accepted")
    max_connections: int = Field(100, ge=1, le=100_000,
                                 description="open connections; beyond them, 503 before a request is read")
    check_input: bool = True
    views: int = Field(1, ge=1, le=MAX_VIEWS, description="sampling grids each estimate is averaged over")
    read_timeout: float = Field(30.0, gt=0, le=3600, allow_inf_nan=False,
                                description="seconds a connection has to send a request's headers, and over which "
                                            "its body must come at 1 KiB/s or more")
