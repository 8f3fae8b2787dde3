"""Identifiers outside pixels and cells (issue 20, section 4): instance UIDs under the DICOM root, UIDs per
site, every published column audited, opaque site keys, source paths out of Dagster's instance, a salt that
cannot be guessed and no guess-testable fingerprint."""

import base64
import io
import random

import pydicom
import pytest
from dagster import DagsterInstance, materialize
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from assets.echo import deid
from assets.echo.assets import echo_studies
from assets.echo.source import read_echo_source
from assets.echo.synth import SynthOptions, generate
from orchestration.definitions import build_resources
from storage.sources import SourceDir

SALT = "dcaee515aa5aca92598f960722a6838f5cfb477ef17af9c4bc453cd4230e24eb"  # secrets.token_hex(32)
PHI_SITE = "Müller Jürgen 1953-04-02"
ROOT_STUDY = "1.2.840.10008.999.7.20240402.1234"  # under the DICOM root, not a standard UID
ROOT_SERIES = "1.2.840.10008.999.7.20240402.1234.2"
ROOT_SOP = "1.2.840.10008.999.7.20240402.1234.2.3"
ROOT_REF = "1.2.840.10008.999.7.20240402.1234.9"


def _clip_with_root_uids(folder, name="clip.dcm"):
    files, _ = generate(1, 1, seed=5, options=SynthOptions(frames=4))
    ds = pydicom.dcmread(io.BytesIO(files["clip_0000.dcm"]))
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = ROOT_STUDY, ROOT_SERIES, ROOT_SOP
    ds.file_meta.MediaStorageSOPInstanceUID = ROOT_SOP
    ref = Dataset()
    ref.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.6.1"
    ref.ReferencedSOPInstanceUID = ROOT_REF
    ds.ReferencedImageSequence = Sequence([ref])
    folder.mkdir(parents=True, exist_ok=True)
    ds.save_as(folder / name, enforce_file_format=True)
    return ds


def test_instance_uids_under_the_dicom_root_are_remapped(tmp_path, storage):
    """study_key / series_key / sop_key never carry an input UID, even one starting 1.2.840.10008."""
    _clip_with_root_uids(tmp_path / "src")
    r = read_echo_source(SourceDir(str(tmp_path / "src")), storage, "site-0001", salt=SALT)
    assert r.frame.height == 1, [x.reason for x in r.rejected]
    row = r.frame.row(0, named=True)
    for col in ("study_key", "series_key", "sop_key"):
        assert row[col].startswith("2.25."), col
    published = str(r.frame.to_dicts())
    for uid in (ROOT_STUDY, ROOT_SERIES, ROOT_SOP, ROOT_REF):
        assert uid not in published
    assert row["sop_class"] == "1.2.840.10008.5.1.4.1.1.3.1"  # a standard class is kept
    assert r.audit().passed


def test_uid_remapping_keeps_standard_uids_and_remaps_the_rest():
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.3.1"  # standard: kept
    ds.StudyInstanceUID = ROOT_STUDY
    ds.FrameOfReferenceUID = "1.2.840.10008.1.4.1.1"  # a standard well-known frame of reference: kept
    ds.file_meta = Dataset()
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.1"
    ds.file_meta.MediaStorageSOPInstanceUID = ROOT_SOP
    deid.deidentify(ds, SALT, "pt_x", "site-0001")
    assert (
        ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.3.1" and ds.FrameOfReferenceUID == "1.2.840.10008.1.4.1.1"
    )
    assert ds.StudyInstanceUID == deid.remap_uid(ROOT_STUDY, SALT, "site-0001")
    assert ds.file_meta.MediaStorageSOPInstanceUID == deid.remap_uid(ROOT_SOP, SALT, "site-0001")
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"


def test_two_sites_sharing_a_salt_map_one_study_to_different_uids(tmp_path, storage):
    _clip_with_root_uids(tmp_path / "a")
    _clip_with_root_uids(tmp_path / "b")
    a = read_echo_source(SourceDir(str(tmp_path / "a")), storage, "site-000a", salt=SALT)
    b = read_echo_source(SourceDir(str(tmp_path / "b")), storage, "site-000b", salt=SALT)
    for col in ("study_key", "series_key", "sop_key"):
        assert a.frame[col][0] != b.frame[col][0], col
    assert deid.remap_uid("1.2.3", SALT, "site-000a") != deid.remap_uid("1.2.3", SALT, "site-000b")


def test_every_published_column_is_audited(tmp_path, storage):
    """A generated column holding an input value (an unremapped UID, a raw date, a patient id as key) is a
    leak: the audit checks the form of every generated column, without quoting the value."""
    import polars as pl

    _clip_with_root_uids(tmp_path / "src")
    r = read_echo_source(SourceDir(str(tmp_path / "src")), storage, "site-0001", salt=SALT)
    for col, value in (
        ("study_key", ROOT_STUDY),
        ("sop_key", "1.2.826.0.1.3680043.8.498.1"),
        ("patient_key", "PAT12345"),
        ("study_date_shifted", "1953-04-02"),
    ):
        leaky = r.frame.with_columns(pl.lit(value).alias(col))
        result = r.audit(table=leaky)
        assert not result.passed, col
        assert any(col in what for what, _ in result.leaks) and value not in str(result.leaks)


