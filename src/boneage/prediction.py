"""What a prediction returns: plain data, serializable to JSON."""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from boneage.errors import InputError, ModelOutputError

# The RSNA labels span 1-228 months; outside a little margin the model is extrapolating.
PLAUSIBLE_MONTHS = (0.0, 240.0)
# Beyond these a bone age and the child's age cannot both be right (severe disorders reach 4-5 SDS):
# an age of 12 given as months for 12 years gave SDS +97.2 with no word
IMPLAUSIBLE_SDS = 6.0
IMPLAUSIBLE_GAP_MONTHS = 120.0
NORMAL_SDS = 2.0  # within +-2 SD is "normal", the usual clinical cut-off
Category = Literal["delayed", "normal", "advanced"]
# Past this magnitude a number of months (or years, or SDs) is shown in 3 significant digits: a model that
# answered 1.7e308 months had it spelled out in 309 digits in its warning and the table.
LARGEST_SPELLED_OUT = 1e6


def readable(value: float, spec: str = ".1f") -> str:
    """``format(value, spec)``, or ``1.7e+308`` (3 significant digits, the sign kept as ``spec`` asks) for a
    value whose magnitude is past :data:`LARGEST_SPELLED_OUT`; for what is shown to people, never stored."""
    if math.isfinite(value) and abs(value) >= LARGEST_SPELLED_OUT:
        return format(value, ("+" if spec.startswith("+") else "") + ".3g")
    return format(value, spec)


def years_and_months(months: float) -> str:
    """``10y 3m``: how clinicians read an age, rounded to the whole month; an absurd answer in years
    (``1.42e+307y``), not in 300 digits."""
    if not math.isfinite(months) or abs(months) >= LARGEST_SPELLED_OUT:
        return f"{readable(months / 12.0, '.0f')}y"
    whole, rest = divmod(round(months), 12)
    return f"{whole}y {rest}m"



def checked_estimate(months: object) -> tuple[float, str | None]:
    """A model's answer as the bone age a prediction gives, and the warning that goes with it, if any.

    Not a number: :class:`InputError` (a caller's mistake); NaN or infinite: :class:`ModelOutputError`,
    as :func:`boneage.runtimes.checked_months` says of a runtime's answer. A negative answer is given
    as 0 months, with a warning naming what the model said: a bone age is never negative, and the
    interval (clipped at 0) then holds it."""
    if isinstance(months, (bool, np.bool_)) or not isinstance(months, (int, float, np.integer, np.floating)):
        raise InputError(f"the model's answer must be a number of months, not a {type(months).__name__}")
    try:
        value = float(months)
    except OverflowError:  # an int past floats
        value = math.inf
    if not math.isfinite(value):
        raise ModelOutputError("the model answered NaN or infinity, not a number of months")
    if round(value, 2) < 0:
        lo, hi = PLAUSIBLE_MONTHS
        return 0.0, (f"the model answered {value:.2f} months, outside the {lo:.0f}-{hi:.0f} it was trained for: "
                     "the bone age is given as 0 (it is never negative)")
    return max(value, 0.0) + 0.0, None  # -0.004 and -0.0 are 0.0 as shown


class Comparison(BaseModel):
    """The bone age against the child's age; ``sds`` and ``category`` are None where the
    reference has no row for this age (``note`` says so)."""

    model_config = ConfigDict(frozen=True)

    chronological_age_months: float
    bone_age_minus_age_months: float
    expected_bone_age_months: float | None = None
    sd_months: float | None = None
    sds: float | None = Field(None, description="(BA - mean BA at this age) / SD at this age")
    category: Category | None = Field(None, description=f"delayed / normal / advanced at +-{NORMAL_SDS:g} SD")
    reference: str
    note: str | None = None


class Interval(BaseModel):
    """Where the bone age lies with the stated probability, from this model's errors on
    radiographs it did not train on (split-conformal; see the model card)."""

    model_config = ConfigDict(frozen=True)

    low_months: float
    high_months: float
    level: float = Field(description="nominal coverage, e.g. 0.9")


class Prediction(BaseModel):
    """One answer: frozen plain data; its JSON (``model_dump(mode="json")``) is what the CLI and the service return."""

    model_config = ConfigDict(frozen=True, protected_namespaces=())

    bone_age_months: float
    bone_age_years: float
    male: bool
    model_name: str
    model_version: str
    runtime: str
    source: str | None = Field(None, description="the file the image came from, if any")
    interval: Interval | None = Field(None, description="None for models calibrated before intervals existed")
    comparison: Comparison | None = Field(None, description="against the child's age, when it was given")
    warnings: tuple[str, ...] = Field((), description="doubts about this answer: the input or the output looks wrong")
    notes: tuple[str, ...] = Field((), description="what was done to the input on the way, e.g. an EXIF rotation")

    @classmethod
    def make(cls, months: float, **fields: object) -> Prediction:
        """Rounds to 0.01 and adds a warning when ``months`` is outside what the model was trained for;
        use it rather than the constructor, so no answer skips that check."""
        warnings = list(fields.pop("warnings", ()))  # type: ignore[call-overload]
        lo, hi = PLAUSIBLE_MONTHS
        if not lo <= months <= hi:
            warnings.append(f"the model answered {readable(months)} months, outside the {lo:.0f}-{hi:.0f} it was "
                            "trained for")
        comparison = fields.get("comparison")
        if isinstance(comparison, Comparison):
            gap, sds = comparison.bone_age_minus_age_months, comparison.sds
            if abs(gap) > IMPLAUSIBLE_GAP_MONTHS or (sds is not None and abs(sds) > IMPLAUSIBLE_SDS):
                shown_sds = "" if sds is None else f" (SDS {readable(sds, '+.1f')})"
                warnings.append(f"bone age and age are {readable(abs(gap) / 12)} years apart{shown_sds}: check the age "
                                "(months, not years?)")
        return cls(
            bone_age_months=round(months, 2),
            bone_age_years=round(months / 12.0, 2),
            warnings=tuple(warnings),
            **fields,
        )
