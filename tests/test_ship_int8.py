"""tools/ship_int8.py: a release's models folder reduced to what ships (the int8 ONNX and the float
.keras), the earlier version's files gone, the int8 model the default with its Keras weights named."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from boneage.models import load_registry, save_registry
from boneage.release import Registry, RegistryEntry

TOOL = Path(__file__).parents[1] / "tools" / "ship_int8.py"


def entry(name: str, version: str, quantized: str | None = None, keras: str | None = None) -> RegistryEntry:
    return RegistryEntry(name=name, version=version, file=f"{name}-{version}.onnx", sha256="a" * 64, size=1,
                         backbone="densenet121", quantized=quantized, keras_file=keras,
                         keras_sha256="b" * 64 if keras else None)


def ship(directory: Path, version: str) -> Registry:
    spec = importlib.util.spec_from_file_location("ship_int8", TOOL)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.ship(directory, version)


def test_only_the_int8_model_and_the_float_weights_of_the_new_version_stay(tmp_path: Path) -> None:
    old = entry("boneage-densenet121-int8", "0.4.0", "int8", "boneage-densenet121-0.4.0.keras")
    new_float = entry("boneage-densenet121", "0.5.0", keras="boneage-densenet121-0.5.0.keras")
    new_int8 = entry("boneage-densenet121-int8", "0.5.0", "int8")
    for e in (old, new_float, new_int8):
        for name in (e.file, e.keras_file):
            if name:
                (tmp_path / name).write_bytes(b"x")
    save_registry(Registry(default=new_float.ref, models=[old, new_float, new_int8]), tmp_path)

    ship(tmp_path, "0.5.0")

    registry = load_registry(tmp_path)
    assert registry.default == "boneage-densenet121-int8-0.5.0"
    (shipped,) = registry.models
    assert shipped.keras_file == "boneage-densenet121-0.5.0.keras" and shipped.keras_sha256 == "b" * 64
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "boneage-densenet121-0.5.0.keras", "boneage-densenet121-int8-0.5.0.onnx", "registry.json"]


def test_a_version_without_its_float_weights_is_refused_and_nothing_is_removed(tmp_path: Path) -> None:
    new_float, new_int8 = entry("boneage-densenet121", "0.5.0"), entry("boneage-densenet121-int8", "0.5.0", "int8")
    for e in (new_float, new_int8):
        (tmp_path / e.file).write_bytes(b"x")
    save_registry(Registry(default=new_float.ref, models=[new_float, new_int8]), tmp_path)
    with pytest.raises(SystemExit, match="needs one float entry with its .keras"):
        ship(tmp_path, "0.5.0")
    assert len(list(tmp_path.iterdir())) == 3
