"""Shared knowledge-base fixtures: the real offline MiniLM embedder and its chunker, loaded once."""

import pytest

from retrieval.chunking import TokenChunker
from retrieval.embedders import TextEmbedder


@pytest.fixture(scope="session")
def embedder() -> TextEmbedder:
    return TextEmbedder()


@pytest.fixture(scope="session")
def chunker(embedder) -> TokenChunker:
    return TokenChunker.for_embedder(embedder)
