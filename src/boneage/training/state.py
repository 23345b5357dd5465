"""A run's ``state.json``: where ``--resume`` goes on from and what ``export`` writes into the card.
Read in one place, so that a damaged file is the same :class:`~boneage.errors.ConfigError` to both;
written, as the run's models and the export's float16 ``.keras`` are, through
:func:`boneage.whole.write_whole`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from boneage.defaults import MAX_CONFIG_BYTES
from boneage.errors import ConfigError, validation_problems
from boneage.files import read_regular_file
from boneage.whole import write_whole


class RunState(BaseModel):
    """What ``train`` writes after each epoch and at each checkpoint inside one. Strict: ``"0"`` is not a
    number and ``true`` not a count; every number finite, so NaN or Infinity (not JSON) never counts as a best."""
    model_config = ConfigDict(extra="ignore", strict=True, allow_inf_nan=False)

    epoch: int = Field(ge=0, description="epochs finished")
    best_val_mae: float | None = Field(ge=0, description="the best validation MAE in months; null before an epoch")
    best_epoch: int | None = Field(ge=1, description="the epoch (from 1) of best_val_mae")
    wait: int = Field(ge=0, description="epochs since the best, for early stopping")
    seconds: float = Field(ge=0, description="training time so far")
    batch: int = Field(0, ge=0, description="batches of the current epoch done (a checkpoint inside an epoch)")
    max_epochs: int | None = Field(None, ge=1, description="the most epochs fit_epochs_to_time may set")

    @model_validator(mode="after")
    def _best_with_its_epoch(self) -> RunState:
        if (self.best_val_mae is None) != (self.best_epoch is None):
            raise ValueError("best_val_mae and best_epoch go together (both null before the first epoch)")
        return self


def read_state(path: Path) -> dict[str, Any]:
    """The state in ``path`` as written (keys a later version adds are kept), or a ConfigError
    "PATH is not a run's state: ..." (``--resume`` failed with a JSONDecodeError, a TypeError or a
    KeyError, exit 70, some only after the data and the model had loaded)."""
    try:
        state = json.loads(read_regular_file(path, MAX_CONFIG_BYTES))
        if not isinstance(state, dict):
            raise TypeError(f"a JSON {type(state).__name__}, not an object")
        RunState.model_validate(state)
    except ValidationError as exc:
        raise ConfigError(f"{path} is not a run's state: {validation_problems(exc.errors())}"[:500]) from exc
    except (OSError, ValueError, TypeError, RecursionError) as exc:
        raise ConfigError(f"{path} is not a run's state: {type(exc).__name__}: {exc}"[:500]) from exc
    return state


def write_state(run: Path, state: dict[str, Any]) -> None:
    """Through a temporary file (a kill never leaves half a state), and as strict JSON: a NaN would
    be written as a bare ``NaN`` token that strict parsers, and :func:`read_state`, refuse."""
    text = json.dumps(state, indent=1, allow_nan=False)
    write_whole(run / "state.json", lambda temporary: temporary.write_text(text))
