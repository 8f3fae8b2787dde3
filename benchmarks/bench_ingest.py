"""Ingest benchmark: normalizing all of VQA-RAD and SLAKE (images included) against a plain baseline.

    python benchmarks/bench_ingest.py --data-dir ../shared/data [--repeats 3]

Pipeline: the ``vqa_items`` readers (JSON parse, normalization, image validation by draft decode,
content-addressed storage into a fresh local root) plus the GX contract. Baseline: parse the same JSON
files and read every referenced image file's bytes once. Target: pipeline <= 1.5x baseline.
Prints a Markdown table (median of ``--repeats`` runs, each on a fresh storage root).
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from assets.common.images import ImageIngestor
from assets.ingest.vqa import read_vqa
from quality.contracts import all_refs, check_vqa_items
from storage.root import Storage
from storage.sources import SourceDir


def _baseline_images(data: Path) -> tuple[int, set[Path]]:
    rows = json.loads((data / "vqa_rad" / "VQA_RAD Dataset Public.json").read_text())
    images = {data / "vqa_rad" / "VQA_RAD Image Folder" / r["image_name"] for r in rows}
    n = len(rows)
    for split in ("train", "validate", "test"):
        recs = [r for r in json.loads((data / "slake" / f"{split}.json").read_text()) if r["q_lang"] == "en"]
        images |= {data / "slake" / "imgs" / r["img_name"] for r in recs}
        n += len(recs)
    return n, images


def baseline(data: Path) -> int:
    """The issue's baseline: parse the JSON and read every referenced image's bytes once."""
    n, images = _baseline_images(data)
    for p in images:
        p.read_bytes()
    return n


def baseline_copy(data: Path) -> int:
    """Baseline plus the one unavoidable extra of any ingest that stores images: writing each once."""
    n, images = _baseline_images(data)
    with tempfile.TemporaryDirectory() as tmp:
        for i, p in enumerate(sorted(images)):
            dst = Path(tmp) / f"{i % 256:02x}" / p.name
            dst.parent.mkdir(exist_ok=True)
            dst.write_bytes(p.read_bytes())
    return n


def rematerialize(data: Path, root: str) -> int:
    """A second materialization into a root that already holds every image (no image writes)."""
    store = Storage(root=root)
    return sum(
        read_vqa(ds, SourceDir(str(data / ds)), ImageIngestor(store))[0].height for ds in ("vqa_rad", "slake")
    )


def pipeline(data: Path, contract: bool) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        store = Storage(root=tmp)
        n = 0
        for ds in ("vqa_rad", "slake"):
            df, _ = read_vqa(ds, SourceDir(str(data / ds)), ImageIngestor(store))
            if contract:
                assert check_vqa_items(df, store.existing_images(all_refs(df["image_refs"]))).success
            n += df.height
        return n


def timed(fn, *args) -> tuple[float, int]:
    t0 = time.perf_counter()
    n = fn(*args)
    return time.perf_counter() - t0, n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", default="../shared/data")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    data = Path(args.data_dir)
    check_vqa_items  # noqa: B018 - imported eagerly so GX start-up is outside the timings
    pipeline(data, True)  # warm-up: file cache, GX context
    results = {}
    warm_root = tempfile.mkdtemp()
    rematerialize(data, warm_root)
    for name, fn, extra in (
        ("baseline (JSON + image bytes)", baseline, ()),
        ("baseline + writing each image once", baseline_copy, ()),
        ("pipeline: readers + image store (fresh root)", pipeline, (False,)),
        ("pipeline: readers + image store + GX contract (fresh root)", pipeline, (True,)),
        ("pipeline: re-materialization (images already stored)", rematerialize, (warm_root,)),
    ):
        runs = [timed(fn, data, *extra) for _ in range(args.repeats)]
        results[name] = (statistics.median(t for t, _ in runs), runs[0][1])
    shutil.rmtree(warm_root)
    base = results["baseline (JSON + image bytes)"][0]
    print(f"machine: {platform.machine()} {platform.processor() or ''}, python {platform.python_version()}")
    copy = results["baseline + writing each image once"][0]
    print("| run | rows | median wall s | rows/s | × baseline | × baseline+write |")
    print("|---|---|---|---|---|---|")
    for name, (t, n) in results.items():
        print(f"| {name} | {n} | {t:.3f} | {n / t:,.0f} | {t / base:.2f} | {t / copy:.2f} |")


if __name__ == "__main__":
    main()
