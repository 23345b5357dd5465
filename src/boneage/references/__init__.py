"""Bone-age references: the mean and SD of bone age at each chronological age, by sex.

A reference is data with its source (a JSON file here, or a plugin's ``ReferenceSpec``); it turns
a bone age and the child's age into BA - CA, an SDS and a category. Values are interpolated
linearly between the table's rows and never extrapolated: outside the table the comparison says
there is no reference at that age instead of inventing one.
"""

from __future__ import annotations

import json
import math
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING

import numpy as np
from pydantic import BaseModel, ConfigDict, model_validator

from boneage.containment import plugin_code
from boneage.errors import ConfigError, PluginError, failures_as
from boneage.hookspecs import hookimpl
from boneage.prediction import NORMAL_SDS, Category, Comparison
from boneage.specs import ReferenceSpec

if TYPE_CHECKING:
    from boneage.plugins import Plugins

DEFAULT_REFERENCE = "greulich-pyle-brush"


class ReferenceTable(BaseModel):
    """Rows of (chronological age, mean bone age, SD), in months, per sex, ascending in age."""

    # every number finite: a NaN mean or an infinite SD gave an SDS of NaN, which fell through to "normal"
    model_config = ConfigDict(frozen=True, extra="ignore", allow_inf_nan=False)

    name: str
    title: str
    source: str
    population: str = ""
    male: tuple[tuple[float, float, float], ...]
    female: tuple[tuple[float, float, float], ...]

    @model_validator(mode="after")
    def _usable(self) -> ReferenceTable:
        for sex, rows in (("male", self.male), ("female", self.female)):
            ages = [r[0] for r in rows]
            if len(rows) < 2 or ages != sorted(set(ages)) or any(not r[2] > 0 for r in rows):
                raise ValueError(f"the {sex} rows need two or more ascending ages and positive SDs")
        return self

    def rows(self, male: bool) -> np.ndarray:
        """One sex's rows as an (n, 3) array: chronological age, mean bone age and SD, all in months."""
        return np.asarray(self.male if male else self.female, dtype=float)

    def span(self, male: bool) -> tuple[float, float]:
        """The first and last chronological age (months) the table covers for this sex; outside it there is no
        comparison, as values are never extrapolated."""
        rows = self.rows(male)
        return float(rows[0, 0]), float(rows[-1, 0])

    def at(self, age_months: float, male: bool) -> tuple[float, float] | None:
        """(mean bone age, SD) at this chronological age, or None outside the table."""
        rows = self.rows(male)
        if not rows[0, 0] <= age_months <= rows[-1, 0]:
            return None
        return float(np.interp(age_months, rows[:, 0], rows[:, 1])), float(np.interp(age_months, rows[:, 0], rows[:, 2]))


def compare(bone_age_months: float, age_months: float, male: bool, table: ReferenceTable) -> Comparison:
    """SDS = (BA - mean BA at CA) / SD at CA, both interpolated at the child's age (CA), rounded to 0.01; the
    category is that of the rounded SDS, so +2.00 is normal and +2.01 advanced whatever digits were cut."""
    base = {"chronological_age_months": round(age_months, 2),
            "bone_age_minus_age_months": round(bone_age_months - age_months, 2), "reference": table.name}
    found = table.at(age_months, male)
    if found is None:
        lo, hi = table.span(male)
        sex = "boys" if male else "girls"
        return Comparison(**base, note=f"no reference at this age: {table.name} covers {lo:g}-{hi:g} months for {sex}")
    mean, sd = found
    sds = (bone_age_months - mean) / sd
    if not math.isfinite(sds):  # a plugin's table the checks above did not see (a NaN is never < -2 nor > 2)
        return Comparison(**base, note=f"no usable reference value at this age in {table.name}")
    shown = round(sds, 2) + 0.0  # the category is of the SDS given (2.004 was "2.0", "advanced"); -0.0 is 0.0
    category: Category = "delayed" if shown < -NORMAL_SDS else "advanced" if shown > NORMAL_SDS else "normal"
    return Comparison(**base, expected_bone_age_months=round(mean, 2), sd_months=round(sd, 2),
                      sds=shown, category=category)


@cache
def _packaged(name: str) -> ReferenceTable:
    text = resources.files(__name__).joinpath(f"{name}.json").read_text(encoding="utf-8")
    return ReferenceTable.model_validate(json.loads(text))


@hookimpl
def boneage_register_references() -> list[ReferenceSpec]:
    """Registers the packaged Greulich & Pyle / Brush table through the plugin API, as a third-party reference
    would be; it is read on first use."""
    return [ReferenceSpec(
        name=DEFAULT_REFERENCE,
        load=lambda: _packaged(DEFAULT_REFERENCE),
        doc="Greulich & Pyle / Brush Foundation (1959): boys 3-204 months, girls 3-192 months",
    )]


def load_reference(name: str | None = None, plugins: Plugins | None = None) -> ReferenceTable:
    """A registered reference by name (default: Greulich & Pyle / Brush Foundation), from ``plugins``
    (default: the process-wide registry)."""
    from boneage.plugins import get_plugins

    registry = get_plugins(plugins)
    spec: ReferenceSpec = registry.get("references", name or DEFAULT_REFERENCE).spec
    with failures_as(PluginError, f"reference {spec.name!r} could not be loaded"), plugin_code():
        table = spec.load()
    if not isinstance(table, ReferenceTable):
        raise ConfigError(f"reference {spec.name!r} loaded a {type(table).__name__}, not a ReferenceTable")
    return table
