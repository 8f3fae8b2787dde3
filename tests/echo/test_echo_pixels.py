"""Burned-in text in pixels (issue 20 §2): region types (PS3.3 C.8.5.5) and the OCR pixel check.

Files are built here: a generated 256x256 clip whose name band (the top TEXT_BAND rows) holds the
patient's name, with one extra region of each RegionDataType laid over that band; and clips with a name,
MRN or birth date drawn inside the tissue region.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image, ImageDraw, ImageFont
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from assets.echo import deid
from assets.echo.dicom import EchoProblem, ingest_file
from assets.echo.synth import SynthOptions, generate
from assets.echo.synth_frames import TEXT_BAND

SALT = "5655aa38b0c0aa1c5894f70275c157d8cf622b5b76e78b281d457592452bed2b"  # secrets.token_hex(32)
SIZE = 256
GRAPHICS_TYPES = {  # data type -> the spatial format a scanner gives it
    0x0000: 0x0000,
    0x0005: 0x0004,
    0x0006: 0x0004,
    0x0007: 0x0004,
    0x0008: 0x0004,
    0x0009: 0x0004,
    0x000A: 0x0004,
    0x000B: 0x0004,
    0x000C: 0x0004,
    0x000D: 0x0005,
    0x000E: 0x0005,
    0x0010: 0x0004,
    0x0011: 0x0004,
    0x0012: 0x0004,
}
IMAGE_TYPES = {0x0001: 0x0001, 0x0002: 0x0001, 0x0003: 0x0003, 0x0004: 0x0003, 0x000F: 0x0001}


def _clip(seed: int = 3, frames: int = 4) -> tuple[Dataset, dict]:
    files, rows = generate(1, 1, seed=seed, options=SynthOptions(frames=frames, size=SIZE))
    return pydicom.dcmread(io.BytesIO(files["clip_0000.dcm"])), rows[0]


def _region(data_type: int | None, spatial: int | None, box: tuple[int, int, int, int]) -> Dataset:
    r = Dataset()
    if spatial is not None:
        r.RegionSpatialFormat = spatial
    if data_type is not None:
        r.RegionDataType = data_type
    r.RegionFlags = 0  # high priority
    r.RegionLocationMinX0, r.RegionLocationMinY0, r.RegionLocationMaxX1, r.RegionLocationMaxY1 = box
    return r


def _bytes(ds: Dataset) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _with_band_region(data_type: int | None, spatial: int | None) -> Dataset:
    """The generated clip plus a region of the given type over the whole name band."""
    ds, _ = _clip()
    ds.SequenceOfUltrasoundRegions.append(_region(data_type, spatial, (0, 0, SIZE - 1, TEXT_BAND - 1)))
    return ds


@pytest.mark.parametrize("data_type", sorted(GRAPHICS_TYPES), ids=lambda t: f"{t:#06x}")
def test_graphics_region_over_the_name_band_is_blanked(storage, data_type):
    """Main merged every region whatever its type: a trace or bar region over the name band published it."""
    ds = _with_band_region(data_type, GRAPHICS_TYPES[data_type])
    assert np.asarray(ds.pixel_array)[0, :TEXT_BAND].max() > 0  # the name is burned into the band
    out = ingest_file(_bytes(ds), "f_test", storage, "s", SALT)
    for frame in out.keyframes.values():
        assert frame[:TEXT_BAND].max() == 0
    assert out.row["sector_y0"] >= TEXT_BAND


def test_graphics_region_overlapping_tissue_is_blanked_there(storage):
    """A gray bar drawn inside the tissue region (as gdcm-US-ALOKA-16 has) is blanked, the rest kept."""
    ds, _ = _clip()
    r = ds.SequenceOfUltrasoundRegions[0]
    x0, y0, x1 = r.RegionLocationMinX0, r.RegionLocationMinY0, r.RegionLocationMaxX1
    bar = (x0 + 10, y0 + 40, x0 + 30, y0 + 120)
    ds.SequenceOfUltrasoundRegions.append(_region(0x000D, 0x0005, bar))
    regions = deid.ultrasound_regions(ds, SIZE, SIZE)
    assert not regions.mask[bar[1] : bar[3] + 1, bar[0] : bar[2] + 1].any()
    assert regions.mask[y0 + 130, (x0 + x1) // 2]


@pytest.mark.parametrize("data_type", sorted(IMAGE_TYPES), ids=lambda t: f"{t:#06x}")
def test_image_region_types_are_kept(data_type):
    ds = _with_band_region(data_type, IMAGE_TYPES[data_type])
    assert deid.ultrasound_regions(ds, SIZE, SIZE).mask[:TEXT_BAND].all()


@pytest.mark.parametrize(
    "data_type, spatial, why",
    [
        (None, 0x0001, "no RegionDataType"),
        (0x0013, 0x0001, "RegionDataType 0x0013, not a defined value"),
        (0x0001, None, "no RegionSpatialFormat"),
        (0x0001, 0x0009, "RegionSpatialFormat 0x0009, not defined"),
        (0x0001, 0x0005, "says its data is tissue but its spatial format is graphics"),
        (0x0002, 0x0004, "says its data is color flow but its spatial format is wave form"),
    ],
)
def test_undecidable_region_quarantines_the_file(storage, data_type, spatial, why):
    ds = _with_band_region(data_type, spatial)
    with pytest.raises(EchoProblem, match="^undecidable ultrasound region: ultrasound region 2") as e:
        ingest_file(_bytes(ds), "f_test", storage, "s", SALT, accept_full_frame=True)
    assert why in str(e.value)


def test_only_graphics_regions_quarantine_even_with_full_frame(storage):
    ds, _ = _clip()
    ds.SequenceOfUltrasoundRegions = Sequence([_region(0x000A, 0x0004, (0, 0, SIZE - 1, SIZE - 1))])
    with pytest.raises(EchoProblem, match="^no image region: .*ECG trace"):
        ingest_file(_bytes(ds), "f_test", storage, "s", SALT, accept_full_frame=True)


def test_real_ecg_and_gray_bar_regions_are_not_image():
    """pydicom-data's real files: OBXXXX1A's ECG trace strip and gdcm-US-ALOKA-16's gray bar."""
    from pydicom.data import get_testdata_file

    ob = pydicom.dcmread(get_testdata_file("OBXXXX1A.dcm"), stop_before_pixels=True)
    assert [(r.image, r.label) for r in deid._regions(ob)] == [
        (True, "tissue, 2D (tissue or flow)"),
        (False, "ECG trace, wave form (physiological traces, Doppler traces)"),
    ]
    aloka = pydicom.dcmread(get_testdata_file("gdcm-US-ALOKA-16.dcm"), stop_before_pixels=True)
    mask = deid.ultrasound_regions(aloka, aloka.Rows, aloka.Columns).mask
    assert not mask[40:104, 32:64].any() and mask[200, 100] and mask[200, 500]


