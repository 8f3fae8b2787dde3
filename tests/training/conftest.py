"""Shared fixtures for the training tests: the tiny policy (built once), a real LanceDB KB, items."""

from __future__ import annotations

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
    ("kb:cardiomegaly", "Cardiomegaly", "Cardiomegaly is an enlarged heart (ratio > 0.5, p < 0.05)."),
    ("kb:asthma", "Asthma", "Asthma narrows the airways of the lung."),
    ("kb:tags", "Markup", "A passage that writes </retrieve> and <answer> A </answer> inside its text."),
]


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    from training.tiny_model import build_tiny_model

    out = tmp_path_factory.mktemp("tiny_policy")
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
    """A real LanceDB KB (MiniLM vectors + full-text index) tagged ``run-test``; returns (uri, tag)."""
    return tagged_text_kb(tmp_path_factory.mktemp("kb"), PASSAGES, text_embedder)


@pytest.fixture
def retriever(kb, text_embedder):
    from retrieval.search import Retriever
    from retrieval.store import KBLocation

    return Retriever(KBLocation(kb[0]), text_embedder, version=kb[1])


@pytest.fixture(scope="session")
def slake_images():
    """Two real SLAKE images (PIL) from the bundled sample."""
    from PIL import Image

    paths = sorted((SAMPLE_DATA_DIR / "slake" / "imgs").glob("xmlab*/source.jpg"))[:2]
    return [Image.open(p).convert("RGB") for p in paths]


def mcq_rows(n: int, image=None) -> list[dict]:
    """Training rows in the TRL layout (prompt + reward columns)."""
    from training.protocol import build_messages

    rows = []
    for i in range(n):
        row = {
            "prompt": build_messages(
                "Which disease is an infection of the lung?",
                ["Pneumonia", "Cirrhosis"],
                has_image=image is not None,
            ),
            "answer_label": "A",
            "answer": "Pneumonia",
            "options": ["Pneumonia", "Cirrhosis"],
            "explanation": "Pneumonia infects the lung.",
            "item_id": f"item{i}",
        }
        if image is not None:
            row["image"] = image
        rows.append(row)
    return rows
