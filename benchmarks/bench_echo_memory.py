"""Echo ingest peak memory against file size, on one long uncompressed clip.

    PYTHONPATH=. python benchmarks/bench_echo_memory.py [--frames 600] [--rows 600] [--cols 800]

Writes a multi-frame ultrasound DICOM (explicit VR little endian, RGB, 8 bits; 600 x 800 x 600 x 3 bytes
= 864 MB by default, the size seen in the issue) frame by frame into a temporary folder, then runs
:func:`assets.echo.source.read_echo_source` on it in a fresh subprocess and reads that process's peak
resident set size (``resource.getrusage(RUSAGE_SELF).ru_maxrss``). The subprocess first imports the
pipeline's modules and records its RSS then (the baseline any Python process with these libraries has),
so both the whole peak and the part added by ingestion are reported. Target: peak RSS <= 0.25 x file size.
Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CHILD = r"""
import json, resource, sys, time
from assets.echo.source import read_echo_source
from storage.sources import SourceDir
from storage.root import Storage
import psutil
base = psutil.Process().memory_info().rss
t = time.perf_counter()
r = read_echo_source(
    SourceDir(sys.argv[1]),
    Storage(root=sys.argv[2]),
    "bench",
    salt="bd8b213d08f5fb3c9f029d5879c8206e16f51e7c37bd748e919cf9a178035473",  # a benchmark-only secret
)
elapsed = time.perf_counter() - t
assert r.frame.height == 1, [x.reason for x in r.rejected]
print(json.dumps({"baseline_rss": base, "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                  "seconds": elapsed, "frames": int(r.frame["n_frames"][0])}))
"""


def write_clip(path: Path, frames: int, rows: int, cols: int) -> int:
    """A valid US multi-frame RGB file whose pixel data is written one frame at a time; returns its size."""
    from pydicom.sequence import Sequence

    from assets.echo.synth import SynthOptions, build_dataset, encode, fake_patients

    rng = np.random.default_rng(0)
    ds = build_dataset(
        np.zeros((2, 64, 64, 3), np.uint8),
        fake_patients(1, rng)[0],
        SynthOptions(frames=2, size=64, photometric="RGB"),
        rng,
        0,
    )
    ds.Rows, ds.Columns, ds.NumberOfFrames = rows, cols, frames
    ds.PhotometricInterpretation, ds.SamplesPerPixel, ds.PlanarConfiguration = "RGB", 3, 0
    region = ds.SequenceOfUltrasoundRegions[0]
    region.RegionLocationMinX0, region.RegionLocationMinY0 = cols // 8, rows // 10
    region.RegionLocationMaxX1, region.RegionLocationMaxY1 = cols - cols // 8, rows - rows // 10
    ds.SequenceOfUltrasoundRegions = Sequence([region])
    del ds.PixelData
    header = encode(ds)
    frame_bytes = rows * cols * 3
    yy, xx = np.mgrid[0:rows, 0:cols]
    base = ((xx * 7 + yy * 3) % 256).astype(np.uint8)
    with open(path, "wb") as f:
        f.write(header)
        f.write(b"\xe0\x7f\x10\x00OB\x00\x00" + (frame_bytes * frames).to_bytes(4, "little"))
        for i in range(frames):
            g = np.roll(base, i, axis=1)
            f.write(np.ascontiguousarray(np.stack([g, g // 2, 255 - g], axis=-1)).tobytes())
    return path.stat().st_size


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=600)
    p.add_argument("--rows", type=int, default=600)
    p.add_argument("--cols", type=int, default=800)
    a = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench_echo_mem_") as tmp:
        src, store = Path(tmp) / "src", Path(tmp) / "store"
        src.mkdir()
        size = write_clip(src / "long_clip.dcm", a.frames, a.rows, a.cols)
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
        t = time.perf_counter()
        out = subprocess.run(
            [sys.executable, "-c", CHILD, str(src), str(store)],
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
        if out.returncode:
            sys.stderr.write(out.stderr)
            return 1
        m = json.loads(out.stdout.strip().splitlines()[-1])
        wall = time.perf_counter() - t
    mib = 2**20
    lines = [
        f"Python {platform.python_version()}, {platform.machine()}, {os.cpu_count()} cores, "
        f"load average {os.getloadavg()[0]:.2f} (1 min) at the start",
        "",
        "| clip | file MiB | baseline RSS MiB | peak RSS MiB | peak / file "
        "| (peak - baseline) / file | ingest s |",
        "|---|---|---|---|---|---|---|",
        f"| {m['frames']} frames {a.cols}x{a.rows} RGB, explicit LE | {size / mib:.0f} "
        f"| {m['baseline_rss'] / mib:.0f} "
        f"| {m['peak_rss'] / mib:.0f} | {m['peak_rss'] / size:.3f} "
        f"| {(m['peak_rss'] - m['baseline_rss']) / size:.3f} "
        f"| {m['seconds']:.1f} (process {wall:.1f}) |",
    ]
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
