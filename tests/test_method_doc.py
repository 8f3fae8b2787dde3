"""docs/method.md: the method notes the code cites. Every citation names a section that exists, nothing
cites a file outside the repository, and the paper's numbers the report prints agree with §7."""

from __future__ import annotations

import re
from pathlib import Path

from training.evaluation.paper_numbers import PAPER_NUMBERS

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "method.md"
FOLDERS = (
    "assets",
    "benchmarks",
    "orchestration",
    "quality",
    "retrieval",
    "storage",
    "tests",
    "tools",
    "training",
)


def _sections() -> dict[int, str]:
    parts = re.split(r"^## (\d+)\. ", DOC.read_text(), flags=re.M)
    return {int(n): body for n, body in zip(parts[1::2], parts[2::2], strict=True)}


def _python_files():
    for folder in FOLDERS:
        yield from (p for p in (REPO / folder).rglob("*.py") if p != Path(__file__).resolve())


def test_citations_name_existing_sections():
    sections = _sections()
    cited = {
        (p.relative_to(REPO).as_posix(), int(n))
        for p in _python_files()
        for n in re.findall(r"docs/method\.md §(\d+)", p.read_text())
    }
    assert cited, "no citation of docs/method.md found"
    assert {c for c in cited if c[1] not in sections} == set()


def test_nothing_cites_the_notes_outside_the_repository():
    assert [p.relative_to(REPO).as_posix() for p in _python_files() if "METHOD.md" in p.read_text()] == []


def test_paper_numbers_agree_with_section_7():
    rows = [
        [c.strip() for c in line.strip().strip("|").split("|")]
        for line in _sections()[7].splitlines()
        if line.startswith("|") and not line.startswith("|---")
    ]
    tables: list[dict] = []
    for row in rows:
        if row[0] == "model":
            tables.append({"columns": row, "rows": []})
        else:
            tables[-1]["rows"].append(row)
    assert [{"columns": t["columns"], "rows": t["rows"]} for t in PAPER_NUMBERS["tables"]] == tables
    assert "arXiv 2510.18303" in PAPER_NUMBERS["source"] and "docs/method.md §7" in PAPER_NUMBERS["source"]
