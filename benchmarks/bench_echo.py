"""Echo ingest benchmark: decode + de-identify + keyframes + compact clip, against pydicom decode alone.

    PYTHONPATH=. python benchmarks/bench_echo.py [--repeat 3] [--clips 16]

Files: the real 120-frame ``color3d_jpeg_baseline.dcm`` (pydicom-data, 640x480 YBR_FULL_422 JPEG
baseline) and generated clips (32 frames 128x128, MONOCHROME2 explicit LE and YBR_FULL_422 JPEG).
"Decode alone" reads the file with ``dcmread`` and iterates every frame with
``pydicom.pixels.iter_pixels`` (what ingestion must do at
least once to prove the file whole). "Ingest" is :func:`assets.echo.dicom.ingest_file` on local
storage: header read and validation, frame-by-frame decode from the file object, blanking outside the
regions, keyframe PNGs, the 16-frame 112x112 clip, de-identification. "Ingest + OCR" adds the OCR pixel
check that :func:`assets.echo.source.read_echo_source` runs on every clip (:mod:`quality.pixel_text`:
RapidOCR on every keyframe and 2 clip frames, region box at full resolution), with ``--ocr``. Peak memory
is the Python-heap peak (tracemalloc) of one file, which covers numpy buffers; process peak RSS against
file size is measured by ``benchmarks/bench_echo_memory.py``. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import io
import platform
import sys
import tempfile
import time
import tracemalloc

from pydicom.data import get_testdata_file
from pydicom.pixels import iter_pixels

from assets.echo.dicom import ingest_file
from assets.echo.synth import SynthOptions, generate
from storage.root import Storage


def decode_alone(data: bytes) -> None:
    """Decode every frame, one at a time, from the file object (what ingestion does)."""
    for _ in iter_pixels(io.BytesIO(data)):
        pass


def timed(fn, files: list[bytes], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        for data in files:
            fn(data)
        best = min(best, time.perf_counter() - t)
    return best


def peak_mb(fn, data: bytes) -> float:
    tracemalloc.start()
    fn(data)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak / 2**20


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--clips", type=int, default=16)
    p.add_argument("--ocr", action="store_true", help="also time ingest + the OCR pixel check")
    a = p.parse_args(argv)
    with open(get_testdata_file("color3d_jpeg_baseline.dcm"), "rb") as f:
        real = f.read()
    sets = {
        "color3d_jpeg_baseline.dcm (120 fr, 640x480, YBR JPEG)": [real],
        f"generated MONOCHROME2 explicit LE ({a.clips} clips x 32 fr, 128x128)": list(
            generate(a.clips, 4, 0, SynthOptions(frames=32))[0].values()
        ),
        f"generated YBR_FULL_422 JPEG ({a.clips} clips x 32 fr, 128x128)": list(
            generate(
                a.clips, 4, 0, SynthOptions(frames=32, photometric="YBR_FULL_422", syntax="jpeg_baseline")
            )[0].values()
        ),
    }
    store = Storage(root=tempfile.mkdtemp(prefix="bench_echo_"))
    counter = iter(range(10**9))

    def ingest(data: bytes) -> None:
        ingest_file(data, f"f_{next(counter)}", store, "bench", "bench-salt-0123456789abcdef")

    def ingest_ocr(data: bytes) -> None:
        from quality.pixel_text import pixel_text_leaks

        out = ingest_file(data, f"f_{next(counter)}", store, "bench", "bench-salt-0123456789abcdef")
        pixel_text_leaks(out.ocr_frames, out.identifiers)

    if a.ocr:
        from quality.pixel_text import check_engine

        check_engine()  # engine loaded once, as read_echo_source does before the first file

    out = [
        f"Python {platform.python_version()}, {platform.machine()}, best of {a.repeat}",
        "",
        "| files | MB | decode alone s | ingest s | ratio | ingest clips/s | ingest MB/s "
        "| decode peak MiB | ingest peak MiB |"
        + (" ingest + OCR s | OCR on/off | OCR s per OCR'd frame |" if a.ocr else ""),
        "|---|---|---|---|---|---|---|---|---|" + ("---|---|---|" if a.ocr else ""),
    ]
    for label, files in sets.items():
        mb = sum(len(d) for d in files) / 2**20
        t_dec = timed(decode_alone, files, a.repeat)
        t_ing = timed(ingest, files, a.repeat)
        out.append(
            f"| {label} | {mb:.1f} | {t_dec:.3f} | {t_ing:.3f} | {t_ing / t_dec:.2f}x "
            f"| {len(files) / t_ing:.1f} "
            f"| {mb / t_ing:.1f} | {peak_mb(decode_alone, files[0]):.1f} | {peak_mb(ingest, files[0]):.1f} |"
        )
        if a.ocr:
            t_ocr = timed(ingest_ocr, files, a.repeat)
            n_ocr = sum(
                len(ingest_file(d, "f_n", store, "bench", "bench-salt-0123456789abcdef").ocr_frames)
                for d in files
            )
            out[-1] += f" {t_ocr:.3f} | {t_ocr / t_ing:.2f}x | {(t_ocr - t_ing) / n_ocr:.3f} |"
    sys.stdout.write("\n".join(out) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
