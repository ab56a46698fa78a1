"""Read one SEM image as 8-bit grayscale: 8/16-bit TIFF, PNG, JPEG; RGB is converted to gray."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import tifffile

from sinterlab.errors import SinterlabError

# OpenCV warns on every TIFF tag it does not know, such as the instrument metadata FEI and Zeiss
# microscopes write (read by sinterlab.data.metadata instead): one stderr line per image
cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)


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


def full_size_pages(path: str | Path) -> int:
    """Full-resolution pages of a TIFF (thumbnails and reduced copies not counted); 1 for other
    formats. Only the first page is ever read."""
    if Path(path).suffix.lower() not in (".tif", ".tiff"):
        return 1
    try:
        with tifffile.TiffFile(path) as tif:
            return sum(not page.is_reduced for page in tif.pages) or 1
    except Exception:  # a TIFF tifffile cannot parse: OpenCV decided whether it is readable
        return 1


def image_warnings(path: str | Path, micrograph: np.ndarray, checks) -> list[str]:
    """What makes an 8-bit micrograph (data bar cropped) suspect without making it unusable:
    blank, mostly saturated, or one page of a multi-page TIFF. ``checks``: thresholds from
    ``preprocess.checks`` (None: no checks, e.g. a run configured before they existed)."""
    if checks is None:
        return []
    out = []
    low, high = int(micrograph.min()), int(micrograph.max())
    saturated = float(np.mean((micrograph == 0) | (micrograph == 255)))
    if high - low <= int(checks.blank_range):
        out.append(f"{path}: blank (grey levels {low}-{high} only); check the file and the "
                   "detector's exposure")
    elif saturated >= float(checks.saturated_fraction):
        out.append(f"{path}: {saturated:.0%} of its pixels are pure black or white "
                   "(saturated); check brightness and contrast")
    pages = full_size_pages(path)
    if pages > 1:
        out.append(f"{path}: a TIFF of {pages} full-size pages; only page 1 is used (save each "
                   "detector or frame as its own file to use the others)")
    return out
