"""Data contracts as Great Expectations suites, validated on in-memory frames, with an audit trail.

Each table has one suite, defined once here and versioned (:data:`SUITE_VERSIONS`, stored in the suite's
``meta``). Rules that GX cannot state over a single column (an answer letter pointing into a list of options,
an image id resolvable in storage) are computed first as boolean columns named ``_<rule>`` and then expected
to be true, so every rule reports through GX in the same way.

With an :class:`AuditTrail` (a local folder, normally ``<storage root>/quality``) every
validation runs as a GX checkpoint whose results are kept in GX's validation-results store under
``<trail>/validations/`` and rendered as Data Docs under ``<trail>/data_docs/index.html`` (GX's own
``UpdateDataDocsAction``), so auditors can browse every suite and every validation. Without one (unit tests),
an in-memory context is used. Plain library code: the assets turn a :class:`ContractResult` into Dagster
asset-check results.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import polars as pl

LETTERS = "ABCDEFGHIJ"
KNOWN_SPLITS = ["train", "validation", "test"]


@dataclass(frozen=True)
class ExpectationOutcome:
    expectation: str
    column: str | None
    success: bool
    unexpected_count: int
    sample: list[Any] = field(default_factory=list)

    def describe(self) -> str:
        where = f"[{self.column}]" if self.column else ""
        tail = "" if self.success else f": {self.unexpected_count} unexpected, e.g. {self.sample[:3]}"
        return f"{self.expectation}{where} {'ok' if self.success else 'FAILED'}{tail}"


@dataclass(frozen=True)
class ContractResult:
    suite: str
    rows: int
    outcomes: list[ExpectationOutcome]
    docs: str | None = None  # the Data Docs page of this validation, when kept in an audit trail

    @property
    def success(self) -> bool:
        return all(o.success for o in self.outcomes)

    @property
    def failures(self) -> list[ExpectationOutcome]:
        return [o for o in self.outcomes if not o.success]

    def summary(self) -> str:
        return "\n".join(o.describe() for o in self.outcomes)


SUITE_VERSIONS = {"vqa_items": "2", "text_qa_items": "2", "echo_studies": "2"}


@dataclass(frozen=True)
class AuditTrail:
    """The local folder where GX keeps validation results (``validations/``) and renders Data Docs
    (``data_docs/``). GX 1.x stores them on a filesystem only; a caller whose storage root is on S3 mirrors
    this folder to ``<root>/quality`` (see ``assets.common.metadata``)."""

    uri: str

    def backend(self, sub: str) -> dict[str, Any]:
        """A GX store backend config for ``<uri>/<sub>``."""
        return {
            "class_name": "TupleFilesystemStoreBackend",
            "base_directory": f"{self.uri.rstrip('/')}/{sub}",
        }

    def docs_index(self) -> str:
        return f"{self.uri.rstrip('/')}/data_docs/index.html"


@lru_cache(maxsize=8)
def _context(trail: AuditTrail | None = None):
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    logging.getLogger("great_expectations").setLevel(logging.ERROR)
    if trail is None:
        context = gx.get_context(mode="ephemeral")
    else:
        config = DataContextConfig(
            store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False)
        )
        config.stores["validation_results_store"] = {
            "class_name": "ValidationResultsStore",
            "store_backend": trail.backend("validations"),
        }
        config.validation_results_store_name = "validation_results_store"
        config.data_docs_sites = {
            "audit": {
                "class_name": "SiteBuilder",
                "store_backend": trail.backend("data_docs"),
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            }
        }
        context = gx.get_context(project_config=config, mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    return context


def versioned_suite_name(suite_name: str) -> str:
    """The GX suite name carries its version (``vqa_items.v2``), so every stored validation names it."""
    return f"{suite_name}.v{SUITE_VERSIONS.get(suite_name, '1')}"


def _suite(context, suite_name: str, rules: list):
    import great_expectations as gx

    meta = {"version": SUITE_VERSIONS.get(suite_name, "1"), "defined_in": "quality/contracts.py"}
    return context.suites.add_or_update(
        gx.ExpectationSuite(name=versioned_suite_name(suite_name), expectations=rules, meta=meta)
    )


def validate(
    suite_name: str,
    frame: pl.DataFrame,
    expectations: Callable[[], list],
    min_rows: int = 1,
    trail: AuditTrail | None = None,
    batch: str = "batch",
    run_name: str | None = None,
) -> ContractResult:
    """Validate ``frame`` (polars) against the expectations built by ``expectations()``, plus a row-count
    expectation (at least ``min_rows`` rows kept: a table that kept nothing must not pass its contract).

    With ``trail``, the validation runs as a checkpoint named ``<suite>:<batch>`` for GX run ``run_name``; its
    result is stored and rendered into the Data Docs of the trail. ``expectations`` is called only after the
    GX context exists (GX needs that order).
    """
    import great_expectations as gx
    import great_expectations.expectations as gxe

    context = _context(trail)
    suite = _suite(
        context, suite_name, [gxe.ExpectTableRowCountToBeBetween(min_value=min_rows), *expectations()]
    )
    try:
        source = context.data_sources.get(suite_name)
    except (KeyError, ValueError, gx.exceptions.DataContextError):
        source = context.data_sources.add_pandas(suite_name)
    try:  # one data asset and batch definition per batch name; the frame is passed at validation time
        batch_def = source.get_asset(batch).get_batch_definition(batch)
    except (KeyError, LookupError, ValueError, gx.exceptions.DataContextError):
        batch_def = source.add_dataframe_asset(batch).add_batch_definition_whole_dataframe(batch)
    docs = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if trail is None:
            result = batch_def.get_batch(batch_parameters={"dataframe": frame.to_pandas()}).validate(suite)
            results = result.results
        else:
            name = f"{suite_name}:{batch}"
            definition = context.validation_definitions.add_or_update(
                gx.ValidationDefinition(name=name, data=batch_def, suite=suite)
            )
            checkpoint = context.checkpoints.add_or_update(
                gx.Checkpoint(
                    name=name,
                    validation_definitions=[definition],
                    result_format="SUMMARY",
                    actions=[gx.checkpoint.UpdateDataDocsAction(name="data_docs")],
                )
            )
            run = checkpoint.run(
                batch_parameters={"dataframe": frame.to_pandas()},
                run_id=gx.RunIdentifier(run_name=run_name or "adhoc"),
            )
            [result] = run.run_results.values()
            results = result.results
            docs = trail.docs_index()
    outcomes = []
    for r in results:
        cfg = r.expectation_config
        res = r.result or {}
        outcomes.append(
            ExpectationOutcome(
                expectation=cfg.type,
                column=cfg.kwargs.get("column"),
                success=bool(r.success),
                unexpected_count=int(res.get("unexpected_count") or (0 if r.success else 1)),
                sample=list(res.get("partial_unexpected_list") or [res.get("observed_value")])[:5],
            )
        )
    return ContractResult(suite=suite_name, rows=frame.height, outcomes=outcomes, docs=docs)


def with_volume(
    result: ContractResult, kept: int, quarantined: int, max_quarantine_share: float
) -> ContractResult:
    """``result`` plus the volume rule: the share of source rows quarantined is at most
    ``max_quarantine_share`` (a mapping error or a wrong source that rejects most rows must not pass).

    Not a GX expectation: it compares two tables (kept and quarantined rows), and a GX suite validates one.
    """
    total = kept + quarantined
    share = quarantined / total if total else 0.0
    ok = share <= max_quarantine_share
    outcomes = [
        ExpectationOutcome(
            "rows_kept>=1",
            None,
            kept >= 1,
            0 if kept else 1,
            [] if kept else [f"0 rows kept, {quarantined} quarantined"],
        ),
        ExpectationOutcome(
            f"quarantined_share<={max_quarantine_share:g} (got {share:.3f})",
            None,
            ok,
            0 if ok else quarantined,
            [] if ok else [f"{quarantined} of {total} rows"],
        ),
    ]
    return ContractResult(result.suite, result.rows, [*result.outcomes, *outcomes], result.docs)


# ---- derived rule columns ----------------------------------------------------------------------------
def answer_in_options(frame: pl.DataFrame) -> pl.Series:
    """True where the item has no options, or its answer letter indexes an option equal to its answer."""
    ok = []
    for options, label, answer in zip(frame["options"], frame["answer_label"], frame["answer"], strict=True):
        options = list(options) if options is not None else []
        if not options:
            ok.append(label is None)
            continue
        idx = LETTERS.find(label) if label else -1
        ok.append(0 <= idx < len(options) and options[idx] == answer)
    return pl.Series("_answer_in_options", ok, dtype=pl.Boolean)


def refs_resolvable(refs: pl.Series, existing: set[str]) -> pl.Series:
    """True where every image id in the row's list is in ``existing`` (and the list is not empty)."""
    return pl.Series(
        "_image_refs_resolvable",
        [bool(r is not None and len(r) > 0 and all(x in existing for x in r)) for r in refs],
        dtype=pl.Boolean,
    )


