"""Validate and store source images once, content-addressed, with a per-run cache by source path.

Images cannot explode: a file above ``max_bytes`` is refused before it is read, and an image whose header
declares more than ``max_pixels`` pixels is refused before any pixel is decoded. Both limits are per call
(Pillow's global ``Image.MAX_IMAGE_PIXELS`` is left at its default; Pillow itself still refuses images
above twice that, about 179 M pixels, whatever ``max_pixels`` says). Paths come through
:class:`SourceDir`, so an image outside the source folder is refused and never read.
"""

from __future__ import annotations

import io
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from PIL import Image, UnidentifiedImageError

from storage.root import Storage
from storage.sources import FileTooLarge, SourceDir, SourceError, UnsafePath

_PILLOW_PIXELS = re.compile(r"Image size \((\d+) pixels\)")

FORMAT_EXT = {"JPEG": "jpg", "PNG": "png", "BMP": "bmp", "TIFF": "tif", "GIF": "gif", "WEBP": "webp"}

DEFAULT_MAX_IMAGE_PIXELS = 50_000_000
"""Largest image accepted, in pixels (width x height) read from the header: 50 M (e.g. 7071 x 7071)."""

DEFAULT_MAX_IMAGE_BYTES = 64 * 1024**2
"""Largest image file accepted: 64 MiB."""


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


def check_image(
    data: bytes,
    name: str,
    full: bool = False,
    max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
    max_bytes: int = DEFAULT_MAX_IMAGE_BYTES,
) -> str:
    """Prove ``data`` is a whole image of a known format within the limits; return its file extension.

    Raises :class:`ImageProblem` whose message names the file and, for a limit, the size and the limit:
    more than ``max_bytes`` bytes ("image file too large"), more than ``max_pixels`` pixels declared in
    the header ("image too large", checked before decoding), not an image, an unknown format, truncated.
    The default (fast) check parses the header and verifies the file's end marker; ``full=True`` also
    decodes the pixels (JPEG in draft mode, which still reads every entropy-coded block), to catch
    corruption inside the compressed stream as well.
    """
    if not data:
        raise ImageProblem(f"undecodable image: {name} is empty")
    if len(data) > max_bytes:
        raise ImageProblem(
            f"image file too large: {name} is {len(data):,} bytes, over the limit of {max_bytes:,} bytes"
        )
    try:
        with Image.open(io.BytesIO(data)) as im:
            fmt = im.format or ""
            width, height = im.size
            if width * height > max_pixels:
                raise ImageProblem(
                    f"image too large: {name} is {width}x{height} = {width * height:,} pixels, "
                    f"over the limit of {max_pixels:,} pixels"
                )
            if full:
                if fmt == "JPEG":
                    im.draft("RGB", (max(1, width // 8), max(1, height // 8)))
                im.load()
    except ImageProblem:
        raise
    except Image.DecompressionBombError as e:  # above Pillow's own hard limit: refused inside Image.open
        found = _PILLOW_PIXELS.search(str(e))
        size = f"{int(found.group(1)):,} pixels" if found else "too many pixels"
        raise ImageProblem(
            f"image too large: {name} is {size}, over the limit of {max_pixels:,} pixels "
            f"(refused by Pillow's decompression-bomb guard)"
        ) from e
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ImageProblem(f"undecodable image: {name} ({type(e).__name__}: {e})") from e
    if fmt not in FORMAT_EXT:
        raise ImageProblem(f"unsupported image format: {name} is {fmt or 'unknown'}")
    if _truncated(data, fmt):
        raise ImageProblem(f"undecodable image: {name} is truncated (no end-of-image marker)")
    return FORMAT_EXT[fmt]


@dataclass
class ImageIngestor:
    """Stores each distinct source image once and remembers the outcome per source path.

    ``full_check`` decodes every image (see :func:`check_image`); ``max_pixels`` and ``max_bytes`` are the
    per-image limits. Every failure (missing, unreadable, outside the source folder, too large, not an
    image) is an :class:`ImageProblem` whose message is the quarantine reason.
    """

    storage: Storage
    full_check: bool = False
    max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
    max_bytes: int = DEFAULT_MAX_IMAGE_BYTES
    _by_key: dict[tuple[str, str], str | ImageProblem] = field(default_factory=dict)
    stored_ids: set[str] = field(default_factory=set)

    def from_source(self, src: SourceDir, rel: str) -> str:
        """Image id for ``rel`` inside ``src``; raises :class:`ImageProblem` with the reason."""
        key = (src.root, rel)
        if key not in self._by_key:
            self._by_key[key] = self._ingest(src, rel)
        return self._result(key)

    def prefetch(self, src: SourceDir, rels: list[str], workers: int | None = None) -> None:
        """Read, check and store the distinct images ``rels`` in parallel threads (I/O, hashing and
        decoding release the GIL); later :meth:`from_source` calls are answered from the cache."""
        todo = sorted({rel for rel in rels if (src.root, rel) not in self._by_key})
        if not todo:
            return
        with ThreadPoolExecutor(max_workers=workers or min(8, (os.cpu_count() or 1) * 2)) as pool:
            for rel, out in zip(todo, pool.map(lambda r: self._ingest(src, r), todo), strict=True):
                self._by_key[(src.root, rel)] = out

    def _ingest(self, src: SourceDir, rel: str) -> str | ImageProblem:
        try:
            name = src.path(rel)
            data = src.read_bytes(rel, max_bytes=self.max_bytes)
            return self._store(data, name)
        except ImageProblem as e:
            return e
        except UnsafePath as e:
            return ImageProblem(
                f"unsafe image path: {rel!r} ({e.problem.removeprefix('unsafe path: ')}); not read"
            )
        except FileTooLarge as e:
            return ImageProblem(f"image file too large: {e.path} is over the limit of {e.limit:,} bytes")
        except FileNotFoundError:
            return ImageProblem(f"missing image file: {src.path(rel)}")
        except (SourceError, OSError) as e:
            return ImageProblem(f"unreadable image file: {rel!r} ({type(e).__name__}: {e})")

    def from_bytes(self, data: bytes | None, name: str) -> str:
        """Image id for bytes embedded in a source file (Parquet image columns); raises
        :class:`ImageProblem` with the reason. Repeated bytes are stored once by their content id."""
        if data is None:
            raise ImageProblem(f"missing image bytes: {name}")
        return self._store(data, name)

    def _store(self, data: bytes, name: str) -> str:
        ext = check_image(data, name, self.full_check, self.max_pixels, self.max_bytes)
        image_id = self.storage.put_image(data, ext)
        self.stored_ids.add(image_id)
        return image_id

    def _result(self, key: tuple[str, str]) -> str:
        out = self._by_key[key]
        if isinstance(out, ImageProblem):
            raise out
        return out
