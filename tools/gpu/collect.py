"""Bring a lent machine's training runs home through its file limits (8 files, 16 MiB each).

    python tools/gpu/collect.py pack RUNS_DIR OUT_DIR --models 2   # there
    python tools/gpu/collect.py join FILES_DIR DEST_DIR              # here

``pack`` prints a summary of every run (epochs, seconds, images/s, best validation MAE), puts
their small files (config, history, state, logs, curves) in ``runs.tar.gz``, and splits the best
models (by validation MAE) into parts of at most 15 MiB, without their optimizer state.
``join`` rebuilds each run folder with its ``best.keras`` and checks its sha256.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tarfile
from pathlib import Path

from boneage.cli.arguments import existing_folder, non_negative, require

PART = 15 * 2**20
SMALL = ("config.json", "data.json", "history.csv", "state.json", "learning_curve.png")


def summary(run: Path) -> dict[str, object] | None:
    state_path = run / "state.json"
    if not state_path.is_file():
        return None
    state = json.loads(state_path.read_text())
    data = json.loads((run / "data.json").read_text()) if (run / "data.json").is_file() else {}
    seconds, epochs = float(state.get("seconds", 0)), int(state.get("epoch", 0))
    images = int(data.get("train_images", 0)) * epochs
    return {"run": run.name, "epochs": epochs, "seconds": round(seconds), "images_per_s": round(images / seconds, 1)
            if seconds else None, "best_val_mae": state.get("best_val_mae"), "best_epoch": state.get("best_epoch")}


def pack(runs: Path, out: Path, models: int) -> None:
    out.mkdir(parents=True, exist_ok=True)
    rows = [s for run in sorted(p for p in runs.iterdir() if p.is_dir()) if (s := summary(run))]
    for row in rows:
        print(json.dumps(row))
    with tarfile.open(out / "runs.tar.gz", "w:gz") as tar:
        for path in sorted(runs.iterdir()):
            if path.is_file() and path.suffix in (".log", ".txt", ".json", ".csv"):
                tar.add(path, arcname=path.name)
            elif path.is_dir():
                for name in SMALL:
                    if (path / name).is_file():
                        tar.add(path / name, arcname=f"{path.name}/{name}")
    ranked = sorted((r for r in rows if r["best_val_mae"] is not None), key=lambda r: float(r["best_val_mae"]))  # type: ignore[arg-type]
    import keras

    from boneage.training.train import load_saved

    for row in ranked[:models]:
        name = str(row["run"])
        slim = runs / name / "best-slim.keras"
        model = load_saved(runs / name / "best.keras", f"cannot collect {name}")  # the run's backbone, its weights
        keras.saving.save_model(model, slim)  # weights only: the optimizer state would triple the size
        data = slim.read_bytes()
        for i in range(0, len(data), PART):
            (out / f"{name}.keras.part{i // PART:02d}").write_bytes(data[i : i + PART])
        (out / f"{name}.keras.sha256").write_text(hashlib.sha256(data).hexdigest())
        print(f"{name}: best.keras in {(len(data) + PART - 1) // PART} parts, sha256 {hashlib.sha256(data).hexdigest()}")


def join(files: Path, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(files / "runs.tar.gz") as tar:
        tar.extractall(dest, filter="data")
    for digest in sorted(files.glob("*.keras.sha256")):
        name = digest.name.removesuffix(".keras.sha256")
        data = b"".join(p.read_bytes() for p in sorted(files.glob(f"{name}.keras.part*")))
        if hashlib.sha256(data).hexdigest() != digest.read_text().strip():
            raise SystemExit(f"{name}: the parts do not add up to the model that was sent (sha256 differs)")
        (dest / name).mkdir(exist_ok=True)
        (dest / name / "best.keras").write_bytes(data)
        print(f"{dest / name / 'best.keras'}: sha256 checked")


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["pack", "join"])
    parser.add_argument("source", type=existing_folder)
    parser.add_argument("dest", type=Path)
    parser.add_argument("--models", type=non_negative, default=2, help="pack: how many of the best models to send")
    args = parser.parse_args(argv)
    if args.dest.exists() and not args.dest.is_dir():
        parser.error(f"{args.dest} is a file, not a folder")
    if args.action == "join":
        require(parser, args.source / "runs.tar.gz", hint="the folder pack wrote")
    if args.action == "pack":
        pack(args.source, args.dest, args.models)
    else:
        join(args.source, args.dest)


if __name__ == "__main__":
    main(sys.argv[1:])
