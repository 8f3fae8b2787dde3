"""Near-duplicate removal time and quality at 100k passages, run by hand:

    HF_HUB_OFFLINE=1 PYTHONPATH=. python benchmarks/bench_dedupe.py --data ../shared/data --rows 100000

Passages: every real chunk of MedQuAD, PubMedQA and the MedMCQA explanations (about 29k, chunked to fit
MiniLM), then edited copies of random real chunks up to ``--rows``: each copy replaces a random share of its
words (0.5 %, 2 %, 5 %, 10 %, 20 % or 50 %) with other words, so the true 5-shingle Jaccard with its original
spans the whole range around the 0.9 threshold. Reported: wall time of ``deduplicate`` per size (linear cost),
and, for the copies, the share removed by true Jaccard bucket (recall above 0.9; nothing below it may be
removed, since candidates are confirmed exactly). ``--old`` also times the previous implementation (from git
history, commit 005ece4) at the sizes up to 16k.
"""

import argparse
import json
import random
import subprocess
import time
import types
from pathlib import Path

from assets.knowledge.sources import KB_READERS, deduplicate, jaccard, normalize_text, shingles
from retrieval.chunking import TokenChunker
from retrieval.embedders import TextEmbedder
from storage.sources import SourceDir

EDIT_SHARES = (0.005, 0.02, 0.05, 0.1, 0.2, 0.5)


def real_rows(data: Path, chunker: TokenChunker) -> list[dict]:
    rows = []
    for source, folder in (("medquad", "medquad"), ("pubmedqa", "pubmedqa"), ("medmcqa_exp", "medmcqa")):
        rows += KB_READERS[source](SourceDir(str(data / folder)), chunker, None).rows
    return rows


def edited(row: dict, share: float, rng: random.Random, vocab: list[str], n: int) -> dict:
    words = row["text"].split()
    for i in rng.sample(range(len(words)), max(1, round(share * len(words)))):
        words[i] = rng.choice(vocab)
    return {
        **row,
        "id": f"copy:{n}#0",
        "text": " ".join(words),
        "source_ref": f"copy of {row['id']}",
        "_original": row["id"],
        "_share": share,
    }


def old_deduplicate():
    """The implementation this benchmark replaced, loaded from git history."""
    src = subprocess.run(
        ["git", "show", "005ece4:assets/knowledge/sources.py"], capture_output=True, text=True, check=True
    ).stdout
    module = types.ModuleType("old_sources")
    exec(compile(src, "old_sources.py", "exec"), module.__dict__)  # noqa: S102  (our own file, from git)
    return module.deduplicate


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--old", action="store_true")
    args = ap.parse_args()
    rng = random.Random(0)
    base = real_rows(Path(args.data), TokenChunker.for_embedder(TextEmbedder()))
    rng.shuffle(base)
    vocab = sorted({w for r in base[:2000] for w in r["text"].split()})
    rows = list(base)
    while len(rows) < args.rows:
        rows.append(edited(rng.choice(base), rng.choice(EDIT_SHARES), rng, vocab, len(rows)))
    rows = rows[: args.rows]
    rng.shuffle(rows)
    print(json.dumps({"real_passages": len(base), "rows": len(rows)}), flush=True)
    deduplicate(rows[:100])  # imports (datasketch, scipy) outside the timings
    old = old_deduplicate() if args.old else None
    for n in sorted({4000, 16000, 50000, len(rows)} & set(range(len(rows) + 1))):
        t0 = time.perf_counter()
        kept, rejected = deduplicate(rows[:n])
        seconds = time.perf_counter() - t0
        line = {
            "rows": n,
            "seconds": round(seconds, 2),
            "us_per_row": round(1e6 * seconds / n, 1),
            "kept": len(kept),
            "exact": sum(r.reason.startswith("exact") for r in rejected),
            "near": sum(r.reason.startswith("near") for r in rejected),
        }
        if old is not None and n <= 16000:
            t0 = time.perf_counter()
            old_kept, _ = old(rows[:n])
            line["old_seconds"] = round(time.perf_counter() - t0, 2)
            line["old_kept"] = len(old_kept)
        print(json.dumps(line), flush=True)
    # quality on the copies: removed share by true Jaccard with the original
    by_id = {r["id"]: r for r in base}
    removed = {r.item_id for r in rejected}
    buckets: dict[str, list[int]] = {}
    for r in rows:
        if "_original" not in r or r["_original"] in removed:
            continue  # only copies whose original was kept can be judged
        j = jaccard(
            shingles(normalize_text(r["text"]).split()),
            shingles(normalize_text(by_id[r["_original"]]["text"]).split()),
        )
        key = ">=0.95" if j >= 0.95 else "0.90-0.95" if j >= 0.9 else "0.80-0.90" if j >= 0.8 else "<0.80"
        buckets.setdefault(key, [0, 0])
        buckets[key][0] += 1
        buckets[key][1] += r["id"] in removed
    print(
        json.dumps(
            {
                k: {"copies": v[0], "removed": v[1], "share": round(v[1] / max(1, v[0]), 4)}
                for k, v in sorted(buckets.items())
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
