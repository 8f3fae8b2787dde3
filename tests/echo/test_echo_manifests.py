"""Label manifests: our layout, EchoNet-Dynamic and MIMIC-IV-ECHO layouts on small fixtures."""

import pytest

from assets.common.records import SourceError
from assets.echo.manifests import read_echonet, read_label_manifest, read_mimic_echo
from storage.sources import SourceDir


def test_our_layout_types_and_rejects(tmp_path):
    (tmp_path / "labels.csv").write_text(
        "clip_file,view,ef_percent,ed_frame,es_frame,sex\n"
        "a.dcm,A4C,55.5,0,11,F\nb.dcm,,,,,\nc.dcm,A4C,140,,,\nd.dcm,A4C,abc,,,\n"
    )
    df, bad = read_label_manifest(SourceDir(str(tmp_path)))
    assert df["clip_file"].to_list() == ["a.dcm", "b.dcm"] and df["ed_frame"].to_list() == [0, None]
    assert [b.row for b in bad] == ["4", "5"] and "outside 0-100" in bad[0].reason
    (tmp_path / "labels.csv").write_text("clip_file\na.dcm\na.dcm\n")
    with pytest.raises(SourceError, match="clip_file repeated"):
        read_label_manifest(SourceDir(str(tmp_path)))


def test_echonet_dynamic_layout(tmp_path):
    (tmp_path / "Videos").mkdir()
    (tmp_path / "FileList.csv").write_text(
        "FileName,EF,ESV,EDV,FrameHeight,FrameWidth,FPS,NumberOfFrames,Split\n"
        "0X1A2B,55.2,40.1,89.5,112,112,50,201,TRAIN\n0X3C4D,30.0,100,143,112,112,50,150,TEST\n"
    )
    (tmp_path / "VolumeTracings.csv").write_text(
        "FileName,X1,Y1,X2,Y2,Frame\n"
        "0X1A2B.avi,10,10,60,10,46\n0X1A2B.avi,10,20,60,20,46\n"
        "0X1A2B.avi,20,10,40,10,61\n0X1A2B.avi,20,20,40,20,61\n"
    )
    df, bad = read_echonet(SourceDir(str(tmp_path)))
    assert not bad and df.height == 2
    first = df.row(0, named=True)
    assert first["clip_file"] == "Videos/0X1A2B.avi" and first["view"] == "A4C"
    assert (first["ed_frame"], first["es_frame"]) == (46, 61) and first["ef_percent"] == 55.2
    assert df.row(1, named=True)["ed_frame"] is None


def test_mimic_iv_echo_layout(tmp_path):
    (tmp_path / "echo-record-list.csv").write_text(
        "subject_id,study_id,acquisition_datetime,dicom_filepath\n"
        "10002221,94106955,2180-11-12 10:00:00,files/p10/p10002221/s94106955/94106955_0001.dcm\n"
        "10002221,94106955,2180-11-12 10:01:00,files/p10/p10002221/s94106955/94106955_0002.dcm\n"
    )
    (tmp_path / "measurements.csv").write_text(
        "study_id,measurement,value,unit\n94106955,LVEF,45,%\n94106955,LVIDd,5.6,cm\n94106955,IVSd,x,cm\n"
    )
    df, bad = read_mimic_echo(SourceDir(str(tmp_path)))
    assert df.height == 2 and df["ef_percent"].to_list() == [45.0, 45.0]
    assert df["lvidd_mm"][0] == pytest.approx(56.0) and df["patient_id"][0] == "10002221"
    assert len(bad) == 1 and "not a number" in bad[0].reason
