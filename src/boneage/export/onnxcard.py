"""Write a model card into an ONNX model and seal it with its checksum."""

from __future__ import annotations

from typing import Any

from boneage.modelcard import CARD_KEY, CHECKSUM_KEY, PLACEHOLDER, ModelCard, seal


def attach_card(proto: Any, card: ModelCard) -> bytes:
    """The serialized model with ``card`` in ``metadata_props``, sealed with its content hash.

    The checksum entry goes last, so its placeholder is the final 64 bytes before the seal."""
    del proto.metadata_props[:]
    for key, value in ((CARD_KEY, card.model_dump_json()), ("boneage.version", card.version)):
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    entry = proto.metadata_props.add()
    entry.key, entry.value = CHECKSUM_KEY, PLACEHOLDER
    proto.producer_name = "boneage"
    proto.model_version = int(card.version.split(".")[0]) if card.version.split(".")[0].isdigit() else 0
    return seal(proto.SerializeToString())
