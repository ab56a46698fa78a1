"""Read one SEM image as 8-bit grayscale: 8/16-bit TIFF, PNG, JPEG; RGB is converted to gray."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from sinterlab.errors import SinterlabError


def read_gray8(path: str | Path, percentiles: tuple[float, float] = (0.0, 100.0)) -> np.ndarray:
    """Decode ``path`` to a 2-D uint8 array.

    Colour images become gray (luma); 16-bit and float images are scaled linearly so that the
    given percentiles of their values map to 0 and 255 (the full range by default), which keeps
    the whole dynamic range of a 12- or 16-bit detector before equalization.
    """
    path = Path(path)
    data = np.fromfile(path, dtype=np.uint8) if path.is_file() else None
    if data is None:
        raise SinterlabError(f"{path}: image file not found; check the path")
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if image is None:
        raise SinterlabError(f"{path}: cannot decode the image (corrupt or unsupported format); "
                             "re-export it as TIFF, PNG or JPEG")
    if image.ndim == 3:
        code = cv2.COLOR_BGRA2GRAY if image.shape[2] == 4 else cv2.COLOR_BGR2GRAY
        image = cv2.cvtColor(image, code) if image.shape[2] in (3, 4) else image[..., 0]
    if image.dtype == np.uint8:
        return np.ascontiguousarray(image)
    values = image.astype(np.float64)
    low, high = np.percentile(values, percentiles)
    if high <= low:
        return np.zeros(image.shape, np.uint8)
    scaled = (values - low) * (255.0 / (high - low))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
