"""Helpers shared by every reader: split names, answer letters, the row problem and its quarantine,
de-duplication by id, Parquet reading and the typed table."""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Iterator
from typing import Any

import polars as pl
import pyarrow.parquet as pq

from assets.common.images import ImageProblem
from assets.common.records import ReadResult, Rejection, SourceError
from storage.sources import SourceDir

SPLITS = ("train", "validation", "test")
LETTERS = "ABCDEFGHIJ"

_SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "val": "validation",
    "valid": "validation",
    "validate": "validation",
    "validation": "validation",
    "dev": "validation",
    "test": "test",
}


class RowProblem(ValueError):
    """A row that cannot be normalized; the message becomes the quarantine reason."""


def normalize_split(value: Any) -> str:
    """``train``, ``validation`` or ``test`` for a split name or alias; :class:`RowProblem` otherwise."""
    split = _SPLIT_ALIASES.get(str(value or "").strip().lower())
    if split is None:
        raise RowProblem(f"unknown split: {value!r} (expected one of {', '.join(SPLITS)} or an alias)")
    return split


_NAME_SPLITS = {**_SPLIT_ALIASES, "testing": "test"}


def split_from_name(rel: str) -> str | None:
    """The split a file's name tells by a whole word (``usmle_test.jsonl`` -> ``test``,
    ``dev.json`` -> ``validation``; ``latest.csv`` tells none), or ``None`` when it tells none or more
    than one."""
    stem = rel.rsplit("/", 1)[-1].lower().split(".", 1)[0]
    found = {_NAME_SPLITS[w] for w in re.split(r"[^a-z0-9]+", stem) if w in _NAME_SPLITS}
    return found.pop() if len(found) == 1 else None


def split_of_file(src: SourceDir, rel: str) -> str:
    """The split a file's name tells (:func:`split_from_name`); :class:`SourceError` when it tells none."""
    split = split_from_name(rel)
    if split is None:
        raise SourceError(
            src.path(rel),
            "cannot tell the split from the file name",
            "name the file *train*, *dev* or *test*",
        )
    return split


def as_text(value: Any) -> str:
    """A cell as stripped text; ``None`` as the empty string."""
    return "" if value is None else str(value).strip()


def yes_no(answer: str) -> str | None:
    """``Yes`` or ``No`` for a yes/no answer (any case, a trailing full stop allowed), else ``None``."""
    a = answer.strip().rstrip(".").strip().lower()
    return {"yes": "Yes", "no": "No"}.get(a)


def collect(out: ReadResult, source_file: str, row: str, raw: Any, build: Callable[[], dict]) -> None:
    """Run ``build``; on a row or image problem, quarantine the raw record with the reason."""
    try:
        out.add(build())
    except (RowProblem, ImageProblem) as e:
        out.rejected.append(Rejection(source_file=source_file, row=row, reason=str(e), raw=raw))
    except (KeyError, TypeError, AttributeError) as e:
        out.rejected.append(
            Rejection(source_file=source_file, row=row, reason=f"malformed record: {e!r}", raw=raw)
        )


def expect_list(data: Any, path: str) -> list:
    """``data`` when it is a JSON list; :class:`SourceError` for the whole file otherwise."""
    if not isinstance(data, list):
        raise SourceError(
            path,
            f"expected a JSON list of records, found {type(data).__name__}",
            "point the reader at the dataset's released annotation file",
        )
    return data


def jsonl_rows(src: SourceDir, rel: str, out: ReadResult, what: str) -> Iterator[tuple[int, Any]]:
    """The JSON objects of a JSON-lines file; every bad line goes to ``out.rejected`` with its reason."""
    for line_no, r, err in src.iter_jsonl(rel, what):
        if err:
            out.rejected.append(Rejection(src.path(rel), f"line {line_no}", err, raw=r))
            continue
        yield line_no, r


def parquet_image(value: Any) -> bytes | None:
    """The bytes of a Parquet image cell (a ``{bytes, path}`` struct or raw bytes), or ``None``."""
    if isinstance(value, dict):
        return value.get("bytes")
    return value if isinstance(value, bytes | bytearray) else None


