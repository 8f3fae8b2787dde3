"""Near-duplicate images (quality.near_duplicates): a resized and re-encoded copy and an adjacent-slice-like
copy of a real SLAKE image are caught, different real images are not; the CDIR case corpus leaves out the
near-duplicates of evaluation images with a reason, and so does stage 2's candidate selection."""

from __future__ import annotations

import io

import numpy as np
import polars as pl
import pytest
from PIL import Image, ImageEnhance, ImageFilter

from assets.common.profiles import SAMPLE_DATA_DIR
from assets.knowledge.image_cases import exclude_near_duplicates
from quality.near_duplicates import DEFAULT_THRESHOLD, near_duplicates_of, thumbnail

pytestmark = pytest.mark.timeout(120)


def _jpeg(im: Image.Image, quality: int = 60) -> bytes:
    buf = io.BytesIO()
    im.convert("RGB").save(buf, "JPEG", quality=quality)
    return buf.getvalue()


@pytest.fixture(scope="module")
def images() -> dict[str, bytes]:
    """Real SLAKE images, a resized + re-encoded copy of the first and an adjacent-slice-like copy (shifted
    1 pixel, blurred, 5 % brighter) of the second. (A 3-pixel shift of this 256-pixel image correlates 0.91,
    below the threshold: BENCHMARKS.md gives the detector's recall per kind of change.)"""
    paths = sorted((SAMPLE_DATA_DIR / "slake" / "imgs").glob("xmlab*/source.jpg"))[:6]
    out = {f"img{i}": p.read_bytes() for i, p in enumerate(paths)}
    first = Image.open(io.BytesIO(out["img0"]))
    w, h = first.size
    out["resized_copy"] = _jpeg(first.resize((w // 2, h // 2)).resize((w, h)))
    second = Image.open(io.BytesIO(out["img1"])).convert("L")
    shifted = Image.new("L", second.size)
    shifted.paste(second, (1, 1))
    out["slice_like"] = _jpeg(
        ImageEnhance.Brightness(shifted.filter(ImageFilter.GaussianBlur(1))).enhance(1.05), 90
    )
    return out


def test_near_copies_are_caught_and_different_images_are_not(images):
    training = ["img2", "img3", "img4", "img5", "resized_copy", "slice_like"]
    pairs = near_duplicates_of(["img0", "img1"], training, images.__getitem__)
    found = pairs.select("query_ref", "corpus_ref").rows()
    assert found == [("img0", "resized_copy"), ("img1", "slice_like")]
    assert (pairs["similarity"] >= DEFAULT_THRESHOLD).all()
    # the exact content hash sees none of them
    assert images["resized_copy"] != images["img0"] and images["slice_like"] != images["img1"]


def test_a_uniform_image_correlates_with_nothing():
    v = thumbnail(Image.new("L", (100, 80), 128))
    assert not np.any(v)


def test_case_corpus_leaves_out_near_duplicates_with_a_reason(images):
    cases = pl.DataFrame(
        {
            "id": ["c1", "c2", "c3"],
            "source": ["slake", "slake", "vqa_rad"],
            "image_ref": ["resized_copy", "img3", "slice_like"],
        }
    )
    pairs = near_duplicates_of(["img0", "img1"], cases["image_ref"].to_list(), images.__getitem__)
    kept, rejected = exclude_near_duplicates(cases, pairs, {"img0": "slake/test", "img1": "slake/validation"})
    assert kept["id"].to_list() == ["c2"]
    reasons = {r.item_id: r.reason for r in rejected}
    assert set(reasons) == {"c1", "c3"}
    assert reasons["c1"].startswith("near-duplicate of evaluation image img0 (slake/test)")
    assert reasons["c3"].startswith("near-duplicate of evaluation image img1 (slake/validation)")
