"""Evaluation throughput: items/s of ``training.evaluation.evaluate.evaluate`` batched vs one item at a time.

    PYTHONPATH=. HF_HUB_OFFLINE=1 python benchmarks/bench_eval_throughput.py \\
        [--items 8] [--batch-sizes 1 8 16]

Setup (everything real, built in a temporary folder): the bundled sample benchmarks (SLAKE English test,
VQA-RAD test, MedQA, PubMedQA test; the first ``--items`` items of each, images in a local Storage), a text
KB of MedQuAD passages (LanceDB + offline MiniLM, dense search), a CDIR image index of the SLAKE and
VQA-RAD training images (LanceDB + offline ViT-S-32), and the tiny random-weight Qwen2.5-VL of the smoke
profile (``training.tiny_model``; hidden 64, 2 layers) on the CPU. Greedy decoding, ``--max-new-tokens`` per
round, up to 3 rounds, all five modes, λ = 0.8, k = 1.

A random-weight model almost never closes its answer, so every row runs its full token budget and every
image row triggers CDIR: the work per item is the same at every batch size, which is what a throughput
comparison needs (a trained model stops earlier and batches have ragged lengths).

Reported per batch size: wall seconds per benchmark and in total, items/s (items x 5 modes are evaluated,
so rows/s = 5 x items/s), and the speed-up over batch size 1. Writes ``--out`` (JSON) and prints a
Markdown table.
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import tempfile
import time
from pathlib import Path

import polars as pl
import torch

from assets.common.images import ImageIngestor
from assets.common.profiles import SAMPLE_DATA_DIR
from assets.ingest.text_qa import read_text_qa
from assets.ingest.vqa import read_vqa
from assets.knowledge.image_cases import image_cases_from_vqa
from assets.knowledge.sources import read_kb_source
from retrieval.chunking import TokenChunker
from retrieval.embedders import ImageEmbedder, TextEmbedder, passage_input
from retrieval.search import ImageRetriever, Retriever
from retrieval.store import KBLocation, sync_table, text_table_rows
from storage.root import Storage
from storage.sources import SourceDir
from training.evaluation.evaluate import evaluate
from training.evaluation.items import benchmark_items
from training.rollout import RolloutSettings
from training.tiny_model import build_tiny_model, load_policy, local_corpus

BENCHMARKS = (
    ("slake", "vqa", "slake", ["test"]),
    ("vqa_rad", "vqa", "vqa_rad", ["test"]),
    ("medqa", "text", "medqa_us", None),
    ("pubmedqa", "text", "pubmedqa", ["test"]),
)


def setup(root: Path, n_items: int, kb_records: int) -> dict:
    storage = Storage(root=str(root / "storage"))
    ingest = ImageIngestor(storage)
    vqa = pl.concat(
        [read_vqa(ds, SourceDir(str(SAMPLE_DATA_DIR / ds)), ingest)[0] for ds in ("slake", "vqa_rad")]
    )
    items = {}
    for name, kind, folder, splits in BENCHMARKS:
        frame = vqa if kind == "vqa" else read_text_qa(name, SourceDir(str(SAMPLE_DATA_DIR / folder)))[0]
        items[name] = benchmark_items(frame, name, splits=splits).head(n_items)
    text_embedder = TextEmbedder()
    passages, _ = read_kb_source(
        "medquad",
        SourceDir(str(SAMPLE_DATA_DIR / "medquad")),
        TokenChunker.for_embedder(text_embedder),
        limit=kb_records,
    )
    kb = KBLocation(str(root / "kb"))
    text_report = sync_table(
        kb,
        "kb_text",
        text_table_rows(passages),
        lambda rows: text_embedder.embed(
            [passage_input(t, x) for t, x in zip(rows["title"], rows["text"], strict=True)]
        ),
        text_embedder.identity(),
        run_id="bench",
    )
    image_embedder = ImageEmbedder()
    cases, _ = image_cases_from_vqa(vqa)
    image_report = sync_table(
        kb,
        "kb_image",
        cases.drop("item_ids"),
        lambda rows: image_embedder.embed([storage.get_image(r) for r in rows["image_ref"]]),
        image_embedder.identity(),
        fts_column="description",
        run_id="bench",
    )
    build_tiny_model(root / "model", local_corpus(SAMPLE_DATA_DIR, max_texts=1500), vocab_size=2048, seed=0)

    def load_image(image_id: str):
        from PIL import Image

        return Image.open(io.BytesIO(storage.get_image(image_id))).convert("RGB")

    return {
        "items": items,
        "image_loader": load_image,
        "kb_tag": text_report.tag,
        "image_tag": image_report.tag,
        "retriever": Retriever(kb, text_embedder, version=text_report.tag),
        "image_retriever": ImageRetriever(kb, image_embedder, table="kb_image", version=image_report.tag),
        "passages": passages.height,
        "cases": cases.height,
    }


def run_once(env: dict, model, processor, batch_size: int, max_new_tokens: int) -> dict:
    per = {}
    for name, items in env["items"].items():
        t0 = time.perf_counter()
        res = evaluate(
            items,
            model=model,
            processor=processor,
            retriever=env["retriever"],
            checkpoint="tiny",
            checkpoint_version="bench",
            benchmark=name,
            benchmark_version="sample",
            kb_tag=env["kb_tag"],
            image_retriever=env["image_retriever"],
            image_loader=env["image_loader"],
            image_index_tag=env["image_tag"],
            batch_size=batch_size,
            rollout_settings=RolloutSettings(
                max_rounds=3, max_new_tokens_per_round=max_new_tokens, search_mode="dense"
            ),
            seed=0,
        )
        per[name] = {
            "items": items.height,
            "rows": res.height,
            "seconds": time.perf_counter() - t0,
            "cdir_triggered": int(res["cdir_triggered"].sum()),
            "generated_tokens": int(res["generated_tokens"].sum()),
        }
    total_items = sum(p["items"] for p in per.values())
    total_s = sum(p["seconds"] for p in per.values())
    return {
        "batch_size": batch_size,
        "per_benchmark": per,
        "items": total_items,
        "seconds": total_s,
        "items_per_s": total_items / total_s,
        "generated_tokens": sum(p["generated_tokens"] for p in per.values()),
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--items", type=int, default=8, help="items per benchmark")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 16])
    p.add_argument("--max-new-tokens", type=int, default=24)
    p.add_argument("--kb-records", type=int, default=200, help="MedQuAD records read into the text KB")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="benchmarks/figures/eval_throughput.json")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        env = setup(Path(tmp), args.items, args.kb_records)
        setup_s = time.perf_counter() - t0
        model, processor = load_policy(str(Path(tmp) / "model"))
        runs = [run_once(env, model, processor, bs, args.max_new_tokens) for bs in args.batch_sizes]
    base = next((r for r in runs if r["batch_size"] == 1), runs[0])
    out = {
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "threads": args.threads,
            "torch": torch.__version__,
        },
        "args": vars(args),
        "setup_s": setup_s,
        "kb_passages": env["passages"],
        "image_cases": env["cases"],
        "runs": runs,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    print(
        "| batch size | items | seconds | items/s | rows/s (5 modes) "
        f"| speed-up vs batch {base['batch_size']} |"
    )
    print("|---|---|---|---|---|---|")
    for r in runs:
        print(
            f"| {r['batch_size']} | {r['items']} | {r['seconds']:.1f} | {r['items_per_s']:.2f} | "
            f"{5 * r['items_per_s']:.2f} | {r['items_per_s'] / base['items_per_s']:.2f}x |"
        )
    for r in runs:
        print(
            f"batch {r['batch_size']}: "
            + ", ".join(
                f"{k} {v['items']} items {v['seconds']:.1f}s (CDIR {v['cdir_triggered']})"
                for k, v in r["per_benchmark"].items()
            )
        )


if __name__ == "__main__":
    main()
