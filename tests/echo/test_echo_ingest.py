"""Echo ingestion: real pydicom-data ultrasound files, regions that fail closed, de-identification, hostile
files."""

import io

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from assets.echo import deid
from assets.echo.dicom import EchoProblem, ingest_file
from assets.echo.source import read_echo_source
from assets.echo.synth import SynthOptions, generate
from assets.echo.synth_frames import TEXT_BAND
from quality.phi import audit, collect_identifiers
from storage.sources import SourceDir

# Real ultrasound files of pydicom-data: (frames, photometric). None of the first three has
# SequenceOfUltrasoundRegions; the next two have regions larger than the image.
NO_REGIONS = {
    "examples_rgb_color.dcm": (1, "RGB"),
    "US1_J2KR.dcm": (1, "YBR_RCT"),
    "US1_UNCR.dcm": (1, "RGB"),
}
OVERSIZED = ("examples_ybr_color.dcm", "examples_palette.dcm")
WITH_REGIONS = {"color3d_jpeg_baseline.dcm": (120, "YBR_FULL_422")}
REAL = {
    **NO_REGIONS,
    **WITH_REGIONS,
    "examples_ybr_color.dcm": (30, "YBR_FULL_422"),
    "examples_palette.dcm": (1, "PALETTE COLOR"),
}
SALT = "c14d648ee0cac5619552971f0903bb3a1bf6c5f5024044edef21141438a2dbb1"  # secrets.token_hex(32)


def _real(name: str) -> bytes:
    path = get_testdata_file(name)
    assert path, f"{name}: install pydicom-data (test extra)"
    with open(path, "rb") as f:
        return f.read()


def _bytes(ds: Dataset) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _places(out, storage):
    import polars as pl

    from assets.echo.dicom import ECHO_SCHEMA, GENERATED_COLUMNS
    from quality.phi import png_text, table_strings

    places = table_strings(pl.DataFrame([out.row], schema=ECHO_SCHEMA), "echo_studies", GENERATED_COLUMNS)
    for ref in out.row["keyframe_refs"]:
        places += [
            (f"png {ref}", png_text(storage.get_image(ref))),
            ("name", "/".join(storage.image_parts(ref))),
        ]
    return places


@pytest.mark.parametrize("name", sorted(NO_REGIONS) + sorted(WITH_REGIONS))
def test_real_files_flow_through_ingestion(storage, name):
    frames, photometric = REAL[name]
    data = _real(name)
    out = ingest_file(data, "f_test", storage, "real", SALT, accept_full_frame=name in NO_REGIONS)
    row = out.row
    assert row["n_frames"] == frames and row["photometric"] == photometric
    assert row["patient_key"].startswith("pt_") and len(row["keyframe_refs"]) == len(row["keyframe_indices"])
    for ref in row["keyframe_refs"]:
        im = Image.open(io.BytesIO(storage.get_image(ref)))
        assert im.mode == "RGB" and (im.height, im.width) == (row["rows"], row["cols"])
        assert not im.info  # no text chunks
    clip = np.load(io.BytesIO(storage.read_bytes("clips", row["clip_ref"][:2], row["clip_ref"])))
    assert clip.shape == (16, 112, 112, 3) and clip.dtype == np.uint8
    ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    if "StudyDate" in ds:
        assert row["study_date_shifted"] != ds.StudyDate
    if name in WITH_REGIONS:
        assert row["frame_rate_hz"] == pytest.approx(30.0, rel=1e-3) and row["frame_rate_from"] == "FrameTime"
        assert row["sector_from"] == "SequenceOfUltrasoundRegions" and row["spacing_x_mm"] > 0
    else:
        assert row["sector_from"] == "full frame (accepted for this source)"
    result = audit(out.identifiers, _places(out, storage))
    assert result.passed, result.describe()
    if len(str(ds.get("PatientName", "")).replace("^", "")) >= 3:
        assert any(i.attribute == "PatientName" for i in out.identifiers)


@pytest.mark.parametrize("name", sorted(NO_REGIONS))
def test_real_files_without_regions_are_quarantined(storage, name):
    """BurnedInAnnotation is absent in these real exports: absence proves nothing, so they are refused."""
    with pytest.raises(
        EchoProblem, match=r"^no ultrasound regions: .*BurnedInAnnotation=absent.*accept_full_frame"
    ):
        ingest_file(_real(name), "f_test", storage, "real", SALT)
    ds = pydicom.dcmread(io.BytesIO(_real(name)))
    ds.BurnedInAnnotation = "NO"  # a "NO" does not help either
    with pytest.raises(EchoProblem, match="BurnedInAnnotation=NO"):
        ingest_file(_bytes(ds), "f_test", storage, "real", SALT)


