"""Echo ingestion: real pydicom / pydicom-data files, de-identification, PHI audit, hostile files."""

import io

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file

from assets.echo import deid
from assets.echo.dicom import EchoProblem, ingest_file, output_places, read_echo_source
from assets.echo.synth import SynthOptions, generate, sector_mask
from orchestration.sources import SourceDir
from quality.phi import Identifier, audit, collect_identifiers, png_text

REAL = {  # file: (frames, photometric)
    "examples_ybr_color.dcm": (30, "YBR_FULL_422"),
    "examples_rgb_color.dcm": (1, "RGB"),
    "examples_palette.dcm": (1, "PALETTE COLOR"),
    "US1_J2KR.dcm": (1, "YBR_RCT"),
    "US1_UNCR.dcm": (1, "RGB"),
    "color3d_jpeg_baseline.dcm": (120, "YBR_FULL_422"),
}
SALT = "test-salt"


def _real(name: str) -> bytes:
    path = get_testdata_file(name)
    assert path, f"{name}: install pydicom-data (test extra)"
    with open(path, "rb") as f:
        return f.read()


@pytest.mark.parametrize("name", sorted(REAL))
def test_real_files_flow_through_ingestion(storage, name):
    frames, photometric = REAL[name]
    data = _real(name)
    out = ingest_file(data, name, storage, "real", SALT)
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
    if name in ("examples_ybr_color.dcm", "color3d_jpeg_baseline.dcm"):
        assert row["frame_rate_hz"] == pytest.approx(30.0, rel=1e-3) and row["frame_rate_from"] == "FrameTime"
        assert row["sector_from"] == "SequenceOfUltrasoundRegions" and row["spacing_x_mm"] > 0
        assert row["sector_y1"] < row["rows"] and row["sector_x1"] < row["cols"]
    result = audit(out.identifiers, output_places(_frame([row]), storage))
    assert result.passed, result.describe()
    if len(str(ds.get("PatientName", "")).replace("^", "")) >= 3:
        assert any(i.attribute == "PatientName" for i in out.identifiers)


def _frame(rows):
    import polars as pl

    from assets.echo.dicom import ECHO_SCHEMA

    return pl.DataFrame(rows, schema=ECHO_SCHEMA)


def test_ybr_echo_pixels_outside_region_are_blanked(storage):
    """examples_ybr_color.dcm has the patient name burned into the pixels above the region."""
    data = _real("examples_ybr_color.dcm")
    raw = pydicom.dcmread(io.BytesIO(data)).pixel_array[0]
    out = ingest_file(data, "ybr", storage, "real", SALT)
    kept = np.asarray(Image.open(io.BytesIO(storage.get_image(out.row["keyframe_refs"][0]))))
    assert raw[~out.region_mask].max() > 100  # there is burned-in text outside the region...
    assert kept[~out.region_mask].max() == 0  # ...and none of it survives
    assert np.array_equal(kept[out.region_mask], raw[out.region_mask])


def test_synthetic_burned_in_name_never_reaches_keyframes(storage):
    files, rows = generate(1, 1, seed=2, options=SynthOptions(frames=6))
    out = ingest_file(files["clip_0000.dcm"], "clip_0000.dcm", storage, "synthetic", SALT, rows[0])
    assert out.row["keyframe_policy"] == "ed_es" and out.row["keyframe_indices"] == [rows[0]["ed_frame"], rows[0]["es_frame"]]
    for ref in out.row["keyframe_refs"]:
        px = np.asarray(Image.open(io.BytesIO(storage.get_image(ref))))
        assert px[:14].max() == 0 and px[~sector_mask(px.shape[0])].max() <= 255
        assert px[~out.region_mask].max() == 0


def test_phi_audit_catches_planted_leaks(storage):
    data = _real("examples_ybr_color.dcm")
    out = ingest_file(data, "ybr", storage, "real", SALT)
    assert audit(out.identifiers, output_places(_frame([out.row]), storage)).passed
    # 1. a table cell
    leaked = _frame([{**out.row, "findings": "seen by PLA today"}])
    result = audit(out.identifiers, output_places(leaked, storage))
    assert not result.passed and ("PatientName", "table echo_studies.findings") in result.leaks
    assert "PLA" not in result.describe()  # findings never echo the value
    # 2. a PNG text chunk
    buf = io.BytesIO()
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "study 1.2.840.114340.3.8251017118051.1.20160503.120850.2171", zip=True)
    Image.new("L", (4, 4)).save(buf, "PNG", pnginfo=info)
    assert "8251017118051" in png_text(buf.getvalue())
    result = audit(out.identifiers, [("png", png_text(buf.getvalue()))])
    assert ("StudyInstanceUID", "png") in result.leaks
    # 3. a file name
    assert not audit(out.identifiers, [("name", "images/ab/20160503_scan.png")]).passed
    # short values match whole tokens only: the view PLAX is not the name PLA
    assert audit([Identifier("PLA", "PatientName")], [("t", "view PLAX")]).passed


