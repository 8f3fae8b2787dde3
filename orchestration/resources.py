"""Dagster resources: configured from the environment so that tests and production differ only there."""

import os
from functools import lru_cache

from dagster import ConfigurableResource
from pydantic import Field

from retrieval.embedders import OFFLINE_IMAGE_ARCH, OFFLINE_TEXT_MODEL, ImageEmbedder, TextEmbedder

from .profiles import get_profile
from .sources import SourceDir
from .storage import S3Settings, Storage, default_storage_root


class StorageResource(ConfigurableResource):
    """The one storage root: a local folder or ``s3://bucket/prefix`` (``MEDRWR_STORAGE_ROOT``)."""

    root: str | None = Field(
        default=None,
        description="local folder or s3://bucket/prefix; unset: MEDRWR_STORAGE_ROOT, else <project>/.medrwr/storage",
    )
    s3_endpoint_url: str | None = Field(
        default=None, description="S3 API endpoint (else MEDRWR_S3_ENDPOINT_URL / AWS_ENDPOINT_URL)"
    )

    def get(self) -> Storage:
        s3 = S3Settings.from_env()
        if self.s3_endpoint_url:
            s3 = S3Settings(self.s3_endpoint_url, s3.region, s3.access_key_id, s3.secret_access_key)
        return Storage(root=self.root or default_storage_root(), s3=s3)


class SourcesResource(ConfigurableResource):
    """Where the released dataset files are read from, by profile (``MEDRWR_PROFILE``)."""

    profile: str | None = Field(default=None, description="smoke (default) or full")

    def source(self, dataset: str) -> SourceDir:
        return SourceDir(get_profile(self.profile).source_uri(dataset))



@lru_cache(maxsize=4)
def _text(model_id: str, device: str | None, batch_size: int) -> TextEmbedder:
    return TextEmbedder(model_id, device=device, batch_size=batch_size)


@lru_cache(maxsize=4)
def _image(model_id: str, device: str | None) -> ImageEmbedder:
    return ImageEmbedder(model_id, device=device)


class KnowledgeModelsResource(ConfigurableResource):
    """Embedders for the KB. Defaults run offline (MiniLM; open_clip ViT-S-32 with random weights);
    production sets ``MEDRWR_TEXT_EMBEDDER=BAAI/bge-m3`` (or a path) and
    ``MEDRWR_IMAGE_EMBEDDER=hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224``."""

    text_model: str = Field(default_factory=lambda: os.environ.get("MEDRWR_TEXT_EMBEDDER") or OFFLINE_TEXT_MODEL, description="sentence-transformers hub id or path")
    image_model: str = Field(default_factory=lambda: os.environ.get("MEDRWR_IMAGE_EMBEDDER") or OFFLINE_IMAGE_ARCH, description="open_clip architecture or hf-hub: id")
    device: str | None = Field(default=None, description="cuda / cpu; auto when unset")
    batch_size: int = Field(default=64, description="text embedding batch size")
    vector_index_min_rows: int = Field(default=50_000, description="below this, exact (flat) search")

    def text_embedder(self) -> TextEmbedder:
        return _text(self.text_model, self.device, self.batch_size)

    def image_embedder(self) -> ImageEmbedder:
        return _image(self.image_model, self.device)
