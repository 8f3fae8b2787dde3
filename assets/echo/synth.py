"""Synthetic echocardiography clips: valid multi-frame ultrasound DICOM with known labels and fake PHI.

Each clip is an Ultrasound Multi-frame Image (SOP class 1.2.840.10008.5.1.4.1.1.3.1): a fan-shaped
imaging sector with speckle, and a dark left-ventricle-like ellipse with a bright wall that beats between
an end-diastolic and an end-systolic size. The two sizes follow from the label volumes (a prolate
ellipsoid scales its axes with the cube root of its volume), so the manifest's EF is what the picture
shows. Headers carry realistic but fake PHI (names, IDs, dates, accession, institution, physicians,
device serial, a private tag) and ``BurnedInAnnotation = YES`` with the patient name drawn into the
pixels outside the sector, so that de-identification is exercised on both.

The label manifest (``labels.csv``) is the layout documented in :mod:`assets.echo.manifests`.

    medrwr-synth-echo OUT_DIR [--clips 8] [--patients 4] [--seed 0] [--frames 24] [--size 128]
                              [--photometric MONOCHROME2|RGB|YBR_FULL|YBR_FULL_422]
                              [--syntax explicit_le|implicit_le|explicit_be|rle|jpeg_baseline|jpeg2000]
                              [--planar 0|1]

Plain library (no Dagster); deterministic for a seed.
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.pixels import convert_color_space
from pydicom.sequence import Sequence
from pydicom.uid import (
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    RLELossless,
    UltrasoundMultiFrameImageStorage,
    generate_uid,
)

from .manifests import MANIFEST_COLUMNS, VIEWS
from .synth_frames import render_frames, sector_box

SYNTAXES = {
    "explicit_le": ExplicitVRLittleEndian,
    "implicit_le": ImplicitVRLittleEndian,
    "explicit_be": ExplicitVRBigEndian,
    "rle": RLELossless,
    "jpeg_baseline": JPEGBaseline8Bit,
    "jpeg2000": JPEG2000Lossless,
}
PHOTOMETRICS = ("MONOCHROME2", "RGB", "YBR_FULL", "YBR_FULL_422")

# Which photometric interpretations each transfer syntax can carry here (YBR_FULL_422 only as JPEG, as
# the standard requires for 8-bit data in practice; JPEG 2000 lossless as RGB/MONOCHROME2).
SUPPORTED = {
    "explicit_le": ("MONOCHROME2", "RGB", "YBR_FULL"),
    "implicit_le": ("MONOCHROME2", "RGB", "YBR_FULL"),
    "explicit_be": ("MONOCHROME2", "RGB", "YBR_FULL"),
    "rle": ("MONOCHROME2", "RGB", "YBR_FULL"),
    "jpeg_baseline": ("MONOCHROME2", "YBR_FULL_422"),
    "jpeg2000": ("MONOCHROME2", "RGB"),
}

FIRST = ["ALEX", "MARIA", "JOHN", "WEI", "FATIMA", "OLGA", "PEDRO", "AMARA", "KENJI", "INGRID"]
LAST = ["HARTWELL", "OKONKWO", "LINDQVIST", "MORENO", "TAKAHASHI", "BRENNAN", "KOWALCZYK", "ABERNATHY"]
INSTITUTIONS = ["ST ELSEWHERE HOSPITAL", "MERCY VALLEY CLINIC", "NORTHGATE HEART CENTRE"]
PRIVATE_CREATOR = "MEDRWR SYNTH"


@dataclass(frozen=True)
class SynthOptions:
    """How each generated clip is encoded and sized."""

    frames: int = 24
    size: int = 128
    fps: float = 30.0
    photometric: str = "MONOCHROME2"
    syntax: str = "explicit_le"
    planar: int = 0
    depth_cm: float = 16.0

    def __post_init__(self) -> None:
        if self.syntax not in SYNTAXES:
            raise ValueError(f"unknown transfer syntax {self.syntax!r}: use one of {sorted(SYNTAXES)}")
        if self.photometric not in SUPPORTED[self.syntax]:
            raise ValueError(
                f"photometric {self.photometric} is not generated with syntax {self.syntax}: "
                f"use one of {SUPPORTED[self.syntax]}"
            )
        if self.planar not in (0, 1):
            raise ValueError("planar configuration must be 0 or 1")
        if self.frames < 2 or self.size < 48:
            raise ValueError("a clip needs at least 2 frames and 48x48 pixels")


@dataclass(frozen=True)
class FakePatient:
    name: str
    patient_id: str
    birth_date: str
    sex: str
    institution: str


def fake_patients(n: int, rng: np.random.Generator) -> list[FakePatient]:
    """``n`` distinct fake patients (names, 8-digit ids, birth dates)."""
    out = []
    for i in range(n):
        name = f"{LAST[int(rng.integers(len(LAST)))]}^{FIRST[int(rng.integers(len(FIRST)))]}"
        out.append(
            FakePatient(
                name=name,
                patient_id=f"{int(rng.integers(10_000_000, 99_999_999))}{i}",
                birth_date=f"{int(rng.integers(1935, 2005))}"
                f"{int(rng.integers(1, 13)):02d}{int(rng.integers(1, 29)):02d}",
                sex="F" if rng.random() < 0.5 else "M",
                institution=INSTITUTIONS[int(rng.integers(len(INSTITUTIONS)))],
            )
        )
    return out


def sample_labels(rng: np.random.Generator, view: str) -> dict:
    """Measurements spread over every guideline category (normal to severely abnormal)."""
    ef = float(rng.choice([62.0, 58.0, 47.0, 35.0, 24.0]) + rng.uniform(-3, 3))
    edv = float(rng.uniform(90, 220))
    esv = edv * (1 - ef / 100)
    lvidd = float(rng.choice([48.0, 55.0, 61.0, 66.0, 72.0]) + rng.uniform(-1.5, 1.5))
    ivsd = float(rng.choice([8.5, 12.0, 15.0, 18.0]) + rng.uniform(-0.4, 0.4))
    lvpwd = float(max(6.0, ivsd + rng.uniform(-1.5, 0.5)))
    return {
        "view": view,
        "ef_percent": round(ef, 1),
        "edv_ml": round(edv, 1),
        "esv_ml": round(esv, 1),
        "lvidd_mm": round(lvidd, 1),
        "ivsd_mm": round(ivsd, 1),
        "lvpwd_mm": round(lvpwd, 1),
    }


def _native_bytes(frames: np.ndarray, photometric: str, planar: int) -> bytes:
    if photometric == "MONOCHROME2":
        return frames[..., 0].tobytes()
    arr = frames if photometric == "RGB" else convert_color_space(frames, "RGB", "YBR_FULL")
    if planar == 1:
        arr = arr.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(arr).tobytes()


def _jpeg_frames(frames: np.ndarray, photometric: str) -> list[bytes]:
    out = []
    for f in frames:
        buf = io.BytesIO()
        if photometric == "MONOCHROME2":
            Image.fromarray(f[..., 0], "L").save(buf, "JPEG", quality=92)
        else:  # 4:2:2 chroma subsampling, as YBR_FULL_422 declares
            Image.fromarray(f, "RGB").save(buf, "JPEG", quality=92, subsampling=1)
        out.append(buf.getvalue())
    return out


def build_dataset(
    frames: np.ndarray, patient: FakePatient, opts: SynthOptions, rng: np.random.Generator, clip_no: int
) -> Dataset:
    """A complete multi-frame US dataset (file meta included) around ``frames``."""
    n, s = frames.shape[:3][0], frames.shape[1]
    study_date = f"20{int(rng.integers(18, 26))}{int(rng.integers(1, 13)):02d}{int(rng.integers(1, 29)):02d}"
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UltrasoundMultiFrameImageStorage
    sop_uid = generate_uid(entropy_srcs=[patient.patient_id, str(clip_no), "sop"])
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = SYNTAXES[opts.syntax]
    meta.ImplementationVersionName = "MEDRWR_SYNTH"

    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "CARDIOLOGY"]
    ds.SOPClassUID = UltrasoundMultiFrameImageStorage
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = generate_uid(entropy_srcs=[patient.patient_id, "study"])
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=[patient.patient_id, str(clip_no), "series"])
    ds.FrameOfReferenceUID = generate_uid(entropy_srcs=[patient.patient_id, str(clip_no), "for"])
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = ds.AcquisitionDate = study_date
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = (
        f"{int(rng.integers(8, 18)):02d}{int(rng.integers(0, 60)):02d}00"
    )
    ds.AccessionNumber = f"ACC{int(rng.integers(1_000_000, 9_999_999))}"
    ds.Modality = "US"
    ds.Manufacturer = "MedRwR Synthetic"
    ds.ManufacturerModelName = "SynthEcho 1"
    ds.InstitutionName = patient.institution
    ds.InstitutionAddress = "12 FICTION ROAD, NOWHERE"
    ds.ReferringPhysicianName = "DOLITTLE^JOHN"
    ds.NameOfPhysiciansReadingStudy = "QUINN^MICHAELA"
    ds.OperatorsName = "SONOGRAPHER^SAM"
    ds.StationName = "ECHOLAB-07"
    ds.StudyDescription = "TTE COMPLETE"
    ds.PatientName = patient.name
    ds.PatientID = patient.patient_id
    ds.PatientBirthDate = patient.birth_date
    ds.PatientSex = patient.sex
    ds.OtherPatientIDs = f"MRN{patient.patient_id[::-1]}"
    ds.DeviceSerialNumber = f"SN-{int(rng.integers(100000, 999999))}"
    ds.StudyID = f"E{int(rng.integers(10000, 99999))}"
    ds.SeriesNumber = 1
    ds.InstanceNumber = clip_no + 1
    ds.BurnedInAnnotation = "YES"
    ds.FrameTime = f"{1000 / opts.fps:.3f}"
    ds.CineRate = int(round(opts.fps))
    ds.RecommendedDisplayFrameRate = int(round(opts.fps))
    ds.FrameIncrementPointer = 0x00181063
    ds.NumberOfFrames = n
    ds.Rows = ds.Columns = s
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.LossyImageCompression = "01" if opts.syntax == "jpeg_baseline" else "00"

    x0, y0, x1, y1 = sector_box(s)
    region = Dataset()
    region.RegionSpatialFormat = 1  # 2D
    region.RegionDataType = 1  # tissue
    region.RegionFlags = 0
    region.RegionLocationMinX0, region.RegionLocationMinY0 = x0, y0
    region.RegionLocationMaxX1, region.RegionLocationMaxY1 = x1, y1
    region.PhysicalUnitsXDirection = region.PhysicalUnitsYDirection = 3  # cm
    region.PhysicalDeltaX = region.PhysicalDeltaY = round(opts.depth_cm / s, 6)
    region.ReferencePixelX0, region.ReferencePixelY0 = s // 2 - x0, 0
    ds.SequenceOfUltrasoundRegions = Sequence([region])

    block = ds.private_block(0x0011, PRIVATE_CREATOR, create=True)
    block.add_new(0x01, "LO", f"operator badge {patient.patient_id}")
    block.add_new(0x02, "LO", patient.name)

    photometric = opts.photometric
    ds.PhotometricInterpretation = photometric
    ds.SamplesPerPixel = 1 if photometric == "MONOCHROME2" else 3
    if ds.SamplesPerPixel == 3:
        # encapsulated syntaxes are written with planar configuration 0 (RLE stores colour planes as
        # segments whatever the attribute says; JPEG interleaves components)
        ds.PlanarConfiguration = 0 if opts.syntax in ("jpeg_baseline", "jpeg2000", "rle") else opts.planar

    if opts.syntax == "jpeg_baseline":
        ds.PixelData = encapsulate(_jpeg_frames(frames, photometric))
        ds["PixelData"].VR = "OB"
    else:
        ds.PixelData = _native_bytes(frames, photometric, ds.get("PlanarConfiguration", 0))
        ds["PixelData"].VR = "OB"
        if opts.syntax in ("rle", "jpeg2000"):
            ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
            ds.compress(SYNTAXES[opts.syntax], generate_instance_uid=False)
    return ds


def encode(ds: Dataset) -> bytes:
    """The dataset as DICOM Part 10 bytes in its file meta's transfer syntax."""
    buf = io.BytesIO()
    ts = ds.file_meta.TransferSyntaxUID
    ds.save_as(
        buf, implicit_vr=ts.is_implicit_VR, little_endian=ts.is_little_endian, enforce_file_format=True
    )
    return buf.getvalue()


