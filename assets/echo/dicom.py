"""One echo clip (a DICOM file, or an AVI) into one de-identified ``echo_studies`` row, frame by frame.

:func:`decode_dicom` / :func:`decode_avi` read a file object and return an :class:`EchoOutput` (the row,
the identifiers read, the encoded keyframes and clip) or raise :class:`EchoProblem`, whose message is the
quarantine reason; :func:`store_outputs` then writes the keyframes and the clip through a Storage-like
object. Reasons name the file only by its pseudonymous key (:func:`assets.echo.deid.file_key`).

Memory stays bounded by a few frames, never the file: the header is parsed up to the pixel data
(``dcmread(..., stop_before_pixels=True)``), then frames are decoded one at a time from the file object
(``pydicom.pixels.iter_pixels``; PyAV for MPEG-2/H.264/HEVC cine and AVI, :mod:`assets.echo.video`).
Every frame is decoded, which proves the file whole; only keyframes and the few frames of the compact clip
are kept, each blanked outside the ultrasound region(s) (:func:`assets.echo.deid.ultrasound_regions`).

Checks, in order, each a quarantine reason: readable DICOM and not truncated (an element running past
the end of the file, a partial tag, or no data set: "corrupt or truncated file"); Modality US; pixel data
present; a transfer syntax with a decoder; ``NumberOfFrames`` >= 1 (0 is refused, never read as 1); pixel
data long enough for the frames; usable ultrasound regions; every frame decodes.

Outputs: keyframes as PNG (no text chunks) via ``storage.put_image``; the compact clip as a
content-addressed ``.npy`` (uint8, ``(CLIP_FRAMES, CLIP_SIZE, CLIP_SIZE[, 3])``, the sector box resized)
under ``clips/<aa>/<sha256>.npy``. Plain library (no Dagster).
"""

from __future__ import annotations

import hashlib
import io
import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import numpy as np
import polars as pl
import pydicom
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.pixels import apply_color_lut, iter_pixels

from quality.echo_contracts import FRAME_RATE_HZ
from quality.phi import Identifier, collect_identifiers

from . import deid, video
from .dicom_header import EchoProblem, read_header, scrub, validate

CLIP_FRAMES = 16
CLIP_SIZE = 112
N_EVEN_KEYFRAMES = 3
N_OCR_CLIP_FRAMES = 2  # clip frames read by the OCR pixel check besides every keyframe
SYNTH_IMPLEMENTATION = "MEDRWR_SYNTH"

