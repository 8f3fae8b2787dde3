"""One echo source folder into ``echo_studies`` rows, pseudonymous quarantine records and audit inputs.

:func:`read_echo_source` finds the clips by content (:mod:`assets.echo.discover`), joins them with the
source's label manifest (ours, EchoNet-Dynamic or MIMIC-IV-ECHO), decodes and de-identifies each one
(:mod:`assets.echo.dicom`), and returns an :class:`EchoReadResult` holding everything an asset needs to
decide and publish: rows, rejections, identifiers per file, the output places to audit, the key-to-path
map (for the restricted location only), counts, the salt fingerprint and the full-frame setting.

Contracts:

* The salt is checked before anything is read (:func:`assets.echo.deid.check_salt`): a non-synthetic
  source needs its own secret salt; a synthetic source may use the development salt, and then every file
  must come from the generator.
* One bad file never stops a source: any exception while reading or decoding a file (pydicom, decoders,
  PyAV) quarantines that file with its key and the reason, and the next file is read. Failures of the
  storage being written to are not a file's fault and propagate.
* Files are named only by their key in rows, reasons and metadata; rejections keep non-identifying
  fields only. Free-text ``findings`` are published only when they pass
  :func:`quality.phi.free_text_problems` (no identifier of the same file in any variant, and nothing a
  PHI scrubber flags); otherwise the row is published with ``findings`` empty (its measurements kept) and
  a quarantine record ``findings withheld`` says why.
* Pixels are read before anything is stored: OCR (:mod:`quality.pixel_text`) reads every keyframe and
  :data:`~assets.echo.dicom.N_OCR_CLIP_FRAMES` clip frames as they will be published (blanked outside the
  image regions, full resolution); a clip in which it reads one of the file's identifiers is
  quarantined. The OCR engine is loaded before the first file is opened: a missing engine stops the read.
* A SOP instance is a duplicate only of a copy that was ingested: a damaged first copy does not make the
  intact re-transfer a duplicate.

Plain library (no Dagster).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import polars as pl

from assets.common.records import Rejection, reason_counts
from quality import pixel_text
from quality.phi import (
    Identifier,
    Matcher,
    PhiAuditResult,
    Place,
    audit_outputs,
    file_name_identifiers,
    free_text_problems,
    outside_region_blank,
)
from storage.sources import SourceDir

from . import deid
from .dicom import (
    ECHO_SCHEMA,
    GENERATED_COLUMNS,
    GENERATED_FORMS,
    EchoProblem,
    decode_avi,
    decode_dicom,
    scrub,
    store_outputs,
)
from .discover import discover
from .manifests import (
    MANIFEST_NAMES,
    read_echonet,
    read_label_manifest,
    read_mimic_echo,
    safe_fields,
)

TABLE = "echo_studies"
LAYOUTS = ("auto", "ours", "echonet", "mimic")
_LAYOUT_FILES = {
    "echonet": ("FileList.csv", "VolumeTracings.csv"),
    "mimic": ("echo-record-list.csv", "measurements.csv"),
}


@dataclass
class EchoReadResult:
    """What an echo source yielded; see the module docstring. ``key_map`` and ``identifiers_by_file`` identify
    people: keep them in memory, and write the map only with :func:`assets.echo.keymap.write_key_map`."""

    frame: pl.DataFrame
    rejected: list[Rejection]
    identifiers_by_file: dict[str, set[Identifier]]
    places: list[Place]
    blank_violations: list[str]
    key_map: dict[str, str]
    source: str
    source_fingerprint: str
    salt_fingerprint: str  # for the restricted key map only: never published (it would test salt guesses)
    accept_full_frame: bool
    layout: str
    files_seen: int
    dicom_candidates: int
    video_candidates: int
    dicomdirs: int

    @property
    def candidates(self) -> int:
        """Files that were clips by content (DICOM or AVI)."""
        return self.dicom_candidates + self.video_candidates

    def metadata(self) -> dict[str, Any]:
        """Non-identifying facts for materialization metadata (no path, no file name)."""
        df = self.frame
        return {
            "source_fingerprint": self.source_fingerprint,
            "accept_full_frame": self.accept_full_frame,
            "manifest_layout": self.layout,
            "files_seen": self.files_seen,
            "dicom_candidates": self.dicom_candidates,
            "video_candidates": self.video_candidates,
            "dicomdirs": self.dicomdirs,
            "clips_ingested": df.height,
            "records_quarantined": len(self.rejected),
            "quarantine_reasons": reason_counts(self.rejected),
            "frames_total": int(df["n_frames"].sum()) if df.height else 0,
            "patients": df["patient_key"].n_unique() if df.height else 0,
        }

    def audit(
        self,
        quarantine: pl.DataFrame | None = None,
        metadata: dict[str, Any] | None = None,
        table: pl.DataFrame | None = None,
    ) -> PhiAuditResult:
        """The PHI audit of everything to be published: ``table`` (default: :attr:`frame`), the quarantine
        frame and the metadata dict the asset will write, the PNG chunks and stored file names; pixels
        outside the regions are reported as leaks too, and so is any value of a generated column (keys,
        remapped UIDs, shifted dates, refs) that does not have the form the pipeline gives it
        (:func:`generated_form_leaks`): every published column is audited."""
        result = audit_outputs(
            self.identifiers_by_file,
            table=self.frame if table is None else table,
            table_name=TABLE,
            key_column="file_key",
            generated_columns=GENERATED_COLUMNS,
            quarantine=quarantine,
            metadata=metadata,
            places=self.places,
        )
        result.leaks += [("pixels outside the ultrasound region", v) for v in self.blank_violations]
        result.leaks += generated_form_leaks(self.frame if table is None else table)
        return result


def generated_form_leaks(table: pl.DataFrame) -> list[tuple[str, str]]:
    """``(what, where)`` for every value of a generated column (:data:`GENERATED_FORMS`) that is not of the
    form the pipeline makes, e.g. an unremapped ``StudyInstanceUID`` in ``study_key``; the value itself is
    never quoted (it may identify), only the column and the row number."""
    leaks = []
    for col, form in GENERATED_FORMS.items():
        if col not in table.columns or not table.height:
            continue
        values = table[col]
        if values.dtype == pl.List(pl.Utf8):
            bad = values.list.eval(~pl.element().str.contains(f"^{form}$")).list.any()
        else:
            bad = ~values.cast(pl.Utf8).str.contains(f"^{form}$")
        bad = bad.fill_null(False)
        for row in pl.Series(range(table.height)).filter(bad).to_list():
            leaks.append((f"a value not made by the pipeline in generated column {col}", f"row {row}"))
    return leaks


def read_manifest(
    src: SourceDir, layout: str = "auto"
) -> tuple[pl.DataFrame, list[Rejection], set[str], str]:
    """The source's labels in our layout, the rejected manifest rows, the manifest files' names and the
    layout read.

    ``auto``: ``labels.csv``/``labels.parquet`` (ours), else EchoNet-Dynamic's ``FileList.csv``, else
    MIMIC-IV-ECHO's ``echo-record-list.csv``, else no labels.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"unknown manifest layout {layout!r}: use one of {LAYOUTS}")
    if layout == "auto":
        layout = (
            "ours"
            if any(src.exists(n) for n in MANIFEST_NAMES)
            else "echonet"
            if src.exists("FileList.csv")
            else "mimic"
            if src.exists("echo-record-list.csv")
            else "ours"
        )
    if layout == "echonet":
        df, bad = read_echonet(src)
    elif layout == "mimic":
        df, bad = read_mimic_echo(src)
    else:
        df, bad = read_label_manifest(src)
    names = set(MANIFEST_NAMES) | set(_LAYOUT_FILES.get(layout, ()))
    return df, bad, names, layout


