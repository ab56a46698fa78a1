"""One SEM image from file to the equalized micrograph the patches are cut from."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sinterlab.data.crop import CropBox, crop_box
from sinterlab.data.equalize import equalize
from sinterlab.data.images import read_gray8


def read_and_locate(path: str | Path, cfg) -> tuple[np.ndarray, CropBox]:
    """The 8-bit image and the region to keep (its data bar and margins cropped)."""
    image = read_gray8(path, tuple(cfg.read.percentiles))
    crop = cfg.crop
    return image, crop_box(image, crop.mode, crop.top, crop.bottom, crop.left, crop.right,
                           dict(crop.auto))


def preprocess_image(path: str | Path, cfg) -> tuple[np.ndarray, CropBox]:
    """Read, crop the data bar and equalize, as set by ``cfg`` (the ``preprocess`` config)."""
    image, box = read_and_locate(path, cfg)
    eq = cfg.equalize
    return equalize(box.apply(image), eq.method, eq.clahe_clip_limit,
                    tuple(eq.clahe_tile_grid)), box