def test_deidentification_follows_the_basic_profile():
    files, _ = generate(2, 1, seed=4, options=SynthOptions(frames=4))
    a, b = (pydicom.dcmread(io.BytesIO(d)) for d in files.values())
    orig = {kw: str(a.get(kw)) for kw in ("PatientName", "PatientID", "StudyInstanceUID", "StudyDate", "SOPInstanceUID")}
    ids = collect_identifiers(a)
    key = deid.patient_key(deid.source_patient_id(a, "x"), SALT)
    assert key == deid.patient_key(deid.source_patient_id(b, "x"), SALT)
    deid.deidentify(a, SALT, key)
    deid.deidentify(b, SALT, key)
    assert a.StudyInstanceUID == b.StudyInstanceUID != orig["StudyInstanceUID"]  # same study, same new UID
    assert a.SOPInstanceUID != b.SOPInstanceUID and a.SOPInstanceUID.startswith("2.25.")
    assert a.SOPClassUID == "1.2.840.10008.5.1.4.1.1.3.1"  # standard UIDs kept
    assert a.StudyDate == deid.shift_date(orig["StudyDate"], deid.date_shift_days(key, SALT)) != orig["StudyDate"]
    assert str(a.PatientName) == "" and a.PatientID == key and a.PatientIdentityRemoved == "YES"
    for kw in ("AccessionNumber", "InstitutionName", "DeviceSerialNumber", "OperatorsName", "NameOfPhysiciansReadingStudy",
               "OtherPatientIDs", "StationName"):
        assert kw not in a, kw
    assert not any(e.tag.is_private for e in a)
    header = "\n".join(str(e.value) for e in a if e.tag != 0x7FE00010)
    assert audit(ids, [("header", header)]).passed
    assert deid.patient_key("1", "other salt") != deid.patient_key("1", SALT)


def test_salt_comes_from_the_environment(monkeypatch):
    assert deid.salt_from_env() == deid.DEV_SALT
    monkeypatch.setenv("MEDRWR_DEID_SALT", "prod")
    assert deid.salt_from_env() == "prod"


def _hostile(tmp_path):
    tmp_path.mkdir(parents=True, exist_ok=True)
    files, rows = generate(2, 1, seed=9, options=SynthOptions(frames=6))
    good = files["clip_0000.dcm"]
    (tmp_path / "good.dcm").write_bytes(good)
    (tmp_path / "truncated.dcm").write_bytes(good[: len(good) // 2])
    (tmp_path / "garbage.dcm").write_bytes(b"not a dicom file at all" * 10)

    def variant(name, change):
        ds = pydicom.dcmread(io.BytesIO(good))
        change(ds)
        ds.save_as(tmp_path / name, enforce_file_format=True)

    variant("ct.dcm", lambda ds: setattr(ds, "Modality", "CT"))
    variant("no_pixels.dcm", lambda ds: delattr(ds, "PixelData"))
    variant("frames.dcm", lambda ds: setattr(ds, "NumberOfFrames", 40))

    def mpeg(ds):
        ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"  # MPEG2: no decoder installed

    mpeg_ds = pydicom.dcmread(io.BytesIO(files["clip_0001.dcm"]))
    mpeg(mpeg_ds)
    from pydicom.encaps import encapsulate

    mpeg_ds.PixelData = encapsulate([b"\x00\x00\x01\xb3" * 8])
    mpeg_ds["PixelData"].VR = "OB"
    mpeg_ds.save_as(tmp_path / "mpeg.dcm", enforce_file_format=True)
    (tmp_path / "labels.csv").write_text("clip_file,view,ef_percent\ngood.dcm,A4C,55\nmissing.dcm,A2C,40\nbad.dcm,XYZ,50\n")


def test_hostile_files_land_in_quarantine_with_reasons(tmp_path, storage):
    _hostile(tmp_path / "src")
    result = read_echo_source(SourceDir(str(tmp_path / "src")), storage, "hostile", SALT)
    assert result.frame.height == 1 and result.frame["view"].to_list() == ["A4C"]
    reasons = {r.row: r.reason for r in result.rejected}
    assert reasons["truncated.dcm"].startswith(("corrupt or truncated file", "frame-count mismatch"))
    assert reasons["garbage.dcm"].startswith("corrupt or truncated file")
    assert reasons["ct.dcm"].startswith("non-ultrasound modality") and "CT" in reasons["ct.dcm"]
    assert reasons["no_pixels.dcm"].startswith("missing pixel data")
    assert reasons["frames.dcm"].startswith("frame-count mismatch") and "40" in reasons["frames.dcm"]
    assert reasons["mpeg.dcm"].startswith("unsupported transfer syntax")
    assert reasons["missing.dcm"].startswith("manifest row without a file")
    assert reasons["4"].startswith("bad manifest row")  # line 4: unknown view
    for r in result.rejected:
        assert r.reason.count(":") >= 1


def test_burned_in_without_regions_is_quarantined(storage):
    files, _ = generate(1, 1, seed=1, options=SynthOptions(frames=4))
    ds = pydicom.dcmread(io.BytesIO(files["clip_0000.dcm"]))
    del ds.SequenceOfUltrasoundRegions
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    with pytest.raises(EchoProblem, match="burned-in text cannot be removed"):
        ingest_file(buf.getvalue(), "x.dcm", storage, "s", SALT)