def _manifest_identifiers(labels: dict | None) -> set[Identifier]:
    out = set()
    for col in ("patient_id", "study_id"):
        if labels and labels.get(col) and len(str(labels[col]).strip()) >= 3:
            out.add(Identifier(str(labels[col]).strip(), f"manifest.{col}"))
    return out


def read_echo_source(
    src: SourceDir,
    storage,
    source: str,
    *,
    salt: str | None,
    synthetic: bool = False,
    accept_full_frame: bool = False,
    layout: str = "auto",
    pixel_ocr: bool = True,
    ocr_engine: str = pixel_text.DEFAULT_ENGINE,
) -> EchoReadResult:
    """Every clip under ``src`` (found by content, recursively, DICOMDIR trees included), joined with
    its label manifest, into ``echo_studies`` rows; keyframes and clips written through ``storage``.

    ``source`` is the site key (partition key), part of every pseudonymous key. ``salt`` is required
    unless ``synthetic`` (see :func:`assets.echo.deid.check_salt`); a :class:`~assets.echo.deid.SaltError`
    is raised before any file is read. ``accept_full_frame`` keeps whole frames of files without
    ultrasound regions (only for sources whose frames carry no burned-in text). ``pixel_ocr=False``
    turns the OCR pixel check off; only benchmarks do (to measure its cost); the assets never pass it.
    """
    salt = deid.check_salt(salt, synthetic)
    if pixel_ocr:
        pixel_text.check_engine(ocr_engine)
    synthetic_only = synthetic and salt == deid.DEV_SALT
    manifest, manifest_rejected, manifest_names, layout = read_manifest(src, layout)
    labels_by_file = {r["clip_file"]: r for r in manifest.to_dicts()}
    found = discover(src, skip=manifest_names)
    fp = deid.salt_fingerprint(salt)

    key_map: dict[str, str] = {}

    def key_of(rel: str) -> str:
        k = deid.file_key(salt, source, rel)
        key_map[k] = rel
        return k

    rejected: list[Rejection] = []
    identifiers_by_file: dict[str, set[Identifier]] = {}
    places: list[Place] = []
    rows, violations = [], []
    ingested_sops: dict[str, str] = {}

    def reject(key: str, reason: str, **raw: Any) -> None:
        rejected.append(Rejection(key, key, reason, raw, key))

    for rel in sorted(found.dicom + found.videos):
        key = key_of(rel)
        labels = labels_by_file.get(rel)
        identifiers = file_name_identifiers(rel) | _manifest_identifiers(labels)
        identifiers_by_file[key] = identifiers
        kind = "avi" if rel in found.videos else "dicom"
        try:
            with src.open_listed(rel) as f:
                if kind == "avi":
                    out = decode_avi(f, key, source, salt, labels, accept_full_frame=accept_full_frame)
                else:
                    size = f.seek(0, 2)
                    f.seek(0)
                    out = decode_dicom(
                        f,
                        size,
                        key,
                        source,
                        salt,
                        labels,
                        accept_full_frame=accept_full_frame,
                        synthetic_only=synthetic_only,
                    )
        except EchoProblem as e:
            reject(key, str(e), kind=kind)
            continue
        except Exception as e:  # any other failure reading one file is that file's problem
            reject(
                key,
                f"unreadable file: {type(e).__name__}: {scrub(str(e), rel, src.root)}; re-export or "
                "re-transfer it",
                kind=kind,
            )
            continue
        identifiers |= out.identifiers
        if pixel_ocr:
            try:
                burned = pixel_text.pixel_text_leaks(out.ocr_frames, identifiers, ocr_engine).leaks
            except pixel_text.OcrUnavailable:
                raise
            except Exception as e:  # an OCR failure on one clip's pixels: that clip is not published
                reject(
                    key, f"pixel check failed: OCR could not read the frames ({type(e).__name__})", kind=kind
                )
                continue
            if burned:
                attrs = sorted({a for a, _ in burned})
                frames = sorted({w for _, w in burned})
                reject(
                    key,
                    f"identifier burned into the pixels: OCR reads {', '.join(attrs)} of the same patient "
                    f"inside the published image region ({', '.join(frames)}); blank it at the source",
                    kind=kind,
                )
                continue
        findings = out.row.get("findings")
        problems = free_text_problems(findings, Matcher(identifiers)) if findings else []
        if problems:  # the free text is withheld; the clip and its structured measurements are published
            out.row["findings"] = None
            reject(
                key,
                f"findings withheld: the manifest's free-text findings for this clip {'; '.join(problems)}; "
                "the clip is published without them: remove it from the findings, or keep measurements in "
                "their own columns",
                kind="findings",
            )
        if out.sop_uid and out.sop_uid in ingested_sops:
            reject(
                key,
                f"duplicate SOP instance: repeats the SOPInstanceUID of {ingested_sops[out.sop_uid]}, "
                "already ingested (the same image, perhaps re-encoded); keep one copy",
                kind=kind,
            )
            continue
        stored = store_outputs(out, storage)
        if out.sop_uid:
            ingested_sops[out.sop_uid] = key
        places += [Place(where, text, key) for where, text in stored]
        rows.append(out.row)
        violations += [
            f"{out.row['clip_id']} frame {i}"
            for i, fr in out.keyframes.items()
            if not outside_region_blank(fr, out.region_mask)
        ]

    for rel in found.not_dicom:
        key = key_of(rel)
        identifiers_by_file[key] = file_name_identifiers(rel) | _manifest_identifiers(labels_by_file.get(rel))
        reject(
            key,
            "not DICOM: the file is named like DICOM but has no DICM marker after a 128-byte preamble "
            "(truncated, or not a DICOM Part 10 export); re-export it",
            kind="unknown",
        )
    for rel, problem in found.unreadable:
        key = key_of(rel)
        identifiers_by_file[key] = file_name_identifiers(rel) | _manifest_identifiers(labels_by_file.get(rel))
        reject(
            key,
            f"not read: {problem}; replace it with the regular file it stands for, inside the source folder, "
            "or remove it",
            kind="unknown",
        )
    for rel in found.missing_referenced:
        key = key_of(rel)
        identifiers_by_file[key] = file_name_identifiers(rel)
        reject(
            key,
            "missing file: a DICOMDIR references a file that is not in the source; re-copy the whole "
            "DICOMDIR tree",
            kind="dicomdir reference",
        )
    seen = set(found.dicom) | set(found.videos) | set(found.not_dicom) | {r for r, _ in found.unreadable}
    for rel in sorted(set(labels_by_file) - seen):
        key = key_of(rel)
        identifiers_by_file[key] = file_name_identifiers(rel) | _manifest_identifiers(labels_by_file[rel])
        reason = (
            "manifest row without a clip: the file it names is in the source but is neither DICOM nor AVI by "
            "content"
            if rel in found.other
            else "manifest row without a file: no such file in the source"
        )
        reject(key, reason, **safe_fields(labels_by_file[rel]))
    for r in manifest_rejected:  # manifest rows that did not parse: named by their line, never their file
        rejected.append(Rejection(r.source_file, r.row, r.reason, r.raw, None))

    frame = pl.DataFrame(rows, schema=ECHO_SCHEMA).sort("clip_id")
    return EchoReadResult(
        frame=frame,
        rejected=rejected,
        identifiers_by_file=identifiers_by_file,
        places=places,
        blank_violations=violations,
        key_map=key_map,
        source=source,
        source_fingerprint=deid.source_fingerprint(salt, source, src.root),
        salt_fingerprint=fp,
        accept_full_frame=accept_full_frame,
        layout=layout,
        files_seen=found.files_seen,
        dicom_candidates=len(found.dicom),
        video_candidates=len(found.videos),
        dicomdirs=len(found.dicomdirs),
    )
