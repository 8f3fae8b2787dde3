"""Data contracts of the echo tables (``echo_studies``), as Great Expectations suites.

Kept beside :mod:`quality.contracts` (whose :func:`~quality.contracts.validate` runs them) so that the
echo group's rules live in one place. Plain library (no Dagster).
"""

from __future__ import annotations

from typing import Any

import polars as pl

from .contracts import ContractResult, refs_resolvable, validate

ECHO_VIEWS = ["A4C", "A2C", "PLAX", "PSAX", "unknown"]
FRAME_RATE_HZ = (0.1, 1000.0)
"""Plausible echo frame rates (Hz): the contract's bounds, and the reader quarantines a file outside them."""


def check_echo_studies(frame: pl.DataFrame, existing_images: set[str], **trail: Any) -> ContractResult:
    """The ``echo_studies`` contract: unique clip ids, a patient key and a file key on every row, at least
    one frame,
    a positive frame rate where known, a known view, EF within 0-100, a sector box inside the image,
    every keyframe resolvable in storage and a compact clip reference."""

    def expectations():
        import great_expectations.expectations as gxe

        return [
            gxe.ExpectColumnValuesToNotBeNull(column="clip_id"),
            gxe.ExpectColumnValuesToBeUnique(column="clip_id"),
            gxe.ExpectColumnValuesToMatchRegex(column="patient_key", regex=r"^pt_[0-9a-f]{16}$"),
            gxe.ExpectColumnValuesToMatchRegex(column="file_key", regex=r"^f_[0-9a-f]{16}$"),
            gxe.ExpectColumnValuesToBeBetween(column="n_frames", min_value=1),
            gxe.ExpectColumnValuesToBeBetween(
                column="frame_rate_hz", min_value=FRAME_RATE_HZ[0], max_value=FRAME_RATE_HZ[1]
            ),
            gxe.ExpectColumnValuesToBeInSet(column="view", value_set=ECHO_VIEWS),
            gxe.ExpectColumnValuesToBeBetween(column="ef_percent", min_value=0, max_value=100),
            gxe.ExpectColumnValuesToBeInSet(column="_sector_inside", value_set=[True]),
            gxe.ExpectColumnValuesToBeInSet(column="_image_refs_resolvable", value_set=[True]),
            gxe.ExpectColumnValuesToNotBeNull(column="clip_ref"),
        ]

    scalar = frame.select(
        "clip_id",
        "patient_key",
        "file_key",
        "n_frames",
        "frame_rate_hz",
        "view",
        "ef_percent",
        "clip_ref",
    ).with_columns(
        refs_resolvable(frame["keyframe_refs"], existing_images),
        (
            (frame["sector_x0"] >= 0)
            & (frame["sector_y0"] >= 0)
            & (frame["sector_x1"] < frame["cols"])
            & (frame["sector_y1"] < frame["rows"])
        ).alias("_sector_inside"),
    )
    return validate("echo_studies", scalar, expectations, **trail)


def echo_source_problems(files_seen: int, candidates: int, rows: int, quarantined: int) -> list[str]:
    """Why a source read must fail its check even though no file failed: nothing was found, or nothing
    was kept. Empty when the source yielded rows. Takes the counts of
    :class:`assets.echo.source.EchoReadResult` (``files_seen``, ``candidates``, ``frame.height``,
    ``len(rejected)``)."""
    if candidates == 0:
        return [
            f"no clip found: 0 DICOM or AVI files among {files_seen} files (clips are found by content: the "
            "DICM marker after a 128-byte preamble, DICOMDIR references, RIFF/AVI); check the folder "
            "configured for this source"
        ]
    if rows == 0:
        return [
            f"no clip kept: all {candidates} clips of this source were quarantined ({quarantined} quarantine "
            "records); read the quarantine table's reasons"
        ]
    return []
