"""One SEM image from file to the equalized micrograph the patches are cut from: read, crop the
data bar, resample to the run's physical pixel size (when set), equalize."""

from __future__ import annotations

from pathlib import Path

import cv2
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


def scaled_size(height: int, width: int, scale: float) -> tuple[int, int]:
    """(height, width) of a micrograph resampled by ``scale`` (its pixel size / the run's)."""
    return max(1, round(height * scale)), max(1, round(width * scale))


def resample(micrograph: np.ndarray, scale: float) -> np.ndarray:
    """Resample to the run's pixel size: area averaging when shrinking (no aliasing of the
    finer image's texture), cubic when enlarging."""
    if scale == 1.0:
        return micrograph
    height, width = scaled_size(*micrograph.shape, scale)
    method = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    return cv2.resize(micrograph, (width, height), interpolation=method)


def preprocess_image(path: str | Path, cfg, scale: float = 1.0,
                     equalized: bool = True) -> tuple[np.ndarray, CropBox]:
    """Read, crop the data bar, resample by ``scale`` and (unless ``equalized=False``, e.g. to
    segment the detector's own grey levels) equalize, as set by ``cfg`` (``preprocess``)."""
    image, box = read_and_locate(path, cfg)
    micrograph = resample(box.apply(image), scale)
    if not equalized:
        return micrograph, box
    eq = cfg.equalize
    return equalize(micrograph, eq.method, eq.clahe_clip_limit, tuple(eq.clahe_tile_grid)), box
