"""ONNX Runtime with explicit thread settings (containers and schedulers otherwise oversubscribe)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnxruntime as ort

from boneage.defaults import MAX_THREADS
from boneage.errors import ConfigError, InvalidModelError
from boneage.modelcard import IMAGE_INPUT, SEX_INPUT
from boneage.runtimes import checked_months
from boneage.runtimes.onnxbudget import check_graph_size
from boneage.signals import interruptible

FLOAT_OUTPUTS = ("tensor(float)", "tensor(float16)", "tensor(double)")
MEMORY_ENV = "BONEAGE_MODEL_MEMORY_MB"
MEMORY_SHARE = 0.5  # of the machine's (or the container's) memory, by default
MIN_MEMORY_MB = 512  # explain on the shipped model needs more than 64
_capped = False  # whether this process registered the capped allocator


def checked_threads(threads: object) -> int | None:
    """``threads`` as ONNX Runtime is given it: None or 0 for the default, else 1 to MAX_THREADS
    (100,000 started that many threads and never finished; 2.5 or "4" was reported as an
    unloadable model)."""
    if threads is None or (type(threads) is int and 0 <= threads <= MAX_THREADS):
        return threads or None
    raise ConfigError(f"threads must be a whole number from 1 to {MAX_THREADS} (or None for the default), "
                      f"not {threads!r}"[:200])


def whole_number(text: str) -> bool:
    """ASCII digits only: ``"²".isdigit()`` is true, but ``int("²")`` fails."""
    return text.isascii() and text.isdigit()


def cores() -> int:
    """The cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def default_threads() -> int:
    """``OMP_NUM_THREADS`` if set, else the cores this process may use; never more than those cores
    (``OMP_NUM_THREADS=5000`` made ONNX Runtime start 5,000 threads: one image took over a minute,
    and a value past 2**63 made the model look unloadable)."""
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if whole_number(env) and int(env) > 0:
        return min(int(env), cores())
    return cores()


def machine_memory() -> int:
    """Bytes of memory this process may use: the machine's, or its container's limit if lower."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") if hasattr(os, "sysconf") else 8 * 2**30
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
    except OSError:
        return total
    return min(total, int(limit)) if limit.isdigit() else total


def memory_cap() -> int:
    """Bytes every boneage ONNX session of this process may allocate together: ``$BONEAGE_MODEL_MEMORY_MB``
    if set, else half of :func:`machine_memory`."""
    env = os.environ.get(MEMORY_ENV, "").strip()
    if env:
        if not whole_number(env) or not MIN_MEMORY_MB <= int(env) <= 2**40:
            raise ConfigError(f"{MEMORY_ENV} must be a whole number of MiB from {MIN_MEMORY_MB} to 2**40")
        return int(env) * 2**20
    return int(machine_memory() * MEMORY_SHARE)


def capped_allocator() -> bool:
    """Register, once a process, a CPU arena of at most :func:`memory_cap` bytes for the sessions
    that ask for it. A model is a file someone gave us: a graph that expands a scalar to
    30000x30000 took 3.6 GB, and a larger one is killed by the system with everything else in the
    process; past the cap, the run fails with ONNX Runtime's error instead. False if the process
    registered a CPU allocator of its own before: that one is then left as it is."""
    global _capped
    if not _capped:
        cap = memory_cap()  # a mistyped setting is an error, never a silent "no cap at all"
        info = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
        try:  # grow by what is asked (1), not by powers of two, so that the cap is reached only when needed
            ort.create_and_register_allocator(info, ort.OrtArenaCfg(cap, 1, -1, -1))
        except Exception:  # noqa: BLE001 - the caller's own allocator is registered already
            return False
        _capped = True
    return True


def session_options(threads: int | None) -> ort.SessionOptions:
    """Options with ``threads`` intra-op threads (default :func:`default_threads`) and one inter-op thread, set
    explicitly because ONNX Runtime's defaults oversubscribe containers and batch schedulers."""
    options = ort.SessionOptions()
    # more threads than cores only contend: 64 on 2 cores took one image from 2 s to 10 s
    options.intra_op_num_threads = min(threads, cores()) if threads else default_threads()
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Bytes are parsed as ONNX only: the self-containment check in models.py reads that format.
    options.add_session_config_entry("session.load_model_format", "ONNX")
    if capped_allocator():
        options.add_session_config_entry("session.use_env_allocators", "1")
    return options


