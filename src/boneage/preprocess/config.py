"""The preprocessing config records, now in :mod:`boneage.configs` (a model card carries them, and
cards sit below the pipeline); re-exported here so ``boneage.preprocess.config`` imports keep working."""

from boneage.configs import PreprocessConfig, StepConfig

__all__ = ["PreprocessConfig", "StepConfig"]
