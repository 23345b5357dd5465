"""What the fifteenth probe's closing note left open, fixed in the next session."""

from __future__ import annotations

import json

import numpy as np

from boneage.training.config import TrainConfig


def test_numpy_scalars_in_options_are_written_as_plain_json() -> None:
    # np.float32 options were accepted, trained on, then failed writing config.json (PydanticSerializationError)
    steps = [{"name": "grayscale"}, {"name": "resize", "params": {"size": np.int64(100)}},
             {"name": "clahe", "params": {"clip_limit": np.float32(2.0)}}, {"name": "normalize"}]
    config = TrainConfig(backbone="densenet121", backbone_options={"dropout": np.float32(0.25)},
                         preprocessing={"steps": steps}, sources=[{"labels": "a.csv", "images": "b"}])
    written = json.loads(config.model_dump_json())
    assert written["backbone_options"] == {"dropout": 0.25}
    assert [s["params"] for s in written["preprocessing"]["steps"]][1:3] == [{"size": 100}, {"clip_limit": 2.0}]
    assert TrainConfig.model_validate(written) == config  # and read back as it was
