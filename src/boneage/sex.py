"""The sex input: strict in the library, a few spellings on the command line and in CSVs."""

from __future__ import annotations

from typing import Any

import numpy as np

from boneage.errors import SexError

# "true"/"false": the male column of the original RSNA label files.
_TEXT = {"male": True, "m": True, "1": True, "true": True, "female": False, "f": False, "0": False, "false": False}


def check_male(male: Any) -> bool:
    """``True``/``False`` (or 1/0); anything else, ``"yes"`` included, is refused."""
    if isinstance(male, (bool, np.bool_)):
        return bool(male)
    if isinstance(male, (int, np.integer)) and male in (0, 1):
        return bool(male)
    if male is None:
        raise SexError("the sex is missing: pass male=True or male=False")
    # the value itself is never shown: a misaligned CSV puts a name or an ID where the sex goes
    kind = "an int other than 0 or 1" if isinstance(male, (int, np.integer)) else f"a {type(male).__name__}"
    raise SexError(f"male must be True or False (or 1/0), not {kind} (the value given is not shown)")


def parse_sex(text: str) -> bool:
    """``male``/``female`` (also m/f, 1/0, true/false) from the CLI or a CSV; True for male."""
    value = _TEXT.get(str(text).strip().lower())
    if value is None:
        # never echoed: a misaligned CSV (or form) puts a name or an ID where the sex goes, and this
        # message reaches stderr, results files and the service's answer
        raise SexError(f"sex must be male or female (m/f, 1/0, true/false); the value given ({len(str(text))} "
                       "characters) is not one of them and is not shown")
    return value
