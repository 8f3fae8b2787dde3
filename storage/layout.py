"""Where content-addressed images live: ``images/<id[:2]>/<id>`` under the storage root (``<id>`` is
``<sha256 hex>.<ext>``, see :func:`storage.root.image_id_for`). The storage root writes and reads images
through it and the training launcher (:class:`training.launch.ImageStore`) reads them through it."""

from __future__ import annotations

IMAGES = "images"


def image_key(image_id: str) -> tuple[str, str]:
    """``(shard folder, file name)`` of an image content id inside the ``images`` folder."""
    return image_id[:2], image_id
