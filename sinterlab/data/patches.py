"""Random patches of one micrograph (paper, Figure 3e-f), reproducible patch by patch.

Each patch draws its position, flip and angle from a generator seeded by (patch seed, image
content hash, patch index), so patch *i* of an image is the same whatever else changes. The
angle is uniform in [-rotation, rotation] degrees (resampled), or with ``rotation="dihedral"`` a
quarter turn (0, 90, 180 or 270 degrees: with the flip, the eight lossless symmetries of a
square). To
rotate without black corners, the patch is the centre of a square large enough to contain it
rotated: the square is sliced out (and mirrored), one affine warp rotates it about its centre
(albumentations' rotation matrix and border), and its centre is kept; then an area resize to
the backbone's input, and one batched normalization with the backbone's mean/std for all
patches of the image (gray -> 3 channels), in float32 exactly as albumentations' Normalize.
The patches are bit-identical to the albumentations pipeline run per patch (tested), at about
half its time, so cached embeddings stay valid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from sinterlab.errors import SinterlabError

#: columns of the per-patch parameter array, in order
X0, Y0, SIDE, FLIP, ANGLE = "x0", "y0", "side", "flip", "angle"
PARAM_COLUMNS = (X0, Y0, SIDE, FLIP, ANGLE)
#: ``preprocess.patches.rotation`` for quarter turns only (no interpolation)
DIHEDRAL = "dihedral"


def rotation_setting(value) -> float | str:
    """``preprocess.patches.rotation``: an angle in degrees or ``dihedral``."""
    if isinstance(value, str) and value.strip().lower() == DIHEDRAL:
        return DIHEDRAL
    try:
        return float(value)
    except (TypeError, ValueError):
        raise SinterlabError(f"preprocess.patches.rotation={value!r}: give an angle in degrees "
                             f"(e.g. 180) or {DIHEDRAL} (quarter turns)") from None


@dataclass(frozen=True)
class PatchSpec:
    per_image: int
    size: int
    output_size: int
    hflip: bool
    rotation: float | str  # degrees, or DIHEDRAL
    seed: int


def patch_side(size: int, angle: float) -> int:
    """Side of the axis-aligned square that holds a ``size`` square rotated by ``angle``."""
    a = math.radians(angle)
    return min(math.ceil(size * (abs(math.cos(a)) + abs(math.sin(a))) - 1e-9),
               math.ceil(size * math.sqrt(2)))


class PatchSampler:
    """Cuts ``spec.per_image`` normalized patch tensors out of an equalized uint8 micrograph."""

    def __init__(self, spec: PatchSpec, mean: tuple[float, ...], std: tuple[float, ...]):
        self.spec = spec
        # (x - 255 mean) * 1 / (255 std) in float32: albumentations' Normalize, to the bit
        self.shift = torch.tensor(mean, dtype=torch.float32)[:, None, None] * 255
        self.scale = 1 / (torch.tensor(std, dtype=torch.float32)[:, None, None] * 255)

    def params(self, height: int, width: int, image_key: str) -> np.ndarray:
        """(per_image, 5) array of x0, y0, side, flip, angle in micrograph pixels."""
        spec = self.spec
        key = int(image_key[:16], 16)
        rows = []
        for index in range(spec.per_image):
            rng = np.random.default_rng([spec.seed, key, index])
            if spec.rotation == DIHEDRAL:
                angle = float(90 * rng.integers(-1, 3))  # -90, 0, 90, 180: exact turns
            else:
                angle = float(rng.uniform(-spec.rotation, spec.rotation)) if spec.rotation else 0.0
            flip = bool(spec.hflip and rng.random() < 0.5)
            side = patch_side(spec.size, angle)
            if side > min(height, width):
                raise SinterlabError(
                    f"a {width}x{height} micrograph (after crop) is too small for "
                    f"{spec.size}px patches rotated up to {spec.rotation} deg (needs {side}px); "
                    "lower preprocess.patches.size or preprocess.patches.rotation")
            x0 = int(rng.integers(0, width - side + 1))
            y0 = int(rng.integers(0, height - side + 1))
            rows.append((x0, y0, side, float(flip), angle))
        return np.asarray(rows, dtype=np.float64).reshape(-1, len(PARAM_COLUMNS))

    @staticmethod
    def rotation(side: int, angle: float) -> np.ndarray:
        """Rotation of a ``side`` square about its centre by ``angle`` degrees, as
        albumentations' Rotate computes it (imported here: its package takes ~0.5 s to load,
        for this one function)."""
        from albumentations.augmentations.geometric import functional as fgeometric

        return fgeometric.create_affine_transformation_matrix(
            {"x": 0, "y": 0}, {"x": 0, "y": 0}, {"x": 1, "y": 1}, angle,
            fgeometric.center((side, side)))

    def cut(self, image: np.ndarray, params: np.ndarray) -> torch.Tensor:
        """Patch tensors (n, 3, output_size, output_size) for the given parameter rows."""
        size, out = self.spec.size, self.spec.output_size
        gray = np.empty((len(params), out, out), np.uint8)
        for i, (x0, y0, side, flip, angle) in enumerate(params):
            x0, y0, side = int(x0), int(y0), int(side)
            square = image[y0:y0 + side, x0:x0 + side]
            square = np.ascontiguousarray(square[:, ::-1] if flip else square)
            if angle:  # the one resampling step; the square's own border is reflected
                square = cv2.warpAffine(square, self.rotation(side, angle)[:2], (side, side),
                                        flags=cv2.INTER_LINEAR,
                                        borderMode=cv2.BORDER_REFLECT_101)
            c = (side - size) // 2
            patch = square[c:c + size, c:c + size]
            gray[i] = patch if size == out else cv2.resize(
                np.ascontiguousarray(patch), (out, out), interpolation=cv2.INTER_AREA)
        x = torch.from_numpy(gray)[:, None].float()
        return ((x - self.shift) * self.scale).contiguous()


@dataclass(frozen=True)
class GridSpec(PatchSpec):
    """Patches on a regular grid, ``stride`` pixels apart, neither flipped nor rotated: the
    layout of prediction maps, reproducible and covering the whole micrograph."""

    stride: int = 0


class GridSampler(PatchSampler):
    """Cuts the patches of a :class:`GridSpec` (the last row and column touch the far edges)."""

    def params(self, height: int, width: int, image_key: str) -> np.ndarray:
        size, stride = self.spec.size, self.spec.stride
        if size > min(height, width):
            raise SinterlabError(f"a {width}x{height} micrograph (after crop) is too small for "
                                 f"the run's {size}px patches; map images at least {size}px "
                                 "wide and high below the data bar")

        def starts(extent: int) -> list[int]:
            out = list(range(0, extent - size + 1, stride))
            return out if out[-1] == extent - size else [*out, extent - size]

        rows = [(x, y, size, 0.0, 0.0) for y in starts(height) for x in starts(width)]
        return np.asarray(rows, dtype=np.float64)
