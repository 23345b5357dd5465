"""The input checks that run before the pipeline: refuse what is not a radiograph, turn a
radiograph that was rotated by quarter turns upright, and flag a mirrored one. Each action is
written into the prediction (``notes`` for what was done, ``warnings`` for doubts), so no answer
changes silently. With ``strict=False`` nothing is refused or turned: the findings become warnings."""

from __future__ import annotations

import numpy as np

from boneage.errors import NotARadiographError
from boneage.preprocess import content, orientation
from boneage.preprocess.builtin import to_uint8_gray
from boneage.preprocess.crop import downscale
from boneage.preprocess.pipeline import Notes

CHECK_SIZE = 256
TURNED = "turned {degrees} degrees clockwise to upright"


def turns_applied(notes: Notes) -> int:
    """The quarter turns :func:`screen` undid (0-3), for callers that show the image (explain)."""
    for turns in (1, 2, 3):
        if any(note.startswith(TURNED.format(degrees=90 * turns)) for note in notes.applied):
            return turns
    return 0


def screen(image: np.ndarray, notes: Notes, strict: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """``image``, turned upright when the orientation check is sure it was turned (``strict``), and
    its 8-bit grayscale working copy (at most CHECK_SIZE a side) for the checks that follow."""
    small, _ = downscale(to_uint8_gray(image), CHECK_SIZE)
    found = content.problems(image, small)
    if found:
        if strict:
            raise NotARadiographError(f"not a hand radiograph: {'; '.join(found)} "
                                      "(check_input=False, or --no-input-check, answers anyway)")
        notes.warnings.extend(f"{p}: is this a hand radiograph?" for p in found if "blank" not in p)  # blank: input_warnings says it
        return image, small
    found_orientation = orientation.detect(small)  # trained on inverted radiographs too
    sure = orientation.threshold()
    turns, p_turns = found_orientation.turns, found_orientation.turns_probability
    if turns and p_turns >= sure:
        degrees = found_orientation.degrees_clockwise_to_upright
        if strict:
            image, small = orientation.turn_upright(image, turns), orientation.turn_upright(small, turns)
            notes.applied.append(f"{TURNED.format(degrees=degrees)} (orientation check, p={p_turns:.2f})")
        else:
            notes.warn(f"the hand looks turned: {degrees} degrees clockwise would make it upright (p={p_turns:.2f})")
    elif turns:
        notes.warn(f"the orientation is uncertain: the hand may be turned by {90 * turns} degrees (p={p_turns:.2f})")
    if found_orientation.mirrored_probability >= sure:
        notes.warn(f"the hand looks mirrored (a right hand, or a flipped image; p={found_orientation.mirrored_probability:.2f}): "
                   "the models were trained on left hands, answers on mirrored ones were 7 months worse on average")
    return image, small
