"""Echo label manifests: our documented layout, and readers for MIMIC-IV-ECHO and EchoNet-Dynamic.

Our layout (``labels.csv`` or ``labels.parquet`` at the root of an echo source folder), one row per clip:

=============  ==========================================================================================
clip_file      path of the DICOM file relative to the source folder (the join key)
study_id       the source's study identifier, if any (treated as an identifier: never copied to outputs)
view           one of :data:`VIEWS` (A4C, A2C, PLAX, PSAX), empty when unknown
ef_percent     LV ejection fraction, %
edv_ml         LV end-diastolic volume, mL
esv_ml         LV end-systolic volume, mL
lvidd_mm       LV internal diameter at end-diastole, mm
ivsd_mm        interventricular septum thickness at end-diastole, mm
lvpwd_mm       LV posterior wall thickness at end-diastole, mm
findings       free-text findings (published only when they pass quality.phi.free_text_problems: no
               identifier of the same file in any variant, nothing Presidio reads as PHI; else withheld,
               the clip and its measurements published, a quarantine record saying why)
ed_frame       0-based end-diastolic frame index, empty when unknown
es_frame       0-based end-systolic frame index, empty when unknown
sex            F / M / empty (selects the sex-specific guideline cut-offs)
patient_id     source of the pseudonymous patient key when the file has no DICOM PatientID
               (EchoNet AVIs); hashed with the salt, never copied to outputs
=============  ==========================================================================================

Every column but ``clip_file`` may be empty. Rejections name a manifest by its file name (never its
folder) and a row by its line, and keep only :data:`SAFE_COLUMNS`. Plain library (no Dagster).
"""

from __future__ import annotations

import csv
import io
from typing import Any

import polars as pl

from assets.common.records import Rejection, SourceError
from storage.sources import SourceDir

VIEWS = ("A4C", "A2C", "PLAX", "PSAX")
MANIFEST_COLUMNS = {
    "clip_file": pl.Utf8,
    "study_id": pl.Utf8,
    "view": pl.Utf8,
    "ef_percent": pl.Float64,
    "edv_ml": pl.Float64,
    "esv_ml": pl.Float64,
    "lvidd_mm": pl.Float64,
    "ivsd_mm": pl.Float64,
    "lvpwd_mm": pl.Float64,
    "findings": pl.Utf8,
    "ed_frame": pl.Int64,
    "es_frame": pl.Int64,
    "sex": pl.Utf8,
    "patient_id": pl.Utf8,
}
MANIFEST_NAMES = ("labels.csv", "labels.parquet")


def _num(value: Any, cast: type, col: str) -> Any:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        return cast(float(value)) if cast is int else cast(value)
    except (TypeError, ValueError):
        raise ValueError(f"{col} is not a number") from None


# Columns of a manifest row that identify no one: the only ones a rejection keeps (a manifest may hold an
# MRN in any column, and clip_file, study_id, patient_id and findings may name a patient).
SAFE_COLUMNS = (
    "view",
    "ef_percent",
    "edv_ml",
    "esv_ml",
    "lvidd_mm",
    "ivsd_mm",
    "lvpwd_mm",
    "ed_frame",
    "es_frame",
    "sex",
)


def safe_fields(row: dict) -> dict:
    """The non-identifying fields of a manifest row (:data:`SAFE_COLUMNS`), for quarantine records."""
    return {k: row.get(k) for k in SAFE_COLUMNS if row.get(k) not in (None, "")}


def normalize_rows(rows: list[dict], source_file: str) -> tuple[pl.DataFrame, list[Rejection]]:
    """Rows in our layout typed per :data:`MANIFEST_COLUMNS`; unparseable rows are rejected with a reason.

    A rejection names the manifest by ``source_file`` and the row by its line, keeps only the row's
    :data:`SAFE_COLUMNS` and never quotes a value in its reason.
    """
    good, bad = [], []
    for i, row in enumerate(rows):
        try:
            out: dict[str, Any] = {}
            for col, dtype in MANIFEST_COLUMNS.items():
                v = row.get(col)
                if dtype == pl.Float64:
                    out[col] = _num(v, float, col)
                elif dtype == pl.Int64:
                    out[col] = _num(v, int, col)
                else:
                    out[col] = (str(v).strip() or None) if v is not None else None
            if not out["clip_file"]:
                raise ValueError("clip_file is empty")
            if out["view"] and out["view"] not in VIEWS:
                raise ValueError(f"view is not one of {VIEWS}")
            if out["ef_percent"] is not None and not 0 <= out["ef_percent"] <= 100:
                raise ValueError("ef_percent outside 0-100")
            good.append(out)
        except (TypeError, ValueError) as e:
            bad.append(
                Rejection(
                    source_file,
                    str(i + 2),
                    f"bad manifest row: {e}; fix the row or remove it",
                    safe_fields(row),
                )
            )
    return pl.DataFrame(good, schema=MANIFEST_COLUMNS), bad


def read_label_manifest(src: SourceDir) -> tuple[pl.DataFrame, list[Rejection]]:
    """Our manifest from ``labels.csv``/``labels.parquet`` in ``src`` (an empty frame when there is none)."""
    for name in MANIFEST_NAMES:
        if src.exists(name):
            if name.endswith(".csv"):
                rows = list(csv.DictReader(io.StringIO(src.read_text(name))))
            else:
                rows = pl.read_parquet(io.BytesIO(src.read_bytes(name))).to_dicts()
            df, bad = normalize_rows(rows, name)
            lines = [i + 2 for i, dup in enumerate(df["clip_file"].is_duplicated().to_list()) if dup]
            if lines:
                raise SourceError(
                    name,
                    f"clip_file repeated on data rows {lines[:10]} (counting good rows only)",
                    "give each clip one manifest row",
                )
            return df, bad
    return pl.DataFrame(schema=MANIFEST_COLUMNS), []


