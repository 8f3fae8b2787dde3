"""Synthetic echo clips as video: PyAV encoding of rendered frames, and DICOM cine (H.264 / MPEG-2) files
built from them (:func:`video_dicom`), for the decoder tests and benchmarks."""

from __future__ import annotations

import io
from fractions import Fraction

import numpy as np
from pydicom.encaps import encapsulate

from .synth import SynthOptions, build_dataset, encode, fake_patients, sample_labels
from .synth_frames import render_frames


def encode_video(frames: np.ndarray, fps: float = 30.0, codec: str = "libx264", fmt: str = "h264") -> bytes:
    """RGB frames ``(n, rows, cols, 3)`` (even sizes) as a video in memory with PyAV: an elementary stream
    (``fmt="h264"``, ``"mpeg2video"``) for DICOM cine, or a container (``fmt="avi"``) like EchoNet's."""
    import av

    buf = io.BytesIO()
    with av.open(buf, "w", format=fmt) as out:
        stream = out.add_stream(codec, rate=Fraction(fps).limit_denominator(1000))
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        for frame in frames:
            for packet in stream.encode(
                av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            ):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buf.getvalue()


VIDEO_SYNTAX = {"libx264": "1.2.840.10008.1.2.4.102", "mpeg2video": "1.2.840.10008.1.2.4.100"}


def video_dicom(n_frames: int = 8, size: int = 128, seed: int = 0, codec: str = "libx264") -> bytes:
    """A synthetic clip re-encoded as DICOM cine in MPEG-4 AVC/H.264 High Profile (``libx264``) or MPEG-2
    Main Profile (``mpeg2video``): the whole stream in one fragment after an empty Basic Offset Table."""
    rng = np.random.default_rng(seed)
    patient = fake_patients(1, rng)[0]
    opts = SynthOptions(frames=n_frames, size=size, photometric="RGB")
    labels = sample_labels(rng, "A4C")
    frames, _, _ = render_frames(labels, opts, rng, patient.name.replace("^", " "))
    ds = build_dataset(frames, patient, opts, rng, 0)
    stream = encode_video(frames, opts.fps, codec, "h264" if codec == "libx264" else "mpeg2video")
    ds.file_meta.TransferSyntaxUID = VIDEO_SYNTAX[codec]
    ds.PhotometricInterpretation = "YBR_PARTIAL_420"
    ds.PlanarConfiguration = 0
    ds.LossyImageCompression = "01"
    ds.PixelData = encapsulate([stream])
    ds["PixelData"].VR = "OB"
    return encode(ds)