ECHO_SCHEMA = {
    "clip_id": pl.Utf8,
    "file_key": pl.Utf8,
    "source": pl.Utf8,
    "patient_key": pl.Utf8,
    "study_key": pl.Utf8,
    "series_key": pl.Utf8,
    "sop_key": pl.Utf8,
    "study_date_shifted": pl.Utf8,
    "manufacturer": pl.Utf8,
    "model": pl.Utf8,
    "sop_class": pl.Utf8,
    "transfer_syntax": pl.Utf8,
    "photometric": pl.Utf8,
    "n_frames": pl.Int64,
    "rows": pl.Int64,
    "cols": pl.Int64,
    "frame_rate_hz": pl.Float64,
    "frame_rate_from": pl.Utf8,
    "spacing_x_mm": pl.Float64,
    "spacing_y_mm": pl.Float64,
    "sector_x0": pl.Int64,
    "sector_y0": pl.Int64,
    "sector_x1": pl.Int64,
    "sector_y1": pl.Int64,
    "sector_from": pl.Utf8,
    "burned_in_annotation": pl.Utf8,
    "view": pl.Utf8,
    "ef_percent": pl.Float64,
    "edv_ml": pl.Float64,
    "esv_ml": pl.Float64,
    "lvidd_mm": pl.Float64,
    "ivsd_mm": pl.Float64,
    "lvpwd_mm": pl.Float64,
    "findings": pl.Utf8,
    "sex": pl.Utf8,
    "ed_frame": pl.Int64,
    "es_frame": pl.Int64,
    "keyframe_policy": pl.Utf8,
    "keyframe_indices": pl.List(pl.Int64),
    "keyframe_refs": pl.List(pl.Utf8),
    "clip_ref": pl.Utf8,
    "clip_shape": pl.List(pl.Int64),
    "deid_method": pl.Utf8,
}
# Columns whose values the pipeline makes itself (keys, hashes, remapped UIDs, shifted dates): the PHI
# audit does not search them for identifiers (a short identifier could match inside a hash); instead every
# value must have the form the pipeline gives it (GENERATED_FORMS), so an input value there is a leak.
_HEX16 = r"[0-9a-f]{16}"
_REMAPPED_UID = r"2\.25\.[1-9][0-9]{0,38}"
GENERATED_FORMS = {
    "clip_id": rf"clip_{_HEX16}",
    "file_key": rf"f_{_HEX16}",
    "patient_key": rf"pt_{_HEX16}",
    "study_key": _REMAPPED_UID,
    "series_key": _REMAPPED_UID,
    "sop_key": _REMAPPED_UID,
    "study_date_shifted": r"[0-9]{8}",
    "keyframe_refs": r"[0-9a-f]{64}\.png",
    "clip_ref": r"[0-9a-f]{64}\.npy",
}
GENERATED_COLUMNS = frozenset(GENERATED_FORMS)
LABEL_COLUMNS = (
    "ef_percent",
    "edv_ml",
    "esv_ml",
    "lvidd_mm",
    "ivsd_mm",
    "lvpwd_mm",
    "findings",
    "sex",
    "ed_frame",
    "es_frame",
)


@dataclass
class EchoOutput:
    """One decoded file: its row (refs filled by :func:`store_outputs`), the identifiers read from it,
    its original SOP Instance UID (memory only, for duplicate detection), and what is to be stored."""

    row: dict[str, Any]
    identifiers: set[Identifier]
    sop_uid: str | None
    keyframes: dict[int, np.ndarray] = field(default_factory=dict)
    pngs: dict[int, bytes] = field(default_factory=dict)
    clip: np.ndarray | None = None
    region_mask: np.ndarray | None = None
    ocr_frames: dict[str, np.ndarray] = field(default_factory=dict)


# ---- frames ------------------------------------------------------------------------------------------
def keyframe_plan(n: int, labels: dict | None) -> tuple[list[int], str]:
    """ED/ES frames from the labels when both are inside the clip, else evenly spaced frames."""
    if labels:
        ed, es = labels.get("ed_frame"), labels.get("es_frame")
        if ed is not None and es is not None and 0 <= ed < n and 0 <= es < n and ed != es:
            return [int(ed), int(es)], "ed_es"
    k = min(N_EVEN_KEYFRAMES, n)
    return sorted({round(i * (n - 1) / max(1, k - 1)) for i in range(k)}) if k > 1 else [0], "even"


def clip_plan(n: int) -> list[int]:
    """``CLIP_FRAMES`` evenly spaced frame indices (repeats allowed for short clips)."""
    return [round(i * (n - 1) / max(1, CLIP_FRAMES - 1)) for i in range(CLIP_FRAMES)]


