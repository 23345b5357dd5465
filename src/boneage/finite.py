"""Numbers read from files, checked without overflowing: JSON, TOML and YAML read a 400-digit literal as a
whole number that no float holds, and ``math.isfinite`` or ``float`` then raise ``OverflowError`` (an internal
error, exit 70, in every check that met one)."""

from __future__ import annotations

import math
import numbers


def finite_float(value: object) -> float | None:
    """``value`` as a float if it is a finite real number (not a bool), else None."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None
