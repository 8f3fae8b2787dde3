"""Peak memory of the ingest readers on hostile inputs: 1 GiB row bombs and many rows.

    python benchmarks/bench_ingest_memory.py [--code-root .] [--work /tmp/bench_mem] [--gib 1]

Each case runs in a fresh interpreter (``PYTHONPATH=<code-root>``, so another checkout can be measured the
same way): after the imports its peak resident memory is reset (``/proc/self/clear_refs``), then it reads the
input and reports how far the peak (``VmHWM``) rose above where it started, with the outcome (refused with
which message, or rows kept / quarantined). Linux only. The bombs are multi-member gzip files (the same
compressed MiB repeated), about 1 MB on disk per GiB; the plain-text bombs are written to ``--work``.

Cases: a 1 GiB line in CSV, TSV and JSON-lines files of the generic MCQ reader (``.gz``); a 1 GiB JSON
document (``SourceDir.load_json``); a Parquet corpus with one 1 GiB text cell (KB MedRAG reader); 400k
MedMCQA rows (44 MB of JSON lines, the issue's case) through the MedMCQA reader. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

MIB = 1024**2

MEASURE = """
import sys, time
def _status(key):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key + ":"))
from assets.ingest.text_qa import read_text_qa
from assets.knowledge.sources import read_kb_source
from retrieval.chunking import TokenChunker
from retrieval.embedders import TextEmbedder
from storage.sources import SourceDir, SourceError
chunker = TokenChunker.for_embedder(TextEmbedder()) if {needs_chunker} else None
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
before = _status("VmRSS")
t0 = time.perf_counter()
try:
{code}
except SourceError as e:
    outcome = "refused: " + str(e)
