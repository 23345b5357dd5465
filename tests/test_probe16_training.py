"""Probe 16, finding 2: the data checksum of a training run reads images as training does."""

from __future__ import annotations

import hashlib
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from boneage.training.config import DataSource
from boneage.training.data import fingerprint, read_source
from tests.helpers import synthetic_radiograph, write_png


def png_bomb(path: Path) -> Path:
    """A 100-byte PNG whose header says 8000x8000 16-bit RGBA: 512 MB decoded (OpenCV took 32 s and 1 GB)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", 8000, 8000, 16, 6, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


def test_the_checksum_reads_images_as_training_does(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    images = tmp_path / "images"
    images.mkdir()
    hand = synthetic_radiograph()
    write_png(images / "1.png", hand)
    png_bomb(images / "2.png")
    (images / "3.png").write_bytes(b"not an image")
    labels = tmp_path / "labels.csv"
    labels.write_text("id,boneage,male\n1,100,1\n2,120,0\n3,90,1\n")
    source = DataSource(labels=labels, images=images)

    def no_raw_decoding(*args: object, **kwargs: object) -> None:
        raise AssertionError("cv2.imread bypasses the reader's checks")

    monkeypatch.setattr(cv2, "imread", no_raw_decoding)
    found = fingerprint(source, read_source(source))
    # the readable image by its pixels, each refused one by its error: the same value in every run
    expected = hashlib.sha256(b"1\0" + np.ascontiguousarray(cv2.imdecode(np.fromfile(images / "1.png", np.uint8),
                                                                          cv2.IMREAD_UNCHANGED)).tobytes()
                              + b"2\0\0refused\0ImageTooLargeError" + b"3\0\0refused\0ImageReadError").hexdigest()
    assert found["images"] == 3 and found["pixels_sha256"] == expected
