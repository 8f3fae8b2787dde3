"""Echo ingestion that one bad file cannot stop: hostile and fuzzed files, truncation, frame counts,
duplicates, discovery by content (no suffix, DICOMDIR, literal paths), video cine and AVI with PyAV."""

import io
import random
import shutil

import numpy as np
import polars as pl
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.encaps import encapsulate
from pydicom.fileset import FileSet

from assets.common.records import quarantine_frame
from assets.echo.dicom import EchoProblem, ingest_file
from assets.echo.keymap import KeyMapLocationError, read_key_map, write_key_map
from assets.echo.source import read_echo_source
from assets.echo.synth import SynthOptions, generate, write_manifest_csv
from assets.echo.synth_video import encode_video, video_dicom
from quality.echo_contracts import echo_source_problems
from storage.sources import SourceDir

SALT = "c14d648ee0cac5619552971f0903bb3a1bf6c5f5024044edef21141438a2dbb1"  # secrets.token_hex(32)


def _read(path, storage, **kw):
    return read_echo_source(SourceDir(str(path)), storage, "site", salt=SALT, **kw)


def _reasons(result) -> dict[str, str]:
    """Reason per relative path (through the key map: tests may look, outputs never do)."""
    return {result.key_map.get(r.item_id, r.row): r.reason for r in result.rejected}


