"""How often the query reward's entity lexicon finds an entity in MedQA gold answers, per lexicon source.

Builds :func:`training.lexicon.build_lexicon` from MedQuAD + the SLAKE KG (the previous default), then with
PubMedQA's MeSH headings added, and reports the number of terms and the share of MedQA test gold answers
(the gold option's text) in which :class:`training.lexicon.LexiconNER` finds at least one entity: the S_G of
the query-semantic reward is empty for the others.

Run (the released files; ``../shared/data`` in this workspace):

    PYTHONPATH=. python benchmarks/lexicon_coverage.py --data /path/to/data \\
        --out benchmarks/figures/lexicon_coverage.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--data", type=Path, required=True, help="folder with medquad/, slake/, pubmedqa/, medqa_us/"
    )
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()

    from training.lexicon import LexiconNER, build_lexicon

    medquad = args.data / "medquad" / "medquad_qa.jsonl.gz"
    kg = args.data / "slake" / "KG_mvqa-kg"
    pubmedqa = args.data / "pubmedqa" / "ori_pqal.json"
    medqa = sorted((args.data / "medqa_us").glob("*.jsonl"))
    if not medqa:
        raise SystemExit(f"{args.data / 'medqa_us'}: no MedQA .jsonl file")
    golds = [json.loads(line)["answer"] for f in medqa for line in f.open() if line.strip()]
    out = {"medqa_files": [f.name for f in medqa], "gold_answers": len(golds), "lexicons": {}}
    for name, sources in (
        ("medquad+slake_kg", (medquad, kg, None)),
        ("medquad+slake_kg+pubmedqa_mesh", (medquad, kg, pubmedqa)),
    ):
        lexicon = build_lexicon(*sources)
        found = LexiconNER(lexicon).entities(golds)
        covered = sum(1 for e in found if e)
        out["lexicons"][name] = {
            "terms": len(lexicon.terms),
            "gold_answers_with_an_entity": covered,
            "coverage": round(covered / len(golds), 4),
        }
    out["date"] = time.strftime("%Y-%m-%d")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
