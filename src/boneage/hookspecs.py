"""The hooks a plugin can implement. Every hook contributes items; none picks an answer.

Each ``boneage_register_*`` hook returns a list of specs (see :mod:`boneage.specs`), made with
keyword arguments; it is called once, when its plugin registers, and the results of all plugins,
built-in ones included, are collected and keyed by name. The hooks are part of the plugin API
versioned by :data:`boneage.specs.API_VERSION`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from boneage.specs import BackboneSpec, CropperSpec, ReferenceSpec, RuntimeSpec, StepSpec

hookspec = pluggy.HookspecMarker("boneage")
hookimpl = pluggy.HookimplMarker("boneage")


@hookspec
def boneage_register_preprocess_steps() -> list[StepSpec]:  # type: ignore[empty-body]
    """Preprocessing steps that a model's preprocessing config can name."""


@hookspec
def boneage_register_croppers() -> list[CropperSpec]:  # type: ignore[empty-body]
    """Hand croppers that the ``hand_crop`` step can use by name."""


@hookspec
def boneage_register_backbones() -> list[BackboneSpec]:  # type: ignore[empty-body]
    """Keras model builders that ``boneage train --backbone NAME`` can use."""


@hookspec
def boneage_register_runtimes() -> list[RuntimeSpec]:  # type: ignore[empty-body]
    """Inference runtimes that ``BoneAgeEstimator(runtime=NAME)`` can use."""


@hookspec
def boneage_register_references() -> list[ReferenceSpec]:  # type: ignore[empty-body]
    """Bone-age references (mean and SD by age and sex) that ``predict(..., age_months=)`` compares with."""
