"""Video decoding with PyAV (FFmpeg): AVI clips (EchoNet-Dynamic) and DICOM cine in MPEG-2, H.264 or HEVC.

pydicom has no decoder for the DICOM video transfer syntaxes (:data:`VIDEO_SYNTAXES`): their pixel data
is one compressed bit stream split over fragments, which :func:`dicom_video_stream` joins and PyAV
decodes. Frames come out one at a time as RGB ``uint8`` arrays ``(rows, cols, 3)``; only the compressed
stream is held in memory. Plain library (no Dagster).
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

import av
import numpy as np
from pydicom.encaps import generate_fragments

VIDEO_SYNTAXES = {
    "1.2.840.10008.1.2.4.100": "MPEG2 Main Profile / Main Level",
    "1.2.840.10008.1.2.4.100.1": "Fragmentable MPEG2 Main Profile / Main Level",
    "1.2.840.10008.1.2.4.101": "MPEG2 Main Profile / High Level",
    "1.2.840.10008.1.2.4.101.1": "Fragmentable MPEG2 Main Profile / High Level",
    "1.2.840.10008.1.2.4.102": "MPEG-4 AVC/H.264 High Profile / Level 4.1",
    "1.2.840.10008.1.2.4.102.1": "Fragmentable MPEG-4 AVC/H.264 High Profile / Level 4.1",
    "1.2.840.10008.1.2.4.103": "MPEG-4 AVC/H.264 BD-compatible High Profile / Level 4.1",
    "1.2.840.10008.1.2.4.103.1": "Fragmentable MPEG-4 AVC/H.264 BD-compatible High Profile / Level 4.1",
    "1.2.840.10008.1.2.4.104": "MPEG-4 AVC/H.264 High Profile / Level 4.2 For 2D Video",
    "1.2.840.10008.1.2.4.104.1": "Fragmentable MPEG-4 AVC/H.264 High Profile / Level 4.2 For 2D Video",
    "1.2.840.10008.1.2.4.105": "MPEG-4 AVC/H.264 High Profile / Level 4.2 For 3D Video",
    "1.2.840.10008.1.2.4.105.1": "Fragmentable MPEG-4 AVC/H.264 High Profile / Level 4.2 For 3D Video",
    "1.2.840.10008.1.2.4.106": "MPEG-4 AVC/H.264 Stereo High Profile / Level 4.2",
    "1.2.840.10008.1.2.4.106.1": "Fragmentable MPEG-4 AVC/H.264 Stereo High Profile / Level 4.2",
    "1.2.840.10008.1.2.4.107": "HEVC/H.265 Main Profile / Level 5.1",
    "1.2.840.10008.1.2.4.108": "HEVC/H.265 Main 10 Profile / Level 5.1",
}


@dataclass
class VideoInfo:
    """What a video container says about itself: codec, frame rate and its text tags (may identify)."""

    codec: str
    frame_rate_hz: float | None
    size: tuple[int, int]  # (rows, cols)
    frames: int  # as the container's header states it (0: unknown)
    tags: dict[str, str] = field(default_factory=dict)


def probe(src: BinaryIO | bytes) -> VideoInfo:
    """Codec, frame rate, frame size and every container/stream text tag of the first video stream."""
    with av.open(io.BytesIO(src) if isinstance(src, bytes) else src) as container:
        stream = container.streams.video[0]
        rate = float(stream.average_rate) if stream.average_rate else None
        tags = {f"container.{k}": str(v) for k, v in container.metadata.items()}
        tags |= {f"stream.{k}": str(v) for k, v in stream.metadata.items()}
        return VideoInfo(
            stream.codec_context.name, rate, (stream.height, stream.width), int(stream.frames or 0), tags
        )


def iter_video_frames(src: BinaryIO | bytes) -> Iterator[np.ndarray]:
    """Every frame of the first video stream of ``src``, decoded one at a time as RGB ``uint8``."""
    if isinstance(src, bytes):
        src = io.BytesIO(src)
    src.seek(0)
    with av.open(src) as container:
        stream = container.streams.video[0]
        for frame in container.decode(stream):
            yield frame.to_ndarray(format="rgb24")


def dicom_video_stream(f: BinaryIO, value_offset: int) -> bytes:
    """The compressed bit stream of encapsulated DICOM video pixel data whose value starts at
    ``value_offset`` (the Basic Offset Table item is skipped, every fragment after it joined)."""
    f.seek(value_offset)
    fragments = generate_fragments(f)
    next(fragments, None)  # the Basic Offset Table item (often empty)
    return b"".join(fragments)