def ocr_clip_plan(n: int, key_idx: list[int]) -> list[int]:
    """The clip frames the OCR pixel check reads besides the keyframes: ``N_OCR_CLIP_FRAMES`` of the
    clip's frames, evenly spread (at 1/3 and 2/3 of the clip), keyframes excluded."""
    clip_idx = clip_plan(n)
    picks = [clip_idx[(k + 1) * CLIP_FRAMES // (N_OCR_CLIP_FRAMES + 1)] for k in range(N_OCR_CLIP_FRAMES)]
    return sorted(set(picks) - set(key_idx))


def png_bytes(frame: np.ndarray) -> bytes:
    """A frame as PNG with no text chunks (Pillow writes none unless asked)."""
    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, "PNG", optimize=False, compress_level=3)
    return buf.getvalue()


def _to_uint8(frame: np.ndarray) -> np.ndarray:
    if frame.dtype == np.uint8:
        return frame
    f = frame.astype(np.float32)
    lo, hi = float(f.min()), float(f.max())
    return ((f - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(f)).astype(np.uint8)


@dataclass
class _Kept:
    keyframes: dict[int, np.ndarray]
    clip: np.ndarray
    decoded: int
    ocr: dict[str, np.ndarray]


def _keep_frames(frames, n: int, key_idx: list[int], regions: deid.Regions, convert) -> _Kept:
    """Consume ``frames`` one at a time, keeping blanked keyframes and resized clip frames, and the
    region box of every keyframe and of the :func:`ocr_clip_plan` frames (full resolution, blanked) for
    the OCR pixel check."""
    clip_idx = clip_plan(n)
    clip_set, key_set, ocr_set = set(clip_idx), set(key_idx), set(ocr_clip_plan(n, key_idx))
    x0, y0, x1, y1 = regions.box
    keyframes: dict[int, np.ndarray] = {}
    small: dict[int, np.ndarray] = {}
    ocr: dict[str, np.ndarray] = {}
    decoded = 0
    try:
        for i, frame in enumerate(frames):
            decoded += 1
            if i in clip_set or i in key_set:
                frame = deid.blank_outside(_to_uint8(convert(frame)), regions.mask)
                if i in key_set:
                    keyframes[i] = frame
                    ocr[f"keyframe {i}"] = frame[y0 : y1 + 1, x0 : x1 + 1]
                elif i in ocr_set:
                    ocr[f"clip frame {i}"] = frame[y0 : y1 + 1, x0 : x1 + 1]
                if i in clip_set:
                    small[i] = np.asarray(
                        Image.fromarray(frame[y0 : y1 + 1, x0 : x1 + 1]).resize(
                            (CLIP_SIZE, CLIP_SIZE), Image.BILINEAR
                        )
                    )
    except Exception as e:  # any decoder failure is a property of the file: quarantine it
        raise EchoProblem(
            f"corrupt or truncated file: frame {decoded} does not decode ({type(e).__name__}: "
            f"{scrub(str(e))}); re-export or re-transfer it"
        ) from e
    if decoded != n:
        raise EchoProblem(f"frame-count mismatch: NumberOfFrames={n} but {decoded} frames decoded")
    return _Kept(keyframes, np.stack([small[i] for i in clip_idx]), decoded, ocr)


def _frame_rate(ds: Dataset) -> tuple[float | None, str | None]:
    """``1000 / FrameTime``, else ``CineRate``, else ``RecommendedDisplayFrameRate`` (Hz)."""
    try:
        ft = float(ds.get("FrameTime") or 0)
        if ft > 0:
            return 1000.0 / ft, "FrameTime"
    except (TypeError, ValueError):
        pass
    for kw in ("CineRate", "RecommendedDisplayFrameRate"):
        try:
            v = float(ds.get(kw) or 0)
        except (TypeError, ValueError):
            continue
        if v > 0:
            return v, kw
    return None, None


def _spacing_mm(ds: Dataset, scale: float) -> tuple[float | None, float | None]:
    """Physical pixel spacing (mm per image pixel) of the first image region given in cm (PhysicalUnits 3)."""
    for r in ds.get("SequenceOfUltrasoundRegions", []) or []:
        try:
            if int(r.get("RegionDataType", -1)) not in deid.IMAGE_DATA_TYPES:
                continue
            if r.get("PhysicalUnitsXDirection") == 3 and r.get("PhysicalUnitsYDirection") == 3:
                return abs(float(r.PhysicalDeltaX)) * 10 / scale, abs(float(r.PhysicalDeltaY)) * 10 / scale
        except (AttributeError, TypeError, ValueError):
            continue
    return None, None


def _label_fields(labels: dict | None) -> dict[str, Any]:
    labels = labels or {}
    return {"view": labels.get("view") or "unknown", **{k: labels.get(k) for k in LABEL_COLUMNS}}


def _finish(
    out: EchoOutput, kept: _Kept, key_idx: list[int], policy: str, regions: deid.Regions
) -> EchoOutput:
    x0, y0, x1, y1 = regions.box
    out.keyframes = kept.keyframes
    out.pngs = {i: png_bytes(kept.keyframes[i]) for i in key_idx}
    out.clip = kept.clip
    out.region_mask = regions.mask
    out.ocr_frames = kept.ocr
    out.row.update(
        {
            "sector_x0": x0,
            "sector_y0": y0,
            "sector_x1": x1,
            "sector_y1": y1,
            "sector_from": regions.sector_from,
            "keyframe_policy": policy,
            "keyframe_indices": key_idx,
            "keyframe_refs": [],
            "clip_ref": None,
            "clip_shape": list(kept.clip.shape),
        }
    )
    return out


@contextmanager
def quiet_pydicom() -> Iterator[None]:
    """pydicom's reading warnings quote header values (names, UIDs) into logs: silence them while a file
    is read (invalid values still reach the checks, which quarantine what matters)."""
    mode = pydicom.config.settings.reading_validation_mode
    logger = logging.getLogger("pydicom")
    level = logger.level
    pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        pydicom.config.settings.reading_validation_mode = mode
        logger.setLevel(level)


def decode_dicom(
    f: BinaryIO,
    size: int,
    file_key: str,
    source: str,
    salt: str,
    labels: dict | None = None,
    *,
    accept_full_frame: bool = False,
    synthetic_only: bool = False,
) -> EchoOutput:
    """One DICOM file object (``size`` bytes) into an :class:`EchoOutput`, or :class:`EchoProblem`.

    ``synthetic_only``: refuse any file the synthetic generator did not make (a source read with the
    development salt must not hold real data). pydicom's warnings are silenced (:func:`quiet_pydicom`).
    """
    with quiet_pydicom():
        return _decode_dicom(f, size, file_key, source, salt, labels, accept_full_frame, synthetic_only)


def _decode_dicom(
    f: BinaryIO,
    size: int,
    file_key: str,
    source: str,
    salt: str,
    labels: dict | None,
    accept_full_frame: bool,
    synthetic_only: bool,
) -> EchoOutput:
    ds, pixels = read_header(f, size)
    n, is_video = validate(ds, pixels)
    if synthetic_only and str(ds.file_meta.get("ImplementationVersionName", "")) != SYNTH_IMPLEMENTATION:
        raise EchoProblem(
            "not a synthetic file: this source is read with the development salt, which may only "
            "protect generated clips; give real data its own source and salt"
        )
    try:
        identifiers = collect_identifiers(ds) | {
            Identifier(u, "instance UID", "UI") for u in deid.instance_uids(ds)
        }
        rows, cols = int(ds.Rows), int(ds.Columns)
    except Exception as e:
        raise EchoProblem(f"corrupt header: {type(e).__name__}: {scrub(str(e))}; re-export the file") from e
    try:
        regions = deid.ultrasound_regions(ds, rows, cols, accept_full_frame)
    except deid.RegionProblem as e:
        raise EchoProblem(str(e)) from e
    except Exception as e:
        raise EchoProblem(
            f"corrupt header: SequenceOfUltrasoundRegions unreadable ({type(e).__name__}); re-export the file"
        ) from e
    key_idx, policy = keyframe_plan(n, labels)
    if is_video:
        stream = video.dicom_video_stream(f, pixels.value_offset)
        frames, convert = video.iter_video_frames(stream), (lambda x: x)
    else:
        f.seek(0)
        frames = iter_pixels(f)
        palette = ds.get("PhotometricInterpretation") == "PALETTE COLOR"
        convert = (lambda x: apply_color_lut(x, ds)) if palette else (lambda x: x)
    kept = _keep_frames(frames, n, key_idx, regions, convert)

    sop_uid = str(ds.get("SOPInstanceUID", "") or "") or None
    frame_rate, rate_from = _frame_rate(ds)
    if frame_rate is not None and not FRAME_RATE_HZ[0] <= frame_rate <= FRAME_RATE_HZ[1]:
        raise EchoProblem(
            f"implausible frame rate: {frame_rate:g} Hz from {rate_from} (an echo clip has "
            f"{FRAME_RATE_HZ[0]:g}-{FRAME_RATE_HZ[1]:g} Hz); fix the export's {rate_from}"
        )
    sx, sy = _spacing_mm(ds, regions.scale)
    ts = ds.file_meta.TransferSyntaxUID
    photometric = "RGB" if is_video else str(ds.get("PhotometricInterpretation", ""))
    burned = str(ds.get("BurnedInAnnotation", "") or "").upper() or None
    patient = deid.patient_key(
        deid.source_patient_id(ds, (labels or {}).get("patient_id") or file_key), salt, source
    )
    try:
        deid.deidentify(ds, salt, patient, source)
    except Exception as e:
        raise EchoProblem(
            f"corrupt header: de-identification failed ({type(e).__name__}); re-export the file"
        ) from e
    sop_class = str(ds.get("SOPClassUID", ""))  # after de-identification: a non-standard class is remapped
    sop_key = str(ds.get("SOPInstanceUID", "")) or None
    row = {
        "clip_id": "clip_" + hashlib.sha256((sop_key or file_key).encode()).hexdigest()[:16],
        "file_key": file_key,
        "source": source,
        "patient_key": patient,
        "study_key": str(ds.get("StudyInstanceUID", "")) or None,
        "series_key": str(ds.get("SeriesInstanceUID", "")) or None,
        "sop_key": sop_key,
        "study_date_shifted": str(ds.get("StudyDate", "")) or None,
        "manufacturer": str(ds.get("Manufacturer", "")) or None,
        "model": str(ds.get("ManufacturerModelName", "")) or None,
        "sop_class": sop_class,
        "transfer_syntax": ts.name,
        "photometric": photometric,
        "n_frames": n,
        "rows": rows,
        "cols": cols,
        "frame_rate_hz": frame_rate,
        "frame_rate_from": rate_from,
        "spacing_x_mm": sx,
        "spacing_y_mm": sy,
        "burned_in_annotation": burned,
        **_label_fields(labels),
        "deid_method": deid.METHOD,
    }
    out = EchoOutput(row=row, identifiers=identifiers, sop_uid=sop_uid)
    return _finish(out, kept, key_idx, policy, regions)


def decode_avi(
    f: BinaryIO,
    file_key: str,
    source: str,
    salt: str,
    labels: dict | None = None,
    *,
    accept_full_frame: bool = False,
) -> EchoOutput:
    """One AVI clip (EchoNet-Dynamic) decoded with PyAV. AVIs carry no ultrasound regions, so they are
    refused unless the source accepts full frames; their container text tags count as identifiers."""
    if not accept_full_frame:
        raise EchoProblem(
            "no ultrasound regions: an AVI clip carries no SequenceOfUltrasoundRegions, so burned-in "
            "text cannot be located; configure accept_full_frame=True for this source only if its "
            "frames carry no burned-in text (EchoNet-Dynamic's are de-identified)"
        )
    try:
        info = video.probe(f)
        f.seek(0)
        n = info.frames or sum(1 for _ in video.iter_video_frames(f))  # decoded frames are counted below too
    except Exception as e:
        raise EchoProblem(
            f"corrupt or truncated file: the AVI does not decode ({type(e).__name__}: "
            f"{scrub(str(e))}); re-export or re-transfer it"
        ) from e
    if n < 1:
        raise EchoProblem("frame-count mismatch: the AVI holds no frame")
    if info.frame_rate_hz and not FRAME_RATE_HZ[0] <= info.frame_rate_hz <= FRAME_RATE_HZ[1]:
        raise EchoProblem(
            f"implausible frame rate: {info.frame_rate_hz:g} Hz in the AVI stream (an echo clip has "
            f"{FRAME_RATE_HZ[0]:g}-{FRAME_RATE_HZ[1]:g} Hz); re-export it"
        )
    rows, cols = info.size
    identifiers = {Identifier(v, f"AVI {k}") for k, v in info.tags.items() if len(v.strip()) >= 3}
    regions = deid.ultrasound_regions(Dataset(), rows, cols, accept_full_frame=True)
    key_idx, policy = keyframe_plan(n, labels)
    f.seek(0)
    kept = _keep_frames(video.iter_video_frames(f), n, key_idx, regions, lambda x: x)
    patient = deid.patient_key((labels or {}).get("patient_id") or file_key, salt, source)
    row = {
        "clip_id": "clip_" + hashlib.sha256(file_key.encode()).hexdigest()[:16],
        "file_key": file_key,
        "source": source,
        "patient_key": patient,
        "study_key": None,
        "series_key": None,
        "sop_key": None,
        "study_date_shifted": None,
        "manufacturer": None,
        "model": None,
        "sop_class": None,
        "transfer_syntax": f"AVI ({info.codec})",
        "photometric": "RGB",
        "n_frames": n,
        "rows": rows,
        "cols": cols,
        "frame_rate_hz": info.frame_rate_hz,
        "frame_rate_from": "AVI stream rate" if info.frame_rate_hz else None,
        "spacing_x_mm": None,
        "spacing_y_mm": None,
        "burned_in_annotation": None,
        **_label_fields(labels),
        "deid_method": "AVI: pixels kept whole (full frame accepted for this source)",
    }
    out = EchoOutput(row=row, identifiers=identifiers, sop_uid=None)
    return _finish(out, kept, key_idx, policy, regions)


def store_outputs(out: EchoOutput, storage) -> list[tuple[str, str]]:
    """Write the keyframe PNGs and the compact clip through ``storage`` (``put_image``, ``exists``,
    ``write_bytes``, ``image_parts``); fill the row's refs. Returns ``(where, text)`` for the PHI audit:
    each PNG's chunks and each stored file's name."""
    from quality.phi import png_text

    refs, places = [], []
    for i in out.row["keyframe_indices"]:
        data = out.pngs[i]
        ref = storage.put_image(data, "png")
        refs.append(ref)
        places.append((f"png chunks of {ref}", png_text(data)))
        places.append(("stored file name", "/".join(storage.image_parts(ref))))
    buf = io.BytesIO()
    np.save(buf, out.clip, allow_pickle=False)
    digest = hashlib.sha256(buf.getvalue()).hexdigest()
    clip_ref = f"{digest}.npy"
    if not storage.exists("clips", digest[:2], clip_ref):
        storage.write_bytes(buf.getvalue(), "clips", digest[:2], clip_ref)
    places.append(("stored file name", f"clips/{digest[:2]}/{clip_ref}"))
    out.row["keyframe_refs"], out.row["clip_ref"] = refs, clip_ref
    return places


def ingest_file(
    src: BinaryIO | str | bytes,
    file_key: str,
    storage,
    source: str,
    salt: str,
    labels: dict | None = None,
    *,
    accept_full_frame: bool = False,
) -> EchoOutput:
    """Decode one DICOM file (a path, a binary file object or bytes) and store its outputs."""
    if isinstance(src, bytes):
        src = io.BytesIO(src)
    if isinstance(src, str):
        with open(src, "rb") as f:
            return ingest_file(
                f, file_key, storage, source, salt, labels, accept_full_frame=accept_full_frame
            )
    src.seek(0, io.SEEK_END)
    size = src.tell()
    src.seek(0)
    out = decode_dicom(src, size, file_key, source, salt, labels, accept_full_frame=accept_full_frame)
    store_outputs(out, storage)
    return out
