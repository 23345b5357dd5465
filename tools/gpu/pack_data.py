"""The training images as one compact archive for a machine that has no copy of the data.

    python tools/gpu/pack_data.py pack ../shared/data/rsna-100 .gpu/rsna-100.npz
    python tools/gpu/pack_data.py unpack .gpu/rsna-100.npz /tmp/data/rsna-100

Each image is stored as lossless WebP (about 7% smaller than the PNGs, so the 12,211 images of
rsna-100 and the code fit a 64 MiB working tree), in one ``.npz`` of plain arrays (no pickle).
Packing checks that every image decodes to the same pixels; unpacking writes PNGs and the
labels file back, so training reads them like the original folder. The archive is derived from
the RSNA data: never commit it.
"""

from __future__ import annotations

import argparse
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np

from boneage.cli.arguments import require
from boneage.training.data import pixels_sha256


def checksum(images: list[np.ndarray], ids: list[str]) -> str:
    """The training data's content checksum (as in data.json and the model card), the same for
    the folder and the archive."""
    by_id = dict(zip(ids, images, strict=True))
    return pixels_sha256(sorted(ids), by_id.__getitem__)


def pack(folder: Path, out: Path) -> None:
    labels = (folder / "labels.csv").read_bytes()
    ids = sorted(p.stem for p in folder.glob("*.png"))

    def encode(image_id: str) -> tuple[np.ndarray, bytes]:
        image = cv2.imread(str(folder / f"{image_id}.png"), cv2.IMREAD_UNCHANGED)
        if image is None or image.ndim != 2 or image.dtype != np.uint8:
            raise SystemExit(f"{image_id}.png is not an 8-bit grayscale image")
        ok, webp = cv2.imencode(".webp", image, [cv2.IMWRITE_WEBP_QUALITY, 101])  # >100: lossless
        if not ok or not np.array_equal(cv2.imdecode(webp, cv2.IMREAD_GRAYSCALE), image):
            raise SystemExit(f"{image_id}.png does not survive lossless WebP")
        return image, webp.tobytes()

    with ThreadPoolExecutor(8) as pool:
        done = list(pool.map(encode, ids))
    blobs = [b for _, b in done]
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, ids=np.array(ids), labels=np.frombuffer(labels, np.uint8),
             offsets=np.cumsum([0] + [len(b) for b in blobs]), blob=np.frombuffer(b"".join(blobs), np.uint8))
    print(f"{len(ids)} images, {out.stat().st_size / 2**20:.1f} MiB, pixels sha256 "
          f"{checksum([i for i, _ in done], ids)}")


def unpack(archive: Path, dest: Path) -> None:
    with np.load(archive) as z:
        ids, labels, offsets, blob = list(z["ids"]), z["labels"].tobytes(), z["offsets"], z["blob"]
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "labels.csv").write_bytes(labels)

    def write(i: int) -> np.ndarray:
        image = cv2.imdecode(blob[offsets[i] : offsets[i + 1]], cv2.IMREAD_GRAYSCALE)  # WebP decodes as BGR
        if image is None or not cv2.imwrite(str(dest / f"{ids[i]}.png"), image):
            raise SystemExit(f"cannot unpack {ids[i]}")
        return image

    with ThreadPoolExecutor(16) as pool:
        images = list(pool.map(write, range(len(ids))))
    print(f"{len(ids)} images in {dest}, pixels sha256 {checksum(images, [str(i) for i in ids])}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["pack", "unpack"])
    parser.add_argument("source", type=Path, help="pack: a data folder with labels.csv; unpack: the archive")
    parser.add_argument("dest", type=Path, help="pack: the archive to write; unpack: the folder to fill")
    args = parser.parse_args(argv)
    require(parser, args.source / "labels.csv" if args.action == "pack" else args.source)
    if args.action == "pack" and args.dest.is_dir():
        parser.error(f"{args.dest} is a folder: name the archive to write")
    if args.action == "unpack" and args.dest.exists() and not args.dest.is_dir():
        parser.error(f"{args.dest} is a file, not a folder")
    (pack if args.action == "pack" else unpack)(args.source, args.dest)


if __name__ == "__main__":
    main(sys.argv[1:])
