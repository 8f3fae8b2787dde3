"""Fixtures for the evaluation-run tests: real sample items in a real Storage, a real text KB (LanceDB +
MiniLM), a real CDIR image index (LanceDB + open_clip ViT-S-32) and the tiny Qwen2.5-VL, each built once."""

from __future__ import annotations

import io

import polars as pl
import pytest

from assets.common.profiles import SAMPLE_DATA_DIR
from tests.training.helpers import tagged_text_kb

PASSAGES = [
    (
        "kb:pneumonia",
        "Pneumonia",
        "Pneumonia is an infection of the lung; the chest x-ray shows consolidation.",
    ),
    ("kb:cirrhosis", "Cirrhosis", "Cirrhosis is scarring of the liver."),
    (
        "kb:cardiomegaly",
        "Cardiomegaly",
        "Cardiomegaly is an enlarged heart (cardiothoracic ratio above 0.5).",
    ),
    ("kb:asthma", "Asthma", "Asthma narrows the airways of the lung."),
    ("kb:stroke", "Stroke", "An ischemic stroke appears hypodense on CT of the brain after some hours."),
    ("kb:effusion", "Pleural effusion", "A pleural effusion blunts the costophrenic angle on a chest x-ray."),
]


@pytest.fixture(scope="session")
def eval_storage(tmp_path_factory):
    from storage.root import Storage

    return Storage(root=str(tmp_path_factory.mktemp("eval_storage")))


@pytest.fixture(scope="session")
def image_loader(eval_storage):
    from PIL import Image

    def load(image_id: str):
        return Image.open(io.BytesIO(eval_storage.get_image(image_id))).convert("RGB")

    return load


@pytest.fixture(scope="session")
def vqa_frame(eval_storage) -> pl.DataFrame:
    """Real ``vqa_items`` rows of the bundled SLAKE and VQA-RAD samples (images stored in
    ``eval_storage``)."""
    from assets.common.images import ImageIngestor
    from assets.ingest.vqa import read_vqa
    from storage.sources import SourceDir

    ingest = ImageIngestor(eval_storage)
    frames = [read_vqa(ds, SourceDir(str(SAMPLE_DATA_DIR / ds)), ingest)[0] for ds in ("slake", "vqa_rad")]
    return pl.concat(frames)


@pytest.fixture(scope="session")
def text_qa_frame() -> pl.DataFrame:
    """Real ``text_qa_items`` rows of the bundled MedQA and PubMedQA samples."""
    from assets.ingest.text_qa import read_text_qa
    from storage.sources import SourceDir

    return pl.concat(
        [
            read_text_qa(ds, SourceDir(str(SAMPLE_DATA_DIR / sub)))[0]
            for ds, sub in (("medqa", "medqa_us"), ("pubmedqa", "pubmedqa"))
        ]
    )


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    from training.tiny_model import build_tiny_model

    out = tmp_path_factory.mktemp("tiny_policy_eval")
    build_tiny_model(out, seed=0)
    return out


@pytest.fixture
def policy(tiny_model_dir):
    from training.tiny_model import load_policy

    return load_policy(str(tiny_model_dir))


@pytest.fixture(scope="session")
def text_embedder():
    from retrieval.embedders import TextEmbedder

    return TextEmbedder()


@pytest.fixture(scope="session")
def kb(tmp_path_factory, text_embedder):
    """A real text KB (MiniLM vectors + full-text index) tagged ``run-test``: ``(uri, tag)``."""
    return tagged_text_kb(tmp_path_factory.mktemp("eval_kb"), PASSAGES, text_embedder)


@pytest.fixture
def retriever(kb, text_embedder):
    from retrieval.search import Retriever
    from retrieval.store import KBLocation

    return Retriever(KBLocation(kb[0]), text_embedder, version=kb[1])


@pytest.fixture(scope="session")
def image_embedder():
    from retrieval.embedders import ImageEmbedder

    return ImageEmbedder()  # offline ViT-S-32, seeded random weights


@pytest.fixture(scope="session")
def image_index(tmp_path_factory, vqa_frame, eval_storage, image_embedder):
    """A real CDIR image index over the training images of the VQA-RAD sample (24 cases), tagged
    ``run-test``: ``(uri, tag, cases)``. VQA-RAD's test images are also training images (same bytes), so
    this index holds the query images of VQA-RAD test items: exactly the leak CDIR must exclude."""
    from assets.knowledge.image_cases import image_cases_from_vqa
    from retrieval.store import KBLocation, sync_table

    # evaluation_refs={}: deliberately *without* the KB's evaluation-image exclusion, so the index holds the
    # query images and the evaluation loop's own guard is what the CDIR tests exercise
    cases, _ = image_cases_from_vqa(vqa_frame, datasets=("vqa_rad",), evaluation_refs={})
    root = tmp_path_factory.mktemp("eval_image_kb")
    report = sync_table(
        KBLocation(str(root)),
        "kb_image",
        cases.drop("item_ids"),
        lambda rows: image_embedder.embed([eval_storage.get_image(r) for r in rows["image_ref"]]),
        image_embedder.identity(),
        fts_column="description",
        run_id="test",
    )
    return str(root), report.tag, cases


@pytest.fixture
def image_retriever(image_index, image_embedder):
    from retrieval.search import ImageRetriever
    from retrieval.store import KBLocation

    return ImageRetriever(KBLocation(image_index[0]), image_embedder, version=image_index[1])
