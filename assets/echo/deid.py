"""De-identification of echo DICOM headers and pixels, and the pseudonymous keys of the pipeline.

Header: DICOM PS3.15 Basic Application Level Confidentiality Profile, every attribute of Table E.1-1
(vendored, :mod:`quality.deid_profile`), with the *Retain Longitudinal Temporal Information with Modified
Dates* option:

* each element listed in the table gets its Basic Profile action, compound actions resolved as
  :func:`quality.deid_profile.resolve` states (``X`` remove, ``Z`` empty, ``D`` dummy value, ``U`` new UID);
* dates (DA) and date-times (DT) anywhere in the dataset are shifted by a whole number of days fixed by
  the patient key and the salt (intervals within a patient are kept); a DT keeps only its shifted date,
  never its time of day or UTC offset; Patient's Birth Date is emptied (the option does not cover it);
* times of day (TM) are removed where the table says ``X`` and emptied everywhere else;
* every person name (PN) not listed in the table is removed; every UID that is not a standard one (a UID
  of pydicom's registry of PS3.6 Annex A: SOP classes, transfer syntaxes, well-known frames of reference)
  is replaced by ``2.25.<integer>`` from an HMAC of (site, UID) with the salt, so the same UID always maps
  to the same one within a site and two sites sharing a salt never share a remapped UID. An instance UID
  that starts with the DICOM root ``1.2.840.10008.`` but is not in the registry is remapped too;
* private elements are removed (the Retain Safe Private option is not used).

Pixels: only what lies inside the ultrasound image region(s) is kept (:func:`ultrasound_regions`):
regions whose RegionDataType is tissue, color flow, PW or CW spectral Doppler or integrated backscatter
(:data:`IMAGE_DATA_TYPES`); graphics regions (traces, gray and color bars) are blanked, and a region
whose type cannot be decided refuses the file. Burned-in names and dates usually live outside the image
regions; text burned *inside* one is not removed here, but found by OCR (:mod:`quality.pixel_text`).
A file without regions is refused unless its source is configured to accept full frames (for sources
whose frames carry no burned-in text, such as EchoNet-Dynamic).

Keys: every key is an HMAC-SHA256 with a salt the caller must supply (:func:`check_salt`: a random secret
of at least 32 bytes, written as hex or base64, e.g. ``python -c "import secrets;
print(secrets.token_hex(32))"``); only the synthetic generator may use :data:`DEV_SALT`, which is
published here and so protects nothing. No fingerprint of the salt is published: any value computed from
the salt alone lets whoever holds it test salt guesses offline.

* :func:`patient_key` — ``pt_<16 hex>`` of (site, source patient id);
* :func:`file_key` — ``f_<16 hex>`` of (site, path relative to the source root): how outputs,
  quarantine rows and logs name an input file; the key-to-path map is written only to a restricted
  location (:mod:`assets.echo.keymap`);
* :func:`salt_fingerprint` — names the salt in the restricted key map only (never published).

Plain library (no Dagster).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import logging
import math
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache

import numpy as np
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import UID_dictionary

from quality.deid_profile import entry_for, resolve

DEV_SALT = "medrwr-dev-salt-NOT-FOR-PRODUCTION"
MIN_SALT_BYTES = 32
"""A salt must encode at least this many random bytes (64 hex digits, or 43 base64 characters)."""
SALT_COMMAND = 'python -c "import secrets; print(secrets.token_hex(32))"'
"""The documented way to make a salt (printed in every refusal)."""
STANDARD_UID_ROOT = "1.2.840.10008."
METHOD = "PS3.15 E.1-1 Basic Profile 2026c; modified dates; medrwr v2"  # LO: at most 64 characters
NOT_SHIFTED = {0x00100030}  # Patient's Birth Date: emptied (Z), outside the modified-dates option
DUMMY_TEXT = "ANONYMIZED"
_TEXT_VRS = {"AE", "AS", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT"}
_NUMBER_VRS = {"DS", "IS"}
_BINARY_NUMBER_VRS = {"US", "SS", "UL", "SL", "FL", "FD", "UV", "SV"}


class SaltError(ValueError):
    """The salt given cannot protect the source it is meant for."""


class RegionProblem(ValueError):
    """The imaging region of a file cannot be located safely; the message is the quarantine reason."""


# ---- salt and keys ---------------------------------------------------------------------------------
def check_salt(salt: str | None, synthetic: bool) -> str:
    """The salt to use, or :class:`SaltError` before anything is read.

    A synthetic source may omit it (the published :data:`DEV_SALT` is then used); any other source must
    pass its own secret salt, never the development one, that passes :func:`weak_salt_reason`. The
    messages never quote the salt.
    """
    if synthetic:
        return salt or DEV_SALT
    if not salt:
        raise SaltError(
            "no de-identification salt given for a non-synthetic source: pass the site's secret "
            f"salt (a deployment secret, e.g. MEDRWR_DEID_SALT made with {SALT_COMMAND}); nothing was read"
        )
    if salt == DEV_SALT:
        raise SaltError(
            "the published development salt cannot protect real data: pass the site's secret salt; "
            "nothing was read"
        )
    weak = weak_salt_reason(salt)
    if weak:
        raise SaltError(
            f"the de-identification salt could be guessed: {weak}. Generate one with {SALT_COMMAND} "
            "(32 random bytes) and keep it secret; nothing was read"
        )
    return salt


_HEX = re.compile(r"[0-9a-fA-F]+")
_B64 = re.compile(r"[A-Za-z0-9+/_-]+={0,2}")
_WORD = r"(?:[a-z]{5,}|[A-Z][a-z]{4,}|[A-Z]{5,})"  # a word in one case (random base64 mixes cases)
_YEAR = r"(?:19[0-9]{2}|20[0-4][0-9])"
_WORD_YEAR = re.compile(rf"{_WORD}[-_.+/]?{_YEAR}|{_YEAR}[-_.+/]?{_WORD}")
_REPEAT = 8  # a substring this long seen twice is a pattern, not chance (p < 1e-6 for a random salt)


def weak_salt_reason(salt: str) -> str | None:
    """Why ``salt`` is not a random secret of :data:`MIN_SALT_BYTES` bytes, or ``None``.

    Accepted: hex (at least 64 digits) or base64/base64url (at least 43 characters), i.e. the encodings of
    32 random bytes (``secrets.token_hex(32)``, ``secrets.token_urlsafe(32)``, ``openssl rand -hex 32``).
    Refused, besides other forms and shorter ones: a character distribution too narrow for random data
    (Shannon entropy of the characters times the length below 200 bits for hex or 165 for base64, or
    fewer than 10 / 18 distinct characters; the least of 200,000 random 32-byte salts was 217 / 180 bits
    and 12 / 21 characters), any 8-character substring repeated, and a word of five letters or more joined
    to a year (``hospital-2024``; base64 only: it refused 6 of 400,000 random base64 salts and no hex one
    can meet it; ``benchmarks/bench_salt_check.py``). The estimate is by character
    statistics: it cannot prove randomness, it refuses what is certainly not random.
    """
    s = salt.strip()
    if s != salt:
        return "it starts or ends with white space"
    is_hex = _HEX.fullmatch(s) is not None
    if is_hex:
        need, alphabet, min_distinct, min_bits = 2 * MIN_SALT_BYTES, "hex", 10, 200
    elif _B64.fullmatch(s):
        need, alphabet, min_distinct, min_bits = math.ceil(MIN_SALT_BYTES * 4 / 3), "base64", 18, 165
    else:
        return "it is not hex or base64 (a passphrase or a word with symbols is guessable)"
    body = s.rstrip("=")
    if len(body) < need:
        return f"it has {len(body)} {alphabet} characters, fewer than the {need} of {MIN_SALT_BYTES} bytes"
    counts = Counter(body)
    bits = -sum(c * math.log2(c / len(body)) for c in counts.values())
    if len(counts) < min_distinct or bits < min_bits:
        return (
            f"its characters are not random ({len(counts)} distinct, about {bits:.0f} bits by character "
            "frequency)"
        )
    seen: set[str] = set()
    for i in range(len(body) - _REPEAT + 1):
        part = body[i : i + _REPEAT]
        if part in seen:
            return f"a run of {_REPEAT} characters repeats in it"
        seen.add(part)
    if not is_hex and _WORD_YEAR.search(body):
        return "it holds a word joined to a year"
    return None


def _mac(salt: str, *parts: str) -> bytes:
    return hmac.new(salt.encode(), "\x1f".join(parts).encode(), hashlib.sha256).digest()


def salt_fingerprint(salt: str) -> str:
    """First 8 hex digits of HMAC(salt, "fingerprint"): tells which salt wrote a key map. Only for the
    restricted key map: published, it would let anyone test salt guesses offline."""
    return _mac(salt, "fingerprint").hex()[:8]


def patient_key(source_patient_id: str, salt: str, site: str) -> str:
    """Pseudonymous patient key ``pt_<16 hex>``: HMAC of (site, patient id) with the salt."""
    return "pt_" + _mac(salt, "patient", site, source_patient_id.strip()).hex()[:16]


def file_key(salt: str, site: str, rel_path: str) -> str:
    """Pseudonymous key ``f_<16 hex>`` of an input file: HMAC of (site, path relative to the source root)."""
    return "f_" + _mac(salt, "file", site, rel_path).hex()[:16]


def source_fingerprint(salt: str, site: str, root: str) -> str:
    """``src_<16 hex>``: names a source folder in metadata without its path (recompute it with the salt)."""
    return "src_" + _mac(salt, "source", site, root.rstrip("/")).hex()[:16]


def date_shift_days(key: str, salt: str) -> int:
    """Per-patient date shift, between -3650 and -1 days, fixed by the patient key and salt."""
    return -1 - int.from_bytes(_mac(salt, "shift", key)[:4], "big") % 3650


def is_standard_uid(uid: str) -> bool:
    """Whether ``uid`` is a UID of the DICOM standard's registry (PS3.6 Annex A, as pydicom ships it): a SOP
    class, transfer syntax, well-known frame of reference... Any other UID, even under the DICOM root
    ``1.2.840.10008.``, may identify an instance and is remapped."""
    return str(uid).strip() in UID_dictionary


def remap_uid(uid: str, salt: str, site: str) -> str:
    """A new UID ``2.25.<int>`` (ISO/IEC 9834-8 form, at most 64 characters) from the salted (site, UID)."""
    return "2.25." + str(int.from_bytes(_mac(salt, "uid", site, uid.strip())[:15], "big"))


def instance_uids(ds: Dataset) -> set[str]:
    """Every non-standard UID value in ``ds`` (sequences walked, file meta included): those that
    :func:`deidentify` replaces."""
    found: set[str] = set()
    meta = ds.__dict__.get("file_meta")
    for elem in [*ds, *(meta or [])]:
        if elem.VR == "SQ":
            for item in elem.value or []:
                found |= instance_uids(item)
        elif elem.VR == "UI" and elem.VM:
            values = elem.value if elem.VM > 1 else [elem.value]
            found |= {str(v).strip() for v in values if str(v).strip() and not is_standard_uid(str(v))}
    return found


def shift_date(value: str, days: int) -> str:
    """A DA (``YYYYMMDD``) or the date of a DT shifted by ``days``, as ``YYYYMMDD``: a DT loses its time
    of day and offset. Values that are not a date become empty."""
    value = str(value).strip()
    if len(value) < 8:
        return ""
    try:
        d = dt.datetime.strptime(value[:8], "%Y%m%d").date() + dt.timedelta(days=days)
    except ValueError:
        return ""
    return d.strftime("%Y%m%d")


def source_patient_id(ds: Dataset, fallback: str) -> str:
    """The identifier a patient key is made from: PatientID, else PatientName, else ``fallback``."""
    for kw in ("PatientID", "PatientName"):
        v = str(ds.get(kw, "") or "").strip()
        if v:
            return v
    return fallback


# ---- header ----------------------------------------------------------------------------------------
def deidentify(ds: Dataset, salt: str, key: str, site: str) -> Dataset:
    """De-identify ``ds`` in place (header only; pixels are handled by :func:`blank_outside`); ``site`` (the
    source key) is part of every remapped UID.

    Returns ``ds`` with PatientID = ``key``, PatientIdentityRemoved = YES, LongitudinalTemporalInformation
    Modified = MODIFIED and DeidentificationMethod naming this profile.
    """
    days = date_shift_days(key, salt)
    ds.remove_private_tags()
    _apply(ds, salt, days, site)
    ds.PatientID = key
    ds.PatientIdentityRemoved = "YES"
    ds.LongitudinalTemporalInformationModified = "MODIFIED"
    ds.DeidentificationMethod = METHOD
    meta = ds.__dict__.get("file_meta")
    if meta is not None:
        for elem in meta:
            if elem.VR == "UI" and elem.VM:
                elem.value = _uids(elem, salt, site)
    return ds


def _dummy(vr: str, value):
    if vr == "AS":
        return "000Y"
    if vr in _TEXT_VRS:
        return DUMMY_TEXT
    if vr in _NUMBER_VRS:
        return "0"
    if vr in _BINARY_NUMBER_VRS:
        return 0
    return None  # binary and other VRs: emptied instead


def _uid(value: str, salt: str, site: str) -> str:
    v = str(value).strip()
    return v if not v or is_standard_uid(v) else remap_uid(v, salt, site)


def _uids(elem, salt: str, site: str):
    if elem.VM > 1:
        return [_uid(v, salt, site) for v in elem.value]
    return _uid(elem.value, salt, site)


def _apply(ds: Dataset, salt: str, days: int, site: str) -> None:
    for elem in list(ds):
        tag = int(elem.tag)
        if tag == 0x7FE00010:
            continue
        entry = entry_for(tag)
        action = resolve(entry.action, elem.VR) if entry else None
        if elem.VR in ("DA", "DT") and tag not in NOT_SHIFTED:
            if not elem.VM:
                continue
            values = elem.value if elem.VM > 1 else [elem.value]
            shifted = [shift_date(str(v), days) for v in values]
            elem.value = shifted if elem.VM > 1 else shifted[0]
        elif elem.VR == "TM":
            if action == "X":
                del ds[tag]
            else:
                elem.value = ""
        elif action == "X" or (elem.VR == "PN" and entry is None):
            del ds[tag]
        elif elem.VR == "SQ":
            if action in ("Z", "D"):
                elem.value = Sequence()
            else:
                for item in elem.value or []:
                    _apply(item, salt, days, site)
        elif action == "Z" or (action == "D" and _dummy(elem.VR, elem.value) is None):
            elem.value = "" if elem.VR in _TEXT_VRS | _NUMBER_VRS | {"DA", "UI"} else None
        elif action == "D":
            elem.value = _dummy(elem.VR, elem.value)
        elif elem.VR == "UI" and elem.VM:
            elem.value = _uids(elem, salt, site)


# ---- pixels ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Regions:
    """Where the pixels of a frame may be kept: ``mask`` (rows, cols), its bounding ``box`` (x0, y0, x1,
    y1 inclusive), how it was found, and ``scale`` (image pixels per region-coordinate pixel)."""

    mask: np.ndarray
    box: tuple[int, int, int, int]
    sector_from: str
    scale: float = 1.0


# DICOM PS3.3 C.8.5.5.1.1 Region Spatial Format and C.8.5.5.1.2 Region Data Type (enumerated values).
SPATIAL_FORMATS = {
    0x0000: "none or not applicable",
    0x0001: "2D (tissue or flow)",
    0x0002: "M-mode (tissue or flow)",
    0x0003: "spectral (CW or PW Doppler)",
    0x0004: "wave form (physiological traces, Doppler traces)",
    0x0005: "graphics",
}
DATA_TYPES = {
    0x0000: "none or not applicable",
    0x0001: "tissue",
    0x0002: "color flow",
    0x0003: "PW spectral Doppler",
    0x0004: "CW spectral Doppler",
    0x0005: "Doppler mean trace",
    0x0006: "Doppler mode trace",
    0x0007: "Doppler max trace",
    0x0008: "volume trace",
    0x0009: "d(volume)/dt trace",
    0x000A: "ECG trace",
    0x000B: "pulse trace",
    0x000C: "phonocardiogram trace",
    0x000D: "gray bar",
    0x000E: "color bar",
    0x000F: "integrated backscatter",
    0x0010: "area trace",
    0x0011: "d(area)/dt",
    0x0012: "other physiological (amplitude vs. time) input",
}
# Regions whose pixels are kept: acoustic image data, shown in a 2D, M-mode or spectral format. Every other
# data type (traces, gray and color bars, "none") is graphics drawn by the scanner: its pixels are blanked,
# also where it overlaps an image region (whatever RegionFlags' priority bit says: text drawn over tissue
# is still text).
IMAGE_DATA_TYPES = {0x0001, 0x0002, 0x0003, 0x0004, 0x000F}
IMAGE_SPATIAL_FORMATS = {0x0001, 0x0002, 0x0003}


@dataclass(frozen=True)
class _Region:
    box: tuple[int, int, int, int] | None  # None: no usable coordinates
    image: bool
    label: str


def _code(region: Dataset, keyword: str) -> int | None:
    value = region.get(keyword)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _classify(region: Dataset, n: int) -> _Region:
    """One item of SequenceOfUltrasoundRegions as image or graphics, or :class:`RegionProblem` when its
    type cannot be decided (missing or unknown RegionDataType / RegionSpatialFormat, or the two disagree)."""
    dtype, fmt = _code(region, "RegionDataType"), _code(region, "RegionSpatialFormat")
    where = f"ultrasound region {n + 1}"
    if dtype is None or dtype not in DATA_TYPES:
        raise RegionProblem(
            f"undecidable ultrasound region: {where} has "
            + ("no RegionDataType" if dtype is None else f"RegionDataType {dtype:#06x}, not a defined value")
            + ", so whether it holds image data or burned-in graphics cannot be told; fix the export"
        )
    if fmt is None or fmt not in SPATIAL_FORMATS:
        raise RegionProblem(
            f"undecidable ultrasound region: {where} ({DATA_TYPES[dtype]}) has "
            + ("no RegionSpatialFormat" if fmt is None else f"RegionSpatialFormat {fmt:#06x}, not defined")
            + "; fix the export"
        )
    image = dtype in IMAGE_DATA_TYPES
    if image and fmt not in IMAGE_SPATIAL_FORMATS:
        raise RegionProblem(
            f"undecidable ultrasound region: {where} says its data is {DATA_TYPES[dtype]} but its spatial "
            f"format is {SPATIAL_FORMATS[fmt]}; fix the export"
        )
    try:
        x0, y0 = int(region.RegionLocationMinX0), int(region.RegionLocationMinY0)
        x1, y1 = int(region.RegionLocationMaxX1), int(region.RegionLocationMaxY1)
        box = (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None
    except (AttributeError, TypeError, ValueError):
        box = None
    if image and box is None:
        raise RegionProblem(
            f"undecidable ultrasound region: {where} ({DATA_TYPES[dtype]}) has no usable RegionLocation "
            "(MinX0, MinY0, MaxX1, MaxY1); fix the export"
        )
    return _Region(box, image, f"{DATA_TYPES[dtype]}, {SPATIAL_FORMATS[fmt]}")


def _regions(ds: Dataset) -> list[_Region]:
    return [_classify(r, i) for i, r in enumerate(ds.get("SequenceOfUltrasoundRegions", []) or [])]


@cache
def _device_recipe():
    from deid.config import DeidRecipe

    logging.getLogger("deid").setLevel(logging.ERROR)
    return DeidRecipe("dicom")  # the deid project's default recipe: CTP's filters of known devices


def device_text_boxes(
    ds: Dataset, rows: int, cols: int
) -> tuple[list[tuple[int, int, int, int]], str | None]:
    """Where the public deid project's recipe (``deid`` package, its default ``deid.dicom`` filters, from
    CTP's DicomPixelAnonymizer) says a known device burns text: ``(x0, y0, x1, y1)`` boxes inside the
    image (inclusive), and the rule that matched (``None``: no rule). Matching reads header fields only
    (Modality, Manufacturer, ManufacturerModelName, Rows, Columns...).

    A rule that says the whole image holds text (``coordinates all``) or that the device's images are
    not usable (``blacklist``) raises :class:`RegionProblem`."""
    from deid.dicom.pixels.detect import has_burned_pixels

    if "Modality" not in ds:  # no DICOM header (an AVI clip): no device to match
        return [], None
    try:
        result = has_burned_pixels(ds, deid=_device_recipe())
    except Exception as e:  # fails closed: a header the recipe cannot read is not published
        raise RegionProblem(
            f"known-device check failed: the deid recipe could not read this header ({type(e).__name__}); "
            "re-export the file"
        ) from e
    boxes: list[tuple[int, int, int, int]] = []
    rule = None
    for hit in result.get("results") or []:
        rule = f"deid {hit.get('group')}: {hit.get('reason')}"
        if hit.get("group") == "blacklist":
            raise RegionProblem(
                f"known device with burned-in text everywhere ({rule}); blank it at the source"
            )
        for keep, coords in hit.get("coordinates") or []:
            if keep:  # keepcoordinates: the recipe's regions to keep, not text
                continue
            if str(coords).strip().lower() == "all":
                raise RegionProblem(
                    f"known device with burned-in text everywhere ({rule}); blank it at the source"
                )
            x0, y0, x1, y1 = (int(float(v)) for v in str(coords).split(","))
            # deid blanks image[y0:y1, x0:x1] (exclusive ends): the same pixels, clipped to the image
            box = (max(0, x0), max(0, y0), min(cols - 1, x1 - 1), min(rows - 1, y1 - 1))
            if box[2] >= box[0] and box[3] >= box[1]:
                boxes.append(box)
    return boxes, rule


def _raw_boxes(ds: Dataset) -> list[tuple[int, int, int, int]]:
    """Boxes of the image regions only (see :data:`IMAGE_DATA_TYPES`)."""
    return [r.box for r in _regions(ds) if r.image and r.box]


def ultrasound_regions(ds: Dataset, rows: int, cols: int, accept_full_frame: bool = False) -> Regions:
    """The region mask of ``ds`` for a ``rows`` x ``cols`` image, or :class:`RegionProblem`.

    * Each region is typed by its RegionDataType and RegionSpatialFormat (PS3.3 C.8.5.5): only image
      regions (:data:`IMAGE_DATA_TYPES` in a 2D, M-mode or spectral format) are kept; graphics regions
      (traces, gray/color bars, "none") are blanked, also where they overlap an image region. A region
      whose type is missing, undefined or contradictory is refused, and so is a file whose regions hold
      no image region.
    * Regions inside the image are used as they are.
    * Regions reaching beyond the image are never clipped (a clipped box would keep the text band of a
      down-scaled export). They are **rescaled** when the image is their frame scaled uniformly: the
      regions' extent ``(max x1 + 1, max y1 + 1)`` and the image have one scale factor on both axes,
      within one pixel. Scaled image boxes are rounded inwards, graphics boxes outwards. Otherwise the
      file is refused.
    * Boxes where the deid project's recipe says a known device burns text (:func:`device_text_boxes`)
      are blanked too, inside image regions included.
    * No region at all: refused when ``BurnedInAnnotation`` is YES, and otherwise unless the source is
      configured with ``accept_full_frame`` (its frames carry no burned-in text): then the whole frame.
    """
    regions = _regions(ds)
    boxes = [r.box for r in regions if r.image and r.box]
    graphics = [r.box for r in regions if not r.image and r.box]
    burned = str(ds.get("BurnedInAnnotation", "") or "").upper() or "absent"
    if regions and not boxes:
        kinds = "; ".join(sorted({r.label for r in regions}))
        raise RegionProblem(
            f"no image region: the file's {len(regions)} ultrasound region(s) hold only graphics ({kinds}), "
            "so no pixel can be published safely; re-export with the imaging region declared"
        )
    if not boxes:
        if burned == "YES":
            raise RegionProblem(
                "burned-in text cannot be removed: BurnedInAnnotation=YES but no "
                "SequenceOfUltrasoundRegions locates the imaging area; blank it at the source"
            )
        if not accept_full_frame:
            raise RegionProblem(
                f"no ultrasound regions: the file has no usable SequenceOfUltrasoundRegions "
                f"(BurnedInAnnotation={burned}), so burned-in names and dates cannot be located; "
                "configure accept_full_frame=True for this source only if its frames carry no "
                "burned-in text"
            )
        mask = ~region_mask(device_text_boxes(ds, rows, cols)[0], rows, cols)
        ys, xs = np.nonzero(mask)
        if not len(ys):
            raise RegionProblem("no image region: a known device's text boxes cover the whole frame")
        return Regions(
            mask,
            (int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())),
            "full frame (accepted for this source)",
        )
    if any(x0 < 0 or y0 < 0 for x0, y0, _, _ in boxes + graphics):
        raise RegionProblem(
            "ultrasound region outside the image: a region starts at a negative coordinate; "
            "fix the export's SequenceOfUltrasoundRegions"
        )
    every = boxes + graphics
    w0, h0 = max(b[2] for b in every) + 1, max(b[3] for b in every) + 1
    scale, sector_from = 1.0, "SequenceOfUltrasoundRegions"
    if w0 > cols or h0 > rows:
        sx, sy = cols / w0, rows / h0
        if abs(sx * w0 - sy * w0) > 1 or abs(sx * h0 - sy * h0) > 1:
            raise RegionProblem(
                f"ultrasound region larger than the image: the regions reach {w0}x{h0} pixels but "
                f"the image is {cols}x{rows}, and no single scale maps one onto the other; "
                "re-export with regions in image coordinates"
            )
        scale, sector_from = min(sx, sy), "SequenceOfUltrasoundRegions rescaled"
        boxes = [
            (
                math.ceil(x0 * scale),
                math.ceil(y0 * scale),
                min(cols - 1, math.floor((x1 + 1) * scale) - 1),
                min(rows - 1, math.floor((y1 + 1) * scale) - 1),
            )
            for x0, y0, x1, y1 in boxes
        ]
        graphics = [
            (
                math.floor(x0 * scale),
                math.floor(y0 * scale),
                min(cols - 1, math.ceil((x1 + 1) * scale) - 1),
                min(rows - 1, math.ceil((y1 + 1) * scale) - 1),
            )
            for x0, y0, x1, y1 in graphics
        ]
        boxes = [b for b in boxes if b[2] > b[0] and b[3] > b[1]]
        if not boxes:
            raise RegionProblem(
                "ultrasound region larger than the image: the rescaled regions are empty; "
                "re-export with regions in image coordinates"
            )
    mask = region_mask(boxes, rows, cols) & ~region_mask(graphics, rows, cols)
    device, rule = device_text_boxes(ds, rows, cols)
    if device:
        mask &= ~region_mask(device, rows, cols)
        sector_from += "; minus a known device's text boxes (deid recipe)"
    if not mask.any():
        raise RegionProblem(
            "no image region: graphics regions cover every image region; re-export with the imaging "
            "region declared"
        )
    ys, xs = np.nonzero(mask)
    return Regions(mask, (int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())), sector_from, scale)


def region_mask(boxes: Iterable[tuple[int, int, int, int]], rows: int, cols: int) -> np.ndarray:
    """Boolean mask, True inside any of ``boxes``."""
    mask = np.zeros((rows, cols), dtype=bool)
    for x0, y0, x1, y1 in boxes:
        mask[y0 : y1 + 1, x0 : x1 + 1] = True
    return mask


def blank_outside(frame: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``frame`` (rows, cols[, 3]) with every pixel outside ``mask`` set to 0 (a new array)."""
    out = frame.copy()
    out[~mask] = 0
    return out