def _hostile(tmp_path):
    tmp_path.mkdir(parents=True, exist_ok=True)
    files, rows = generate(2, 1, seed=9, options=SynthOptions(frames=6))
    good = files["clip_0000.dcm"]
    (tmp_path / "good.dcm").write_bytes(good)
    (tmp_path / "cut_short.dcm").write_bytes(good[: len(good) // 2])
    (tmp_path / "garbage.dcm").write_bytes(b"not a dicom file at all" * 10)

    def variant(name, change, data=good):
        ds = pydicom.dcmread(io.BytesIO(data))
        change(ds)
        ds.save_as(tmp_path / name, enforce_file_format=True)

    variant("ct.dcm", lambda ds: setattr(ds, "Modality", "CT"))
    variant("no_pixels.dcm", lambda ds: delattr(ds, "PixelData"))
    variant("frames.dcm", lambda ds: setattr(ds, "NumberOfFrames", 40))
    variant("zero_frames.dcm", lambda ds: setattr(ds, "NumberOfFrames", 0), files["clip_0001.dcm"])

    def mpeg(ds):
        ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"  # MPEG2, but not a video stream inside
        ds.PixelData = encapsulate([b"\x00\x00\x01\xb3" * 8])
        ds["PixelData"].VR = "OB"

    variant("mpeg.dcm", mpeg, files["clip_0001.dcm"])
    (tmp_path / "labels.csv").write_text(
        "clip_file,view,ef_percent\ngood.dcm,A4C,55\nmissing.dcm,A2C,40\nbad.dcm,XYZ,50\n"
    )


def test_hostile_files_land_in_quarantine_with_reasons(tmp_path, storage):
    _hostile(tmp_path / "src")
    result = _read(tmp_path / "src", storage)
    assert result.frame.height == 1 and result.frame["view"].to_list() == ["A4C"]
    reasons = _reasons(result)
    assert reasons["cut_short.dcm"].startswith("corrupt or truncated file")
    assert reasons["garbage.dcm"].startswith("not DICOM")
    assert reasons["ct.dcm"].startswith("non-ultrasound modality") and "CT" in reasons["ct.dcm"]
    assert reasons["no_pixels.dcm"].startswith("missing pixel data")
    assert reasons["frames.dcm"].startswith("frame-count mismatch") and "40" in reasons["frames.dcm"]
    assert reasons["zero_frames.dcm"].startswith("frame-count mismatch: NumberOfFrames=0")
    assert reasons["mpeg.dcm"].startswith("corrupt or truncated file: frame 0 does not decode")
    assert reasons["missing.dcm"].startswith("manifest row without a file")
    assert reasons["4"].startswith("bad manifest row: view is not one of")  # line 4; the value is not echoed
    assert "XYZ" not in reasons["4"]


def test_truncated_files_say_truncated(storage):
    """Cut anywhere past the DICM marker, a file is reported truncated, never "Modality=missing"."""
    files, _ = generate(
        2,
        1,
        seed=9,
        options=[
            SynthOptions(frames=4),
            SynthOptions(frames=4, syntax="jpeg_baseline", photometric="YBR_FULL_422"),
        ],
    )
    for data in files.values():
        for cut in list(range(140, 1700, 23)) + [len(data) // 2, len(data) - 3]:
            with pytest.raises(EchoProblem) as e:
                ingest_file(data[:cut], "f_x", storage, "s", SALT)
            assert str(e.value).startswith("corrupt or truncated file"), (cut, str(e.value))


def test_number_of_frames_zero_is_never_read_as_one(storage):
    files, _ = generate(1, 1, seed=1, options=SynthOptions(frames=1 + 1))
    ds = pydicom.dcmread(io.BytesIO(files["clip_0000.dcm"]))
    ds.NumberOfFrames = 0
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    with pytest.raises(EchoProblem, match="NumberOfFrames=0"):
        ingest_file(buf.getvalue(), "f_x", storage, "s", SALT)


def test_a_damaged_first_copy_does_not_make_the_intact_copy_a_duplicate(tmp_path, storage):
    files, _ = generate(1, 1, seed=5, options=SynthOptions(frames=4))
    data = files["clip_0000.dcm"]
    (tmp_path / "a_first_transfer.dcm").write_bytes(data[: len(data) - 500])
    (tmp_path / "b_retransfer.dcm").write_bytes(data)
    (tmp_path / "c_copy.dcm").write_bytes(data)
    result = _read(tmp_path, storage)
    assert result.frame.height == 1
    reasons = _reasons(result)
    assert reasons["a_first_transfer.dcm"].startswith("corrupt or truncated file")
    assert reasons["c_copy.dcm"].startswith("duplicate SOP instance")
    assert "b_retransfer.dcm" not in reasons


def test_files_are_found_by_content_in_literal_paths(tmp_path, storage):
    """No suffix, upper-case suffix, nested in a folder whose name looks like a glob: all ingested."""
    root = tmp_path / "Echo [2024] export"
    (root / "PATIENT A" / "study*1").mkdir(parents=True)
    files, _ = generate(3, 1, seed=2, options=SynthOptions(frames=3))
    data = list(files.values())
    (root / "PATIENT A" / "study*1" / "IM000001").write_bytes(data[0])
    (root / "PATIENT A" / "CLIP.DCM").write_bytes(data[1])
    (root / "clip?.dcm").write_bytes(data[2])
    (root / "notes.txt").write_text("scanned by the night shift")
    result = _read(root, storage)
    assert result.frame.height == 3 and not result.rejected
    assert (result.files_seen, result.dicom_candidates) == (4, 3)
    assert "PATIENT" not in str(result.metadata()) and str(root) not in str(result.metadata())


def test_dicomdir_trees_are_read(tmp_path, storage):
    files, _ = generate(2, 1, seed=4, options=SynthOptions(frames=3))
    fs = FileSet()
    for data in files.values():
        fs.add(pydicom.dcmread(io.BytesIO(data)))
    fs.write(tmp_path / "media")
    refs = [p for p in (tmp_path / "media").rglob("*") if p.is_file() and p.name != "DICOMDIR"]
    assert all("." not in p.name for p in refs)  # file-set ids: no suffix at all
    result = _read(tmp_path / "media", storage)
    assert result.frame.height == 2 and result.dicomdirs == 1 and not result.rejected
    refs[0].unlink()
    result = _read(tmp_path / "media", storage)
    assert result.frame.height == 1
    assert [r.reason.split(":")[0] for r in result.rejected] == ["missing file"]


@pytest.mark.parametrize("codec", ["libx264", "mpeg2video"])
def test_video_cine_is_decoded_with_pyav(storage, codec):
    out = ingest_file(video_dicom(n_frames=8, codec=codec), "f_x", storage, "s", SALT)
    assert out.row["n_frames"] == 8 and out.row["transfer_syntax"].startswith(("MPEG-4 AVC/H.264", "MPEG2"))
    frame = next(iter(out.keyframes.values()))
    assert frame.shape == (128, 128, 3) and frame[out.region_mask].std() > 5
    assert frame[~out.region_mask].max() == 0  # the burned-in name is blanked in video too


def _echonet(root, n=3, frames=12, size=112):
    (root / "Videos").mkdir(parents=True)
    rng = np.random.default_rng(0)
    lines = ["FileName,EF,ESV,EDV,FrameHeight,FrameWidth,FPS,NumberOfFrames,Split"]
    for i in range(n):
        clip = (rng.random((frames, size, size, 3)) * 255).astype(np.uint8)
        name = f"0X{i:04X}ABCD"
        (root / "Videos" / f"{name}.avi").write_bytes(encode_video(clip, 50.0, "mpeg4", "avi"))
        lines.append(f"{name},55.0,40.0,90.0,{size},{size},50,{frames},TRAIN")
    (root / "FileList.csv").write_text("\n".join(lines) + "\n")


def test_echonet_avi_clips_are_decoded_with_pyav(tmp_path, storage):
    _echonet(tmp_path / "echonet")
    result = _read(tmp_path / "echonet", storage, accept_full_frame=True)
    assert result.layout == "echonet" and result.video_candidates == 3 and not result.rejected
    df = result.frame
    assert df.height == 3 and set(df["n_frames"]) == {12} and set(df["view"]) == {"A4C"}
    assert df["frame_rate_hz"][0] == pytest.approx(50.0) and df["transfer_syntax"][0] == "AVI (mpeg4)"
    assert result.metadata()["accept_full_frame"] is True
    refused = _read(tmp_path / "echonet", storage)
    assert refused.frame.height == 0 and all(
        r.reason.startswith("no ultrasound regions") for r in refused.rejected
    )


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_fuzzed_headers_never_fail_a_partition(tmp_path, storage):
    """220 copies of real and generated ultrasound files with 1-4 bytes flipped in their headers (seeded):
    every one is ingested or quarantined with its key and a reason; the read never raises."""
    seeds = {
        name: open(get_testdata_file(name), "rb").read()
        for name in ("examples_rgb_color.dcm", "US1_UNCR.dcm")
    }
    files, _ = generate(
        2,
        1,
        seed=0,
        options=[
            SynthOptions(frames=3, size=64),
            SynthOptions(frames=3, size=64, syntax="rle", photometric="RGB"),
        ],
    )
    seeds |= files
    rng = random.Random(1234)
    src = tmp_path / "fuzz"
    src.mkdir()
    for i in range(220):
        name, data = rng.choice(sorted(seeds.items()))
        buf = bytearray(data)
        header_end = min(len(buf), 2048)
        for _ in range(rng.randint(1, 4)):
            buf[rng.randrange(132, header_end)] ^= 1 << rng.randrange(8)
        (src / f"fuzz_{i:03d}.dcm").write_bytes(bytes(buf))
    # the OCR pixel check is not what is fuzzed here (tests/echo/test_echo_pixels.py covers it): reading
    # ~150 full real frames would take minutes on CI's 2 cores
    result = _read(src, storage, accept_full_frame=True, pixel_ocr=False)
    keys = set(result.frame["file_key"]) | {r.item_id for r in result.rejected}
    assert len(keys) == 220 == result.frame.height + len(result.rejected)
    assert all(r.reason and ":" in r.reason and "fuzz_" not in r.reason for r in result.rejected)
    assert result.frame.height > 0 and len(result.rejected) > 0


def test_an_empty_source_is_reported(tmp_path, storage):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "README.txt").write_text("nothing here")
    result = _read(tmp_path / "empty", storage)
    assert (result.files_seen, result.candidates, result.frame.height) == (1, 0, 0)
    (problem,) = echo_source_problems(
        result.files_seen, result.candidates, result.frame.height, len(result.rejected)
    )
    assert problem.startswith("no clip found: 0 DICOM or AVI files among 1 files")


def test_findings_naming_the_patient_are_withheld(tmp_path, storage):
    files, rows = generate(2, 1, seed=3, options=SynthOptions(frames=4))
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    name = str(pydicom.dcmread(tmp_path / "clip_0000.dcm").PatientName).replace("^", " ")
    rows[0]["findings"] = f"Dilated LV. Patient {name} to follow up."
    (tmp_path / "labels.csv").write_bytes(write_manifest_csv(rows))
    result = _read(tmp_path, storage)
    assert result.frame.height == 2  # the clip is published, its measurements kept, its findings not
    own = [k for k, rel in result.key_map.items() if rel == "clip_0000.dcm"][0]
    row = result.frame.filter(pl.col("file_key") == own).row(0, named=True)
    assert row["findings"] is None and row["ef_percent"] == rows[0]["ef_percent"]
    (reason,) = [r.reason for r in result.rejected]
    assert reason.startswith("findings withheld: the manifest's free-text findings for this clip names ")
    assert "PatientName" in reason and name not in reason
    quarantine = quarantine_frame(result.rejected, "echo_studies", "site")
    assert result.audit(quarantine, result.metadata()).passed


def test_key_map_goes_only_to_a_restricted_location(tmp_path, storage):
    files, _ = generate(1, 1, seed=3, options=SynthOptions(frames=3))
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "HARTWELL_ALEX.dcm").write_bytes(files["clip_0000.dcm"])
    result = _read(tmp_path / "src", storage)
    with pytest.raises(KeyMapLocationError, match="inside the published storage root"):
        write_key_map(
            result.key_map,
            storage.uri("restricted"),
            source="site",
            salt_fingerprint=result.salt_fingerprint,
            published_root=storage.root,
        )
    with pytest.raises(KeyMapLocationError, match="no restricted location"):
        write_key_map(result.key_map, "", source="site", salt_fingerprint="x", published_root=storage.root)
    uri = write_key_map(
        result.key_map,
        str(tmp_path / "restricted"),
        source="site",
        salt_fingerprint=result.salt_fingerprint,
        published_root=storage.root,
    )
    assert read_key_map(uri) == {result.frame["file_key"][0]: "HARTWELL_ALEX.dcm"}
    assert (tmp_path / "restricted" / "echo_studies" / "site.keymap.csv").stat().st_mode & 0o077 == 0
    shutil.rmtree(tmp_path / "restricted")