def all_refs(refs: Iterable) -> set[str]:
    return {x for r in refs if r is not None for x in r}


# ---- suites --------------------------------------------------------------------------------------
def _common(id_column: str = "item_id") -> list:
    import great_expectations.expectations as gxe

    return [
        gxe.ExpectColumnValuesToNotBeNull(column=id_column),
        gxe.ExpectColumnValuesToBeUnique(column=id_column),
        gxe.ExpectColumnValuesToBeInSet(column="split", value_set=KNOWN_SPLITS),
        gxe.ExpectColumnValuesToNotBeNull(column="question"),
        gxe.ExpectColumnValueLengthsToBeBetween(column="question", min_value=1),
        gxe.ExpectColumnValuesToNotBeNull(column="license"),
        gxe.ExpectColumnValueLengthsToBeBetween(column="license", min_value=1),
        gxe.ExpectColumnValuesToBeInSet(column="_answer_in_options", value_set=[True]),
    ]


def check_vqa_items(frame: pl.DataFrame, existing_images: set[str], **trail: Any) -> ContractResult:
    """The ``vqa_items`` contract: unique ids, known splits, non-empty questions, licence set, the answer
    letter among the options, every image reference resolvable in storage, answer types closed/open.
    ``trail`` (``trail=``, ``batch=``, ``run_name=``) keeps the result in an audit trail
    (:func:`validate`)."""

    def expectations():
        import great_expectations.expectations as gxe

        return _common() + [
            gxe.ExpectColumnValuesToBeInSet(column="answer_type", value_set=["closed", "open"]),
            gxe.ExpectColumnValuesToNotBeNull(column="answer"),
            gxe.ExpectColumnValuesToBeInSet(column="_image_refs_resolvable", value_set=[True]),
        ]

    scalar = frame.select("item_id", "split", "question", "license", "answer_type", "answer").with_columns(
        answer_in_options(frame), refs_resolvable(frame["image_refs"], existing_images)
    )
    return validate("vqa_items", scalar, expectations, **trail)


def check_text_qa_items(frame: pl.DataFrame, **trail: Any) -> ContractResult:
    """The ``text_qa_items`` contract: unique ids, known splits, non-empty questions, licence set,
    at least two options and the answer letter among them."""

    def expectations():
        import great_expectations.expectations as gxe

        return _common() + [
            gxe.ExpectColumnValuesToBeBetween(column="_n_options", min_value=2, max_value=10),
            gxe.ExpectColumnValuesToNotBeNull(column="answer_label"),
        ]

    scalar = frame.select("item_id", "split", "question", "license", "answer_label").with_columns(
        answer_in_options(frame), frame["options"].list.len().alias("_n_options")
    )
    return validate("text_qa_items", scalar, expectations, **trail)
