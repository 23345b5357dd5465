"""What a prediction returns: plain data, serializable to JSON."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

# The RSNA labels span 1-228 months; outside a little margin the model is extrapolating.
PLAUSIBLE_MONTHS = (0.0, 240.0)


class Prediction(BaseModel):
    model_config = ConfigDict(frozen=True, protected_namespaces=())

    bone_age_months: float
    bone_age_years: float
    male: bool
    model_name: str
    model_version: str
    runtime: str
    source: str | None = Field(None, description="the file the image came from, if any")
    warnings: tuple[str, ...] = Field((), description="doubts about this answer: the input or the output looks wrong")
    notes: tuple[str, ...] = Field((), description="what was done to the input on the way, e.g. an EXIF rotation")

    @classmethod
    def make(cls, months: float, **fields: object) -> Prediction:
        warnings = list(fields.pop("warnings", ()))  # type: ignore[call-overload]
        lo, hi = PLAUSIBLE_MONTHS
        if not lo <= months <= hi:
            warnings.append(f"the model answered {months:.1f} months, outside the {lo:.0f}-{hi:.0f} it was trained for")
        return cls(
            bone_age_months=round(months, 2),
            bone_age_years=round(months / 12.0, 2),
            warnings=tuple(warnings),
            **fields,
        )
