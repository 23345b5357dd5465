"""The sex and chronological age that a file's own header holds (a DICOM's PatientSex, PatientAge,
PatientBirthDate and StudyDate), and how they meet the caller's arguments: an argument wins, a
header fills what the caller left out, and a disagreement is a warning in the result.

The header's values are identifiers (a date of birth above all): no message here ever contains
one. A tag that is missing or malformed gives no value, never an exception.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from boneage.age import DAYS_PER_MONTH, MAX_AGE_MONTHS, age_from_dates, check_age
from boneage.errors import AgeError, SexError
from boneage.sex import check_male

HEADER = "the DICOM header"
SEXES = {"M": True, "F": False}  # PS3.3 C.7.1.1: M, F or O (other); O and empty give no sex
# PatientAge (VR AS): nnnD, nnnW, nnnM or nnnY; the unit is also how far off it may be.
AGE_UNITS = {"D": 1 / DAYS_PER_MONTH, "W": 7 / DAYS_PER_MONTH, "M": 1.0, "Y": 12.0}
_AGE = re.compile(r"(\d{1,3})([DWMY])")
_DATE = re.compile(r"(\d{4})(\d{2})(\d{2})")  # VR DA; "YYYY.MM.DD" of old (ACR-NEMA) files too


@dataclass(frozen=True)
class HeaderPatient:
    """What a header says of the child; None where it says nothing usable, and then why, if a tag
    was there but malformed (the tag named, never its value)."""

    male: bool | None = None
    age_months: float | None = None
    age_from: str | None = None  # the tags the age came from, for the note
    age_tolerance: float = 1.0  # months: a given age this close agrees (PatientAge in years: 12)
    sex_problem: str | None = None
    age_problem: str | None = None
    # where the header's age is used: why PatientAge stood in for the dates (a note), and how far
    # the dates and PatientAge disagree (a warning); neither holds a tag's value
    age_note: str | None = None
    age_warning: str | None = None

    @classmethod
    def from_tags(cls, sex: str | None, age: str | None, birth: str | None, study: str | None) -> HeaderPatient:
        """From the tags' text as stored (None where absent). The dates win over PatientAge (they are
        exact to the day; PatientAge is in whole days, weeks, months or years); where both give an age
        and these disagree by more than a month past PatientAge's unit, ``age_warning`` says so, and
        where the dates give none and PatientAge does, ``age_note`` says why."""
        code = (sex or "").strip().upper()
        male = SEXES.get(code)
        sex_problem = None if code in ("", "O", *SEXES) else "its PatientSex is not M, F or O"
        dated, date_problem = _dates_age(birth, study)
        aged, unit, age_problem = _patient_age(age)
        if dated is not None:
            warning = None
            if aged is not None and abs(dated - aged) > 1.0 + unit:
                gap = dated - aged
                warning = (f"{HEADER}'s PatientBirthDate and StudyDate give an age {abs(gap):.1f} months "
                           f"{'more' if gap > 0 else 'less'} than its PatientAge: the dates are used "
                           "(exact to the day; PatientAge is in whole days, weeks, months or years)")
            return cls(male, dated, "PatientBirthDate and StudyDate", 1.0, sex_problem, age_warning=warning)
        if aged is not None:
            note = None if date_problem is None else f"as its dates give none: {date_problem}"
            return cls(male, aged, "PatientAge", max(unit, 1.0), sex_problem, age_note=note)
        problems = [p for p in (date_problem if (birth or "").strip() and (study or "").strip() else None,
                                age_problem) if p]
        return cls(male, None, None, 1.0, sex_problem, "; ".join(problems) or None)


def _dates_age(birth: str | None, study: str | None) -> tuple[float | None, str | None]:
    """The age from PatientBirthDate and StudyDate, else why not (None where neither is there)."""
    has_birth, has_study = bool((birth or "").strip()), bool((study or "").strip())
    if not (has_birth or has_study):
        return None, None
    if not (has_birth and has_study):
        return None, f"its {'StudyDate' if has_birth else 'PatientBirthDate'} is missing"
    try:
        born, taken = _date(birth or "", "PatientBirthDate"), _date(study or "", "StudyDate")
        if (taken - born).days / DAYS_PER_MONTH > MAX_AGE_MONTHS:  # check_age's words are for a typed age
            raise AgeError(f"its PatientBirthDate and StudyDate are more than {MAX_AGE_MONTHS / 12:g} years apart")
        return age_from_dates(born, taken), None
    except AgeError as exc:
        return None, str(exc)


def _patient_age(age: str | None) -> tuple[float | None, float, str | None]:
    """PatientAge in months and its unit in months, else why not (None where it is not there)."""
    if not (age or "").strip():
        return None, 1.0, None
    match = _AGE.fullmatch((age or "").strip().upper())
    if match is None:
        return None, 1.0, "its PatientAge is not nnnD, nnnW, nnnM or nnnY"
    unit = AGE_UNITS[match.group(2)]
    try:
        return check_age(int(match.group(1)) * unit), unit, None
    except AgeError as exc:
        return None, 1.0, str(exc)


def _date(text: str, tag: str) -> dt.date:
    match = _DATE.fullmatch(text.strip().replace(".", ""))
    try:
        if match is None:
            raise ValueError
        return dt.date(*(int(g) for g in match.groups()))
    except ValueError as exc:
        raise AgeError(f"its {tag} is not a date (YYYYMMDD)") from exc  # not echoed: it identifies the child


@dataclass(frozen=True)
class Resolved:
    """The sex and age a prediction uses, and what the result should say about where they came from."""

    male: bool
    age_months: float | None
    notes: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()


def resolve(male: object, age_months: float | None, header: HeaderPatient | None) -> Resolved:
    """The caller's sex and age where given (checked), else the header's. ``age_months`` is already
    checked by the caller; raises :class:`SexError` when neither gives a sex."""
    notes: list[str] = []
    warnings: list[str] = []
    if male is None:
        if header is None or header.male is None:
            reason = "" if header is None else f" ({HEADER}: {header.sex_problem or 'no PatientSex M or F'})"
            raise SexError("the sex is missing: male=True or male=False in Python, --sex or a --csv list's sex column on "
                           f"the command line, the form's sex field in the service{reason}")
        sex = header.male
        notes.append(f"sex taken from {HEADER} (PatientSex)")
    else:
        sex = check_male(male)
        if header is not None and header.male is not None and header.male != sex:
            warnings.append(f"the sex given ({_sex(sex)}) differs from {HEADER}'s PatientSex ({_sex(header.male)}): "
                            "the given one is used")
    if header is None:
        return Resolved(sex, age_months)
    if age_months is None and header.age_months is not None:
        age_months = header.age_months
        notes.append(f"chronological age taken from {HEADER} ({header.age_from})"
                     + (f", {header.age_note}" if header.age_note else ""))
        if header.age_warning:
            warnings.append(header.age_warning)
    elif age_months is None and header.age_problem:
        warnings.append(f"{HEADER}: {header.age_problem}; no age was taken from it")
    elif age_months is not None and header.age_months is not None:
        gap = age_months - header.age_months
        if abs(gap) > header.age_tolerance:
            warnings.append(f"the age given is {abs(gap):.1f} months {'more' if gap > 0 else 'less'} than {HEADER}'s "
                            f"({header.age_from}): the given one is used")
    return Resolved(sex, age_months, tuple(notes), tuple(warnings))


def _sex(male: bool) -> str:
    return "male" if male else "female"
