"""Report generation: files, embedded plots, lineage header, smoke statement, separate reference table."""

import base64
import io
import re

import polars as pl
import pytest
from PIL import Image

from tests.evaluation.results_fixtures import arm, lineage, report_results, scored
from training.evaluation.metrics import MismatchedItemsError
from training.evaluation.paper_numbers import PAPER_NUMBERS
from training.evaluation.report import REFERENCE_HEADING, SMOKE_STATEMENT, LineageError, build_report
from training.evaluation.results import EvalResultsError

EXPECTED_PLOTS = {
    "headline",
    "accuracy_mcq",
    "accuracy_open",
    "paired_mcq",
    "paired_open",
    "reliability_mcq",
    "reliability_open",
    "cdir_trigger",
}


@pytest.fixture(scope="module")
def smoke_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    return build_report(report_results(), lineage(), out, smoke=True, n_resamples=500), out


@pytest.mark.timeout(120)
def test_report_files_and_embedded_plots(smoke_report):
    report, out = smoke_report
    assert report.markdown_path == out / "report.md" and report.html_path == out / "report.html"
    assert set(report.plot_paths) == EXPECTED_PLOTS
    page = report.html_path.read_text()
    embedded = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(embedded) == len(EXPECTED_PLOTS)
    written = {p.read_bytes() for p in report.plot_paths.values()}
    for data in embedded:
        png = base64.b64decode(data)
        assert png in written  # the embedded image is the file written beside the report
        with Image.open(io.BytesIO(png)) as im:
            assert im.format == "PNG" and im.width > 300 and im.height > 200
    # self-contained: no external resource
    assert not re.search(r'(src|href)="(?!data:)', page)
    for name in EXPECTED_PLOTS:
        assert f"]({name}.png)" in report.markdown


def test_report_states_smoke_and_lineage(smoke_report):
    report, _ = smoke_report
    page = report.html_path.read_text()
    assert SMOKE_STATEMENT in report.markdown and SMOKE_STATEMENT in page
    assert report.markdown.index(SMOKE_STATEMENT) < report.markdown.index("## Lineage")
    lin = lineage()
    for value in (
        lin["code_version"],
        lin["kb_tag"],
        lin["embedder"],
        *lin["checkpoint_manifests"].values(),
        *lin["benchmark_versions"].values(),
        lin["image_index_tag"],
    ):
        assert value in report.markdown and value in page


def test_reference_numbers_are_separate_and_exact(smoke_report):
    report, _ = smoke_report
    md = report.markdown
    ours, reference = md.split(f"## {REFERENCE_HEADING}")
    assert PAPER_NUMBERS["source"] in reference and "arXiv 2510.18303" in reference
    for table in PAPER_NUMBERS["tables"]:
        for r in table["rows"]:
            assert "| " + " | ".join(r) + " |" in reference
    assert "Med-RwR + CDIR" not in ours and "Lingshu" not in ours
    assert "vqa_rad" not in reference  # none of our rows inside the reference section
    page = report.html_path.read_text()
    section = page[page.index('<section class="reference">') : page.index("</section>")]
    assert "51.9" in section and "not comparable" in section


def test_report_tables_carry_n_intervals_and_protocol_labels(smoke_report):
    report, _ = smoke_report
    md = report.markdown
    assert "## Accuracy — MCQ protocol" in md and "## Accuracy — Open protocol" in md
    mcq_part = md.split("## Accuracy — MCQ protocol")[1].split("## Accuracy — Open protocol")[0]
    assert "exact match" not in mcq_part and "| open |" not in mcq_part
    t = report.mcq_accuracy
    row = t.filter(
        (pl.col("benchmark") == "medqa") & (pl.col("checkpoint") == "base") & (pl.col("mode") == "rwr")
    )
    r = row.row(0, named=True)
    assert (
        f"| medqa | base | rwr | {r['n']} | {100 * r['accuracy']:.1f} | [{100 * r['ci_low']:.1f}, "
        f"{100 * r['ci_high']:.1f}] | {100 * r['accuracy_forced']:.1f} | "
        f"{100 * r['forced_rate']:.1f} | 25.0 |" in md
    )
    assert "strict accuracy %" in mcq_part and "forced-choice accuracy %" in mcq_part
    comp = report.comparisons.filter(
        (pl.col("a") == "stage2/rwr") & (pl.col("b") == "stage2/direct") & (pl.col("protocol") == "mcq")
    )
    assert comp["excludes_zero"].to_list() == [True, True]


def test_not_smoke_has_no_smoke_statement(tmp_path):
    df = scored(arm([True, False, True, True], mode="rwr") + arm([False, False, True, True]))
    lin = {
        **lineage(),
        "benchmark_versions": {"vqa_rad": "vqa_rad-v1"},
        "checkpoint_manifests": {"base": "m"},
    }
    report = build_report(df, lin, tmp_path, smoke=False, n_resamples=200)
    assert SMOKE_STATEMENT not in report.markdown
    assert "No item was evaluated under the open protocol" in report.markdown
    assert "No item was evaluated in mode rwr_cdir" in report.markdown
    assert set(report.plot_paths) == {"headline", "accuracy_mcq", "paired_mcq", "reliability_mcq"}


def test_lineage_must_be_complete_and_agree(tmp_path):
    df = report_results()
    for key in ("checkpoint_manifests", "kb_tag", "embedder", "benchmark_versions", "code_version"):
        with pytest.raises(LineageError, match=key):
            build_report(df, {k: v for k, v in lineage().items() if k != key}, tmp_path / key)
    with pytest.raises(LineageError, match=r"results used kb_tag \['run-kb-1'\], lineage names 'run-kb-0'"):
        build_report(df, {**lineage(), "kb_tag": "run-kb-0"}, tmp_path / "kb")
    with pytest.raises(LineageError, match=r"benchmarks \['medqa'\] have no entry"):
        build_report(df, {**lineage(), "benchmark_versions": {"vqa_rad": "vqa_rad-v1"}}, tmp_path / "bv")
    with pytest.raises(LineageError, match="scored on versions"):
        build_report(
            df,
            {**lineage(), "benchmark_versions": {"vqa_rad": "vqa_rad-v2", "medqa": "medqa-v1"}},
            tmp_path / "bv2",
        )
    written = [p.name for p in tmp_path.iterdir() if p.name != "dagster_home"]  # (conftest's Dagster home)
    assert written == []  # nothing written for a refused report


def test_bad_results_are_refused_before_anything_is_written(tmp_path):
    df = report_results()
    with pytest.raises(EvalResultsError):
        build_report(df.with_columns(correct=~pl.col("correct")), lineage(), tmp_path / "a")
    partial = df.filter(
        ~((pl.col("mode") == "direct") & (pl.col("item_id") == "medqa-3") & (pl.col("checkpoint") == "base"))
    )
    with pytest.raises(MismatchedItemsError, match="medqa"):
        build_report(partial, lineage(), tmp_path / "b", n_resamples=50)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_cdir_legend_counts_triggered_rows_without_a_first_pass_confidence():
    from training.evaluation.plots import cdir_trigger_label

    frame = pl.DataFrame(
        {
            "mode": ["rwr_cdir"] * 4 + ["rwr"],
            "checkpoint": ["base"] * 5,
            "cdir_triggered": [True, True, True, False, False],
            "confidence_before_cdir": [0.2, None, None, 0.9, None],
        }
    )
    assert cdir_trigger_label(frame, "base") == "CDIR triggered (3; 2 without a first-pass answer, not drawn)"
