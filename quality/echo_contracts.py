"""Data contracts of the echo tables (``echo_studies``), as Great Expectations suites.

Kept beside :mod:`quality.contracts` (whose :func:`~quality.contracts.validate` runs them) so that the
echo group's rules live in one place. Plain library (no Dagster).
"""

from __future__ import annotations

from typing import Any

import polars as pl

from .contracts import ContractResult, refs_resolvable, validate

ECHO_VIEWS = ["A4C", "A2C", "PLAX", "PSAX", "unknown"]


def check_echo_studies(frame: pl.DataFrame, existing_images: set[str], **trail: Any) -> ContractResult:
    """The ``echo_studies`` contract: unique clip ids, a patient key on every row, at least one frame,
    a positive frame rate where known, a known view, EF within 0-100, a sector box inside the image,
    every keyframe resolvable in storage and a compact clip reference."""

    def expectations():
        import great_expectations.expectations as gxe

        return [
            gxe.ExpectColumnValuesToNotBeNull(column="clip_id"),
            gxe.ExpectColumnValuesToBeUnique(column="clip_id"),
            gxe.ExpectColumnValuesToMatchRegex(column="patient_key", regex=r"^pt_[0-9a-f]{16}$"),
            gxe.ExpectColumnValuesToBeBetween(column="n_frames", min_value=1),
            gxe.ExpectColumnValuesToBeBetween(column="frame_rate_hz", min_value=0.1, max_value=1000),
            gxe.ExpectColumnValuesToBeInSet(column="view", value_set=ECHO_VIEWS),
            gxe.ExpectColumnValuesToBeBetween(column="ef_percent", min_value=0, max_value=100),
            gxe.ExpectColumnValuesToBeInSet(column="_sector_inside", value_set=[True]),
            gxe.ExpectColumnValuesToBeInSet(column="_image_refs_resolvable", value_set=[True]),
            gxe.ExpectColumnValuesToNotBeNull(column="clip_ref"),
        ]

    scalar = frame.select(
        "clip_id", "patient_key", "n_frames", "frame_rate_hz", "view", "ef_percent", "clip_ref"
    ).with_columns(
        refs_resolvable(frame["keyframe_refs"], existing_images),
        ((frame["sector_x0"] >= 0) & (frame["sector_y0"] >= 0) & (frame["sector_x1"] < frame["cols"])
         & (frame["sector_y1"] < frame["rows"])).alias("_sector_inside"),
    )
    return validate("echo_studies", scalar, expectations, **trail)
