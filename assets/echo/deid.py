"""De-identification of DICOM headers and pixels after the PS3.15 Basic Application Level Confidentiality
Profile (Annex E, Table E.1-1), with the Retain Longitudinal Temporal Information with Modified Dates
option (dates shifted by a per-patient offset) and UIDs remapped consistently.

* Attributes in :data:`REMOVE` are removed (action X), those in :data:`EMPTY` emptied (Z); every element
  of VR ``PN`` is removed wherever it occurs, sequences included.
* Times of day (TM) are emptied. Dates (DA, DT) are shifted by a whole number of days derived from the salted patient key, so intervals
  within a patient are kept and the same patient always gets the same shift.
* Every UID (VR ``UI``) that is not a well-known DICOM UID (SOP classes, transfer syntaxes, ...) is
  replaced by ``2.25.<integer>`` from an HMAC of the original with the salt (action U), consistently.
* Private tags are dropped (``ds.remove_private_tags()``).
* Pixels outside the ultrasound region(s) are set to zero (burned-in text lives there); see
  :func:`blank_outside`.

The only link back to a patient is :func:`patient_key`, an HMAC-SHA256 of the source patient identifier
with the salt from ``$MEDRWR_DEID_SALT``. The default salt below is a development value, published in this
file, and therefore **not for production**: anyone can recompute keys made with it.

Plain library (no Dagster).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import os
from collections.abc import Iterable

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import UID

ENV_SALT = "MEDRWR_DEID_SALT"
DEV_SALT = "medrwr-dev-salt-NOT-FOR-PRODUCTION"

# Table E.1-1 attributes (keyword) removed by the basic profile (X / X/Z / X/D treated as removal).
REMOVE = (
    "AccessionNumber", "InstitutionName", "InstitutionAddress", "InstitutionalDepartmentName",
    "ReferringPhysicianAddress", "ReferringPhysicianTelephoneNumbers", "StationName", "StudyDescription",
    "SeriesDescription", "PhysiciansOfRecord", "PerformingPhysicianName", "NameOfPhysiciansReadingStudy",
    "OperatorsName", "AdmittingDiagnosesDescription", "DerivationDescription", "PatientBirthTime",
    "OtherPatientIDs", "OtherPatientNames", "PatientBirthName", "PatientAge", "PatientSize", "PatientWeight",
    "PatientAddress", "PatientMotherBirthName", "MilitaryRank", "BranchOfService", "MedicalRecordLocator",
    "EthnicGroup", "Occupation", "AdditionalPatientHistory", "PatientComments", "DeviceSerialNumber",
    "ProtocolName", "ImageComments", "RequestAttributesSequence", "StudyID", "PerformedProcedureStepID",
    "PerformedProcedureStepDescription", "RequestedProcedureID", "ScheduledProcedureStepID",
    "CountryOfResidence", "RegionOfResidence", "PatientTelephoneNumbers", "IssuerOfPatientID",
    "PatientInsurancePlanCodeSequence", "CurrentPatientLocation", "PatientState", "ResponsiblePerson",
    "ResponsibleOrganization", "DeviceUID", "InstanceCreatorUID", "StorageMediaFileSetUID",
    "ReferencedPatientSequence", "ReferencedStudySequence", "TextComments", "ContentCreatorName",
    "PersonName", "AcquisitionDeviceProcessingDescription", "DetectorID", "GantryID",
)
# Replaced with an empty value (Z): required type-2 attributes that must stay present.
EMPTY = ("PatientName", "PatientID", "PatientBirthDate", "ReferringPhysicianName", "PatientSex")
# Well-known UID roots that identify nobody (standard SOP classes, transfer syntaxes, coding schemes).
STANDARD_UID_ROOT = "1.2.840.10008."


def salt_from_env() -> str:
    """``$MEDRWR_DEID_SALT``, else the published development salt (not for production)."""
    return os.environ.get(ENV_SALT) or DEV_SALT


def _mac(salt: str, *parts: str) -> bytes:
    return hmac.new(salt.encode(), "\x1f".join(parts).encode(), hashlib.sha256).digest()


def patient_key(source_patient_id: str, salt: str, source: str = "") -> str:
    """Pseudonymous patient key ``pt_<16 hex>``: HMAC of (source, patient id) with the salt."""
    return "pt_" + _mac(salt, "patient", source, source_patient_id.strip()).hex()[:16]


def date_shift_days(key: str, salt: str) -> int:
    """Per-patient date shift, between -3650 and -1 days, fixed by the patient key and salt."""
    return -1 - int.from_bytes(_mac(salt, "shift", key)[:4], "big") % 3650


def remap_uid(uid: str, salt: str) -> str:
    """A new UID ``2.25.<int>`` (ISO/IEC 9834-8 form, at most 64 characters) from the salted original."""
    return "2.25." + str(int.from_bytes(_mac(salt, "uid", uid)[:15], "big"))


def shift_date(value: str, days: int) -> str:
    """Shift a DA (``YYYYMMDD``) or the date part of a DT by ``days``; unparseable values become empty."""
    value = str(value).strip()
    if len(value) < 8:
        return ""
    try:
        d = dt.datetime.strptime(value[:8], "%Y%m%d").date() + dt.timedelta(days=days)
    except ValueError:
        return ""
    return d.strftime("%Y%m%d") + value[8:]


def source_patient_id(ds: Dataset, fallback: str) -> str:
    """The identifier a patient key is made from: PatientID, else PatientName, else ``fallback``."""
    for kw in ("PatientID", "PatientName"):
        v = str(ds.get(kw, "") or "").strip()
        if v:
            return v
    return fallback


def deidentify(ds: Dataset, salt: str, key: str) -> Dataset:
    """De-identify ``ds`` in place (header only; pixels are handled by :func:`blank_outside`).

    Returns ``ds`` with PatientIdentityRemoved=YES and DeidentificationMethod naming this profile.
    """
    days = date_shift_days(key, salt)
    ds.remove_private_tags()
    for kw in REMOVE:
        if kw in ds:
            delattr(ds, kw)
    for kw in EMPTY:
        if kw in ds:
            ds.data_element(kw).value = ""
    _walk(ds, salt, days)
    ds.PatientID = key
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = "PS3.15 Basic; modified dates; UIDs remapped; medrwr v1"
    if "file_meta" in ds.__dict__ and "MediaStorageSOPInstanceUID" in ds.file_meta:
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return ds


def _walk(ds: Dataset, salt: str, days: int) -> None:
    for elem in list(ds):
        if elem.tag == 0x7FE00010:
            continue
        if elem.VR == "SQ":
            for item in elem.value:
                _walk(item, salt, days)
        elif elem.VR == "PN" and elem.keyword not in EMPTY:
            del ds[elem.tag]
        elif elem.VR == "UI" and elem.value:
            values = elem.value if elem.VM > 1 else [elem.value]
            new = [v if str(v).startswith(STANDARD_UID_ROOT) else remap_uid(str(v), salt) for v in values]
            elem.value = new if elem.VM > 1 else new[0]
        elif elem.VR in ("DA", "DT") and elem.value:
            elem.value = shift_date(str(elem.value), days)
        elif elem.VR == "TM":
            elem.value = ""  # times of day are emptied (Z); intervals live in the shifted dates


def region_boxes(ds: Dataset, rows: int, cols: int) -> list[tuple[int, int, int, int]]:
    """Ultrasound region boxes ``(x0, y0, x1, y1)`` inclusive, clipped to the image; empty if none usable."""
    boxes = []
    for r in ds.get("SequenceOfUltrasoundRegions", []) or []:
        try:
            x0, y0 = int(r.RegionLocationMinX0), int(r.RegionLocationMinY0)
            x1, y1 = int(r.RegionLocationMaxX1), int(r.RegionLocationMaxY1)
        except (AttributeError, TypeError, ValueError):
            continue
        x0, x1 = max(0, min(x0, cols - 1)), max(0, min(x1, cols - 1))
        y0, y1 = max(0, min(y0, rows - 1)), max(0, min(y1, rows - 1))
        if x1 > x0 and y1 > y0:
            boxes.append((x0, y0, x1, y1))
    return boxes


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


def is_standard_uid(uid: str) -> bool:
    """True for UIDs under the DICOM root (identify no one, kept as they are)."""
    return str(UID(uid)).startswith(STANDARD_UID_ROOT)
