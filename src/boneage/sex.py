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
    raise SexError(f"male must be True or False, not {male!r}")


def parse_sex(text: str) -> bool:
    """``male``/``female`` (also m/f, 1/0, true/false) from the CLI or a CSV; True for male."""
    value = _TEXT.get(str(text).strip().lower())
    if value is None:
        raise SexError(f"sex must be male or female, not {text!r}")
    return value