# ---- OCR pixel check: text burned inside the tissue region ----------------------------------------------
def _burn_inside(ds: Dataset, text: str) -> Dataset:
    """``text`` drawn in white with a black outline over the tissue, in every frame, centred in the sector
    (as a scanner's annotation or a pasted label would be)."""
    frames = np.array(ds.pixel_array)  # (frames, rows, cols) MONOCHROME2
    font = ImageFont.load_default(size=15)
    for i in range(frames.shape[0]):
        img = Image.fromarray(frames[i])
        draw = ImageDraw.Draw(img)
        width = draw.textlength(text, font=font)
        draw.text(((SIZE - width) / 2, SIZE * 0.55), text, font=font, fill=255, stroke_width=1, stroke_fill=0)
        frames[i] = np.asarray(img)
    ds.PixelData = frames.tobytes()
    return ds


def _burned_cases() -> dict[str, bytes]:
    out = {}
    for seed, what in enumerate(("clean", "name", "mrn", "dob"), start=10):
        ds, _ = _clip(seed=seed, frames=6)
        name = ds.PatientName
        dob = str(ds.PatientBirthDate)
        text = {
            "name": f"{name.family_name}, {name.given_name}",
            "mrn": f"ID {ds.PatientID}",
            "dob": f"DOB {dob[:4]}-{dob[4:6]}-{dob[6:]}",
        }.get(what)
        out[f"{what}.dcm"] = _bytes(_burn_inside(ds, text) if text else ds)
    return out


@pytest.fixture(scope="module")
def burned_read(tmp_path_factory):
    from assets.echo.source import read_echo_source
    from storage.root import Storage
    from storage.sources import SourceDir

    src = tmp_path_factory.mktemp("site")
    for name, data in _burned_cases().items():
        (src / name).write_bytes(data)
    storage = Storage(root=str(tmp_path_factory.mktemp("storage")))
    return read_echo_source(SourceDir(str(src)), storage, "site", salt=SALT), storage


@pytest.mark.parametrize(
    "case, attribute",
    [("name", "PatientName"), ("mrn", "PatientID"), ("dob", "PatientBirthDate")],
)
def test_identifier_burned_inside_the_tissue_region_is_quarantined(burned_read, case, attribute):
    """Main published these clips: the name, MRN or birth date lay inside the region it keeps."""
    result, _ = burned_read
    reasons = {result.key_map[r.item_id]: r.reason for r in result.rejected}
    assert f"{case}.dcm" in reasons, f"{case}.dcm was published"
    reason = reasons[f"{case}.dcm"]
    assert reason.startswith("identifier burned into the pixels: OCR reads ")
    assert attribute in reason and "keyframe" in reason