# ---- EchoNet-Dynamic ---------------------------------------------------------------------------------
def read_echonet(src: SourceDir) -> tuple[pl.DataFrame, list[Rejection]]:
    """EchoNet-Dynamic's ``FileList.csv`` (+ ``VolumeTracings.csv``) as our manifest layout.

    ``clip_file`` is ``Videos/<FileName>.avi`` (decoded with PyAV by :func:`assets.echo.dicom.decode_avi`; the
    source must accept full frames, as EchoNet's videos carry no region information). The view is A4C (EchoNet
    is apical-4-chamber only). ED and ES frames come from ``VolumeTracings.csv``: of the two traced frames per
    video, the one with the larger traced area (sum of chord lengths) is ED. ``patient_id`` is the FileName,
    EchoNet's only per-patient key.
    """
    path = "FileList.csv"  # errors name the file, never the source folder (its name may identify)
    if not src.exists(path):
        raise SourceError(
            path, "EchoNet-Dynamic FileList.csv not found", "check the folder configured for this source"
        )
    rows = list(csv.DictReader(io.StringIO(src.read_text("FileList.csv"))))
    need = {"FileName", "EF", "ESV", "EDV", "NumberOfFrames"}
    if rows and not need <= set(rows[0]):
        raise SourceError(
            path, f"missing columns {sorted(need - set(rows[0]))}", "use the released FileList.csv"
        )
    frames: dict[str, dict[int, float]] = {}
    if src.exists("VolumeTracings.csv"):
        for t in csv.DictReader(io.StringIO(src.read_text("VolumeTracings.csv"))):
            try:
                chord = (
                    (float(t["X1"]) - float(t["X2"])) ** 2 + (float(t["Y1"]) - float(t["Y2"])) ** 2
                ) ** 0.5
                key = t["FileName"].removesuffix(".avi")
                per = frames.setdefault(key, {})
                per[int(t["Frame"])] = per.get(int(t["Frame"]), 0.0) + chord
            except (KeyError, ValueError):
                continue
    out = []
    for r in rows:
        name = r["FileName"].removesuffix(".avi")
        traced = frames.get(name, {})
        ed = max(traced, key=traced.get) if len(traced) >= 2 else None
        es = min(traced, key=traced.get) if len(traced) >= 2 else None
        out.append(
            {
                "clip_file": f"Videos/{name}.avi",
                "view": "A4C",
                "ef_percent": r.get("EF"),
                "edv_ml": r.get("EDV"),
                "esv_ml": r.get("ESV"),
                "ed_frame": ed,
                "es_frame": es,
                "patient_id": name,
                "findings": f"EchoNet-Dynamic split {r.get('Split', '')}".strip(),
            }
        )
    return normalize_rows(out, "FileList.csv")


# ---- MIMIC-IV-ECHO ----------------------------------------------------------------------------------
MIMIC_MEASUREMENTS = {  # measurement names in a long-format measurements CSV -> our columns
    "lvef": "ef_percent",
    "ef": "ef_percent",
    "lvedv": "edv_ml",
    "lvesv": "esv_ml",
    "lvidd": "lvidd_mm",
    "ivsd": "ivsd_mm",
    "lvpwd": "lvpwd_mm",
}


def read_mimic_echo(
    src: SourceDir, measurements: str | None = "measurements.csv"
) -> tuple[pl.DataFrame, list[Rejection]]:
    """MIMIC-IV-ECHO's ``echo-record-list.csv`` (subject_id, study_id, acquisition_datetime,
    dicom_filepath) joined with optional long-format structured measurements
    (``study_id, measurement, value, unit``; names in :data:`MIMIC_MEASUREMENTS`, cm converted to mm).

    ``clip_file`` is ``dicom_filepath`` (``files/pXX/pXXXXXXXX/sXXXXXXXX/<n>.dcm``); ``patient_id`` is
    ``subject_id``. Views are not in the release, so ``view`` stays empty (unknown).
    """
    path = "echo-record-list.csv"  # errors name the file, never the source folder (its name may identify)
    if not src.exists(path):
        raise SourceError(
            path,
            "MIMIC-IV-ECHO echo-record-list.csv not found",
            "check the folder configured for this source",
        )
    records = list(csv.DictReader(io.StringIO(src.read_text("echo-record-list.csv"))))
    need = {"subject_id", "study_id", "dicom_filepath"}
    if records and not need <= set(records[0]):
        raise SourceError(
            path, f"missing columns {sorted(need - set(records[0]))}", "use the released record list"
        )
    by_study: dict[str, dict[str, float]] = {}
    bad: list[Rejection] = []
    if measurements and src.exists(measurements):
        for i, m in enumerate(csv.DictReader(io.StringIO(src.read_text(measurements)))):
            col = MIMIC_MEASUREMENTS.get(str(m.get("measurement", "")).strip().lower())
            if col is None:
                continue
            try:
                value = float(m["value"])
            except (KeyError, TypeError, ValueError):
                bad.append(
                    Rejection(
                        measurements,
                        str(i + 2),
                        "bad measurement value: not a number",
                        {"measurement": m.get("measurement"), "unit": m.get("unit")},
                    )
                )
                continue
            if col.endswith("_mm") and str(m.get("unit", "")).strip().lower() == "cm":
                value *= 10
            by_study.setdefault(str(m["study_id"]), {})[col] = value
    rows = [
        {
            "clip_file": r["dicom_filepath"],
            "study_id": r["study_id"],
            "patient_id": r["subject_id"],
            **by_study.get(str(r["study_id"]), {}),
        }
        for r in records
    ]
    df, more = normalize_rows(rows, "echo-record-list.csv")
    return df, bad + more
