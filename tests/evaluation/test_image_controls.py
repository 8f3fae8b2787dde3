"""The image-reliance controls: ``blank_image`` (each image replaced by a uniform image of its size and mean
colour) and ``shuffled_image`` (another item's image, of the same modality where there is one, seeded)
change the image the model sees and nothing else; a text benchmark skips them; the report compares RwR
against both."""

from __future__ import annotations

import polars as pl
import pytest
from PIL import ImageChops

from tests.training.helpers import ScriptedGenerate
from training.evaluation.cdir import CdirRollout
from training.evaluation.evaluate import EvaluationError, applicable_modes, shuffle_donors
from training.evaluation.items import benchmark_items
from training.evaluation.results import validate_results

from .test_evaluate import run

pytestmark = pytest.mark.timeout(300)


def donors_frame(rows):
    return pl.DataFrame(
        rows, schema={"item_id": pl.Utf8, "image_refs": pl.List(pl.Utf8), "modality": pl.Utf8}
    )


def test_donors_are_seeded_prefer_the_same_modality_and_never_the_items_own_image():
    items = donors_frame(
        [
            {"item_id": "a", "image_refs": ["x1"], "modality": "CT"},
            {"item_id": "b", "image_refs": ["x1"], "modality": "CT"},  # same image as a: never its donor
            {"item_id": "c", "image_refs": ["x2"], "modality": "CT"},
            {"item_id": "d", "image_refs": ["x3"], "modality": "MRI"},  # the only MRI: borrows from CT
            {"item_id": "t", "image_refs": [], "modality": None},  # text item: no donor
        ]
    )
    donors = shuffle_donors(items, seed=0)
    assert donors["a"] == ["x2"] and donors["b"] == ["x2"] and donors["c"] == ["x1"]
    assert donors["d"] in (["x1"], ["x2"]) and "t" not in donors
    assert shuffle_donors(items.reverse(), seed=0) == donors  # order does not matter, the seed does
    with pytest.raises(EvaluationError, match="fewer than two distinct images"):
        shuffle_donors(items.filter(pl.col("item_id").is_in(["a", "b"])), seed=0)


def test_text_benchmarks_skip_the_image_controls(text_qa_frame):
    medqa = benchmark_items(text_qa_frame, "medqa")
    assert applicable_modes(medqa, ["rwr", "blank_image", "shuffled_image"]) == ("rwr",)


def _texts(messages):
    return [[c for c in m["content"] if c.get("type") != "image"] for m in messages]


def _images(messages):
    return [c["image"] for m in messages for c in m["content"] if c.get("type") == "image"]


def test_controls_change_the_image_and_nothing_else(policy, retriever, image_loader, vqa_frame, monkeypatch):
    items = (
        benchmark_items(vqa_frame, "slake", splits=["test"])
        .filter(pl.col("protocol") == "mcq")
        .unique("image_refs", keep="first", maintain_order=True)
        .head(4)
    )
    assert items.height >= 2
    assert items["image_refs"].list.len().min() == 1
    model, processor = policy
    model.generate = ScriptedGenerate(processor.tokenizer, lambda call, row, ctx: "<answer> A </answer>")
    seen: list[list] = []
    real = CdirRollout.run

    def spy(self, model_, processor_, prompts, **kw):
        seen.append(prompts)
        return real(self, model_, processor_, prompts, **kw)

    monkeypatch.setattr(CdirRollout, "run", spy)
    modes = ["rwr", "blank_image", "shuffled_image"]
    res = run(items, policy, retriever, modes=modes, batch_size=4, image_loader=image_loader)
    validate_results(res)
    rwr, blank, shuffled = seen  # registry order
    assert _texts(blank[0]) == _texts(rwr[0])  # same system prompt, question and options
    for a, b, s in zip(rwr, blank, shuffled, strict=True):
        assert _texts(a) == _texts(b) == _texts(s)
        (orig,), (uniform,), (other,) = _images(a), _images(b), _images(s)
        assert uniform.size == orig.size and all(lo == hi for lo, hi in uniform.getextrema())
        assert ImageChops.difference(orig, other).getbbox() is not None  # another image
    by_item = res.filter(pl.col("mode") == "shuffled_image").join(items, on="item_id")
    donors = shuffle_donors(items, seed=0)
    for r, s in zip(by_item.iter_rows(named=True), shuffled, strict=True):
        assert r["shown_image_refs"] == donors[r["item_id"]] != r["image_refs"]
        (other,) = _images(s)
        assert ImageChops.difference(image_loader(r["shown_image_refs"][0]), other).getbbox() is None
    assert res.filter(pl.col("mode") != "shuffled_image")["shown_image_refs"].list.len().max() == 0
