"""OCR engines on burned-in text in ultrasound-like frames: how much planted text each finds, and its cost.

    PYTHONPATH=. python benchmarks/bench_ocr.py [--frames 24] [--engines rapidocr,tesseract] [--real DIR]

Frames: 640x480, a speckled fan-shaped sector on black (as scanners draw it). Each frame gets one line
``SURNAME, GIVEN  MRN <digits>  DOB <date>`` drawn with Pillow's bundled font at a size of 12 to 28 px, in
white, grey or yellow, either over the tissue inside the sector ("inside") or on the black band above it
("outside"); dates alternate ``YYYYMMDD`` and ``YYYY-MM-DD``. A planted identifier (surname, given name,
MRN, date of birth) counts as found when :func:`quality.pixel_text.pixel_text_leaks` reports it. Clean
frames (the same sector, no text) measure false positives against the same identifiers. ``--real DIR``
also reads the first frame of every DICOM file under DIR whole (nothing blanked) and counts which of
its header identifiers OCR finds (the public deid project's test ultrasounds carry burned-in names).
Seconds per frame are wall-clock on this machine, engine loaded beforehand. Prints Markdown.
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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=24)
    p.add_argument("--engines", default=",".join(ENGINES))
    p.add_argument("--real", default=None)
    a = p.parse_args(argv)
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
