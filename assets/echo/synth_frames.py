"""Rendered synthetic echo frames: a speckled fan-shaped sector with a beating ellipsoidal left ventricle,
and burned-in text in the bands above and below the sector (as scanners do)."""

from __future__ import annotations

import math
from typing import Protocol

import numpy as np
from PIL import Image, ImageDraw


class FrameOptions(Protocol):
    """What rendering reads of :class:`assets.echo.synth.SynthOptions`."""

    frames: int
    size: int


TEXT_BAND = 14  # pixel rows above and below the sector where scanners burn in text


def sector_mask(size: int, half_angle_deg: float = 35.0) -> np.ndarray:
    """Boolean fan: apex at the top centre below the text band, ending above the bottom text band."""
    yy, xx = np.mgrid[0:size, 0:size]
    dx, dy = xx - (size - 1) / 2, yy - TEXT_BAND
    r = np.hypot(dx, dy)
    ang = np.degrees(np.arctan2(np.abs(dx), np.maximum(dy, 1e-6)))
    return (r <= size - 2 * TEXT_BAND) & (ang <= half_angle_deg) & (dy >= 0)


def sector_box(size: int) -> tuple[int, int, int, int]:
    """Bounding box (x0, y0, x1, y1 inclusive) of :func:`sector_mask`."""
    ys, xs = np.nonzero(sector_mask(size))
    return int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())


def render_frames(
    labels: dict, opts: FrameOptions, rng: np.random.Generator, burned_text: str
) -> tuple[np.ndarray, int, int]:
    """RGB uint8 frames ``(frames, size, size, 3)``; returns them with the ED and ES frame indices."""
    n, s = opts.frames, opts.size
    mask = sector_mask(s)
    speckle = rng.gamma(2.0, 30.0, size=(s, s)).clip(0, 255)
    yy, xx = np.mgrid[0:s, 0:s]
    cy, cx = TEXT_BAND + 0.45 * (s - 2 * TEXT_BAND), s / 2
    # Axes at end-diastole; other frames scale both axes by (V/EDV)^(1/3) of a cosine volume curve.
    a_ed, b_ed = 0.30 * s, 0.16 * s
    ed, es = 0, n // 2 - 1 if n > 3 else 1
    frames = np.zeros((n, s, s, 3), dtype=np.uint8)
    text_layer = Image.new("L", (s, s), 0)
    ImageDraw.Draw(text_layer).text((2, 2), burned_text, fill=255)
    ImageDraw.Draw(text_layer).text((2, s - TEXT_BAND + 2), "ECHO 30Hz", fill=255)
    text = np.asarray(text_layer) > 0
    text &= ~mask  # burned-in annotations live outside the imaging sector, as on real scanners
    for i in range(n):
        phase = (1 - math.cos(2 * math.pi * (i - ed) / (2 * (es - ed)))) / 2  # 0 at ED, 1 at ES
        vol = labels["edv_ml"] - phase * (labels["edv_ml"] - labels["esv_ml"])
        k = (vol / labels["edv_ml"]) ** (1 / 3)
        a, b = a_ed * k, b_ed * k
        d = ((yy - cy) / a) ** 2 + ((xx - cx) / b) ** 2
        wall = (d > 1) & (d <= 1.6)
        img = 40 + speckle * 0.5  # myocardium-like tissue never goes black...
        img = np.where(wall, np.minimum(255, speckle + 120), img)
        img = np.where(d <= 1, speckle * 0.03, img)  # ...the blood pool nearly does
        grey = np.where(mask, img, 0).astype(np.uint8)
        grey[text] = 255
        frames[i] = grey[..., None]
        # a little colour so RGB/YBR paths carry real chroma: orange tint on the wall
        frames[i, ..., 2] = np.where(wall & mask, grey // 2, grey)
    return frames, ed, es
