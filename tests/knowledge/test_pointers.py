"""The typed KB pointer: the published row round-trips, hand-written rows of older runs still read, and a
reader with another embedder is refused before any table is opened."""

import json

import polars as pl
import pytest

from retrieval.kb.naming import EmbedderTableMissing, identity_fingerprint
from retrieval.pointers import KB_POINTER_COLUMNS, EmbedderMismatch, KbPointer
from retrieval.search import ImageRetriever, Retriever
from retrieval.store import KBLocation

IDENTITY = {"kind": "text", "model_id": "m", "dim": 4}


class FakeEmbedder:
    def __init__(self, identity):
        self._identity = identity

    def identity(self):
        return self._identity


def pointer(**over) -> KbPointer:
    fields = {
        "db": "kb",
        "table": "kb_text",
        "tag": "run-1",
        "physical_table": "kb_text__abc",
        "version": 3,
        "uri": "/tmp/lancedb/kb",
        "embedder_fingerprint": identity_fingerprint(IDENTITY),
        "embedder_json": json.dumps({**IDENTITY, "device": "cpu"}, sort_keys=True),
    }
    return KbPointer(**{**fields, **over})


def test_round_trip_keeps_the_published_columns():
    row = pointer().to_row()
    assert tuple(row.columns) == KB_POINTER_COLUMNS and row.height == 1
    assert KbPointer.from_row(row) == pointer()
    assert pointer().embedder["model_id"] == "m"


def test_hand_written_row_without_fingerprint_reads():
    row = pl.DataFrame(
        [
            {
                "db": "kb",
                "table": "kb_text",
                "tag": "run-x",
                "version": 1,
                "uri": "/x",
                "embedder": json.dumps({"model_id": "m"}),
            }
        ]
    )
    ptr = KbPointer.from_row(row)
    assert (ptr.physical_table, ptr.embedder_fingerprint, ptr.tag) == (None, None, "run-x")
    ptr.check_embedder({"model_id": "anything"})  # nothing recorded: nothing to refuse


def test_bad_rows_are_refused():
    with pytest.raises(ValueError, match="exactly one row"):
        KbPointer.from_row(pl.concat([pointer().to_row()] * 2))
    with pytest.raises(ValueError, match="without"):
        KbPointer.from_row(pl.DataFrame([{"db": "kb", "table": "kb_text"}]))


def test_another_embedder_is_refused(tmp_path):
    other = FakeEmbedder({**IDENTITY, "dim": 8})
    with pytest.raises(EmbedderMismatch, match="fingerprint") as err:
        Retriever.from_pointer(pointer(), KBLocation(str(tmp_path)), other)
    assert isinstance(err.value, EmbedderTableMissing)
    with pytest.raises(EmbedderMismatch):
        ImageRetriever.from_pointer(pointer(table="kb_image"), KBLocation(str(tmp_path)), other)
