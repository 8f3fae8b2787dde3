"""The typed model pointer: what base_model and the stage checkpoints publish."""

import json

import pytest

from assets.training.launching import model_row
from storage.pointers import MODEL_SCHEMA, ModelPointer


def test_model_row_is_the_pointer_row():
    manifest = {"b": 2, "a": 1}
    row = model_row("stage1", "base", "/models/stage1/r", "w" * 64, manifest)
    assert dict(row.schema) == MODEL_SCHEMA and row.height == 1
    ptr = ModelPointer.from_row(row)
    assert (ptr.role, ptr.model_ref, ptr.path) == ("stage1", "base", "/models/stage1/r")
    assert ptr.weights_sha256 == "w" * 64
    assert ptr.manifest == manifest and ptr.manifest_json == json.dumps(manifest, sort_keys=True)
    assert ptr.to_row().equals(row)


def test_a_hub_model_has_no_weights_hash():
    ptr = ModelPointer.from_row(model_row("base", "org/model", "org/model", None, {"model_ref": "org/model"}))
    assert ptr.weights_sha256 is None and ptr.path == "org/model"


def test_extra_columns_are_ignored_and_two_rows_refused():
    row = model_row("stage2", "stage1", "/m", "x", {})
    assert ModelPointer.from_row(row.with_columns(checkpoint_version=None)).path == "/m"
    with pytest.raises(ValueError, match="exactly one row"):
        ModelPointer.from_row(row.vstack(row))
