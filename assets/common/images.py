"""Validate and store source images once, content-addressed, with a per-run cache by source path."""

from __future__ import annotations

import io
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from PIL import Image, UnidentifiedImageError

from orchestration.sources import SourceDir
from orchestration.storage import Storage

# Pillow's decompression-bomb guard stays on; truncated files must fail, not load half an image.
Image.MAX_IMAGE_PIXELS = 20_000 * 20_000

FORMAT_EXT = {"JPEG": "jpg", "PNG": "png", "BMP": "bmp", "TIFF": "tif", "GIF": "gif", "WEBP": "webp"}


class ImageProblem(ValueError):
    """An image that cannot be used; the message is the quarantine reason."""


def _truncated(data: bytes, fmt: str) -> bool:
    """True when a JPEG lacks its end-of-image marker or a PNG its IEND chunk (a cut-off file)."""
    tail = data[-64:].rstrip(b"\x00\r\n ")
    if fmt == "JPEG":
        return not tail.endswith(b"\xff\xd9")
    if fmt == "PNG":
        return b"IEND" not in tail
    return False


def check_image(data: bytes, name: str, full: bool = False) -> str:
    """Prove ``data`` is a whole image of a known format; return its file extension.

    The default (fast) check parses the header and verifies the file's end marker, which catches
    non-images, unknown formats and truncated files. ``full=True`` (the ``image_check: full`` run knob of ``vqa_items``)
    also decodes the pixels (JPEG in draft mode, which still reads every entropy-coded block), to
    catch corruption inside the compressed stream as well.
    """
    if not data:
        raise ImageProblem(f"undecodable image: {name} is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                fmt = im.format or ""
                if full:
                    if fmt == "JPEG":
                        im.draft("RGB", (max(1, im.width // 8), max(1, im.height // 8)))
                    im.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombWarning) as e:
        raise ImageProblem(f"undecodable image: {name} ({type(e).__name__}: {e})") from e
    if fmt not in FORMAT_EXT:
        raise ImageProblem(f"unsupported image format: {name} is {fmt or 'unknown'}")
    if _truncated(data, fmt):
        raise ImageProblem(f"undecodable image: {name} is truncated (no end-of-image marker)")
    return FORMAT_EXT[fmt]


@dataclass
class ImageIngestor:
    """Stores each distinct source image once and remembers the outcome per source path."""

    storage: Storage
    full_check: bool = False  # decode every image too (the vqa_items ``image_check: full`` run knob)
    _by_key: dict[str, str | ImageProblem] = field(default_factory=dict)
    stored_ids: set[str] = field(default_factory=set)

    def from_source(self, src: SourceDir, rel: str) -> str:
        """Image id for ``rel`` inside ``src``; raises :class:`ImageProblem` with the reason."""
        key = src.path(rel)
        if key not in self._by_key:
            self._by_key[key] = self._ingest(src, rel)
        return self._result(key)

    def prefetch(self, src: SourceDir, rels: list[str], workers: int | None = None) -> None:
        """Read, check and store the distinct images ``rels`` in parallel threads (I/O, hashing and
        decoding release the GIL); later :meth:`from_source` calls are answered from the cache."""
        todo = sorted({rel for rel in rels if src.path(rel) not in self._by_key})
        if not todo:
            return
        with ThreadPoolExecutor(max_workers=workers or min(8, (os.cpu_count() or 1) * 2)) as pool:
            for rel, out in zip(todo, pool.map(lambda r: self._ingest(src, r), todo), strict=True):
                self._by_key[src.path(rel)] = out

    def _ingest(self, src: SourceDir, rel: str) -> str | ImageProblem:
        try:
            data = src.read_bytes(rel)
        except FileNotFoundError:
            return ImageProblem(f"missing image file: {src.path(rel)}")
        try:
            return self._store(data, src.path(rel))
        except ImageProblem as e:
            return e

    def from_bytes(self, data: bytes | None, name: str) -> str:
        """Image id for bytes embedded in a source file (Parquet image columns); raises
        :class:`ImageProblem` with the reason. Repeated bytes are stored once by their content id."""
        if data is None:
            raise ImageProblem(f"missing image bytes: {name}")
        return self._store(data, name)

    def _store(self, data: bytes, name: str) -> str:
        ext = check_image(data, name, full=self.full_check)
        image_id = self.storage.put_image(data, ext)
        self.stored_ids.add(image_id)
        return image_id

    def _result(self, key: str) -> str:
        out = self._by_key[key]
        if isinstance(out, ImageProblem):
            raise out
        return out
