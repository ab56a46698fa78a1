"""Random patches of one micrograph (paper, Figure 3e-f), reproducible patch by patch.

Each patch draws its position, flip and angle from a generator seeded by (patch seed, image
content hash, patch index), so patch *i* of an image is the same whatever else changes. To
rotate without black corners, a square large enough to contain the rotated patch is cut,
flipped, rotated about its centre, and its centre kept. Then resize to the backbone's input,
gray -> 3 channels, normalize with the backbone's mean/std, and convert to a tensor, with
albumentations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import albumentations as A
import cv2
import numpy as np
import torch
from albumentations.pytorch import ToTensorV2

from sinterlab.errors import SinterlabError

#: columns of the per-patch parameter array, in order
PARAM_COLUMNS = ("x0", "y0", "side", "flip", "angle")


@dataclass(frozen=True)
class PatchSpec:
    per_image: int
    size: int
    output_size: int
    hflip: bool
    rotation: float
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
        self.finish = A.Compose([
            A.CenterCrop(spec.size, spec.size),
            A.Resize(spec.output_size, spec.output_size, interpolation=cv2.INTER_AREA),
            A.ToRGB(num_output_channels=3),
            A.Normalize(mean=tuple(mean), std=tuple(std), max_pixel_value=255.0),
            ToTensorV2(),
        ])

    def params(self, height: int, width: int, image_key: str) -> np.ndarray:
        """(per_image, 5) array of x0, y0, side, flip, angle in micrograph pixels."""
        spec = self.spec
        key = int(image_key[:16], 16)
        rows = []
        for index in range(spec.per_image):
            rng = np.random.default_rng([spec.seed, key, index])
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

    def cut(self, image: np.ndarray, params: np.ndarray) -> torch.Tensor:
        """Patch tensors (n, 3, output_size, output_size) for the given parameter rows."""
        out = []
        for x0, y0, side, flip, angle in params:
            x0, y0, side = int(x0), int(y0), int(side)
            patch = np.ascontiguousarray(image[y0:y0 + side, x0:x0 + side])
            # flip and angle are drawn above, so the transforms are fixed (p=1, one angle)
            orient = A.Compose([
                A.HorizontalFlip(p=float(flip)),
                A.Rotate(limit=(angle, angle), p=1.0, border_mode=cv2.BORDER_REFLECT_101),
            ])
            out.append(self.finish(image=orient(image=patch)["image"])["image"])
        return torch.stack(out)
