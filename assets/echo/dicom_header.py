"""The DICOM header of an echo file, read without the pixel data, and the checks made before any frame.

:func:`read_header` parses the data set up to the pixel data (truncated files refused) and says where the
pixel data lies; :func:`validate` checks modality, pixel data, transfer syntax and frame count, each failure
an :class:`EchoProblem` whose message is the quarantine reason. Plain library (no Dagster).
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from typing import BinaryIO

import pydicom
from pydicom.dataset import Dataset
from pydicom.pixels import get_decoder

from . import video

IMAGE_PIXEL_REQUIRED = (
    "SamplesPerPixel",
    "PhotometricInterpretation",
    "Rows",
    "Columns",
    "BitsAllocated",
    "BitsStored",
    "HighBit",
    "PixelRepresentation",
)


class EchoProblem(ValueError):
    """A file that cannot be ingested; the message is the quarantine reason (it names no file)."""


@dataclass(frozen=True)
class PixelElement:
    """Where the pixel data value starts in the file, and its length (``None``: undefined, encapsulated)."""

    value_offset: int
    length: int | None


def scrub(message: str, *names: str) -> str:
    """An exception message fit for a quarantine reason: quoted values and the given names removed."""
    for n in sorted((n for n in names if n), key=len, reverse=True):
        message = message.replace(n, "…")
    message = re.sub(r"'[^']*'|\"[^\"]*\"", "'…'", message)
    return message[:300]


def read_header(f: BinaryIO, size: int) -> tuple[Dataset, PixelElement | None]:
    """The data set up to the pixel data, and where the pixel data is; truncated files are refused."""
    try:
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        ds.file_meta  # noqa: B018 - a file without meta raises here
    except Exception as e:  # any parser failure is a property of the file
        raise EchoProblem(
            f"corrupt or truncated file: not readable DICOM ({type(e).__name__}: {scrub(str(e))}); "
            "re-export or re-transfer it"
        ) from e
    elements = list(ds.elements())
    if not elements:
        raise EchoProblem(
            f"corrupt or truncated file: the file ends after its file meta information ({size} bytes); "
            "re-transfer it"
        )
    last_end = 0
    for e in elements:
        tell, length = getattr(e, "value_tell", None), getattr(e, "length", None)
        if tell is None or length is None or length == 0xFFFFFFFF:
            continue
        if tell + length > size:
            raise EchoProblem(
                f"corrupt or truncated file: element {e.tag} needs {length} bytes at byte {tell} but the "
                f"file ends at byte {size}; re-transfer it"
            )
        last_end = max(last_end, tell + length)
    pos = f.tell()
    head = f.read(12)
    ts = ds.file_meta.get("TransferSyntaxUID")
    little = ts is None or ts.is_little_endian
    if len(head) >= 8:
        group, elem = struct.unpack("<HH" if little else ">HH", head[:4])
        if (group, elem) == (0x7FE0, 0x0010):
            implicit = ts is not None and ts.is_implicit_VR
            if implicit:
                (length,), start = struct.unpack("<L" if little else ">L", head[4:8]), pos + 8
            else:
                (length,), start = struct.unpack("<L" if little else ">L", head[8:12]), pos + 12
            if length != 0xFFFFFFFF and start + length > size:
                raise EchoProblem(
                    f"corrupt or truncated file: the pixel data needs {length} bytes but the file ends "
                    f"{size - start} bytes after its start; re-transfer it"
                )
            if length == 0xFFFFFFFF:
                _check_fragments(f, start, size, little)
            return ds, PixelElement(start, None if length == 0xFFFFFFFF else length)
    if 0 < size - max(last_end, pos) < 8:
        raise EchoProblem("corrupt or truncated file: the file ends inside an element tag; re-transfer it")
    return ds, None


def _check_fragments(f: BinaryIO, start: int, size: int, little: bool) -> None:
    """Walk the items of encapsulated pixel data (headers only, seeking over the values): the file must
    reach the Sequence Delimitation Item, or it was cut."""
    fmt = "<HHL" if little else ">HHL"
    pos = start
    while True:
        f.seek(pos)
        head = f.read(8)
        if len(head) < 8:
            raise EchoProblem(
                f"corrupt or truncated file: the encapsulated pixel data ends at byte {size} without "
                "its sequence delimiter; re-transfer it"
            )
        group, elem, length = struct.unpack(fmt, head)
        if (group, elem) == (0xFFFE, 0xE0DD):
            return
        if (group, elem) != (0xFFFE, 0xE000) or pos + 8 + length > size:
            raise EchoProblem(
                f"corrupt or truncated file: a pixel data fragment at byte {pos} is damaged or runs past "
                f"the end of the file ({size} bytes); re-transfer it"
            )
        pos += 8 + length


def _frame_bytes(ds: Dataset) -> int:
    rows, cols = int(ds.Rows), int(ds.Columns)
    if int(ds.BitsAllocated) == 1:
        return (rows * cols + 7) // 8
    return rows * cols * int(ds.get("SamplesPerPixel", 1)) * ((int(ds.BitsAllocated) + 7) // 8)


def validate(ds: Dataset, pixels: PixelElement | None) -> tuple[int, bool]:
    """``(frames, is_video)``; raises :class:`EchoProblem` unless ``ds`` is a decodable ultrasound image."""
    modality = str(ds.get("Modality", "") or "")
    if pixels is None and not modality:
        raise EchoProblem(
            "corrupt or truncated file: neither Modality nor pixel data is present, the file ends "
            "inside its header; re-transfer it"
        )
    if pixels is None and not all(kw in ds for kw in IMAGE_PIXEL_REQUIRED):
        # the Image Pixel attributes (group 0028) come just before the pixel data: a file without them
        # and without pixel data was cut before them
        raise EchoProblem(
            "corrupt or truncated file: the file ends before its image attributes and pixel data; "
            "re-transfer it"
        )
    if modality != "US":
        raise EchoProblem(
            f"non-ultrasound modality: Modality={modality or 'missing'}; only US files belong in an "
            "echo source"
        )
    if pixels is None:
        raise EchoProblem(
            "missing pixel data: no (7FE0,0010) element (or the file is truncated before it); "
            "re-export the clip with images"
        )
    ts = ds.file_meta.get("TransferSyntaxUID")
    if ts is None:
        raise EchoProblem("unsupported transfer syntax: no TransferSyntaxUID in the file meta")
    is_video = str(ts) in video.VIDEO_SYNTAXES
    if not is_video:
        try:
            decoder = get_decoder(ts)
        except NotImplementedError:
            decoder = None
        if decoder is None or not decoder.is_available:
            raise EchoProblem(
                f"unsupported transfer syntax: {ts.name} ({ts}) has no installed decoder (install the "
                "matching pylibjpeg plugin or python-gdcm)"
            )
    if "NumberOfFrames" in ds:
        try:
            n = int(ds.NumberOfFrames)
        except (TypeError, ValueError) as e:
            raise EchoProblem("frame-count mismatch: NumberOfFrames is not a number") from e
        if n < 1:
            raise EchoProblem(
                f"frame-count mismatch: NumberOfFrames={n}; a clip needs at least one frame (a value "
                "of 0 is never read as 1)"
            )
    else:
        n = 1
    if pixels.length is not None and not ts.is_encapsulated:
        per = _frame_bytes(ds)
        held = pixels.length // per if per else 0
        if held < n:
            raise EchoProblem(
                f"frame-count mismatch: NumberOfFrames={n} but the pixel data holds {held} frames; the "
                "file is truncated or its header is wrong"
            )
    return n, is_video
