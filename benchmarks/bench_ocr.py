"""OCR engines on burned-in text in ultrasound-like frames: how much planted text each finds, and its cost.

    PYTHONPATH=. python benchmarks/bench_ocr.py [--frames 24] [--engines rapidocr,tesseract] [--real DIR]
                                                [--pipeline 12]

Frames: 640x480, a speckled fan-shaped sector on black (as scanners draw it). Each frame gets one line
``SURNAME, GIVEN  MRN <digits>  DOB <date>`` drawn with Pillow's bundled font at a size of 12 to 28 px, in
white, grey or yellow, either over the tissue inside the sector ("inside") or on the black band above it
("outside"); dates alternate ``YYYYMMDD`` and ``YYYY-MM-DD``. A planted identifier (surname, given name,
MRN, date of birth) counts as found when :func:`quality.pixel_text.pixel_text_leaks` reports it. Clean
frames (the same sector, no text) measure false positives against the same identifiers. ``--real DIR``
also reads the first frame of every DICOM file under DIR whole (nothing blanked) and counts which of
its header identifiers OCR finds (the public deid project's test ultrasounds carry burned-in names).
Seconds per frame are wall-clock on this machine, engine loaded beforehand. Tesseract needs Debian's
``tesseract-ocr`` (``apt-get install tesseract-ocr``) and the ``bench`` extra (pytesseract).

``--pipeline N``: detection through the whole echo read (:func:`assets.echo.source.read_echo_source`,
default engine) on N generated 256x256 clips per case: the patient's name, MRN or birth date (cycled;
12, 15 or 20 px) burned *inside* the tissue region; the generator's own name band *outside* it, as
generated, under a declared gray-bar region, and under a declared tissue region; and clean clips. A leak
counts as handled when the clip is quarantined or every published keyframe is blank where the text was.
Prints Markdown.
"""

from __future__ import annotations

import argparse
import glob
import os
import platform
import time

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from quality.phi import Identifier, collect_identifiers
from quality.pixel_text import ENGINES, pixel_text_leaks, read_text

SURNAMES = ["HARTWELL", "OKONKWO", "BERGSTROM", "NAKAMURA", "FITZGERALD", "KOWALCZYK", "DELACROIX", "MBEKI"]
GIVEN = ["ALEXANDRA", "THEODORE", "MARGARET", "BENEDICT", "ROSALIND", "KENJI", "ISOLDE", "AUGUSTIN"]
COLOURS = [(255, 255, 255), (180, 180, 180), (255, 220, 0)]
W, H = 640, 480

BENCH_SALT = "6ee532898ec543daae510218bbd3e7c1a46b1eba229de2b777223628bd36a755"  # benchmark-only secret


def sector(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:H, 0:W]
    dx, dy = xx - W / 2, yy - 40
    r, ang = np.hypot(dx, dy), np.degrees(np.arctan2(np.abs(dx), np.maximum(dy, 1e-6)))
    mask = (r <= H - 60) & (ang <= 38) & (dy >= 0)
    speckle = rng.gamma(2.0, 30.0, size=(H, W)).clip(0, 255)
    grey = np.where(mask, 40 + speckle * 0.6, 0).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=2), mask


