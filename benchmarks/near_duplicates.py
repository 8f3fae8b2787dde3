"""Near-duplicate images: choose the detector and its threshold on labelled pairs, then count the evaluation
images of SLAKE and VQA-RAD that have a near-duplicate among the training images (= the CDIR case corpus,
which is built from the training images).

Labelled pairs, built here from the real images (``--data``: a folder with ``slake/`` and ``vqa_rad/`` as
released):

- positives: each of ``--positives`` images (drawn with a fixed seed from both datasets) paired with a
  transformed copy of itself, five kinds: resized to half and back then JPEG quality 60; 6 % of the border
  cropped and resized back; brightness +12 % with Gaussian noise (sd 6 grey levels); shifted 3 pixels with a
  blur of radius 1 (an adjacent-slice-like change); and every change at once;
- negatives: ``--negatives`` pairs of one SLAKE and one VQA-RAD image (two releases from different
  hospitals: never the same study).

Detectors: the Pearson correlation of 64 x 64 grey thumbnails (:mod:`quality.near_duplicates`), and the
Hamming distance of the 64-bit perceptual hash of the maintained ``imagehash`` package (``phash``). For each,
precision and recall at a range of thresholds; the chosen threshold is the loosest one with no false positive
among the negatives. Writes ``benchmarks/figures/near_duplicates.json``.

Run (needs the ``bench`` extra for ``imagehash``): ``PYTHONPATH=. python benchmarks/near_duplicates.py --data
../shared/data``
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

from quality.near_duplicates import near_duplicate_pairs, thumbnail, thumbnails


def transforms(im: Image.Image, rng: random.Random) -> dict[str, Image.Image]:
    w, h = im.size

    def reencode(x: Image.Image) -> Image.Image:
        import io

        small = x.resize((max(8, w // 2), max(8, h // 2)), Image.Resampling.BILINEAR).resize((w, h))
        buf = io.BytesIO()
        small.convert("RGB").save(buf, "JPEG", quality=60)
        return Image.open(io.BytesIO(buf.getvalue()))

    def crop(x: Image.Image) -> Image.Image:
        dx, dy = int(w * 0.06), int(h * 0.06)
        return x.crop((dx, dy, w - dx, h - dy)).resize((w, h))

    def bright_noise(x: Image.Image) -> Image.Image:
        a = np.asarray(ImageEnhance.Brightness(x).enhance(1.12).convert("L"), dtype=np.float32)
        a = a + np.random.default_rng(rng.randrange(1 << 30)).normal(0, 6, a.shape)
        return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))

    def slice_like(x: Image.Image) -> Image.Image:
        shifted = Image.new(x.mode, x.size)
        shifted.paste(x, (3, 3))
        return shifted.filter(ImageFilter.GaussianBlur(1))

    return {
        "reencode": reencode(im),
        "crop": crop(im),
        "brightness_noise": bright_noise(im),
        "slice_like": slice_like(im),
        "all": slice_like(bright_noise(crop(reencode(im)))),
    }


def precision_recall(pos: np.ndarray, neg: np.ndarray, thresholds, higher_is_closer: bool) -> list[dict]:
    rows = []
    for t in thresholds:
        tp = int((pos >= t).sum() if higher_is_closer else (pos <= t).sum())
        fp = int((neg >= t).sum() if higher_is_closer else (neg <= t).sum())
        rows.append(
            {
                "threshold": float(t),
                "recall": tp / len(pos),
                "precision": tp / (tp + fp) if tp + fp else 1.0,
                "false_positives": fp,
            }
        )
    return rows


def main() -> None:
    import imagehash

    p = argparse.ArgumentParser()
    p.add_argument("--data", default="../shared/data")
    p.add_argument("--positives", type=int, default=200)
    p.add_argument("--negatives", type=int, default=20000)
    p.add_argument("--out", default="benchmarks/figures/near_duplicates.json")
    args = p.parse_args()
    rng = random.Random(0)
    root = Path(args.data)
    slake = sorted((root / "slake" / "imgs").glob("xmlab*/source.jpg"))
    rad = sorted((root / "vqa_rad" / "VQA_RAD Image Folder").glob("*.jpg"))
    load = {str(f): Image.open(f).convert("L") for f in slake + rad}

    # ---- labelled pairs
    t0 = time.perf_counter()
    pos_pairs = []
    for f in rng.sample(slake + rad, args.positives):
        for kind, copy in transforms(load[str(f)], rng).items():
            pos_pairs.append((kind, load[str(f)], copy))
    neg_pairs = [(load[str(rng.choice(slake))], load[str(rng.choice(rad))]) for _ in range(args.negatives)]
    thumbs = {k: thumbnail(v) for k, v in load.items()}
    ph = {k: imagehash.phash(v) for k, v in load.items()}
    by_id = {id(v): k for k, v in load.items()}

    def corr(a, b):
        ta = thumbs[by_id[id(a)]] if id(a) in by_id else thumbnail(a)
        tb = thumbs[by_id[id(b)]] if id(b) in by_id else thumbnail(b)
        return float(ta @ tb)

    def hamming(a, b):
        ha = ph[by_id[id(a)]] if id(a) in by_id else imagehash.phash(a)
        hb = ph[by_id[id(b)]] if id(b) in by_id else imagehash.phash(b)
        return int(ha - hb)

    pos_corr = np.array([corr(a, b) for _, a, b in pos_pairs])
    neg_corr = np.array([corr(a, b) for a, b in neg_pairs])
    pos_ham = np.array([hamming(a, b) for _, a, b in pos_pairs])
    neg_ham = np.array([hamming(a, b) for a, b in neg_pairs])
    kinds = sorted({k for k, _, _ in pos_pairs})
    corr_table = precision_recall(pos_corr, neg_corr, [0.80, 0.85, 0.90, 0.93, 0.95, 0.97, 0.99], True)
    ham_table = precision_recall(pos_ham, neg_ham, [4, 6, 8, 10, 12, 14, 16, 20], False)
    chosen_corr = min((r for r in corr_table if r["false_positives"] == 0), key=lambda r: r["threshold"])
    chosen_ham = max((r for r in ham_table if r["false_positives"] == 0), key=lambda r: r["threshold"])
    kind_of = np.array([k for k, _, _ in pos_pairs])
    per_kind = {
        k: {
            "corr_recall_at_chosen": float((pos_corr[kind_of == k] >= chosen_corr["threshold"]).mean()),
            "phash_recall_at_chosen": float((pos_ham[kind_of == k] <= chosen_ham["threshold"]).mean()),
        }
        for k in kinds
    }
    label_seconds = time.perf_counter() - t0

    # ---- counts on the real splits: evaluation images vs training images (= the CDIR case corpus)
    def split_refs(dataset: str) -> tuple[list[str], list[str]]:
        if dataset == "slake":
            names = {}
            for split in ("train", "validate", "test"):
                for r in json.loads((root / "slake" / f"{split}.json").read_text()):
                    if r.get("q_lang", "en") == "en":
                        names.setdefault(split, set()).add(str(root / "slake" / "imgs" / r["img_name"]))
            train = names["train"]
            evaluation = (names["validate"] | names["test"]) - train
            return sorted(evaluation), sorted(train)
        rows = json.loads((root / "vqa_rad" / "VQA_RAD Dataset Public.json").read_text())
        folder = root / "vqa_rad" / "VQA_RAD Image Folder"
        is_test = [str(r.get("phrase_type", "")).startswith("test") for r in rows]
        test = {str(folder / r["image_name"]) for r, t in zip(rows, is_test, strict=True) if t}
        train = {str(folder / r["image_name"]) for r in rows} - test
        return sorted(test), sorted(train)

    counts = {}
    for dataset in ("slake", "vqa_rad"):
        evaluation, train = split_refs(dataset)
        q = thumbnails(load[f] for f in evaluation)
        c = thumbnails(load[f] for f in train)
        pairs = near_duplicate_pairs(evaluation, q, train, c, threshold=chosen_corr["threshold"])
        counts[dataset] = {
            "evaluation_images": len(evaluation),
            "training_images": len(train),
            "evaluation_images_with_a_near_duplicate": int(pairs["query_ref"].n_unique()),
            "training_images_flagged": int(pairs["corpus_ref"].n_unique()),
            "at_0.97": int(
                near_duplicate_pairs(evaluation, q, train, c, threshold=0.97)["query_ref"].n_unique()
            ),
        }
    summary = {
        "images": {"slake": len(slake), "vqa_rad": len(rad)},
        "positives": len(pos_pairs),
        "positive_kinds": kinds,
        "negatives": len(neg_pairs),
        "thumbnail_correlation": {"table": corr_table, "chosen": chosen_corr},
        "phash_hamming": {"table": ham_table, "chosen": chosen_ham},
        "recall_per_kind": per_kind,
        "max_negative_correlation": float(neg_corr.max()),
        "min_negative_hamming": int(neg_ham.min()),
        "labelling_seconds": label_seconds,
        "near_duplicates_at_chosen_threshold": counts,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
