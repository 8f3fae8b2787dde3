"""Echo DICOM ingestion: validate, decode frame by frame, de-identify, keyframes and a compact clip.

:func:`ingest_file` turns one DICOM file into one ``echo_studies`` row, or raises :class:`EchoProblem`
whose message is the quarantine reason. :func:`read_echo_source` does it for every ``*.dcm`` of a
source folder, joined with the folder's label manifest (:mod:`assets.echo.manifests`).

Memory stays bounded by a few frames: pixels are decoded one frame at a time with
``pydicom.pixels.iter_pixels`` (every frame is decoded, which proves the file whole); only keyframes
and the few frames of the compact clip are kept. Colour is delivered as RGB (YBR converted by pydicom,
palette colour through ``apply_color_lut``). Every kept frame is blanked outside the ultrasound
region(s) before it is stored, so burned-in text cannot reach the outputs.

Outputs: keyframes as PNG (no text chunks) via ``Storage.put_image``; the compact clip as a
content-addressed ``.npy`` (uint8, ``(CLIP_FRAMES, CLIP_SIZE, CLIP_SIZE[, 3])``, the sector box resized)
under ``clips/<aa>/<sha256>.npy``. Plain library (no Dagster).
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl
import pydicom
from PIL import Image
from pydicom.encaps import parse_basic_offsets, parse_fragments
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_color_lut, get_decoder, iter_pixels

from assets.common.records import Rejection
from orchestration.sources import SourceDir
from orchestration.storage import Storage
from quality.phi import Identifier, collect_identifiers

from . import deid
from .manifests import read_label_manifest

CLIP_FRAMES = 16
CLIP_SIZE = 112
N_EVEN_KEYFRAMES = 3

ECHO_SCHEMA = {
    "clip_id": pl.Utf8, "source": pl.Utf8, "patient_key": pl.Utf8, "study_key": pl.Utf8,
    "series_key": pl.Utf8, "sop_key": pl.Utf8, "study_date_shifted": pl.Utf8, "manufacturer": pl.Utf8,
    "model": pl.Utf8, "sop_class": pl.Utf8, "transfer_syntax": pl.Utf8, "photometric": pl.Utf8,
    "n_frames": pl.Int64, "rows": pl.Int64, "cols": pl.Int64, "frame_rate_hz": pl.Float64,
    "frame_rate_from": pl.Utf8, "spacing_x_mm": pl.Float64, "spacing_y_mm": pl.Float64,
    "sector_x0": pl.Int64, "sector_y0": pl.Int64, "sector_x1": pl.Int64, "sector_y1": pl.Int64,
    "sector_from": pl.Utf8, "burned_in_annotation": pl.Utf8, "view": pl.Utf8, "ef_percent": pl.Float64,
    "edv_ml": pl.Float64, "esv_ml": pl.Float64, "lvidd_mm": pl.Float64, "ivsd_mm": pl.Float64,
    "lvpwd_mm": pl.Float64, "findings": pl.Utf8, "sex": pl.Utf8, "ed_frame": pl.Int64, "es_frame": pl.Int64,
    "keyframe_policy": pl.Utf8, "keyframe_indices": pl.List(pl.Int64), "keyframe_refs": pl.List(pl.Utf8),
    "clip_ref": pl.Utf8, "clip_shape": pl.List(pl.Int64), "deid_method": pl.Utf8,
}


class EchoProblem(ValueError):
    """A DICOM file that cannot be ingested; the message is the quarantine reason."""


@dataclass
class EchoOutput:
    """One ingested file: its table row, the identifiers read from it, and the frames kept (blanked)."""

    row: dict[str, Any]
    identifiers: set[Identifier]
    keyframes: dict[int, np.ndarray] = field(default_factory=dict)
    region_mask: np.ndarray | None = None


def _frame_rate(ds: pydicom.Dataset) -> tuple[float | None, str | None]:
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


def _spacing_mm(ds: pydicom.Dataset) -> tuple[float | None, float | None]:
    """Physical pixel spacing (mm) of the first region given in cm (PhysicalUnits 3)."""
    for r in ds.get("SequenceOfUltrasoundRegions", []) or []:
        if r.get("PhysicalUnitsXDirection") == 3 and r.get("PhysicalUnitsYDirection") == 3:
            return abs(float(r.PhysicalDeltaX)) * 10, abs(float(r.PhysicalDeltaY)) * 10
    return None, None


def _frames_in_pixel_data(ds: pydicom.Dataset, n_frames: int) -> int:
    """How many frames the pixel data actually holds (encapsulated: offsets or fragments)."""
    data = ds.PixelData
    if ds.file_meta.TransferSyntaxUID.is_encapsulated:
        buf = io.BytesIO(data)
        offsets = parse_basic_offsets(buf)
        n_fragments, _ = parse_fragments(buf)
        return len(offsets) if offsets else (n_fragments if n_fragments < n_frames else n_frames)
    per_frame = ds.Rows * ds.Columns * int(ds.get("SamplesPerPixel", 1)) * ((int(ds.BitsAllocated) + 7) // 8)
    if int(ds.BitsAllocated) == 1:
        per_frame = (ds.Rows * ds.Columns + 7) // 8
    return len(data) // per_frame if per_frame else 0


def validate(ds: pydicom.Dataset, name: str) -> int:
    """Raise :class:`EchoProblem` unless ``ds`` is a decodable ultrasound image; returns its frame count."""
    modality = str(ds.get("Modality", "") or "")
    if modality != "US":
        raise EchoProblem(f"non-ultrasound modality: {name} has Modality={modality or 'missing'}; "
                          "only US files belong in an echo source")
    if "PixelData" not in ds:
        raise EchoProblem(f"missing pixel data: {name} has no (7FE0,0010) element; re-export the clip with images")
    ts = ds.file_meta.get("TransferSyntaxUID")
    if ts is None:
        raise EchoProblem(f"unsupported transfer syntax: {name} has no TransferSyntaxUID in its file meta")
    try:
        decoder = get_decoder(ts)
    except NotImplementedError:
        decoder = None
    if decoder is None or not decoder.is_available:
        raise EchoProblem(f"unsupported transfer syntax: {name} uses {ts.name} ({ts}); no installed decoder "
                          "(install the matching pylibjpeg plugin or python-gdcm)")
    try:
        n = int(ds.get("NumberOfFrames") or 1)
    except (TypeError, ValueError) as e:
        raise EchoProblem(f"frame-count mismatch: {name} NumberOfFrames={ds.get('NumberOfFrames')!r} is not a number") from e
    if n < 1:
        raise EchoProblem(f"frame-count mismatch: {name} NumberOfFrames={n}")
    held = _frames_in_pixel_data(ds, n)
    if held < n:
        raise EchoProblem(f"frame-count mismatch: {name} NumberOfFrames={n} but its pixel data holds {held} "
                          "frames; the file is truncated or its header is wrong")
    return n


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


def ingest_file(
    data: bytes, name: str, storage: Storage, source: str, salt: str, labels: dict | None = None,
    seen_sops: dict[str, str] | None = None,
) -> EchoOutput:
    """One DICOM file (``data``, named ``name`` in errors) into an ``echo_studies`` row.

    Raises :class:`EchoProblem` (the quarantine reason) for corrupt/truncated files, non-US modality,
    missing pixel data, unsupported syntaxes, frame-count mismatches, and, when ``seen_sops`` (SOP
    Instance UID -> file already ingested) is given, a second copy of the same instance.
    """
    try:
        ds = pydicom.dcmread(io.BytesIO(data))
        ds.file_meta  # noqa: B018 - a file without meta raises here
    except (InvalidDicomError, EOFError, ValueError, AttributeError, KeyError, OSError) as e:
        raise EchoProblem(f"corrupt or truncated file: {name} is not readable DICOM ({type(e).__name__}: {e}); "
                          "re-export or re-transfer it") from e
    n = validate(ds, name)
    if seen_sops is not None:
        sop = str(ds.get("SOPInstanceUID", "") or "")
        if sop in seen_sops:
            raise EchoProblem(f"duplicate SOP instance: {name} repeats the SOPInstanceUID of {seen_sops[sop]} "
                              "(the same image, perhaps re-encoded); keep one copy")
        if sop:
            seen_sops[sop] = name
    identifiers = collect_identifiers(ds)
    if labels and labels.get("patient_id"):
        identifiers.add(Identifier(str(labels["patient_id"]), "manifest.patient_id"))
    if labels and labels.get("study_id"):
        identifiers.add(Identifier(str(labels["study_id"]), "manifest.study_id"))
    key = deid.patient_key(deid.source_patient_id(ds, (labels or {}).get("patient_id") or name), salt)

    rows, cols = int(ds.Rows), int(ds.Columns)
    boxes = deid.region_boxes(ds, rows, cols)
    burned = str(ds.get("BurnedInAnnotation", "") or "").upper()
    if boxes:
        mask, sector_from = deid.region_mask(boxes, rows, cols), "SequenceOfUltrasoundRegions"
    elif burned == "YES":
        raise EchoProblem(f"burned-in text cannot be removed: {name} has BurnedInAnnotation=YES but no "
                          "SequenceOfUltrasoundRegions to locate the imaging area; blank it at the source")
    else:
        mask, sector_from = np.ones((rows, cols), dtype=bool), "full_image"
    ys, xs = np.nonzero(mask)
    box = (int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max()))

    key_idx, policy = keyframe_plan(n, labels)
    clip_idx = clip_plan(n)
    clip_set = set(clip_idx)
    palette = ds.get("PhotometricInterpretation") == "PALETTE COLOR"
    x0, y0, x1, y1 = box
    keyframes: dict[int, np.ndarray] = {}
    small: dict[int, np.ndarray] = {}  # clip frames, already cropped and resized: memory stays small
    decoded = 0
    try:
        # decode from the dataset already read (no second parse of the file)
        for i, frame in enumerate(iter_pixels(ds)):
            decoded += 1
            if i in clip_set or i in key_idx:
                if palette:
                    frame = apply_color_lut(frame, ds)
                frame = deid.blank_outside(_to_uint8(frame), mask)
                if i in key_idx:
                    keyframes[i] = frame
                if i in clip_set:
                    small[i] = np.asarray(Image.fromarray(frame[y0 : y1 + 1, x0 : x1 + 1])
                                          .resize((CLIP_SIZE, CLIP_SIZE), Image.BILINEAR))
    except Exception as e:  # any decoder failure is a property of the file: quarantine it
        raise EchoProblem(f"corrupt or truncated file: {name} frame {decoded} does not decode "
                          f"({type(e).__name__}: {e}); re-export or re-transfer it") from e
    if decoded != n:
        raise EchoProblem(f"frame-count mismatch: {name} NumberOfFrames={n} but {decoded} frames decoded")

    key_refs = [storage.put_image(png_bytes(keyframes[i]), "png") for i in key_idx]
    clip = np.stack([small[i] for i in clip_idx])
    buf = io.BytesIO()
    np.save(buf, clip, allow_pickle=False)
    digest = hashlib.sha256(buf.getvalue()).hexdigest()
    clip_ref = f"{digest}.npy"
    if not storage.exists("clips", digest[:2], clip_ref):
        storage.write_bytes(buf.getvalue(), "clips", digest[:2], clip_ref)

    frame_rate, rate_from = _frame_rate(ds)
    sx, sy = _spacing_mm(ds)
    ts = ds.file_meta.TransferSyntaxUID
    photometric = str(ds.get("PhotometricInterpretation", ""))
    sop_class = str(ds.get("SOPClassUID", ""))
    del ds.PixelData  # the header alone is de-identified; pixels were handled above
    deid.deidentify(ds, salt, key)
    labels = labels or {}
    row = {
        "clip_id": "clip_" + hashlib.sha256(str(ds.get("SOPInstanceUID", key + name)).encode()).hexdigest()[:16],
        "source": source,
        "patient_key": key,
        "study_key": str(ds.get("StudyInstanceUID", "")) or None,
        "series_key": str(ds.get("SeriesInstanceUID", "")) or None,
        "sop_key": str(ds.get("SOPInstanceUID", "")) or None,
        "study_date_shifted": str(ds.get("StudyDate", "")) or None,
        "manufacturer": str(ds.get("Manufacturer", "")) or None,
        "model": str(ds.get("ManufacturerModelName", "")) or None,
        "sop_class": sop_class,
        "transfer_syntax": ts.name,
        "photometric": photometric,
        "n_frames": n, "rows": rows, "cols": cols,
        "frame_rate_hz": frame_rate, "frame_rate_from": rate_from,
        "spacing_x_mm": sx, "spacing_y_mm": sy,
        "sector_x0": x0, "sector_y0": y0, "sector_x1": x1, "sector_y1": y1, "sector_from": sector_from,
        "burned_in_annotation": burned or None,
        "view": labels.get("view") or "unknown",
        **{k: labels.get(k) for k in ("ef_percent", "edv_ml", "esv_ml", "lvidd_mm", "ivsd_mm", "lvpwd_mm",
                                      "findings", "sex", "ed_frame", "es_frame")},
        "keyframe_policy": policy, "keyframe_indices": key_idx, "keyframe_refs": key_refs,
        "clip_ref": clip_ref, "clip_shape": list(clip.shape),
        "deid_method": str(ds.DeidentificationMethod),
    }
    return EchoOutput(row=row, identifiers=identifiers, keyframes=keyframes, region_mask=mask)


@dataclass
class EchoReadResult:
    """``echo_studies`` rows, rejections, and (in memory only) the identifiers read from the inputs."""

    frame: pl.DataFrame
    rejected: list[Rejection]
    identifiers: set[Identifier]
    blank_violations: list[str]


def read_echo_source(src: SourceDir, storage: Storage, source: str, salt: str | None = None) -> EchoReadResult:
    """Every ``*.dcm`` under ``src`` (recursively), joined with its label manifest, into ``echo_studies``."""
    from quality.phi import outside_region_blank

    salt = salt or deid.salt_from_env()
    manifest, rejected = read_label_manifest(src)
    labels_by_file = {r["clip_file"]: r for r in manifest.to_dicts()}
    files = src.glob("**/*.dcm")
    rows, identifiers, violations = [], set(), []
    seen_sops: dict[str, str] = {}
    for rel in files:
        try:
            out = ingest_file(src.read_bytes(rel), rel, storage, source, salt, labels_by_file.get(rel), seen_sops)
        except EchoProblem as e:
            rejected.append(Rejection(src.path(rel), rel, str(e), {"file": rel}))
            continue
        rows.append(out.row)
        identifiers |= out.identifiers
        violations += [f"{out.row['clip_id']} frame {i}" for i, f in out.keyframes.items()
                       if not outside_region_blank(f, out.region_mask)]
    for rel in sorted(set(labels_by_file) - set(files)):
        reason = ("non-DICOM clip not decoded: AVI/video sources need PyAV, which is not installed"
                  if not rel.lower().endswith(".dcm") else "manifest row without a file: no such DICOM file in the source")
        rejected.append(Rejection(src.path(rel), rel, reason, {"clip_file": rel}))
    frame = pl.DataFrame(rows, schema=ECHO_SCHEMA).sort("clip_id")
    return EchoReadResult(frame, rejected, identifiers, violations)


def output_places(frame: pl.DataFrame, storage: Storage) -> list[tuple[str, str]]:
    """Every output place the PHI audit searches: string cells, keyframe PNG chunks, stored file paths."""
    from quality.phi import png_text, table_strings

    places = list(table_strings(frame, "echo_studies"))
    refs = sorted({r for refs in frame["keyframe_refs"].to_list() for r in (refs or [])}) if frame.height else []
    for ref in refs:
        places.append((f"png chunks of {ref}", png_text(storage.get_image(ref))))
        places.append(("stored file name", "/".join(storage.image_parts(ref))))
    for ref in frame["clip_ref"].drop_nulls().unique().to_list() if frame.height else []:
        places.append(("stored file name", f"clips/{ref[:2]}/{ref}"))
    return places
