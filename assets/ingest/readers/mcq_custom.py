"""Any CSV, TSV or JSON-lines MCQ files whose columns a ``mcq_mapping.yaml`` beside them declares."""

from __future__ import annotations

from assets.common.records import ReadResult, Rejection
from storage.sources import SourceDir

from ..mcq_mapping import iter_rows, load_mapping
from .common import as_text, collect
from .text_qa_row import make_mcq


def read_mcq_generic(src: SourceDir, out: ReadResult | None = None) -> ReadResult:
    """CSV, TSV or JSON-lines MCQs with the columns declared in ``mcq_mapping.yaml`` in the source folder.

    The mapping (keys in :mod:`assets.ingest.mcq_mapping`) is validated as a whole, against the files too,
    before any row is read; a row that cannot be read unambiguously is quarantined with the reason. The
    licence is the mapping's.
    """
    mapping = load_mapping(src)
    out = ReadResult() if out is None else out
    for rel in mapping.files:
        path = src.path(rel)
        for line_no, r, err in iter_rows(src, rel, mapping.columns):
            if err:
                out.rejected.append(Rejection(path, f"line {line_no}", err, raw=r))
                continue

            def build(r=r, line_no=line_no, rel=rel):
                question, options = as_text(r.get(mapping.question)), mapping.row_options(r)
                return make_mcq(
                    item_id=mapping.row_id(r, question, options),
                    dataset=mapping.dataset,
                    split=mapping.row_split(r, rel),
                    question=question,
                    options=options,
                    answer_label=mapping.row_label(r, options),
                    explanation=r.get(mapping.explanation) if mapping.explanation else None,
                    context=r.get(mapping.context) if mapping.context else None,
                    subject=r.get(mapping.subject) if mapping.subject else None,
                    source_ref=f"{rel}#L{line_no}",
                    license=mapping.license,
                )

            collect(out, path, f"line {line_no}", r, build)
    return out