def read_parquet(src: SourceDir, rel: str) -> pl.DataFrame:
    """A whole Parquet file, refused when its footer declares more uncompressed data than the source's
    ``max_file_bytes`` (the declared sizes are the writer's: an honest guard, not proof against a forged
    footer)."""
    data = src.read_bytes(rel)
    try:
        meta = pq.read_metadata(io.BytesIO(data))
        declared = sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
    except Exception as e:  # noqa: BLE001 - pyarrow raises several error types for bad files
        raise SourceError(
            src.path(rel),
            f"not a readable Parquet file ({type(e).__name__}: {e})",
            "re-download or re-export the file",
        ) from e
    if declared > src.max_file_bytes:
        raise SourceError(
            src.path(rel),
            f"declares {declared:,} bytes of uncompressed data, over the cap of {src.max_file_bytes:,} bytes",
            "split the file or raise the source's max_file_bytes",
        )
    try:
        return pl.read_parquet(io.BytesIO(data))
    except Exception as e:  # noqa: BLE001 - polars raises several error types for bad files
        raise SourceError(
            src.path(rel),
            f"not a readable Parquet file ({type(e).__name__}: {e})",
            "re-download or re-export the file",
        ) from e


def dedupe(result: ReadResult, id_column: str = "item_id", seen: dict[str, str] | None = None) -> ReadResult:
    """Keep the first row per id; later rows with the same id go to quarantine. ``seen`` (id -> first
    ``source_ref``) carries the ids of earlier batches."""
    seen = {} if seen is None else seen
    kept: list[dict] = []
    for row in result.rows:
        rid = row[id_column]
        if rid in seen:
            result.rejected.append(
                Rejection(
                    source_file=row["source_ref"].split("#")[0],
                    row=row["source_ref"],
                    reason=f"duplicate item id: {rid} (first at {seen[rid]})",
                    raw=row,
                    item_id=rid,
                )
            )
            continue
        seen[rid] = row["source_ref"]
        kept.append(row)
    return ReadResult(rows=kept, rejected=result.rejected)


def to_frame(rows: list[dict[str, Any]], schema: dict[str, pl.DataType], sort: bool = True) -> pl.DataFrame:
    """Rows as a DataFrame with the table's exact schema (also when empty), sorted by ``item_id``."""
    # column-wise: far faster than from_dicts
    columns = {name: [row.get(name) for row in rows] for name in schema}
    frame = pl.DataFrame(columns, schema=schema)
    return frame.sort("item_id") if sort else frame


BATCH_ROWS = 10_000
"""Rows a reader holds as Python dicts before :class:`FrameBuilder` turns them into a columnar batch."""


class FrameBuilder:
    """The table of a reader, built batch by batch: wire it as the ``sink`` of the reader's
    :class:`ReadResult` (:meth:`result`), and the reader's rows become columnar (Arrow memory, via polars)
    every :data:`BATCH_ROWS` rows, de-duplicated by id on the way (the same rule as :func:`dedupe`: the first
    row of an id is kept, later ones quarantined). Peak memory is then one batch of dicts plus the columnar
    table, not every row as a dict."""

    def __init__(
        self, schema: dict[str, pl.DataType], batch_rows: int = BATCH_ROWS, id_column: str = "item_id"
    ):
        self.schema, self.batch_rows, self.id_column = schema, batch_rows, id_column
        self._seen: dict[str, str] = {}
        self._batches: list[pl.DataFrame] = []
        self._result: ReadResult | None = None

    def result(self) -> ReadResult:
        """The :class:`ReadResult` to hand the reader (its rows come here)."""
        self._result = ReadResult(sink=self._take, batch_rows=self.batch_rows)
        return self._result

    def _take(self, rows: list[dict[str, Any]]) -> None:
        batch = dedupe(ReadResult(rows=rows, rejected=self._result.rejected), self.id_column, self._seen)
        self._batches.append(to_frame(batch.rows, self.schema, sort=False))

    def frame(self) -> pl.DataFrame:
        """Every kept row (after the reader finished), sorted by ``item_id``."""
        self._result.flush()
        if not self._batches:
            return to_frame([], self.schema)
        frame = pl.concat(self._batches, rechunk=False).sort(self.id_column)
        self._batches = [frame]
        return frame
