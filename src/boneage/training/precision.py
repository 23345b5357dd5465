"""Training precision: Keras's mixed bfloat16 policy while a model is built, and a float32 copy
for export, so that a released model is the same whichever precision it was trained in."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from boneage.errors import ExportError

FLOAT32 = "float32"


@contextlib.contextmanager
def precision_policy(name: str) -> Iterator[None]:
    """Layers built inside take the ``name`` dtype policy (a layer keeps its policy for good, and a
    saved model stores it); the previous global policy comes back afterwards, so nothing leaks
    into later models of the process."""
    import keras

    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def _float32_policies(value: Any) -> Any:
    """The serialized model with every mixed (or low-precision) dtype policy made float32."""
    if isinstance(value, list):
        return [_float32_policies(v) for v in value]
    if not isinstance(value, dict):
        return value
    if value.get("class_name") == "DTypePolicy" and value.get("config", {}).get("name") != FLOAT32:
        return {**value, "config": {**value["config"], "name": FLOAT32}}
    return {key: _float32_policies(v) for key, v in value.items()}


def is_float32(model: Any) -> bool:
    """Whether every layer computes and stores in float32."""
    return all(layer.dtype_policy.name == FLOAT32 for layer in _layers(model))


def _layers(model: Any) -> Iterator[Any]:
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers"):  # a nested model
            yield from _layers(layer)


def as_float32(model: Any) -> Any:
    """``model`` itself when it is all float32, else a float32 rebuild with its weights (a mixed
    policy keeps the weights in float32, so they carry over exactly): what export converts."""
    if is_float32(model):
        return model
    import keras

    config = _float32_policies(keras.saving.serialize_keras_object(model))
    with precision_policy(FLOAT32):
        copy = keras.saving.deserialize_keras_object(config)
    copy.set_weights(model.get_weights())
    if not is_float32(copy):
        raise ExportError(f"{model.name}: some layers stayed below float32 after the rebuild")
    return copy
