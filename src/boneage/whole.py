"""Files written whole: to a new hidden name beside the target, then renamed over it, so a kill never
leaves half a file, and a link or someone's file that happened to have a fixed temporary name is never
written through or over (probe 15: the float16 export's ``NAME-VERSION.keras.partial`` did both)."""

from __future__ import annotations

import os
import re
import secrets
import stat
from collections.abc import Callable
from pathlib import Path


def new_file(folder: Path, prefix: str, suffix: str) -> Path:
    """An empty file in ``folder`` under a name no file had. Made with ``O_EXCL``, so never through a link
    of that name nor over someone's file: a fixed temporary name did both (probe 15). Its mode is any new
    file's under the umask: ``tempfile.mkstemp`` makes 0600, which the file it becomes would keep."""
    for _ in range(8):  # another try only where a random 64-bit name was taken
        path = folder / f"{prefix}{secrets.token_hex(8)}{suffix}"
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return path
        except FileExistsError:
            continue
    raise FileExistsError(f"no new file name was free in {folder}")


def remove_leftovers(path: Path) -> list[Path]:
    """Remove the temporaries a hard kill (SIGKILL, power loss) left beside ``path`` in the middle of
    :func:`write_whole`, and return them: each had a new random name, so none was ever reused and they
    piled up, 30 MB each for a checkpoint. Only names of exactly that form are touched; a process still writing
    one beside ``path`` (a second ``--resume`` of one run) would lose it, as two processes on one run folder lose
    more than that."""
    pattern = re.compile(rf"\.{re.escape(path.stem)}\.[0-9a-f]{{16}}\.tmp{re.escape(path.suffix)}")
    removed = []
    for candidate in path.parent.iterdir():
        if pattern.fullmatch(candidate.name) and not candidate.is_symlink() and candidate.is_file():
            candidate.unlink(missing_ok=True)
            removed.append(candidate)
    return removed


def write_whole(path: Path, write: Callable[[Path], object]) -> None:
    """``write`` a new file beside ``path`` (:func:`new_file`, hidden, of the same suffix: Keras wants
    ``.keras``), then rename it over ``path``, whose mode it keeps: a kill never leaves half a file.
    Removed if ``write`` fails."""
    temporary = new_file(path.parent, f".{path.stem}.", f".tmp{path.suffix}")
    try:
        write(temporary)
        if path.exists():
            os.chmod(temporary, stat.S_IMODE(path.stat().st_mode))
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