def _fixed(dim: object) -> int | None:
    """A dimension the graph fixes, or None for a symbolic or unknown one."""
    return dim if isinstance(dim, int) and dim > 0 else None


def check_signature(session: ort.InferenceSession, what: str, input_size: int | None) -> str:
    """The name of the single float output of shape (N,) or (N, 1); refuse anything else now, at
    load time, rather than on the first batch. ``input_size`` is the card's: a graph that fixes
    another image size would fail on every image."""
    outputs = session.get_outputs()
    if len(outputs) != 1 or outputs[0].type not in FLOAT_OUTPUTS:
        found = ", ".join(f"{o.name}: {o.type}" for o in outputs) or "none"
        raise InvalidModelError(f"{what} must have one float output of months, not {found}")
    shape = outputs[0].shape or []
    if len(shape) not in (1, 2) or (len(shape) == 2 and _fixed(shape[1]) not in (None, 1)):
        raise InvalidModelError(f"{what} answers shape {shape}; a boneage model answers (N,) or (N, 1)")
    image = next(i for i in session.get_inputs() if i.name == IMAGE_INPUT)
    dims = list(image.shape or [])
    if input_size is not None and len(dims) == 4 and any(_fixed(d) not in (None, input_size) for d in dims[1:3]):
        raise InvalidModelError(f"{what} takes images of shape {dims}, but its card says input_size {input_size}")
    return str(outputs[0].name)


class OnnxRuntime:
    """The default runtime: a CPU ``InferenceSession`` on a boneage model, its inputs and output checked when it
    loads. Given ``data`` (the verified model's bytes), it runs those bytes rather than reading ``path`` again, so
    what was checked is what runs. Anything it cannot load is an :class:`~boneage.errors.InvalidModelError`."""
    name = "onnx"

    def __init__(self, path: Path, data: bytes | None = None, threads: int | None = None,
                 input_size: int | None = None) -> None:
        """``threads``: intra-op threads, 1-256 or None for the default (a :class:`ConfigError` otherwise),
        never more than the process has cores; ``input_size``: the card's, checked against the graph."""
        if path.suffix == ".keras":
            raise InvalidModelError(f"{path} is a Keras model: use runtime='tensorflow', or export it to ONNX")
        options = session_options(checked_threads(threads))  # a bad setting is a ConfigError, not a bad model
        data = data if data is not None else path.read_bytes()
        # what the graph allocates for one image, from its shapes (a 7.9 MB model took 1.2 GB an image), before
        # ONNX Runtime folds its constants: a 170-byte graph expanding a constant peaked at 1 GB in the session
        check_graph_size(data, str(path), input_size, IMAGE_INPUT)
        try:
            self.session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise InvalidModelError(f"{path} is not a loadable ONNX model: {exc}") from exc
        names = {i.name for i in self.session.get_inputs()}
        if names != {IMAGE_INPUT, SEX_INPUT}:
            raise InvalidModelError(
                f"{path} has inputs {sorted(names)}; a boneage model has {IMAGE_INPUT!r} and {SEX_INPUT!r}"
            )
        self.output = check_signature(self.session, str(path), input_size)

    def predict(self, images: np.ndarray, male: np.ndarray) -> np.ndarray:
        """Months as (N,) float32, checked: NaN, infinity or another shape is a ModelOutputError. Ctrl-C or
        SIGTERM ends the run between two nodes (``RunOptions.terminate``) rather than after its last."""
        options = ort.RunOptions()

        def stop() -> None:
            options.terminate = True

        try:
            (out,) = interruptible(lambda: self.session.run([self.output], {IMAGE_INPUT: images, SEX_INPUT: male},
                                                            options), stop)
        except Exception as exc:  # shape or type mismatch between the card and the graph, or the memory cap
            if "Available memory" in str(exc):
                raise InvalidModelError(
                    f"the model needs more memory for a batch of shape {images.shape} than the {memory_cap() // 2**20} "
                    f"MiB boneage gives ONNX Runtime (half of this machine's memory, or ${MEMORY_ENV}): {exc}") from exc
            raise InvalidModelError(f"the model failed on a batch of shape {images.shape}: {exc}") from exc
        return checked_months(out, len(images))
