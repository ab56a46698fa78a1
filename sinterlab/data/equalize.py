"""Histogram equalization (paper, Figure 3d): global, CLAHE, or none."""

from __future__ import annotations

import cv2
import numpy as np

from sinterlab.errors import SinterlabError

METHODS = ("global", "clahe", "none")


def equalize(image: np.ndarray, method: str, clahe_clip_limit: float = 2.0,
             clahe_tile_grid: tuple[int, int] = (8, 8)) -> np.ndarray:
    """Spread the grey levels of a uint8 image so that texture, not exposure, carries signal."""
    if method == "global":
        return cv2.equalizeHist(image)
    if method == "clahe":
        clahe = cv2.createCLAHE(clipLimit=float(clahe_clip_limit),
                                tileGridSize=tuple(int(t) for t in clahe_tile_grid))
        return clahe.apply(image)
    if method == "none":
        return image
    raise SinterlabError(f"preprocess.equalize.method={method!r} is unknown; use one of "
                         f"{list(METHODS)}")
