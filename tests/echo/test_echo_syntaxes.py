"""The remaining transfer syntaxes of the issue on real pydicom test files: JPEG Lossless (a real
ultrasound file), and JPEG-LS and JPEG Extended (real MR/NM files re-labelled as ultrasound, since no
ultrasound sample in those syntaxes ships with pydicom)."""

import io

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import UltrasoundImageStorage, UltrasoundMultiFrameImageStorage

from assets.echo.dicom import ingest_file

CASES = {  # file: (transfer syntax keyword, frames, relabel as US)
    "JPGLosslessP14SV1_1s_1f_8b.dcm": ("JPEGLosslessSV1", 1, False),
    "emri_small_jpeg_ls_lossless.dcm": ("JPEGLSLossless", 10, True),
    "JPGExtended.dcm": ("JPEGExtended12Bit", 1, True),
}


def _as_ultrasound(path: str, relabel: bool) -> bytes:
    ds = pydicom.dcmread(path)
    if relabel:
        ds.Modality = "US"
        multi = int(ds.get("NumberOfFrames", 1) or 1) > 1
        ds.SOPClassUID = UltrasoundMultiFrameImageStorage if multi else UltrasoundImageStorage
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


@pytest.mark.parametrize("name", sorted(CASES))
def test_syntax_decodes_through_ingestion(storage, name):
    keyword, frames, relabel = CASES[name]
    path = get_testdata_file(name)
    assert path, f"{name} ships with pydicom"
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    assert ds.file_meta.TransferSyntaxUID.keyword == keyword
    out = ingest_file(
        _as_ultrasound(path, relabel), "f_test", storage, "real", "salt", accept_full_frame=True
    )
    assert out.row["n_frames"] == frames
    assert out.row["keyframe_refs"] and all(storage.image_exists(r) for r in out.row["keyframe_refs"])
    reference = pydicom.dcmread(path).pixel_array
    first = reference if frames == 1 else reference[0]
    assert first.std() > 0  # a real image, not a blank frame
    assert any(np.asarray(k).std() > 0 for k in out.keyframes.values())