def generate(
    n_clips: int = 8,
    n_patients: int = 4,
    seed: int = 0,
    options: SynthOptions | list[SynthOptions] | None = None,
) -> tuple[dict[str, bytes], list[dict]]:
    """``({relative file name: DICOM bytes}, manifest rows)`` for ``n_clips`` clips of ``n_patients``.

    Views cycle through :data:`VIEWS`; ``options`` may be a list, cycled per clip (to mix encodings).
    """
    variants = options if isinstance(options, list) else [options or SynthOptions()]
    rng = np.random.default_rng(seed)
    patients = fake_patients(n_patients, rng)
    files: dict[str, bytes] = {}
    rows: list[dict] = []
    for i in range(n_clips):
        patient = patients[i % n_patients]
        opts = variants[i % len(variants)]
        view = VIEWS[i % len(VIEWS)]
        labels = sample_labels(rng, view)
        frames, ed, es = render_frames(labels, opts, rng, patient.name.replace("^", " "))
        ds = build_dataset(frames, patient, opts, rng, i)
        name = f"clip_{i:04d}.dcm"
        files[name] = encode(ds)
        rows.append(
            {
                "clip_file": name,
                "study_id": "",
                **labels,
                "findings": f"Synthetic {view} clip; EF {labels['ef_percent']}%.",
                "ed_frame": ed,
                "es_frame": es,
                "sex": patient.sex,
                "patient_id": "",
            }
        )
    return files, rows


