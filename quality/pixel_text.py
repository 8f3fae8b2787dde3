"""OCR pixel check: read the text left in published frames and match it against the file's identifiers.

Blanking outside the ultrasound image regions (:func:`assets.echo.deid.ultrasound_regions`) removes the
usual burned-in bands; text burned *inside* an image region (a name typed over the tissue, a measurement
label with the MRN) is not removed by it. This module reads what is about to be published with a
maintained OCR engine and reports every identifier of the file that appears in it, so that the clip is
quarantined before anything is written.

Engine: `RapidOCR <https://github.com/RapidAI/RapidOCR>`_ (``rapidocr-onnxruntime``: PaddleOCR's PP-OCRv4
detection and recognition models run by ONNX Runtime; the models ship inside the wheel, nothing is
downloaded). Debian's Tesseract 5 through ``pytesseract`` is supported for comparison
(``benchmarks/bench_ocr.py``); RapidOCR found more of the planted text (BENCHMARKS.md, "OCR pixel check").
A missing engine is an error (:class:`OcrUnavailable`), never a skipped check.

Matching uses :class:`quality.phi.Matcher` (the audit's matcher, with whatever variants it knows) on the
OCR text and on a normalised copy in which digit runs split by one separator are joined
(``1985-03-06`` and ``4040 4040 404`` read as ``19850306`` and ``40404040404``): OCR keeps the separators
the scanner drew, the header stores the bare digits. Frames smaller than :data:`UPSCALE_BELOW` pixels are
read at twice their size. Plain library (no Dagster).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache

import numpy as np
from PIL import Image

from .phi import Identifier, Matcher

ENGINES = ("rapidocr", "tesseract")
DEFAULT_ENGINE = "rapidocr"
UPSCALE_BELOW = 400  # frames whose longer side is shorter are read at twice their size (small text)
_DIGIT_JOIN = re.compile(r"(?<=\d)[ \-/.:_](?=\d)")


class OcrUnavailable(RuntimeError):
    """The OCR engine cannot run here; the pixel check must not be skipped silently."""


@cache
def _rapidocr():
    try:
        from rapidocr_onnxruntime import RapidOCR
    except ImportError as e:  # pragma: no cover - the package is a project dependency
        raise OcrUnavailable(
            "the OCR pixel check needs rapidocr-onnxruntime (a project dependency): reinstall the "
            f"project (pip install -e .); nothing was published ({e})"
        ) from e
    # Text lines only (no 180-degree classifier: scanners draw upright text); the detector sees the frame
    # at its own resolution, never upscaled (limit on the longer side).
    return RapidOCR(use_cls=False, det_limit_type="max", det_limit_side_len=1280, print_verbose=False)


def _tesseract(frame: np.ndarray) -> str:
    try:
        import pytesseract

        return pytesseract.image_to_string(frame, config="--psm 11")
    except (OSError, ImportError) as e:
        raise OcrUnavailable(
            "the tesseract engine needs Debian's tesseract-ocr and the pytesseract package "
            f"({type(e).__name__}); use the default engine rapidocr"
        ) from e


def check_engine(engine: str = DEFAULT_ENGINE) -> None:
    """Load ``engine`` now, or raise :class:`OcrUnavailable` (call it before reading any file)."""
    if engine not in ENGINES:
        raise ValueError(f"unknown OCR engine {engine!r}: use one of {ENGINES}")
    if engine == "rapidocr":
        _rapidocr()
    else:
        _tesseract(np.full((8, 8), 255, dtype=np.uint8))


def read_text(frame: np.ndarray, engine: str = DEFAULT_ENGINE) -> str:
    """The text OCR reads in ``frame`` (rows, cols[, 3] uint8), one line per detected text box."""
    if engine not in ENGINES:
        raise ValueError(f"unknown OCR engine {engine!r}: use one of {ENGINES}")
    if frame.size == 0 or not frame.any():
        return ""
    if max(frame.shape[:2]) < UPSCALE_BELOW:
        # 12 px text on a 256-pixel frame is read at 24 px: measured, it turns partial reads
        # ("KONKWO,OL") into whole ones (benchmarks/bench_ocr.py --pipeline)
        size = (frame.shape[1] * 2, frame.shape[0] * 2)
        frame = np.asarray(Image.fromarray(frame).resize(size, Image.BICUBIC))
    frame = np.ascontiguousarray(frame)
    if engine == "tesseract":
        return _tesseract(frame)
    if frame.ndim == 2:
        frame = np.repeat(frame[..., None], 3, axis=2)
    result, _ = _rapidocr()(frame)
    return "\n".join(str(line[1]) for line in result or [])


def normalised(text: str) -> str:
    """``text`` and, on a second line, the same text with digit runs joined across one separator."""
    joined = _DIGIT_JOIN.sub("", text)
    return text if joined == text else f"{text}\n{joined}"


@dataclass
class PixelText:
    """What OCR read in each frame (``where`` -> text) and the identifiers found, as ``(attribute,
    where)``; the text itself stays in memory (it may identify) and is never published."""

    texts: dict[str, str]
    leaks: list[tuple[str, str]]


def pixel_text_leaks(
    frames: Mapping[str, np.ndarray], identifiers: Iterable[Identifier], engine: str = DEFAULT_ENGINE
) -> PixelText:
    """OCR every frame of ``frames`` (``where`` -> pixels) and report the ``identifiers`` it reads."""
    matcher = Matcher(identifiers)
    texts, leaks = {}, []
    for where, frame in frames.items():
        text = read_text(frame, engine)
        texts[where] = text
        leaks += [(attribute, where) for attribute in sorted(matcher.find(normalised(text)))]
    return PixelText(texts, leaks)