@pytest.mark.parametrize("name", OVERSIZED)
def test_real_oversized_regions_are_quarantined_not_clipped(storage, name):
    """examples_ybr_color.dcm is a 320x240 copy of a 640x480 clip whose region (84,31)-(595,414) was not
    scaled: clipping it would keep the burned-in name, and no single scale maps the regions' extent onto the
    image."""
    with pytest.raises(EchoProblem, match=r"^ultrasound region larger than the image: the regions reach"):
        ingest_file(_real(name), "f_test", storage, "real", SALT, accept_full_frame=True)


def _with_regions(boxes, size=128, frames=4):
    files, _ = generate(1, 1, seed=1, options=SynthOptions(frames=frames, size=size))
    ds = pydicom.dcmread(io.BytesIO(files["clip_0000.dcm"]))
    template = ds.SequenceOfUltrasoundRegions[0]
    regions = []
    for x0, y0, x1, y1 in boxes:
        r = Dataset()
        r.update(template)
        r.RegionLocationMinX0, r.RegionLocationMinY0, r.RegionLocationMaxX1, r.RegionLocationMaxY1 = (
            x0,
            y0,
            x1,
            y1,
        )
        regions.append(r)
    ds.SequenceOfUltrasoundRegions = Sequence(regions)
    return ds


def test_consistently_scaled_regions_are_rescaled(storage):
    """Regions given for a 256x256 frame on a 128x128 image (one factor, 0.5, on both axes) are rescaled."""
    ds = _with_regions([(0, 2 * TEXT_BAND, 255, 255)])
    out = ingest_file(_bytes(ds), "f_test", storage, "s", SALT)
    assert out.row["sector_from"] == "SequenceOfUltrasoundRegions rescaled"
    assert (out.row["sector_x0"], out.row["sector_y0"], out.row["sector_x1"], out.row["sector_y1"]) == (
        0,
        TEXT_BAND,
        127,
        127,
    )
    delta_mm = float(ds.SequenceOfUltrasoundRegions[0].PhysicalDeltaX) * 10
    assert out.row["spacing_x_mm"] == pytest.approx(delta_mm * 2)
    for frame in out.keyframes.values():
        assert frame[:TEXT_BAND].max() == 0  # the burned-in name band is blanked


def test_inconsistent_oversized_regions_are_quarantined(storage):
    with pytest.raises(EchoProblem, match="larger than the image"):
        ingest_file(_bytes(_with_regions([(10, 10, 200, 100)])), "f_test", storage, "s", SALT)


def test_burned_in_without_regions_is_quarantined_even_with_full_frame(storage):
    files, _ = generate(1, 1, seed=1, options=SynthOptions(frames=4))
    ds = pydicom.dcmread(io.BytesIO(files["clip_0000.dcm"]))
    del ds.SequenceOfUltrasoundRegions
    with pytest.raises(EchoProblem, match="burned-in text cannot be removed"):
        ingest_file(_bytes(ds), "f_test", storage, "s", SALT, accept_full_frame=True)


def test_palette_colour_decodes_when_full_frame_is_accepted(storage):
    ds = pydicom.dcmread(get_testdata_file("examples_palette.dcm"))
    del ds.SequenceOfUltrasoundRegions
    out = ingest_file(_bytes(ds), "f_test", storage, "real", SALT, accept_full_frame=True)
    (frame,) = out.keyframes.values()
    assert frame.ndim == 3 and frame.shape[2] == 3 and frame.std() > 0


def test_synthetic_burned_in_name_never_reaches_keyframes(storage):
    files, rows = generate(1, 1, seed=2, options=SynthOptions(frames=6))
    out = ingest_file(files["clip_0000.dcm"], "f_test", storage, "synthetic", SALT, rows[0])
    assert out.row["keyframe_policy"] == "ed_es" and out.row["keyframe_indices"] == [
        rows[0]["ed_frame"],
        rows[0]["es_frame"],
    ]
    for ref in out.row["keyframe_refs"]:
        px = np.asarray(Image.open(io.BytesIO(storage.get_image(ref))))
        assert px[:TEXT_BAND].max() == 0
        assert px[~out.region_mask].max() == 0


