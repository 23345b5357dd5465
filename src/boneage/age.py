"""The child's chronological age: from months, from ``10y3m``-style text, or from two dates.

Ages are months (float). A negative, non-finite or adult-sized age, a date that is not a date, or
a study before the birth is an :class:`AgeError`, never a silent number.
"""

from __future__ import annotations

import datetime as dt
import math
import re

import numpy as np

from boneage.errors import AgeError

MAX_AGE_MONTHS = 360.0  # 30 years: bone age is read in children; anything older is a typo
DAYS_PER_MONTH = 365.25 / 12
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)")
_TEXT = re.compile(r"(?:(\d+(?:\.\d+)?)\s*y(?:ears?)?)?\s*(?:(\d+(?:\.\d+)?)\s*m(?:onths?)?)?", re.IGNORECASE)


def check_age(months: object) -> float:
    """The age in months, if it can be a child's. The value refused is never echoed: a date of birth
    typed where the age goes, as DICOM writes it (``20150302``), reads as a number (it was shown as
    "2.01503e+07 months", its year and month), and an int past 1e308 cannot be a float at all."""
    if isinstance(months, (bool, np.bool_)) or not isinstance(months, (int, float, np.integer, np.floating)):
        raise AgeError(f"the age must be a number of months, not a {type(months).__name__}")
    try:
        value = float(months)
    except OverflowError:  # an int of 400 digits (was OverflowError, not an AgeError)
        value = math.inf
    if not math.isfinite(value) or value < 0:
        raise AgeError("the age must be a finite number of months, 0 or more")
    if value > MAX_AGE_MONTHS:
        raise AgeError(f"an age of more than {MAX_AGE_MONTHS:g} months (30 years) is not a child's; bone age is read "
                       "up to about 19 years (a date of birth is not an age)")
    return value + 0.0  # -0.0 becomes 0.0 (it was shown as "-0.0 mo")


def parse_age(text: str) -> float:
    """Months from ``123`` (months), ``10y``, ``10y3m``, ``10.5y``, ``3m`` or ``10 years 3 months``."""
    cleaned = str(text).strip()
    if _NUMBER.fullmatch(cleaned):  # float() alone also took "1_2" as 12, and "1e2"
        return check_age(float(cleaned))
    match = _TEXT.fullmatch(cleaned)
    if not cleaned or match is None or not any(match.groups()):
        # not echoed: what was typed may be a date of birth
        raise AgeError("the age must be months (123) or years and months (10y3m)")
    years, months = (float(g) if g else 0.0 for g in match.groups())
    if match.group(1) and months >= 12:  # "10y13m" was 133 months: a typo for 10y3m or 11y1m, not an age
        raise AgeError("the months after the years must be under 12 (10y3m)")
    return check_age(12 * years + months)


def parse_date(text: str | dt.date, what: str) -> dt.date:
    """An ISO date (``YYYY-MM-DD``) or a date object; ``what`` names the field in the :class:`AgeError` raised
    otherwise, which never echoes the text (dates identify patients)."""
    if isinstance(text, dt.datetime):  # a datetime is a date too, but does not compare with one
        return text.date()
    if isinstance(text, dt.date):
        return text
    try:
        return dt.date.fromisoformat(str(text).strip())
    except ValueError as exc:
        raise AgeError(f"{what} must be a date as YYYY-MM-DD") from exc  # dates identify patients: not echoed


def age_from_dates(birth: str | dt.date, study: str | dt.date) -> float:
    """Months between the date of birth and the study date (average month length)."""
    born, taken = parse_date(birth, "the date of birth"), parse_date(study, "the study date")
    if taken < born:
        raise AgeError("the study date is before the date of birth")
    if taken > dt.date.today() + dt.timedelta(days=1):  # a day's grace for time zones
        raise AgeError("the study date is in the future")
    return check_age((taken - born).days / DAYS_PER_MONTH)
