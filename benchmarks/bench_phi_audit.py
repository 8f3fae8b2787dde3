"""PHI audit at scale: time and false positives on generated clips, and planted leaks caught per place.

    PYTHONPATH=. python benchmarks/bench_phi_audit.py [--clips 1000] [--patients 400] [--baseline-clips 100]

Generates ``--clips`` synthetic clips (fake PHI in headers, burned-in names, 4 frames of 64x64, several
encodings), ingests them with :func:`assets.echo.source.read_echo_source` (a site salt), then audits
everything the asset would publish (table, quarantine, metadata, PNG chunks, stored file names) with
:meth:`~assets.echo.source.EchoReadResult.audit` on the first 250, 500, ... clips: any leak found on
these clean outputs is a false positive. Then plants one leak per place and clip kind (a header name in
a table cell, a study date in a PNG text chunk, the input file's name in a stored file name, an MRN in a
quarantine row, a patient name in the metadata) in 20 random clips each and counts how many are caught.
For comparison, the audit this replaced (every identifier of the partition as one pooled regex search per
identifier over every output string, substring match from 6 characters) runs on the first
``--baseline-clips`` clips. Also (issue 20): false positives on pydicom-data's real ultrasound files (the
asset's audit and the stored-output audit of :mod:`quality.phi_stored` over the storage root), findings
withheld among the generated clips' clean findings, hostile findings (the clip's own name, birth date and
id written as a person would) caught by the variant match and by Presidio, and Presidio's cost per text.
Timings are wall-clock on whatever else the machine is doing: the load average is printed with them.
Prints Markdown.
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import random
import re
import sys
import tempfile
import time
from pathlib import Path

import polars as pl
from PIL import Image, PngImagePlugin

from assets.common.records import quarantine_frame
from assets.echo.source import EchoReadResult, read_echo_source
from assets.echo.synth import SynthOptions, generate, write_manifest_csv
from quality.phi import Matcher, Place, png_text, scrubber_findings
from quality.phi_stored import audit_stored, folder_identifiers
from storage.root import Storage
from storage.sources import SourceDir

SALT = "bd8b213d08f5fb3c9f029d5879c8206e16f51e7c37bd748e919cf9a178035473"
MIX = [
    SynthOptions(frames=4, size=64, photometric=p, syntax=s)
    for p, s in (
        ("MONOCHROME2", "explicit_le"),
        ("RGB", "explicit_le"),
        ("YBR_FULL", "rle"),
        ("MONOCHROME2", "implicit_le"),
    )
]


def subset(result: EchoReadResult, keys: set[str]) -> EchoReadResult:
    """The same result restricted to the files in ``keys``."""
    return EchoReadResult(
        frame=result.frame.filter(pl.col("file_key").is_in(sorted(keys))),
        rejected=[r for r in result.rejected if r.item_id in keys],
        identifiers_by_file={k: v for k, v in result.identifiers_by_file.items() if k in keys},
        places=[p for p in result.places if p.file_key in keys],
        blank_violations=[],
        key_map={k: v for k, v in result.key_map.items() if k in keys},
        source=result.source,
        source_fingerprint=result.source_fingerprint,
        salt_fingerprint=result.salt_fingerprint,
        accept_full_frame=result.accept_full_frame,
        layout=result.layout,
        files_seen=len(keys),
        dicom_candidates=len(keys),
        video_candidates=0,
        dicomdirs=0,
    )


def pooled_regex_audit(result: EchoReadResult) -> tuple[float, int]:
    """The replaced audit: all identifiers pooled, one regex each, over every string output (generated
    columns included), substrings from 6 characters, whole tokens below."""
    ids = {i for ids in result.identifiers_by_file.values() for i in ids if len(i.value) >= 3}
    patterns = [
        (
            i.attribute,
            re.compile(
                re.escape(i.value)
                if len(i.value) >= 6
                else rf"(?<![0-9A-Za-z]){re.escape(i.value)}(?![0-9A-Za-z])",
                re.I,
            ),
        )
        for i in ids
    ]
    texts = [p.text for p in result.places]
    for col, dtype in result.frame.schema.items():
        if dtype == pl.Utf8:
            texts += [v for v in result.frame[col].to_list() if v]
        elif isinstance(dtype, pl.List) and dtype.inner == pl.Utf8:
            texts += [x for lst in result.frame[col].to_list() for x in (lst or [])]
    t = time.perf_counter()
    leaks = {(a, i) for i, text in enumerate(texts) for a, pat in patterns if pat.search(text)}
    return time.perf_counter() - t, len(leaks)


def planted(result: EchoReadResult, rng: random.Random, per_place: int = 20) -> dict[str, tuple[int, int]]:
    """``{place: (caught, planted)}`` for leaks planted one at a time in random clips."""
    quarantine = quarantine_frame(result.rejected, "echo_studies", "bench")
    metadata = result.metadata()
    keys = result.frame["file_key"].to_list()
    out: dict[str, tuple[int, int]] = {}

    def value(key: str, attribute: str) -> str:
        return sorted(i.value for i in result.identifiers_by_file[key] if i.attribute == attribute)[0]

    def caught(res) -> bool:
        return not res.passed

    places = {
        "table cell": lambda k: caught(
            result.audit(
                quarantine,
                metadata,
                table=result.frame.with_columns(
                    pl.when(pl.col("file_key") == k)
                    .then(pl.lit("seen by " + value(k, "PatientName")))
                    .otherwise(pl.col("findings"))
                    .alias("findings")
                ),
            )
        ),
        "PNG chunk": lambda k: _with_place(
            result, Place("png chunks of planted", _png_with(value(k, "StudyDate")), k), quarantine, metadata
        ),
        "file name": lambda k: _with_place(
            result, Place("stored file name", f"images/ab/{result.key_map[k]}.png", k), quarantine, metadata
        ),
        "quarantine": lambda k: caught(
            result.audit(pl.concat([quarantine, _qrow(k, value(k, "PatientID"))]), metadata)
        ),
        "metadata": lambda k: caught(
            result.audit(quarantine, {**metadata, "source": "/data/" + value(k, "PatientName")})
        ),
    }
    for name, plant in places.items():
        sample = rng.sample(keys, min(per_place, len(keys)))
        out[name] = (sum(bool(plant(k)) for k in sample), len(sample))
    return out


def _png_with(text: str) -> str:
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", f"acquired {text}", zip=True)
    buf = io.BytesIO()
    Image.new("L", (4, 4)).save(buf, "PNG", pnginfo=info)
    return png_text(buf.getvalue())


def _with_place(result: EchoReadResult, place: Place, quarantine, metadata) -> bool:
    result.places.append(place)
    try:
        return not result.audit(quarantine, metadata).passed
    finally:
        result.places.pop()


def _qrow(key: str, mrn: str) -> pl.DataFrame:
    from assets.common.records import Rejection

    return quarantine_frame(
        [Rejection(key, key, "bad manifest row: planted", {"patient_id": mrn}, key)], "echo_studies", "bench"
    )


REAL_US = (
    "examples_rgb_color.dcm", "examples_palette.dcm", "examples_jpeg2k.dcm", "examples_ybr_color.dcm",
    "US1_UNCI.dcm", "US1_J2KI.dcm", "US1_J2KR.dcm", "US1_UNCR.dcm", "OBXXXX1A_expb_2frame.dcm",
    "OBXXXX1A_2frame.dcm", "OBXXXX1A_rle.dcm", "gdcm-US-ALOKA-16_big.dcm", "gdcm-US-ALOKA-16.dcm",
    "color3d_jpeg_baseline.dcm", "JPGLosslessP14SV1_1s_1f_8b.dcm", "OBXXXX1A_expb.dcm", "OBXXXX1A.dcm",
    "OBXXXX1A_rle_2frame.dcm",
)  # fmt: skip


def real_files(tmp: Path, extra: list[str]) -> list[str]:
    """False positives on pydicom-data's ultrasound files (every one with Modality US there), and on the
    DICOM files of the ``extra`` folders (the deid project's ultrasounds: ``pip download --no-deps
    deid-data``, unpack, ``deid_data/data/ultrasounds``)."""
    import shutil

    from pydicom.data import get_testdata_file

    src = tmp / "real"
    src.mkdir()
    for name in REAL_US:
        shutil.copy(get_testdata_file(name), src / name)
    n_extra = 0
    for i, folder in enumerate(extra):
        for path in sorted(Path(folder).glob("*.dcm")):
            shutil.copy(path, src / f"extra{i}_{path.name}")
            n_extra += 1
    store = tmp / "real_store"
    result = read_echo_source(
        SourceDir(str(src)), Storage(root=str(store)), "real", salt=SALT, accept_full_frame=True
    )
    res = result.audit(quarantine_frame(result.rejected, "echo_studies", "real"), result.metadata())
    stored = audit_stored(folder_identifiers(src), {"storage root": store})
    return [
        f"Real ultrasound files ({len(REAL_US)} of pydicom-data, {n_extra} of {', '.join(extra) or '-'}): "
        f"{result.frame.height} published, {len(result.rejected)} quarantined (regions larger than the "
        f"image, duplicate SOP instances); false positives of the asset's audit: {len(res.leaks)} "
        f"({res.identifiers} identifiers, {res.places_searched} places); of the stored-output audit of the "
        f"storage root: {len(stored.leaks)} ({stored.places_searched} places).",
    ]


def hostile_findings(result: EchoReadResult, src: Path, rng: random.Random, n: int = 20) -> list[str]:
    """The clip's own patient written as a person would, caught by the variant match and by Presidio."""
    import pydicom

    keys = rng.sample(result.frame["file_key"].to_list(), n)
    forms = {
        "Family Given": lambda f, g, d, i: f"{f.title()} {g.title()}",
        "Given F.": lambda f, g, d, i: f"seen by {g.title()} {f[0]}.",
        "F. Given, DOB DD.MM.YYYY": lambda f, g, d, i: f"{f[0]}. {g.title()}, DOB {d[6:]}.{d[4:6]}.{d[:4]}",
        "born YYYY-MM-DD": lambda f, g, d, i: f"born {d[:4]}-{d[4:6]}-{d[6:]}",
        "MRN with separators": lambda f, g, d, i: f"MRN {i[:4]}-{i[4:]}",
        "pt id": lambda f, g, d, i: f"pt {i}",
    }
    counts = {k: [0, 0, 0] for k in forms}
    times = []
    for key in keys:
        ds = pydicom.dcmread(src / result.key_map[key], stop_before_pixels=True)
        family, given = str(ds.PatientName).split("^")[:2]
        matcher = Matcher(result.identifiers_by_file[key])
        for form, make in forms.items():
            text = make(family, given, ds.PatientBirthDate, str(ds.PatientID))
            t = time.perf_counter()
            scrubbed = bool(scrubber_findings(text + " "))  # not cached: each text timed
            times.append(time.perf_counter() - t)
            matched = bool(matcher.find(text))
            for j, hit in enumerate((matched, scrubbed, matched or scrubbed)):
                counts[form][j] += hit
    lines = [
        "",
        f"| hostile findings ({n} clips each) | variant match | Presidio | either (the gate) |",
        "|---|---|---|---|",
    ]
    lines += [f"| {k} | {a} / {n} | {b} / {n} | {c} / {n} |" for k, (a, b, c) in counts.items()]
    times.sort()
    lines += ["", f"Presidio per findings text: median {1000 * times[len(times) // 2]:.1f} ms."]
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clips", type=int, default=1000)
    p.add_argument("--patients", type=int, default=400)
    p.add_argument("--baseline-clips", type=int, default=100)
    p.add_argument("--extra-real", action="append", default=[], help="a folder of more real .dcm files")
    a = p.parse_args(argv)
    lines = [
        f"Python {platform.python_version()}, {platform.machine()}, {os.cpu_count()} cores; "
        f"load average at start {os.getloadavg()[0]:.2f}",
        "",
    ]
    with tempfile.TemporaryDirectory(prefix="bench_phi_") as tmp:
        src = Path(tmp) / "src"
        src.mkdir()
        t = time.perf_counter()
        files, rows = generate(a.clips, a.patients, seed=7, options=MIX)
        for name, data in files.items():
            (src / name).write_bytes(data)
        (src / "labels.csv").write_bytes(write_manifest_csv(rows))
        t_gen = time.perf_counter() - t
        t = time.perf_counter()
        result = read_echo_source(
            SourceDir(str(src)), Storage(root=str(Path(tmp) / "store")), "bench", salt=SALT
        )
        t_ingest = time.perf_counter() - t
        withheld = sum(r.reason.startswith("findings withheld") for r in result.rejected)
        t = time.perf_counter()
        stored = audit_stored(folder_identifiers(src), {"storage root": Path(tmp) / "store"})
        t_stored = time.perf_counter() - t
        lines += real_files(Path(tmp), a.extra_real) + [""]
        hostile = hostile_findings(result, src, random.Random(5))
    lines += [
        f"{a.clips} clips generated in {t_gen:.1f} s, ingested in {t_ingest:.1f} s "
        f"({result.frame.height} rows, {len(result.rejected)} quarantined; clean findings withheld: "
        f"{withheld})",
        "",
        f"Stored-output audit of the storage root after ingest: {len(stored.leaks)} false positives, "
        f"{stored.places_searched} places, {t_stored:.1f} s.",
        "",
        "| clips | identifiers | places | audit s | false positives |",
        "|---|---|---|---|---|",
    ]
    keys = result.frame["file_key"].to_list()
    sizes = sorted({n for n in (250, 500, a.clips) if n <= len(keys)})
    for n in sizes:
        part = subset(result, set(keys[:n]))
        quarantine = quarantine_frame(part.rejected, "echo_studies", "bench")
        t = time.perf_counter()
        res = part.audit(quarantine, part.metadata())
        lines.append(
            f"| {n} | {res.identifiers} | {res.places_searched} | {time.perf_counter() - t:.2f} "
            f"| {len(res.leaks)} |"
        )
    lines += ["", "| planted leak in | caught / planted |", "|---|---|"]
    for place, (c, n) in planted(result, random.Random(11)).items():
        lines.append(f"| {place} | {c} / {n} |")
    lines += hostile
    base = subset(result, set(keys[: a.baseline_clips]))
    t_base, fp_base = pooled_regex_audit(base)
    lines += [
        "",
        f"Replaced pooled-regex audit on {a.baseline_clips} clips: "
        f"{t_base:.2f} s, {fp_base} false positives.",
        f"Load average at end {os.getloadavg()[0]:.2f}.",
    ]
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
