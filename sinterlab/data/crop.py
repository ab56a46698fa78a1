"""Crop the microscope's data bar (paper, Figure 3c): automatic detection or fixed margins.

SEM data bars are bands at the bottom whose rows are mostly one flat background value behind
text and a scale bar, while micrograph rows are textured and noisy. Each row in the bottom
search region is called *flat* when most of its pixels sit near the row's most common value;
the bar's top edge is the row that best separates textured rows above from flat rows below
(fewest misfits), so a few text-heavy rows inside the bar or a flat patch in the micrograph do
not move it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from sinterlab.errors import SinterlabError

MODES = ("auto", "manual", "none")


@dataclass(frozen=True)
class CropBox:
    """Kept region in source pixels: rows ``top:bottom`` and columns ``left:right``."""

    top: int
    bottom: int
    left: int
    right: int

    def apply(self, image: np.ndarray) -> np.ndarray:
        return image[self.top:self.bottom, self.left:self.right]

    @property
    def height(self) -> int:
        return self.bottom - self.top

    @property
    def width(self) -> int:
        return self.right - self.left

    def as_columns(self) -> dict[str, int]:
        return {f"crop_{k}": int(v) for k, v in asdict(self).items()}


def flat_row_fraction(rows: np.ndarray, tolerance: int) -> np.ndarray:
    """Per row, the fraction of pixels within ``tolerance`` grey levels of the row's mode."""
    n, width = rows.shape
    flat_index = (np.arange(n)[:, None] * 256 + rows.astype(np.int64)).ravel()
    hist = np.bincount(flat_index, minlength=n * 256).reshape(n, 256)
    window = 2 * int(tolerance) + 1
    padded = np.pad(np.cumsum(hist, axis=1), ((0, 0), (window, 0)))
    near_mode = padded[:, window:] - padded[:, :-window]
    return near_mode.max(axis=1) / width


def detect_bar_top(image: np.ndarray, search_fraction: float, flat_fraction: float,
                   tolerance: int, min_height: int) -> int:
    """Row index where the bottom data bar starts (``image.shape[0]`` when there is none)."""
    height = image.shape[0]
    start = height - max(1, int(round(search_fraction * height)))
    flat = flat_row_fraction(image[start:], tolerance) >= flat_fraction
    if flat.all() and (flat_row_fraction(image[:start], tolerance) >= flat_fraction).all():
        return height  # a blank image: nothing textured for a bar to sit under
    # cost(r) = flat rows above r + textured rows from r down; r = len(flat) means no bar
    flat_above = np.concatenate([[0], np.cumsum(flat)])
    textured_below = np.concatenate([np.cumsum((~flat)[::-1])[::-1], [0]])
    cost = flat_above + textured_below
    best = int(np.flatnonzero(cost == cost.min())[-1])  # ties: the smaller bar
    top = start + best
    return height if height - top < min_height else top


def _margin(value: float, side: int, key: str) -> int:
    if value < 0:
        raise SinterlabError(f"preprocess.crop.{key}={value} is negative; use pixels (>= 1) or "
                             "a fraction of the side (< 1)")
    return int(round(value * side)) if value < 1 else int(value)


def crop_box(image: np.ndarray, mode: str, top: float = 0, bottom: float = 0, left: float = 0,
             right: float = 0, auto: dict | None = None) -> CropBox:
    """The region to keep: margins (pixels or fractions) and, in ``auto`` mode, the data bar."""
    if mode not in MODES:
        raise SinterlabError(f"preprocess.crop.mode={mode!r} is unknown; use one of "
                             f"{list(MODES)}")
    height, width = image.shape[:2]
    if mode == "none":
        return CropBox(0, height, 0, width)
    box_bottom = height - _margin(bottom, height, "bottom")
    if mode == "auto":
        box_bottom = min(box_bottom, detect_bar_top(image, **(auto or {})))
    box = CropBox(_margin(top, height, "top"), box_bottom, _margin(left, width, "left"),
                  width - _margin(right, width, "right"))
    if box.height <= 0 or box.width <= 0:
        raise SinterlabError(f"preprocess.crop margins leave nothing of a {width}x{height} "
                             "image; make them smaller")
    return box
