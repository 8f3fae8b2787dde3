"""The synthetic echo generator: valid DICOM, every encoding round-trips, known EF, fake PHI present."""

import io

import numpy as np
import pydicom
import pytest
from pydicom.pixels import iter_pixels

from assets.echo.synth import SMOKE_MIX, SUPPORTED, SynthOptions, generate, main
from assets.echo.synth_frames import sector_mask

COMBOS = [
    (syntax, ph, planar)
    for syntax, phs in SUPPORTED.items()
    for ph in phs
    for planar in (
        (0, 1) if ph != "MONOCHROME2" and syntax in ("explicit_le", "implicit_le", "explicit_be") else (0,)
    )
]
LOSSY = {"jpeg_baseline"}


def _decode(data: bytes) -> np.ndarray:
    return np.stack(list(iter_pixels(io.BytesIO(data))))


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    files, _ = generate(1, 1, seed=5, options=SynthOptions(frames=8, photometric="RGB"))
    return _decode(next(iter(files.values())))


@pytest.mark.parametrize(("syntax", "photometric", "planar"), COMBOS)
def test_every_encoding_round_trips(reference, syntax, photometric, planar):
    files, _ = generate(
        1, 1, seed=5, options=SynthOptions(frames=8, photometric=photometric, syntax=syntax, planar=planar)
    )
    data = next(iter(files.values()))
    ds = pydicom.dcmread(io.BytesIO(data))
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.3.1"
    assert ds.file_meta.TransferSyntaxUID.name and ds.PhotometricInterpretation == photometric
    frames = _decode(data)
    assert frames.shape[0] == int(ds.NumberOfFrames) == 8
    expected = reference[..., 0] if photometric == "MONOCHROME2" else reference
    diff = np.abs(frames.astype(int) - expected.astype(int))
    if syntax in LOSSY:
        assert diff.mean() < 6  # JPEG baseline at quality 92
    else:
        assert diff.max() <= 3  # YBR_FULL <-> RGB rounding only


def test_deterministic_for_a_seed():
    """Byte-identical output for a seed, compressed syntaxes included (no fresh UIDs on compress)."""
    mix = [
        SynthOptions(frames=6, photometric=o.photometric, syntax=o.syntax, planar=o.planar) for o in SMOKE_MIX
    ]
    a, ra = generate(8, 4, seed=11, options=mix)
    b, rb = generate(8, 4, seed=11, options=mix)
    c, _ = generate(8, 4, seed=12, options=mix)
    assert a == b and ra == rb and a != c


def test_headers_carry_fake_phi_and_burned_in_name():
    files, rows = generate(1, 1, seed=0, options=SynthOptions(frames=6))
    data = files["clip_0000.dcm"]
    ds = pydicom.dcmread(io.BytesIO(data))
    for kw in (
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "AccessionNumber",
        "InstitutionName",
        "ReferringPhysicianName",
        "DeviceSerialNumber",
        "StudyDate",
    ):
        assert str(ds.get(kw, "")), kw
    assert ds.BurnedInAnnotation == "YES"
    assert any(e.tag.is_private for e in ds)
    region = ds.SequenceOfUltrasoundRegions[0]
    assert region.PhysicalUnitsXDirection == 3 and float(region.PhysicalDeltaX) > 0
    assert float(ds.FrameTime) == pytest.approx(33.333)
    frame = _decode(data)[0]
    outside = ~sector_mask(ds.Rows)
    assert frame[outside].max() == 255  # the burned-in name, outside the imaging sector
    assert rows[0]["view"] in ("A4C", "A2C", "PLAX", "PSAX")


def test_drawn_ventricle_gives_the_labelled_ef():
    files, rows = generate(4, 2, seed=3, options=SynthOptions(frames=16))
    for (name, data), row in zip(files.items(), rows, strict=True):
        frames = _decode(data)
        inside = sector_mask(frames.shape[1])
        area = ((frames < 20) & inside).reshape(len(frames), -1).sum(1).astype(float)  # the blood pool
        ratio = (area[row["es_frame"]] / area[row["ed_frame"]]) ** 1.5  # area ~ V^(2/3)
        assert ratio == pytest.approx(row["esv_ml"] / row["edv_ml"], rel=0.12), name


def test_cli_writes_clips_and_manifest(tmp_path, capsys):
    assert (
        main(
            [
                str(tmp_path / "out"),
                "--clips",
                "2",
                "--frames",
                "4",
                "--size",
                "64",
                "--photometric",
                "YBR_FULL_422",
                "--syntax",
                "jpeg_baseline",
            ]
        )
        == 0
    )
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "clip_0000.dcm",
        "clip_0001.dcm",
        "labels.csv",
    ]
    with pytest.raises(SystemExit):
        main([str(tmp_path / "bad"), "--photometric", "YBR_FULL_422", "--syntax", "rle"])
