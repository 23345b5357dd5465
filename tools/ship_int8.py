"""Make a release's int8 model the shipped default, as 0.4.0 was shipped: the int8 ONNX (8 MB) and
the float Keras weights it was quantized from (the TensorFlow runtime and warm restarts), and
nothing else. The float ONNX (29 MB) and every other model leave the models folder (earlier releases
stay in git history), which keeps each release under about 40 MB (issue 14).

    python tools/ship_int8.py exported 0.5.0      # after `KERAS=1 tools/release.sh RUN 0.5.0`
"""

from __future__ import annotations

import argparse
from pathlib import Path

from boneage.cli.arguments import existing_folder, require, usage_errors
from boneage.models import load_registry, save_registry
from boneage.release import Registry


def ship(directory: Path, version: str) -> Registry:
    registry = load_registry(directory)
    new = [e for e in registry.models if e.version == version]
    floats = [e for e in new if e.quantized is None]
    int8 = [e for e in new if e.quantized == "int8"]
    if len(floats) != 1 or len(int8) != 1 or not floats[0].keras_file:
        raise SystemExit(f"{directory}: version {version} needs one float entry with its .keras and one int8 entry")
    shipped = int8[0].model_copy(update={"keras_file": floats[0].keras_file, "keras_sha256": floats[0].keras_sha256})
    result = Registry(default=shipped.ref, models=[shipped])
    save_registry(result, directory)  # first: a registry never names a file already deleted
    keep = {shipped.file, shipped.keras_file}
    for entry in registry.models:
        for name in (entry.file, entry.keras_file):
            if name and name not in keep:
                (directory / name).unlink(missing_ok=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("directory", type=existing_folder)
    parser.add_argument("version")
    args = parser.parse_args()
    require(parser, args.directory / "registry.json", hint="the models folder a release was exported to")
    with usage_errors(parser):  # a damaged registry
        result = ship(args.directory, args.version)
    print(f"default {result.default}: " + ", ".join(f for e in result.models for f in (e.file, e.keras_file) if f))


if __name__ == "__main__":
    main()