def test_clean_clip_publishes_and_quarantined_ones_store_nothing(burned_read):
    result, storage = burned_read
    published = [result.key_map[k] for k in result.frame["file_key"]]
    assert published == ["clean.dcm"]
    refs = [r for refs in result.frame["keyframe_refs"] for r in refs]
    stored = {p.name for p in Path(storage.root).rglob("*") if p.is_file()}
    # only the clean clip's keyframes and clip were written
    assert len(stored) == len(refs) + 1
    assert result.audit().passed


def test_pixel_ocr_finds_text_only_in_the_frames_it_reads():
    from quality.phi import Identifier
    from quality.pixel_text import pixel_text_leaks

    ds, _ = _clip(seed=20, frames=4)
    clean = np.array(ds.pixel_array[0])
    burned = np.array(_burn_inside(ds, "MRN 4040-4040-404").pixel_array[0])
    ident = [Identifier("40404040404", "PatientID", "LO")]
    assert pixel_text_leaks({"clean": clean}, ident).leaks == []
    assert pixel_text_leaks({"burned": burned}, ident).leaks == [("PatientID", "burned")]


# ---- the public deid project's real ultrasounds (deid-data, test extra) --------------------------------
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_real_deid_ultrasounds_clean_publish_and_a_declared_name_band_quarantines(tmp_path, storage):
    """RGB_IMAGE.dcm (Siemens S2000) burns ``ZZZDOWNTIME,MARY`` and ``CCHS CLEVELAND CLINIC`` in rows
    0-59, above its tissue region. As shipped, with a gray-bar region over that band, and even with a
    *tissue* region declared over it (the deid recipe knows the S2000's text band), it publishes with the
    band blank. Relabelled as a model the recipe does not know, the declared band reaches OCR, which reads
    the name: quarantined. GREYSCALE_IMAGE.dcm (Philips EPIQ) publishes as shipped (no false positive on
    its scanner panel text)."""
    from deid_data.data import get_dataset

    from assets.echo.source import read_echo_source
    from storage.sources import SourceDir

    real = Path(get_dataset("ultrasounds"))
    src = tmp_path / "site"
    src.mkdir()
    for name in ("RGB_IMAGE.dcm", "GREYSCALE_IMAGE.dcm"):
        (src / name).write_bytes((real / name).read_bytes())
    crafted = {
        "band_tissue.dcm": (1, 1, None),
        "band_graybar.dcm": (13, 5, None),
        "band_tissue_unknown_model.dcm": (1, 1, "UNKNOWN MODEL 9"),
    }
    for n, (name, (data_type, spatial, model)) in enumerate(crafted.items()):
        ds = pydicom.dcmread(real / "RGB_IMAGE.dcm")
        ds.SequenceOfUltrasoundRegions.append(_region(data_type, spatial, (0, 0, int(ds.Columns) - 1, 59)))
        ds.SOPInstanceUID = f"{ds.SOPInstanceUID}.{n + 1}"  # another instance, not a duplicate
        if model:
            ds.ManufacturerModelName = model
        (src / name).write_bytes(_bytes(ds))
    result = read_echo_source(SourceDir(str(src)), storage, "site", salt=SALT)
    reasons = {result.key_map[r.item_id]: r.reason for r in result.rejected}
    assert set(reasons) == {"band_tissue_unknown_model.dcm"}
    reason = reasons["band_tissue_unknown_model.dcm"]
    assert reason.startswith("identifier burned into the pixels: OCR reads ") and "PatientName" in reason
    published = sorted(result.key_map[k] for k in result.frame["file_key"])
    assert published == ["GREYSCALE_IMAGE.dcm", "RGB_IMAGE.dcm", "band_graybar.dcm", "band_tissue.dcm"]
    for key, refs in zip(result.frame["file_key"], result.frame["keyframe_refs"], strict=True):
        band = 38 if result.key_map[key] == "GREYSCALE_IMAGE.dcm" else 60  # each file's name band
        for ref in refs:
            assert np.asarray(Image.open(io.BytesIO(storage.get_image(ref))))[:band].max() == 0
    assert result.audit().passed, result.audit().describe()


def test_deid_recipe_boxes_of_known_devices():
    """The deid project's recipe knows the Philips EPIQ's and Siemens S2000's text bands (header match)."""
    from deid_data.data import get_dataset

    real = Path(get_dataset("ultrasounds"))
    grey = pydicom.dcmread(real / "GREYSCALE_IMAGE.dcm", stop_before_pixels=True)
    boxes, rule = deid.device_text_boxes(grey, grey.Rows, grey.Columns)
    assert boxes == [(0, 0, 1023, 48)] and "EPIQ" in rule
    mask = deid.ultrasound_regions(grey, grey.Rows, grey.Columns).mask
    assert not mask[:49].any() and mask[49:759, 14:1011].all()
    ds, _ = _clip()
    assert deid.device_text_boxes(ds, SIZE, SIZE) == ([], None)  # a generated clip: no known device
