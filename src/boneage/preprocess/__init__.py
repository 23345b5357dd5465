"""Preprocessing: a pipeline of named, configured steps that travels with every model."""

from boneage.configs import PreprocessConfig, StepConfig
from boneage.preprocess.pipeline import Pipeline, build_pipeline

__all__ = ["Pipeline", "PreprocessConfig", "StepConfig", "build_pipeline"]
