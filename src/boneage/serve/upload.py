"""What an upload must look like before the library decodes it: a known image format by its first
bytes. The declared content type is not trusted (browsers guess it from the file name)."""

from __future__ import annotations

from boneage.serve.errors import ServeError

MAGIC = (
    b"\x89PNG\r\n\x1a\n",  # PNG
    b"\xff\xd8\xff",  # JPEG
    b"II*\0", b"MM\0*", b"II+\0", b"MM\0+",  # TIFF, BigTIFF
    b"BM",  # BMP
    b"P1", b"P2", b"P3", b"P4", b"P5", b"P6",  # PNM
)
FORMATS = "PNG, JPEG, TIFF, BMP, WebP, PNM, or DICOM (Part 10, with the DICM marker)"


def image_format_known(data: bytes) -> bool:
    """By the first bytes alone, so a renamed or mislabelled file is judged by what it holds."""
    return (data.startswith(MAGIC) or data[128:132] == b"DICM"
            or (data[:4] == b"RIFF" and data[8:12] == b"WEBP"))


def check_upload(data: bytes) -> bytes:
    """The bytes, if they can be an image the library reads: 400 when empty, 415 when of another format."""
    if not data:
        raise ServeError(400, "unreadable_image", "the upload is empty")
    if not image_format_known(data):
        raise ServeError(415, "unsupported_media_type", f"the upload is not an image this service reads: {FORMATS}")
    return data
