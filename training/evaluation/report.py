"""The evaluation report: Markdown and a self-contained HTML page with PNG plots, from ``eval_results``.

:func:`build_report` validates the results and the lineage, computes every table with
``training.evaluation.metrics`` and writes into ``out_dir``: ``report.md`` (plots linked as files),
``report.html`` (plots embedded as
base64 ``data:`` URIs, no external resource) and one PNG per plot. Sections, in order: smoke warning (in
smoke mode), lineage, MCQ-protocol accuracy, open-protocol scores, paired differences, calibration, CDIR,
retrieval use, and the paper's published numbers as a separate reference (different models, never in a
table with ours).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from . import calibration as cal
from . import metrics as m
from . import plots
from .document import Doc, Plot, render_html, render_markdown
from .paper_numbers import PAPER_BENCHMARKS, PAPER_NUMBERS
from .results import CHECKPOINT_ORDER, validate_results

REQUIRED_LINEAGE = ("checkpoint_manifests", "kb_tag", "embedder", "benchmark_versions", "code_version")
"""Lineage keys :func:`build_report` needs. ``checkpoint_manifests`` maps each checkpoint label to its
manifest (path or hash); ``benchmark_versions`` maps each benchmark to its version; ``kb_tag`` is the text KB
tag, ``embedder`` its embedder (id and revision), ``code_version`` the git commit. Optional keys shown when
given: ``image_index_tag``, ``image_embedder``, ``judge_model``, ``profile``, ``run_id``; any other key is
listed too."""

SMOKE_STATEMENT = (
    "SMOKE RUN: these scores come from a tiny model with random weights and are chance-level by "
    "construction. "
    "They show that the pipeline runs from ingest to report; they say nothing about the method."
)


def model_statement(manifest: Mapping[str, Any] | None) -> str | None:
    """The banner that says what the evaluated model is, from the base model's manifest: the smoke
    statement for random weights; for a real language model grafted onto a random vision tower (the small
    profile's SmolLM2), what it is and what its image numbers cannot mean; None for any other model."""
    manifest = manifest or {}
    if manifest.get("random_weights"):
        return SMOKE_STATEMENT
    if manifest.get("vision_tower") == "random":
        text = manifest.get("text_weights") or {}
        gguf = text.get("source_file") or text.get("gguf_file") or "a GGUF file"
        quant = text.get("quantization") or "quantized"
        return (
            f"SMALL RUN: the policy is a real pretrained language model ({manifest.get('kind', 'unknown')}: "
            f"{gguf}, {quant}, de-quantized to float32) grafted onto a vision tower with RANDOM weights, "
            "since no small vision-language model with real weights can be installed here. Text benchmarks "
            "(MedQA, PubMedQA) measure a real 135M-parameter reader; on image benchmarks the model cannot "
            "see the image, so those numbers measure a text-only guess. Scores are real, not chance by "
            "construction, and far below the paper's 7B model."
        )
    return None


REFERENCE_HEADING = "Reference only: the paper's published numbers (different models, not comparable)"
PROTOCOL_TITLES = {
    "mcq": "MCQ protocol (closed questions as multiple-choice)",
    "open": "Open protocol (full set, open answers)",
}


class LineageError(ValueError):
    """The lineage dict is incomplete or disagrees with the results it describes."""


def _distinct(results: pl.DataFrame, col: str) -> set:
    return set(results[col].drop_nulls().unique().to_list())


def check_lineage(results: pl.DataFrame, lineage: Mapping[str, Any]) -> None:
    """Raise :class:`LineageError` when ``lineage`` lacks a key or contradicts the results.

    Every checkpoint and benchmark in the results must be named in ``checkpoint_manifests`` and
    ``benchmark_versions``; the results' ``benchmark_version``, ``kb_tag`` and ``image_index_tag`` values
    must equal the lineage's.
    """
    missing = [k for k in REQUIRED_LINEAGE if not lineage.get(k)]
    if missing:
        raise LineageError(
            f"lineage lacks {missing}; pass {list(REQUIRED_LINEAGE)} (see training/evaluation/report.py)"
        )
    for key in ("checkpoint_manifests", "benchmark_versions"):
        if not isinstance(lineage[key], Mapping):
            raise LineageError(
                f"lineage[{key!r}] must map each name to its manifest/version, got {lineage[key]!r}"
            )
    problems = []
    for col, key in (("checkpoint", "checkpoint_manifests"), ("benchmark", "benchmark_versions")):
        absent = sorted(_distinct(results, col) - set(lineage[key]))
        if absent:
            problems.append(f"{col}s {absent} have no entry in lineage[{key!r}]")
    for bench, versions in (
        results.group_by("benchmark").agg(pl.col("benchmark_version").drop_nulls().unique()).iter_rows()
    ):
        expected = lineage["benchmark_versions"].get(bench)
        if expected is not None and set(versions) - {expected}:
            problems.append(
                f"benchmark {bench}: results were scored on versions {sorted(versions)}, lineage names "
                f"{expected!r}"
            )
    for col, key in (("kb_tag", "kb_tag"), ("image_index_tag", "image_index_tag")):
        found = _distinct(results, col)
        if found and found != {lineage.get(key)}:
            problems.append(f"results used {col} {sorted(found)}, lineage names {lineage.get(key)!r}")
    if problems:
        raise LineageError(
            "lineage disagrees with the results: "
            + "; ".join(problems)
            + ". Re-run eval_results for the stale partitions or pass the lineage they were produced with"
        )


def _lineage_rows(results: pl.DataFrame, lineage: Mapping[str, Any]) -> list[list[str]]:
    rows = [
        ["code version (git commit)", str(lineage["code_version"])],
        ["text KB tag", str(lineage["kb_tag"])],
        ["text embedder", str(lineage["embedder"])],
    ]
    rows += [[f"checkpoint {k} manifest", str(v)] for k, v in lineage["checkpoint_manifests"].items()]
    rows += [[f"benchmark {k} version", str(v)] for k, v in lineage["benchmark_versions"].items()]
    judges = sorted(_distinct(results, "judge_model"))
    rows.append(
        ["open-answer judge", ", ".join(judges) if judges else "none (exact match and token recall only)"]
    )
    shown = set(REQUIRED_LINEAGE)
    for k in ("image_index_tag", "image_embedder", "profile", "run_id"):
        if k in lineage:
            rows.append([k.replace("_", " "), str(lineage[k])])
            shown.add(k)
    rows += [[k, str(v)] for k, v in lineage.items() if k not in shown and k not in ("judge_model", "audit")]
    return rows


def _audit_section(doc: Doc, audit: Mapping[str, Any]) -> None:
    """Per checkpoint: its lineage-manifest digest and the raw files its upstream chain read; and the command
    that re-verifies the chain (raw-file hashes, KB tag, items, weights)."""
    doc.h(2, "Audit")
    rows = [
        [role, str(c.get("manifest")), str(c.get("input_manifests")), str(c.get("raw_files"))]
        for role, c in (audit.get("checkpoints") or {}).items()
    ]
    doc.table(["checkpoint", "manifest digest", "input manifests", "raw files"], rows)
    doc.p(
        f"To re-verify the whole upstream chain down to raw-file hashes, run `{audit.get('command')}` "
        "(exits non-zero when a raw file changed or is missing)."
    )


# ---- formatting -----------------------------------------------------------------------------------
def _pct(v: float | None) -> str:
    return "—" if v is None or v != v else f"{100 * v:.1f}"


def _ci(low: float | None, high: float | None) -> str:
    return "—" if low is None or low != low else f"[{100 * low:.1f}, {100 * high:.1f}]"


def _pp(v: float) -> str:
    return f"{100 * v:+.1f}"


def _group_label(by: str | None) -> list[str]:
    return [] if by is None else [by.replace("_", " ")]


def _mcq_rows(table: pl.DataFrame, by: str | None) -> list[list[str]]:
    return [
        [
            r["benchmark"],
            r["checkpoint"],
            r["mode"],
            *([r[by]] if by else []),
            r["n"],
            _pct(r["accuracy"]),
            _ci(r["ci_low"], r["ci_high"]),
            _pct(r["accuracy_forced"]),
            _pct(r["forced_rate"]),
            _pct(r["chance"]),
        ]
        for r in table.iter_rows(named=True)
    ]


def _open_rows(table: pl.DataFrame, by: str | None) -> list[list[str]]:
    return [
        [
            r["benchmark"],
            r["checkpoint"],
            r["mode"],
            *([r[by]] if by else []),
            r["n"],
            _pct(r["exact_match"]),
            _ci(r["exact_match_low"], r["exact_match_high"]),
            _pct(r["token_recall"]),
            _ci(r["token_recall_low"], r["token_recall_high"]),
            _pct(r["judge_accuracy"]),
            _ci(r["judge_low"], r["judge_high"]),
        ]
        for r in table.iter_rows(named=True)
    ]


# ---- sections -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ReportOutput:
    """Where the report was written, its Markdown text, and the overall tables for asset metadata."""

    markdown_path: Path
    html_path: Path
    plot_paths: dict[str, Path]
    markdown: str
    mcq_accuracy: pl.DataFrame
    open_scores: pl.DataFrame
    comparisons: pl.DataFrame


HEADLINE_HEADING = "Headline: did training and retrieval help?"
PROTOCOL_SHORT = {"mcq": "MCQ (closed questions)", "open": "Open answers (exact match)"}


def _newest_checkpoint(results: pl.DataFrame) -> str:
    present = _distinct(results, "checkpoint")
    ordered = [c for c in CHECKPOINT_ORDER if c in present]
    return ordered[-1] if ordered else sorted(present)[-1]


def _cell(value: float, low: float, high: float, signed: bool = False) -> str:
    v = f"{100 * value:+.1f}" if signed else f"{100 * value:.1f}"
    return v if low != low else f"{v} [{100 * low:.1f}, {100 * high:.1f}]"


def _paired(a: pl.DataFrame, b: pl.DataFrame, boot: dict) -> str:
    if a.is_empty() or b.is_empty():
        return "—"
    try:
        d = m.paired_difference(a, b, **boot)
    except m.MismatchedItemsError:
        return "items differ"
    return _cell(d.difference, d.ci_low, d.ci_high, signed=True)


def _headline_section(doc: Doc, results: pl.DataFrame, boot: dict, level: float) -> None:
    """The first screen: per protocol, strict accuracy of the newest checkpoint by benchmark x mode, each
    mode's paired difference to direct, one figure, then each checkpoint against base."""
    ck = _newest_checkpoint(results)
    ci = f"{round(100 * level)} % CI"
    doc.h(2, HEADLINE_HEADING)
    doc.p(
        f"Checkpoint {ck}: strict accuracy % [{ci}] (no parsed answer = wrong), and each mode − direct on "
        "the same items (pp, paired bootstrap; an interval above 0 means the mode helped). Full tables, "
        "breakdowns and CSV files follow."
    )
    newest = results.filter(pl.col("checkpoint") == ck)
    for protocol in ("mcq", "open"):
        rows = newest.filter(pl.col("protocol") == protocol)
        if rows.is_empty():
            continue
        benchmarks = sorted(_distinct(rows, "benchmark"))
        modes = [md for md in m.MODES if md in _distinct(rows, "mode")]
        acc = {}
        for (b, md), g in rows.group_by(["benchmark", "mode"], maintain_order=True):
            value, low, high = m._mean_ci(g["correct"].to_list(), boot)
            acc[b, md] = _cell(value, low, high)
        doc.h(3, f"{PROTOCOL_SHORT[protocol]}: strict accuracy %, {ck}")
        doc.table(["benchmark", *modes], [[b, *[acc.get((b, md), "—") for md in modes]] for b in benchmarks])
        others = [md for md in modes if md != "direct"]
        if "direct" in modes and others:
            doc.h(3, f"{PROTOCOL_SHORT[protocol]}: mode − direct, pp, {ck}")
            table = []
            for b in benchmarks:
                of_b = rows.filter(pl.col("benchmark") == b)
                direct = of_b.filter(pl.col("mode") == "direct")
                diffs = [_paired(of_b.filter(pl.col("mode") == md), direct, boot) for md in others]
                table.append([b, *diffs])
            doc.table(["benchmark", *others], table)
        if protocol == "mcq":
            overall = m.mcq_accuracy(rows, **boot)
            doc.plot(
                "headline",
                plots.accuracy_plot(
                    overall,
                    value="accuracy",
                    low="ci_low",
                    high="ci_high",
                    chance="chance",
                    title=f"Strict accuracy, checkpoint {ck}",
                    compact=True,
                ),
                f"Strict accuracy of checkpoint {ck} per benchmark and mode, bars = {ci}; dashes: chance",
            )
    checkpoints = [c for c in CHECKPOINT_ORDER if c in _distinct(results, "checkpoint") and c != "base"]
    if "base" in _distinct(results, "checkpoint") and checkpoints:
        doc.h(3, "Training: each checkpoint − base, same mode and items (pp, paired)")
        modes = [md for md in ("rwr", "direct") if md in _distinct(results, "mode")]
        table = []
        for b in sorted(_distinct(results, "benchmark")):
            base_rows = results.filter((pl.col("benchmark") == b) & (pl.col("checkpoint") == "base"))
            row = [b]
            for c in checkpoints:
                for md in modes:
                    cand = results.filter(
                        (pl.col("benchmark") == b) & (pl.col("checkpoint") == c) & (pl.col("mode") == md)
                    )
                    row.append(_paired(cand, base_rows.filter(pl.col("mode") == md), boot))
            table.append(row)
        doc.table(["benchmark", *[f"{c} − base ({md})" for c in checkpoints for md in modes]], table)


def _accuracy_section(
    doc: Doc, results: pl.DataFrame, protocol: str, boot: dict, level: float
) -> pl.DataFrame:
    doc.h(2, f"Accuracy — {PROTOCOL_TITLES[protocol]}")
    rows = results.filter(pl.col("protocol") == protocol)
    scorer = m.mcq_accuracy if protocol == "mcq" else m.open_scores
    if rows.is_empty():
        doc.p(f"No item was evaluated under the {protocol} protocol.", "note")
        return scorer(results, **boot)
    ci = f"{round(100 * level)} % CI"
    if protocol == "mcq":
        cols, fmt, plot_kw = (
            ["strict accuracy %", ci, "forced-choice accuracy %", "forced %", "chance %"],
            _mcq_rows,
            {"value": "accuracy", "low": "ci_low", "high": "ci_high", "chance": "chance"},
        )
        doc.p(
            f"Strict accuracy (an answer that names no option is wrong) with percentile bootstrap intervals "
            f"({boot['n_resamples']} resamples, seed {boot['seed']}): the headline, and what promotion "
            "compares. Beside it, the forced-choice accuracy: where the model wrote no answer naming an "
            "option, the system appended <answer> and took its likeliest letter; 'forced %' is the share "
            "of such rows. A large gap means the budget or the format, not the knowledge, decided the score."
        )
    else:
        cols, fmt, plot_kw = (
            ["exact match %", ci, "token recall %", ci, "judge %", ci],
            _open_rows,
            {"value": "exact_match", "low": "exact_match_low", "high": "exact_match_high"},
        )
        doc.p(
            "Exact match after normalization (lower case, no punctuation or articles), token recall of the "
            "reference answer, and the judge's accuracy when a judge was configured."
        )
    overall = scorer(results, **boot)
    name = f"accuracy_{protocol}"
    doc.plot(
        name,
        plots.accuracy_plot(overall, title=PROTOCOL_TITLES[protocol], **plot_kw),
        f"{PROTOCOL_TITLES[protocol]}: per benchmark and mode, bars = {ci}",
    )
    doc.table(["benchmark", "checkpoint", "mode", "n", *cols], fmt(overall, None))
    for by in m.BREAKDOWNS:
        doc.h(3, f"By {by.replace('_', ' ')} ({protocol})")
        if rows[by].null_count() == rows.height:
            doc.p(f"No benchmark evaluated here gives a {by.replace('_', ' ')}.", "note")
            continue
        doc.table(
            ["benchmark", "checkpoint", "mode", *_group_label(by), "n", *cols],
            fmt(scorer(results, by=by, **boot), by),
        )
    return overall


def _comparison_section(doc: Doc, results: pl.DataFrame, boot: dict, level: float) -> pl.DataFrame:
    doc.h(2, "Paired differences (same items, paired bootstrap)")
    doc.p(
        "A − B in percentage points on the items both arms answered, resampled jointly; "
        "an arm pair whose item "
        "sets differ is refused. Modes within a checkpoint, then checkpoints within a mode."
    )
    pairs = m.default_comparisons(results)
    frames = []
    for protocol in m.PROTOCOLS:
        table = m.compare(results, pairs, protocol=protocol, **boot)
        if table.is_empty():
            continue
        frames.append(table)
        metric = "accuracy" if protocol == "mcq" else "exact match"
        doc.h(3, f"{PROTOCOL_TITLES[protocol]}: {metric}")
        doc.plot(
            f"paired_{protocol}",
            plots.comparison_plot(table, title=f"{PROTOCOL_TITLES[protocol]}: {metric}", level=level),
            f"Paired differences, {round(100 * level)} % intervals",
        )
        doc.table(
            [
                "benchmark",
                "A",
                "B",
                "n",
                "A %",
                "B %",
                "A − B (pp)",
                f"{round(100 * level)} % CI (pp)",
                "excludes 0",
            ],
            [
                [
                    r["benchmark"],
                    r["a"],
                    r["b"],
                    r["n"],
                    _pct(r["mean_a"]),
                    _pct(r["mean_b"]),
                    _pp(r["difference"]),
                    _ci(r["ci_low"], r["ci_high"]),
                    "yes" if r["excludes_zero"] else "no",
                ]
                for r in table.iter_rows(named=True)
            ],
        )
    if not frames:
        doc.p("Nothing to compare: a single checkpoint and mode, or no arms sharing a benchmark.", "note")
        return m.compare(results, [], protocol="mcq")
    return pl.concat(frames)


def _calibration_section(doc: Doc, results: pl.DataFrame, n_bins: int) -> None:
    doc.h(2, "Calibration")
    doc.p(
        f"Confidence η = probability of the first answer token. ECE over {n_bins} equal-width bins "
        f"(bin m holds m/{n_bins} ≤ η < (m+1)/{n_bins}, η = 1 in the last): "
        "Σ (n_bin / N) · |accuracy − mean η|. "
        "Items without a confidence are counted, not used."
    )
    for protocol in m.PROTOCOLS:
        table = cal.calibration_table(results, protocol=protocol, n_bins=n_bins)
        if table.is_empty():
            continue
        doc.h(3, PROTOCOL_TITLES[protocol])
        bins = cal.reliability_bins(results, protocol=protocol, n_bins=n_bins)
        if bins["n"].sum():
            doc.plot(
                f"reliability_{protocol}",
                plots.reliability_plot(bins, title=PROTOCOL_TITLES[protocol]),
                f"Reliability diagram ({protocol}), pooled over benchmarks",
            )
        doc.table(
            ["benchmark", "checkpoint", "mode", "n", "without confidence", "mean η", "accuracy %", "ECE"],
            [
                [
                    r["benchmark"],
                    r["checkpoint"],
                    r["mode"],
                    r["n"],
                    r["n_without_confidence"],
                    r["mean_confidence"],
                    _pct(r["accuracy"]),
                    r["ece"],
                ]
                for r in table.iter_rows(named=True)
            ],
        )


def _cdir_section(doc: Doc, results: pl.DataFrame) -> None:
    doc.h(2, "CDIR: confidence-driven image re-retrieval")
    table = m.cdir_summary(results)
    if table.is_empty():
        doc.p("No item was evaluated in mode rwr_cdir.", "note")
        return
    doc.p(
        "When the first pass's confidence η is below λ, the most similar image cases are appended after the "
        "reasoning and the model answers once more. Accuracy before = first pass, after = final answer."
    )
    doc.plot(
        "cdir_trigger", plots.cdir_histogram(results), "First-pass confidence of rwr_cdir items, λ marked"
    )
    doc.table(
        [
            "benchmark",
            "checkpoint",
            "protocol",
            "n",
            "λ",
            "triggered",
            "trigger rate %",
            "accuracy before %",
            "accuracy after %",
            "triggered: before %",
            "triggered: after %",
            "mean Δη (triggered)",
            "answers changed",
        ],
        [
            [
                r["benchmark"],
                r["checkpoint"],
                r["protocol"],
                r["n"],
                f"{r['cdir_lambda']:g}",
                r["n_triggered"],
                _pct(r["trigger_rate"]),
                _pct(r["accuracy_before"]),
                _pct(r["accuracy_after"]),
                _pct(r["triggered_accuracy_before"]),
                _pct(r["triggered_accuracy_after"]),
                r["confidence_change_mean"],
                r["n_answer_changed"],
            ]
            for r in table.iter_rows(named=True)
        ],
    )


def _retrieval_section(doc: Doc, results: pl.DataFrame) -> None:
    doc.h(2, "Retrieval use")
    table = m.retrieval_use(results)
    doc.table(
        [
            "benchmark",
            "checkpoint",
            "mode",
            "protocol",
            "n",
            "queries / item",
            "items with a query %",
            "passages / item",
            "rounds (mean)",
            "rounds (max)",
            "generated tokens (mean)",
            "latency s (mean)",
        ],
        [
            [
                r["benchmark"],
                r["checkpoint"],
                r["mode"],
                r["protocol"],
                r["n"],
                r["queries_per_item"],
                _pct(r["share_with_query"]),
                r["passages_per_item"],
                r["rounds_mean"],
                r["rounds_max"],
                r["generated_tokens_mean"],
                r["latency_s_mean"],
            ]
            for r in table.iter_rows(named=True)
        ],
    )


def _reference_section(doc: Doc, reference: Mapping[str, Any], evaluated: set[str] | None = None) -> None:
    doc.h(2, REFERENCE_HEADING)
    doc.p(
        "These numbers were published for other models on the paper's own benchmark builds. "
        "They are shown for "
        "orientation only and must not be read against the scores above.",
        "warning",
    )
    doc.p(f"Source: {reference['source']}.", "note")
    if evaluated is not None:
        doc.table(
            ["paper benchmark", "evaluated in this report"],
            [
                [name, "yes" if key in evaluated else "no (no data folder or not configured)"]
                for key, name in PAPER_BENCHMARKS.items()
            ]
            + [["MMMU-Pro", "no (no reader in this project)"]],
        )
    for t in reference["tables"]:
        doc.h(3, f"Paper: {t['title']}")
        doc.table(t["columns"], t["rows"])
    for note in reference.get("notes", []):
        doc.p(note, "note")


def build_report(
    results: pl.DataFrame,
    lineage: Mapping[str, Any],
    out_dir: str | Path,
    reference: Mapping[str, Any] = PAPER_NUMBERS,
    smoke: bool = False,
    *,
    model_note: str | None = None,
    n_resamples: int = m.DEFAULT_RESAMPLES,
    seed: int = m.DEFAULT_SEED,
    confidence_level: float = m.DEFAULT_LEVEL,
    n_bins: int = cal.DEFAULT_BINS,
) -> ReportOutput:
    """Write ``report.md``, ``report.html`` and the PNG plots into ``out_dir`` (a local folder, created).

    ``results``: a scored ``eval_results`` frame (all benchmarks, checkpoints and modes to report), checked
    with ``validate_results``. ``lineage``: see :data:`REQUIRED_LINEAGE`; checked against the results by
    :func:`check_lineage`. ``reference``: the published numbers shown apart (default :data:`PAPER_NUMBERS`).
    ``smoke``: put :data:`SMOKE_STATEMENT` at the top of both documents; ``model_note``: a banner saying
    what the model is (:func:`model_statement`), put there instead. Raises ``EvalResultsError``,
    :class:`LineageError` or ``MismatchedItemsError`` rather than writing a misleading report.
    """
    validate_results(results)
    check_lineage(results, lineage)
    boot = {"n_resamples": n_resamples, "seed": seed, "confidence_level": confidence_level}
    doc = Doc()
    doc.h(1, "Med-RwR evaluation report")
    if model_note or smoke:
        doc.p(model_note or SMOKE_STATEMENT, "warning")
    _headline_section(doc, results, boot, confidence_level)
    doc.h(2, "Lineage")
    doc.table(["what", "version"], _lineage_rows(results, lineage))
    doc.p(
        f"{results.height} scored rows; benchmarks {sorted(_distinct(results, 'benchmark'))}; checkpoints "
        f"{sorted(_distinct(results, 'checkpoint'))}; modes {sorted(_distinct(results, 'mode'))}; protocols "
        f"{sorted(_distinct(results, 'protocol'))}. "
        "The two protocols are reported in separate tables and never "
        "mixed."
    )
    if isinstance(lineage.get("audit"), Mapping):
        _audit_section(doc, lineage["audit"])
    mcq = _accuracy_section(doc, results, "mcq", boot, confidence_level)
    open_ = _accuracy_section(doc, results, "open", boot, confidence_level)
    comparisons = _comparison_section(doc, results, boot, confidence_level)
    _calibration_section(doc, results, n_bins)
    _cdir_section(doc, results)
    _retrieval_section(doc, results)
    _reference_section(doc, reference, _distinct(results, "benchmark"))

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plot_paths = {}
    for b in doc.blocks:
        if isinstance(b, Plot):
            plot_paths[b.name] = out / f"{b.name}.png"
            plot_paths[b.name].write_bytes(b.png)
    # the full tables as CSV beside the report (the page shows them too, after the headline)
    mcq.write_csv(out / "mcq_accuracy.csv")
    open_.write_csv(out / "open_scores.csv")
    comparisons.write_csv(out / "comparisons.csv")
    markdown = render_markdown(doc)
    md_path, html_path = out / "report.md", out / "report.html"
    md_path.write_text(markdown, encoding="utf-8")
    page = render_html(doc, "Med-RwR evaluation report", boxed=REFERENCE_HEADING)
    html_path.write_text(page, encoding="utf-8")
    return ReportOutput(
        markdown_path=md_path,
        html_path=html_path,
        plot_paths=plot_paths,
        markdown=markdown,
        mcq_accuracy=mcq,
        open_scores=open_,
        comparisons=comparisons,
    )
