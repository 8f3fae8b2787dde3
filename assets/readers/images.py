"""Validate and store source images once, content-addressed, with a per-run cache by source path."""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass, field

from PIL import Image, UnidentifiedImageError

from orchestration.storage import Storage

from .source import SourceDir

# Pillow's decompression-bomb guard stays on; truncated files must fail, not load half an image.
Image.MAX_IMAGE_PIXELS = 20_000 * 20_000

FORMAT_EXT = {"JPEG": "jpg", "PNG": "png", "BMP": "bmp", "TIFF": "tif", "GIF": "gif", "WEBP": "webp"}


class ImageProblem(ValueError):
    """An image that cannot be used; the message is the quarantine reason."""


def check_image(data: bytes, name: str) -> str:
    """Decode ``data`` far enough to prove it is a whole image; return its file extension.

    JPEGs are decoded in draft mode (1/8 scale), which still reads every entropy-coded block, so a
    truncated or corrupt file fails here at a fraction of a full decode's cost.
    """
    if not data:
        raise ImageProblem(f"undecodable image: {name} is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                fmt = im.format or ""
                if fmt == "JPEG":
                    im.draft("RGB", (max(1, im.width // 8), max(1, im.height // 8)))
                im.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombWarning) as e:
        raise ImageProblem(f"undecodable image: {name} ({type(e).__name__}: {e})") from e
    if fmt not in FORMAT_EXT:
        raise ImageProblem(f"unsupported image format: {name} is {fmt or 'unknown'}")
    return FORMAT_EXT[fmt]


@dataclass
class ImageIngestor:
    """Stores each distinct source image once and remembers the outcome per source path."""

    storage: Storage
    _by_key: dict[str, str | ImageProblem] = field(default_factory=dict)
    stored_ids: set[str] = field(default_factory=set)

    def from_source(self, src: SourceDir, rel: str) -> str:
        """Image id for ``rel`` inside ``src``; raises :class:`ImageProblem` with the reason."""
        key = src.path(rel)
        if key not in self._by_key:
            try:
                if not src.exists(rel):
                    raise ImageProblem(f"missing image file: {key}")
                self._by_key[key] = self._store(src.read_bytes(rel), key)
            except ImageProblem as e:
                self._by_key[key] = e
        return self._result(key)

    def from_bytes(self, data: bytes | None, name: str) -> str:
        """Image id for bytes embedded in a source file (Parquet image columns)."""
        key = f"bytes:{name}:{hash(data)}"
        if key not in self._by_key:
            try:
                if data is None:
                    raise ImageProblem(f"missing image bytes: {name}")
                self._by_key[key] = self._store(data, name)
            except ImageProblem as e:
                self._by_key[key] = e
        return self._result(key)

    def _store(self, data: bytes, name: str) -> str:
        ext = check_image(data, name)
        image_id = self.storage.put_image(data, ext)
        self.stored_ids.add(image_id)
        return image_id

    def _result(self, key: str) -> str:
        out = self._by_key[key]
        if isinstance(out, ImageProblem):
            raise out
        return out