# ---- salt ----------------------------------------------------------------------------------------------
WEAK_SALTS = [
    "hospital-echo-2024",  # the salt found among 2,748 guesses
    "hospital-echo-2024-hospital-echo-2024-hospital-echo-2024",  # long, but a repeated pattern
    "HospitalEcho2024SecretSaltForTheClevelandSiteOnlyXyz",  # words joined to a year
    "correct horse battery staple and some more words to be long",  # a passphrase
    "0123456789abcdef" * 4,  # hex, but a sequence
    "deadbeef" * 8,
    "a" * 64,
    "c14d648ee0cac5619552971f0903bb3a",  # random hex, but only 16 bytes
]


@pytest.mark.parametrize("weak", WEAK_SALTS)
def test_weak_salts_are_refused_before_anything_is_read(tmp_path, storage, weak):
    src = tmp_path / "src"
    _clip_with_root_uids(src)
    (src / "clip.dcm").chmod(0)  # would fail to open if anything tried to read it
    with pytest.raises(deid.SaltError, match="could be guessed") as e:
        read_echo_source(SourceDir(str(src)), storage, "site-0001", salt=weak)
    assert weak not in str(e.value) and "secrets.token_hex(32)" in str(e.value)


def test_random_salts_made_the_documented_ways_are_accepted():
    """2,000 salts of 32 random bytes (seeded: deterministic), as hex, base64 and base64url, all accepted."""
    rng = random.Random(20)
    for _ in range(2000):
        raw = rng.randbytes(32)
        for salt in (
            raw.hex(),
            base64.b64encode(raw).decode(),
            base64.urlsafe_b64encode(raw).decode().rstrip("="),
        ):
            assert deid.weak_salt_reason(salt) is None, salt
            assert deid.check_salt(salt, synthetic=False) == salt


def test_no_salt_fingerprint_is_published(tmp_path, storage):
    _clip_with_root_uids(tmp_path / "src")
    r = read_echo_source(SourceDir(str(tmp_path / "src")), storage, "site-0001", salt=SALT)
    fp = deid.salt_fingerprint(SALT)
    assert "salt_fingerprint" not in r.frame.columns
    assert fp not in str(r.frame.to_dicts()) and fp not in str(r.metadata())


# ---- site keys -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "bad", [PHI_SITE, "mueller_juergen", "site-19530402", "site-Muller", "site-a b", "../x", "", "site-"]
)
def test_phi_like_site_keys_are_refused_without_being_repeated(bad):
    from storage.keys import InvalidSiteKey, validate_site_key

    with pytest.raises(InvalidSiteKey) as e:
        validate_site_key(bad)
    assert "site-0007" in str(e.value)
    if len(bad) > len("site-"):
        assert bad not in str(e.value)


@pytest.mark.parametrize("good", ["synthetic", "site-0007", "site-cle2", "site-a"])
def test_opaque_site_keys_are_accepted(good):
    from storage.keys import validate_site_key

    assert validate_site_key(good) == good


def test_the_runner_refuses_a_phi_like_echo_source_before_registering_any(monkeypatch, tmp_path):
    from orchestration.main import register_dynamic_partitions
    from storage.keys import InvalidSiteKey

    monkeypatch.setenv("MEDRWR_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("MEDRWR_VQA_DATASETS", "vqa_rad")
    monkeypatch.setenv("MEDRWR_TEXT_QA_DATASETS", "medqa")
    monkeypatch.setenv("MEDRWR_ECHO_SOURCES", f"site-0001,{PHI_SITE}")
    with DagsterInstance.ephemeral() as instance:
        with pytest.raises(InvalidSiteKey) as e:
            register_dynamic_partitions(instance, "full")
        assert instance.get_dynamic_partitions("echo_sources") == []
    assert "Müller" not in str(e.value) and "1953" not in str(e.value)


@pytest.mark.slow
def test_a_phi_like_partition_added_behind_the_runner_publishes_nothing(tmp_path, storage, monkeypatch):
    """A key added in the UI (not through the runner) is refused by the asset before anything is read or
    named after it: no file, gate record or quarantine carries it."""
    _clip_with_root_uids(tmp_path / "src")
    monkeypatch.setenv("MEDRWR_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("MEDRWR_DEID_SALT", SALT)
    monkeypatch.setenv("MEDRWR_RESTRICTED_ROOT", str(tmp_path / "restricted"))
    with DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions("echo_sources", [PHI_SITE])
        result = materialize(
            [echo_studies],
            partition_key=PHI_SITE,
            resources=build_resources(),
            instance=instance,
            raise_on_error=False,
        )
    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert "not an opaque site code" in str(failure.event_specific_data.error)
    written = [str(p) for p in tmp_path.rglob("*")]
    assert not any("Müller" in p or "1953" in p for p in written), written


# ---- source paths out of DAGSTER_HOME ---------------------------------------------------------------
def test_echo_source_paths_are_not_resource_config_nor_recorded(tmp_path, monkeypatch):
    from orchestration import ui

    folder = tmp_path / PHI_SITE
    monkeypatch.setenv("MEDRWR_SOURCE_ECHO_SITE_0001", str(folder))
    monkeypatch.setenv("MEDRWR_SOURCE_PUBMEDVISION", str(tmp_path / "pmv"))  # public data: still carried
    sources = build_resources()["sources"]
    assert PHI_SITE not in repr(sources.model_dump()) and sources.overrides == {
        "pubmedvision": str(tmp_path / "pmv")
    }
    assert sources.echo_source_uri("site-0001") == str(folder)  # read from the environment at run time
    settings = ui.run_settings("smoke")
    path = ui.record_run_settings(tmp_path, settings)
    assert PHI_SITE not in path.read_text() and "MEDRWR_SOURCE_PUBMEDVISION" in path.read_text()
    assert "MEDRWR_SOURCE_ECHO_SITE_0001 is set here and not recorded" in ui.ui_hint(tmp_path, settings)