print("RESULT", _status("VmHWM") - before, round(time.perf_counter() - t0, 1), outcome.replace(chr(10), " "))
"""


def gzip_bomb(path: Path, head: bytes, filler: bytes, total: int, tail: bytes = b"") -> None:
    chunk = (filler * (MIB // len(filler) + 1))[:MIB]
    member = gzip.compress(chunk, compresslevel=9)
    with open(path, "wb") as f:
        f.write(gzip.compress(head))
        for _ in range(total // MIB):
            f.write(member)
        f.write(gzip.compress(tail))


def mapping(folder: Path, name: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "mcq_mapping.yaml").write_text(
        f"files: [{name}]\nlicense: CC-BY-4.0\nquestion: stem\noptions: [a, b, c, d]\nanswer: key\n"
    )


def make_inputs(work: Path, total: int) -> dict[str, tuple[str, bool]]:
    """Case name -> (code that sets ``outcome``, needs the chunker)."""
    cases: dict[str, tuple[str, bool]] = {}
    for ext, sep in (("csv", ","), ("tsv", "\t")):
        folder = work / f"mcq_{ext}"
        mapping(folder, f"bomb_train.{ext}.gz")
        head = (
            sep.join(["stem", "a", "b", "c", "d", "key"])
            + "\n"
            + sep.join(["What?", "w", "x", "y", "z", "A"])
        )
        gzip_bomb(folder / f"bomb_train.{ext}.gz", (head + "\n").encode(), b"x", total, b"\n")
        cases[f"generic MCQ {ext.upper()} (.gz), one {total // MIB:,} MiB line"] = (
            f"    df, r = read_text_qa('mcq_custom', SourceDir({str(folder)!r}))\n"
            "    outcome = f'{df.height} kept, {len(r.rejected)} quarantined: ' + "
            "'; '.join(x.reason[:120] for x in r.rejected[:1])",
            False,
        )
    folder = work / "mcq_jsonl"
    mapping(folder, "bomb_train.jsonl.gz")
    good = json.dumps({"stem": "What?", "a": "w", "b": "x", "c": "y", "d": "z", "key": "A"})
    gzip_bomb(
        folder / "bomb_train.jsonl.gz",
        (good + "\n" + '{"stem": "').encode(),
        b"x",
        total,
        ('"}\n' + good).encode(),
    )
    cases[f"generic MCQ JSON lines (.gz), one {total // MIB:,} MiB line"] = (
        f"    df, r = read_text_qa('mcq_custom', SourceDir({str(folder)!r}))\n"
        "    outcome = f'{df.height} kept, {len(r.rejected)} quarantined: ' + "
        "'; '.join(x.reason[:120] for x in r.rejected[:1])",
        False,
    )
    folder = work / "json_doc"
    folder.mkdir(parents=True, exist_ok=True)
    gzip_bomb(folder / "doc.json.gz", b'{"a": "', b"x", total, b'"}')
    cases[f"JSON document (load_json, .gz) of {total // MIB:,} MiB"] = (
        f"    SourceDir({str(folder)!r}).load_json('doc.json.gz')\n    outcome = 'parsed'",
        False,
    )
    folder = work / "parquet_corpus"
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / "part.parquet").exists():
        import pyarrow as pa
        import pyarrow.parquet as pq

        big = "x" * total
        pq.write_table(
            pa.table({"id": ["1", "2"], "title": ["t", "t"], "content": ["A real passage.", big]}),
            folder / "part.parquet",
            compression="zstd",
        )
        del big
    cases[f"KB Parquet corpus (MedRAG reader), one {total // MIB:,} MiB cell"] = (
        f"    df, r = read_kb_source('textbooks', SourceDir({str(folder)!r}), chunker)\n"
        "    outcome = f'{df.height} passages, {len(r.rejected)} quarantined: ' + "
        "'; '.join(x.reason[:120] for x in r.rejected[:1])",
        True,
    )
    folder = work / "medmcqa_rows"
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / "train.json").exists():
        with open(folder / "train.json", "w") as f:
            for i in range(400_000):
                f.write(
                    json.dumps(
                        {
                            "id": f"q{i}",
                            "question": f"Q{i}: which drug treats condition {i % 977}?",
                            **{f"op{x}": f"drug {x}{i}" for x in "abcd"},
                            "cop": 1 + i % 4,
                            "subject_name": "Pharmacology",
                        }
                    )
                    + "\n"
                )
    size = (folder / "train.json").stat().st_size
    cases[f"MedMCQA reader, 400,000 rows ({size / 1e6:.0f} MB of JSON lines)"] = (
        f"    df, r = read_text_qa('medmcqa', SourceDir({str(folder)!r}))\n"
        "    outcome = f'{df.height:,} kept, {len(r.rejected)} quarantined'",
        False,
    )
    return cases


def run_case(code_root: Path, code: str, needs_chunker: bool) -> tuple[float, float, str]:
    script = MEASURE.replace("{code}", code).replace("{needs_chunker}", str(needs_chunker))
    env = {**os.environ, "PYTHONPATH": str(code_root), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=code_root, env=env, capture_output=True, text=True, timeout=1800
    )
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT")), None)
    if line is None:
        return float("nan"), float("nan"), f"crashed (rc {proc.returncode}): {proc.stderr[-300:]}"
    _, kib, seconds, outcome = line.split(" ", 3)
    return int(kib) / 1024, float(seconds), outcome


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--code-root", default=".", help="checkout whose readers are measured")
    ap.add_argument("--work", default="/tmp/bench_ingest_memory", help="folder for the generated inputs")
    ap.add_argument("--gib", type=float, default=1.0, help="size of the row bombs in GiB")
    ap.add_argument("--only", default="", help="run only the cases whose name contains this text")
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    cases = make_inputs(work, int(args.gib * 1024) * MIB)
    print(
        f"{platform.node()} ({os.cpu_count()} cores), {time.strftime('%Y-%m-%d')}, code: {args.code_root}\n"
    )
    print("| input | peak RSS growth (MiB) | s | outcome |\n|---|---:|---:|---|")
    for name, (code, chunker) in cases.items():
        if args.only and args.only not in name:
            continue
        mib, seconds, outcome = run_case(Path(args.code_root).resolve(), code, chunker)
        print(f"| {name} | {mib:,.0f} | {seconds} | {outcome[:260]} |", flush=True)


if __name__ == "__main__":
    main()
