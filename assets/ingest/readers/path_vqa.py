"""PathVQA: the Hugging Face Parquet layout or the original pickle release."""

from __future__ import annotations

import io
import pickle

from assets.common.images import ImageIngestor
from assets.common.records import ReadResult, Rejection, SourceError
from storage.sources import SourceDir

from .common import as_text, collect, expect_list, parquet_image, yes_no
from .vqa_row import make_item

LICENSE = "MIT"


class _SafeUnpickler(pickle.Unpickler):
    """Only plain containers and scalars: a pickle that asks for any class is refused."""

    def find_class(self, module: str, name: str):  # noqa: D401
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a PathVQA pickle")


def read_path_vqa(src: SourceDir, images: ImageIngestor) -> ReadResult:
    """PathVQA: the Hugging Face Parquet layout (``data/{split}-*.parquet`` with an image struct) or the
    original release (``split/qas/{split}/{split}_qa.pkl`` + ``split/images/{split}/*.jpg``)."""
    out = ReadResult()
    parquet_files = src.glob("data/*.parquet")
    if parquet_files:
        for rel in parquet_files:
            split = rel.rsplit("/", 1)[-1].split("-")[0]
            for i, r, err in src.iter_parquet(rel, "PathVQA Parquet file"):
                if err:
                    out.rejected.append(Rejection(src.path(rel), str(i), err, raw=r))
                    continue

                def build(r=r, i=i, split=split, rel=rel):
                    name = f"{rel}#{i}"
                    return make_item(
                        item_id=f"path_vqa:{split}-{_row_key(r, i)}",
                        dataset="path_vqa",
                        split=split,
                        image_refs=[images.from_bytes(parquet_image(r.get("image")), name)],
                        question=r["question"],
                        answer=r["answer"],
                        answer_type="closed" if yes_no(as_text(r["answer"])) else "open",
                        source_ref=name,
                        license=LICENSE,
                    )

                collect(out, src.path(rel), str(i), {k: v for k, v in r.items() if k != "image"}, build)
        return out
    pickles = src.glob("split/qas/*/*_qa.pkl")
    if not pickles:
        raise SourceError(
            src.root,
            "no PathVQA annotations (data/*.parquet or split/qas/*/*_qa.pkl) found",
            "point the path_vqa source at the PathVQA release folder",
        )
    for rel in pickles:
        split = rel.split("/")[2]
        try:
            records = _SafeUnpickler(io.BytesIO(src.read_bytes(rel))).load()
        except Exception as e:  # noqa: BLE001 - any unpickling failure is a whole-file problem
            raise SourceError(
                src.path(rel), f"cannot read the pickle ({e})", "restore the file from the release"
            ) from e
        for i, r in enumerate(expect_list(records, src.path(rel))):

            def build(r=r, i=i, split=split, rel=rel):
                return make_item(
                    item_id=f"path_vqa:{split}-{i}",
                    dataset="path_vqa",
                    split=split,
                    image_refs=[images.from_source(src, f"split/images/{split}/{as_text(r['image'])}.jpg")],
                    question=r["question"],
                    answer=r["answer"],
                    answer_type="closed" if yes_no(as_text(r["answer"])) else "open",
                    source_ref=f"{rel}#{i}",
                    license=LICENSE,
                )

            collect(out, src.path(rel), str(i), r, build)
    return out


def _row_key(r: dict, i: int) -> str:
    for k in ("id", "qid", "question_id"):
        if r.get(k) not in (None, ""):
            return as_text(r[k])
    return str(i)