def planted(i: int, rng: np.random.Generator) -> tuple[np.ndarray, list[Identifier], str]:
    frame, mask = sector(rng)
    sur, giv = SURNAMES[i % len(SURNAMES)], GIVEN[(i * 3) % len(GIVEN)]
    mrn = str(int(rng.integers(10_000_000, 99_999_999)))
    y, m, d = int(rng.integers(1935, 2005)), int(rng.integers(1, 13)), int(rng.integers(1, 29))
    dob = f"{y}{m:02d}{d:02d}"
    shown = dob if i % 2 else f"{y}-{m:02d}-{d:02d}"
    size = [12, 16, 20, 28][i % 4]
    place = "inside" if (i // 4) % 2 == 0 else "outside"
    font = ImageFont.load_default(size=size)
    img = Image.fromarray(frame)
    draw = ImageDraw.Draw(img)
    text = f"{sur}, {giv}  MRN {mrn}  DOB {shown}"
    tw = draw.textlength(text, font=font)
    x = max(2, int((W - tw) / 2))
    yt = int(H * 0.45) if place == "inside" else 4
    draw.text((x, yt), text, font=font, fill=COLOURS[i % len(COLOURS)])
    ids = [
        Identifier(sur, "surname", "PN"),
        Identifier(giv, "given name", "PN"),
        Identifier(mrn, "MRN", "LO"),
        Identifier(dob, "birth date", "DA"),
    ]
    return np.asarray(img), ids, f"{place} {size}px"


def real_frames(folder: str) -> list[tuple[str, np.ndarray, set[Identifier]]]:
    import pydicom
    from pydicom.pixels import iter_pixels

    out = []
    for path in sorted(glob.glob(os.path.join(folder, "**", "*.dcm"), recursive=True)):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        frame = next(iter(iter_pixels(path)))
        if frame.dtype != np.uint8:
            frame = (frame / max(1, frame.max()) * 255).astype(np.uint8)
        out.append((os.path.basename(path), frame, collect_identifiers(ds)))
    return out


def _pipeline_case(kind: str, i: int) -> bytes:
    import io

    import pydicom
    from pydicom.dataset import Dataset

    from assets.echo.synth import SynthOptions, generate
    from assets.echo.synth_frames import TEXT_BAND

    files, _ = generate(1, 1, seed=1000 + i, options=SynthOptions(frames=6, size=256))
    ds = pydicom.dcmread(io.BytesIO(files["clip_0000.dcm"]))
    if kind == "inside":
        dob = str(ds.PatientBirthDate)
        text = [
            f"{ds.PatientName.family_name}, {ds.PatientName.given_name}",
            f"ID {ds.PatientID}",
            f"DOB {dob[:4]}-{dob[4:6]}-{dob[6:]}",
        ][i % 3]
        font = ImageFont.load_default(size=[12, 15, 20][(i // 3) % 3])
        frames = np.array(ds.pixel_array)
        for f in range(frames.shape[0]):
            img = Image.fromarray(frames[f])
            draw = ImageDraw.Draw(img)
            x = (256 - draw.textlength(text, font=font)) / 2
            draw.text((x, 140), text, font=font, fill=255, stroke_width=1, stroke_fill=0)
            frames[f] = np.asarray(img)
        ds.PixelData = frames.tobytes()
    elif kind.startswith("band under"):
        r = Dataset()
        r.RegionSpatialFormat, r.RegionDataType = (5, 13) if "gray bar" in kind else (1, 1)
        r.RegionFlags = 0
        r.RegionLocationMinX0, r.RegionLocationMinY0, r.RegionLocationMaxX1, r.RegionLocationMaxY1 = (
            0,
            0,
            255,
            TEXT_BAND - 1,
        )
        ds.SequenceOfUltrasoundRegions.append(r)
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def pipeline(n: int) -> None:
    import tempfile
    from pathlib import Path

    from assets.echo.source import read_echo_source
    from assets.echo.synth_frames import TEXT_BAND
    from storage.root import Storage
    from storage.sources import SourceDir

    cases = [
        "inside",
        "band as generated",
        "band under a gray bar region",
        "band under a tissue region",
        "clean",
    ]
    print("\n| case | clips | quarantined | published with the text blank | published with text | s/clip |")
    print("| --- | --- | --- | --- | --- | --- |")
    for kind in cases:
        root = Path(tempfile.mkdtemp(prefix="bench_ocr_"))
        (root / "src").mkdir()
        for i in range(n):
            (root / "src" / f"c{i:03d}.dcm").write_bytes(_pipeline_case(kind, i))
        storage = Storage(root=str(root / "store"))
        t = time.perf_counter()
        result = read_echo_source(SourceDir(str(root / "src")), storage, "bench", salt=BENCH_SALT)
        per = (time.perf_counter() - t) / n
        blank = leaky = 0
        for refs in result.frame["keyframe_refs"]:
            px = [np.asarray(Image.open(__import__("io").BytesIO(storage.get_image(r)))) for r in refs]
            if kind == "clean" or all(p[:TEXT_BAND].max() == 0 for p in px) and kind != "inside":
                blank += 1
            else:
                leaky += 1
        print(f"| {kind} | {n} | {len(result.rejected)} | {blank} | {leaky} | {per:.2f} |")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=24)
    p.add_argument("--engines", default=",".join(ENGINES))
    p.add_argument("--real", default=None)
    p.add_argument("--pipeline", type=int, default=0)
    a = p.parse_args(argv)
    if a.pipeline:
        pipeline(a.pipeline)
        return 0
    rng = np.random.default_rng(0)
    cases = [planted(i, rng) for i in range(a.frames)]
    clean = [sector(rng)[0] for _ in range(max(4, a.frames // 4))]
    real = real_frames(a.real) if a.real else []
    print(f"Machine: {platform.node()} ({os.cpu_count()} CPUs), {platform.python_version()}\n")
    print("| engine | planted found (inside / outside) | by kind | clean-frame false hits | s/frame |")
    print("| --- | --- | --- | --- | --- |")
    for engine in a.engines.split(","):
        read_text(cases[0][0], engine)  # load the engine
        found = {"inside": [0, 0], "outside": [0, 0]}
        kinds: dict[str, list[int]] = {}
        t = time.perf_counter()
        for frame, ids, label in cases:
            hits = {attr for attr, _ in pixel_text_leaks({"f": frame}, ids, engine).leaks}
            where = label.split()[0]
            for ident in ids:
                found[where][1] += 1
                kinds.setdefault(ident.attribute, [0, 0])[1] += 1
                if ident.attribute in hits:
                    found[where][0] += 1
                    kinds[ident.attribute][0] += 1
        per = (time.perf_counter() - t) / len(cases)
        all_ids = [i for _, ids, _ in cases for i in ids]
        false = sum(len(pixel_text_leaks({"c": c}, all_ids, engine).leaks) for c in clean)
        kinds_txt = ", ".join(f"{k} {v[0]}/{v[1]}" for k, v in kinds.items())
        print(
            f"| {engine} | {found['inside'][0]}/{found['inside'][1]} / {found['outside'][0]}/"
            f"{found['outside'][1]} | {kinds_txt} | {false} in {len(clean)} | {per:.2f} |"
        )
        for name, frame, ids in real:
            t = time.perf_counter()
            leaks = pixel_text_leaks({name: frame}, ids, engine).leaks
            print(
                f"|   real {name} ({frame.shape[1]}x{frame.shape[0]}) | {len(leaks)} header identifiers "
                f"read: {', '.join(sorted(a for a, _ in leaks)) or '-'} | | | {time.perf_counter() - t:.2f} |"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
