"""PS3.15 Table E.1-1 conformance, attribute by attribute: every row of the vendored table is planted in a
dataset with a value of its VR and must come out of :func:`assets.echo.deid.deidentify` as its Basic
Profile action (resolved per :func:`quality.deid_profile.resolve`) and the modified-dates option say."""

import pytest
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.tag import Tag

from assets.echo import deid
from quality.deid_profile import ProfileEntry, entry_for, load_table, resolve

SALT = "c14d648ee0cac5619552971f0903bb3a1bf6c5f5024044edef21141438a2dbb1"  # secrets.token_hex(32)
KEY = "pt_0123456789abcdef"
SECRET_NAME = "DOE^JANE"
VALUES = {
    "PN": SECRET_NAME,
    "DA": "20200102",
    "DT": "20200102134501",
    "TM": "134501",
    "UI": "1.2.3.4.5.6.7.8",
    "AE": "SECRETAE",
    "AS": "045Y",
    "CS": "SECRET",
    "LO": "SECRET VALUE",
    "LT": "SECRET TEXT",
    "SH": "SECRET",
    "ST": "SECRET TEXT",
    "UC": "SECRET",
    "UR": "http://secret.example",
    "UT": "SECRET TEXT",
    "DS": "12.5",
    "IS": "42",
    "US": 7,
    "SS": 7,
    "UL": 7,
    "SL": 7,
    "FL": 7.0,
    "FD": 7.0,
    "OB": b"\x01\x02",
    "OW": b"\x01\x02",
    "UN": b"\x01\x02",
    "AT": 0x00100010,
    "OD": b"\x00" * 8,
    "OF": b"\x00" * 4,
    "OL": b"\x00" * 4,
    "OV": b"\x00" * 8,
    "SV": 7,
    "UV": 7,
}
ISSUE_ITEMS = {  # the attributes the issue found missing, by tag
    0x00101002: "Other Patient IDs Sequence",
    0x00080082: "Institution Code Sequence",
    0x04000561: "Original Attributes Sequence",
    0x00321033: "Requesting Service",
    0x00321030: "Reason for Study",
    0x00324000: "Study Comments",
    0x00380010: "Admission ID",
    0x00102000: "Medical Alerts",
    0x00102110: "Allergies",
    0x001021C0: "Pregnancy Status",
    0x001021A0: "Smoking Status",
    0x00081010: "Station Name",
    0x00400241: "Performed Station AE Title",
    0x00400001: "Scheduled Station AE Title",
    0x00209158: "Frame Comments",
    0x00184000: "Acquisition Comments",
    0x0040A730: "Content Sequence",
    0x00880200: "Icon Image Sequence",
    0x60004000: "Overlay Comments",
    0x60003000: "Overlay Data",
    0x50000010: "Curve Data (Number of Points)",
    0xFFFAFFFA: "Digital Signatures Sequence",
    0x00080201: "Timezone Offset From UTC",
    0x00081072: "Operator Identification Sequence",
    0x00080096: "Referring Physician Identification Sequence",
}


def _concrete(e: ProfileEntry) -> int:
    """A real tag for a table row (a repeating group ``60xx`` becomes ``6002``; ``50xxxxxx`` a curve
    element)."""
    if e.mask == 0xFFFFFFFF:
        return e.tag
    return e.tag | (0x00020000 if e.mask & 0xFFFF else 0x00020010)


def _vr(tag: int) -> str:
    try:
        vr = dictionary_VR(tag)
    except KeyError:
        return "OB" if (tag >> 16) & 0xFF00 in (0x5000, 0x6000) else "LO"
    return vr.split(" or ")[0]


def _element(tag: int, vr: str) -> DataElement:
    if vr == "SQ":
        item = Dataset()
        item.PatientName = SECRET_NAME
        item.CodeValue = "SECRETCODE"
        return DataElement(tag, "SQ", Sequence([item]))
    return DataElement(tag, vr, VALUES[vr])


ROWS = [e for e in load_table() if (e.tag >> 16) not in (0x0000, 0x0002)]  # command / file-meta groups


def test_the_table_is_complete():
    assert len(load_table()) >= 600  # Table E.1-1 (2026c) lists 655 attributes
    for tag, name in ISSUE_ITEMS.items():
        assert entry_for(tag) is not None, name


@pytest.mark.parametrize("entry", ROWS, ids=lambda e: f"{e.tag_text}-{e.action}")
def test_attribute_gets_its_profile_action(entry: ProfileEntry):
    tag = _concrete(entry)
    vr = _vr(tag)
    ds = Dataset()
    ds.add(_element(tag, vr))
    before = ds[tag].value
    deid.deidentify(ds, SALT, KEY, "site-0001")
    action = resolve(entry.action, vr)
    present = Tag(tag) in ds
    value = ds[tag].value if present else None
    if tag == 0x00100020:  # Patient ID (Z/D): the pseudonymous patient key is its dummy value
        assert value == KEY
    elif vr in ("DA", "DT") and tag not in deid.NOT_SHIFTED:  # modified-dates option: shifted, date only
        assert value == deid.shift_date("20200102", deid.date_shift_days(KEY, SALT))
    elif vr == "TM":
        assert not present if action == "X" else value == ""
    elif action == "X":
        assert not present
    elif action == "Z":
        assert present and (value in ("", None, b"") or (vr == "SQ" and len(value) == 0))
    elif action == "D":
        assert present and value != before
    elif action == "U":
        assert present and str(value).startswith("2.25.") and value != before
    else:
        pytest.fail(f"unexpected action {action}")
    text = repr(ds)
    for secret in ("DOE", "JANE", "SECRET", "1.2.3.4.5.6.7.8", "20200102", "134501"):
        assert secret not in text, (entry.name, secret)


def test_mediastorage_uid_and_private_tags():
    ds = Dataset()
    ds.SOPInstanceUID = "1.2.3.4"
    ds.file_meta = Dataset()
    ds.file_meta.MediaStorageSOPInstanceUID = "1.2.3.4"
    block = ds.private_block(0x0011, "VENDOR", create=True)
    block.add_new(0x01, "LO", "SECRET")
    deid.deidentify(ds, SALT, KEY, "site-0001")
    assert (
        ds.file_meta.MediaStorageSOPInstanceUID
        == ds.SOPInstanceUID
        == deid.remap_uid("1.2.3.4", SALT, "site-0001")
    )
    assert not any(e.tag.is_private for e in ds)
    assert ds.LongitudinalTemporalInformationModified == "MODIFIED" and len(ds.DeidentificationMethod) <= 64


def test_unlisted_person_names_dates_and_uids_are_still_cleaned():
    """Attributes outside the table: PN removed, DA shifted, TM emptied, UIDs remapped, inside sequences
    too."""
    item = Dataset()
    item.add_new(0x00400006, "PN", SECRET_NAME)  # Scheduled Performing Physician's Name
    item.add_new(0x00181202, "DA", "20200102")  # DateOfLastCalibration
    ds = Dataset()
    ds.add_new(0x00189346, "SQ", Sequence([item]))  # CTDI Phantom Type Code Sequence (not in the table)
    ds.add_new(0x00181201, "TM", "134501")
    deid.deidentify(ds, SALT, KEY, "site-0001")
    assert "DOE" not in repr(ds) and "20200102" not in repr(ds) and "134501" not in repr(ds)