def write_manifest_csv(rows: list[dict]) -> bytes:
    """Manifest rows as CSV bytes in the documented column order."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(MANIFEST_COLUMNS), extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue().encode()


def write_dataset(
    out_dir: str | Path,
    n_clips: int = 8,
    n_patients: int = 4,
    seed: int = 0,
    options: SynthOptions | list[SynthOptions] | None = None,
) -> Path:
    """Write the clips and ``labels.csv`` into a local folder; returns the manifest path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files, rows = generate(n_clips, n_patients, seed, options)
    for name, data in files.items():
        (out / name).write_bytes(data)
    (out / "labels.csv").write_bytes(write_manifest_csv(rows))
    return out / "labels.csv"


# The mix the smoke profile generates: every photometric and transfer syntax of the generator.
SMOKE_MIX = [
    SynthOptions(photometric="MONOCHROME2", syntax="explicit_le"),
    SynthOptions(photometric="YBR_FULL_422", syntax="jpeg_baseline"),
    SynthOptions(photometric="RGB", syntax="explicit_le", planar=1),
    SynthOptions(photometric="YBR_FULL", syntax="rle"),
    SynthOptions(photometric="MONOCHROME2", syntax="implicit_le"),
    SynthOptions(photometric="RGB", syntax="explicit_be"),
    SynthOptions(photometric="RGB", syntax="jpeg2000"),
    SynthOptions(photometric="MONOCHROME2", syntax="jpeg_baseline"),
]


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point ``medrwr-synth-echo``."""
    p = argparse.ArgumentParser(
        description="Write synthetic multi-frame ultrasound DICOM clips and labels.csv"
    )
    p.add_argument("out_dir")
    p.add_argument("--clips", type=int, default=8)
    p.add_argument("--patients", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--frames", type=int, default=24)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--photometric", default="MONOCHROME2", choices=PHOTOMETRICS)
    p.add_argument("--syntax", default="explicit_le", choices=sorted(SYNTAXES))
    p.add_argument("--planar", type=int, default=0, choices=(0, 1))
    a = p.parse_args(argv)
    try:
        opts = SynthOptions(
            frames=a.frames, size=a.size, photometric=a.photometric, syntax=a.syntax, planar=a.planar
        )
    except ValueError as e:
        p.error(str(e))
    manifest = write_dataset(a.out_dir, a.clips, a.patients, a.seed, opts)
    sys.stdout.write(f"wrote {a.clips} clips and {manifest}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