def test_deidentification_keys_dates_and_uids():
    files, _ = generate(2, 1, seed=4, options=SynthOptions(frames=4))
    a, b = (pydicom.dcmread(io.BytesIO(d)) for d in files.values())
    orig = {
        kw: str(a.get(kw))
        for kw in ("PatientName", "PatientID", "StudyInstanceUID", "StudyDate", "SOPInstanceUID")
    }
    ids = collect_identifiers(a)
    key = deid.patient_key(deid.source_patient_id(a, "x"), SALT, "site_a")
    assert key == deid.patient_key(deid.source_patient_id(b, "x"), SALT, "site_a")
    assert key != deid.patient_key(deid.source_patient_id(a, "x"), SALT, "site_b")  # the site is in the key
    deid.deidentify(a, SALT, key, "site_a")
    deid.deidentify(b, SALT, key, "site_a")
    assert a.StudyInstanceUID == b.StudyInstanceUID != orig["StudyInstanceUID"]  # same study, same new UID
    assert a.SOPInstanceUID != b.SOPInstanceUID and a.SOPInstanceUID.startswith("2.25.")
    assert a.SOPClassUID == "1.2.840.10008.5.1.4.1.1.3.1"  # standard UIDs kept
    assert (
        a.StudyDate
        == deid.shift_date(orig["StudyDate"], deid.date_shift_days(key, SALT))
        != orig["StudyDate"]
    )
    assert str(a.PatientName) == "" and a.PatientID == key and a.PatientIdentityRemoved == "YES"
    assert not any(e.tag.is_private for e in a)
    header = "\n".join(str(e.value) for e in a.iterall() if e.tag != 0x7FE00010)
    assert audit(ids, [("header", header)]).passed
    assert deid.patient_key("1", "other salt", "s") != deid.patient_key("1", SALT, "s")


def test_datetime_keeps_no_time_of_day():
    ds = Dataset()
    ds.AcquisitionDateTime = "20200102134501.123456+0100"
    ds.ContentTime = "134501"
    deid.deidentify(ds, SALT, "pt_x", "s")
    assert ds.AcquisitionDateTime == deid.shift_date("20200102", deid.date_shift_days("pt_x", SALT))
    assert len(ds.AcquisitionDateTime) == 8 and ds.ContentTime == ""


def test_salt_is_required_and_fingerprinted(tmp_path, storage):
    """No silent fallback: a real source without a salt is refused before any file is opened."""
    src = tmp_path / "site"
    src.mkdir()
    (src / "clip.dcm").write_bytes(generate(1, 1, seed=0, options=SynthOptions(frames=2))[0]["clip_0000.dcm"])
    (src / "clip.dcm").chmod(0)  # would fail to open if anything tried to read it
    for bad in (None, "", deid.DEV_SALT, "short"):
        with pytest.raises(deid.SaltError, match="nothing was read"):
            read_echo_source(SourceDir(str(src)), storage, "site", salt=bad)
    (src / "clip.dcm").chmod(0o644)
    assert not hasattr(deid, "salt_from_env") and not hasattr(deid, "ENV_SALT")
    r = read_echo_source(SourceDir(str(src)), storage, "site", salt=SALT)
    # the salt's fingerprint goes to the restricted key map only: nothing published can test salt guesses
    assert r.salt_fingerprint == deid.salt_fingerprint(SALT) and len(r.salt_fingerprint) == 8
    assert "salt_fingerprint" not in r.frame.columns and "salt_fingerprint" not in r.metadata()
    assert SALT not in str(r.metadata()) and r.salt_fingerprint not in str(r.metadata())
    # the development salt serves the synthetic generator only, and then only generated files
    synth = read_echo_source(SourceDir(str(src)), storage, "synthetic", salt=None, synthetic=True)
    assert synth.frame.height == 1 and synth.salt_fingerprint == deid.salt_fingerprint(deid.DEV_SALT)
    real = tmp_path / "real_in_synthetic"
    real.mkdir()
    (real / "us.dcm").write_bytes(_real("US1_UNCR.dcm"))
    r2 = read_echo_source(
        SourceDir(str(real)), storage, "synthetic", salt=None, synthetic=True, accept_full_frame=True
    )
    assert r2.frame.height == 0 and r2.rejected[0].reason.startswith("not a synthetic file")
