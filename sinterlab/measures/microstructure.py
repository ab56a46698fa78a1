"""Classical measures of a sintered film, from its micrograph: porosity, pore size, chord
lengths, two-point correlation length, specific perimeter and solid-phase size.

The cropped, equalized micrograph is split into pores (dark) and solid (bright) by a threshold
from scikit-image (global Otsu, the lowest of multi-Otsu's classes, or a local threshold),
after optional smoothing and removal of specks; each measure is then computed on the binary
image with scikit-image and SciPy. Lengths are in micrometres when the pixel size is known,
else in pixels (the unit is returned with them).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage import filters, measure, morphology

from sinterlab.errors import SinterlabError

METHODS = ("otsu", "multiotsu", "local")


def segment_pores(micrograph: np.ndarray, cfg) -> np.ndarray:
    """Boolean pore mask of an 8-bit micrograph (``cfg``: ``measures.segmentation``)."""
    image = micrograph.astype(np.float64)
    if float(cfg.smooth_sigma) > 0:
        image = filters.gaussian(image, sigma=float(cfg.smooth_sigma), preserve_range=True)
    if np.ptp(image) == 0:
        return np.zeros(image.shape, bool)
    if cfg.method == "otsu":
        pores = image < filters.threshold_otsu(image)
    elif cfg.method == "multiotsu":
        pores = image < filters.threshold_multiotsu(image, classes=int(cfg.classes))[0]
    elif cfg.method == "local":
        block = int(cfg.block_size) | 1  # odd
        pores = image < filters.threshold_local(image, block_size=block)
    else:
        raise SinterlabError(f"measures.segmentation.method={cfg.method!r} is unknown; use one "
                             f"of {list(METHODS)}")
    if int(cfg.min_size) > 0:
        pores = morphology.remove_small_objects(pores, max_size=int(cfg.min_size))
        solid = morphology.remove_small_objects(~pores, max_size=int(cfg.min_size))
        pores = ~solid
    return pores


def _chords(mask: np.ndarray, axis: int) -> np.ndarray:
    """Lengths of the runs of True along ``axis`` (runs touching the border included)."""
    lines = np.moveaxis(mask, axis, -1).astype(np.int8)
    padded = np.pad(lines, [(0, 0)] * (lines.ndim - 1) + [(1, 1)])
    steps = np.diff(padded, axis=-1)
    starts, ends = np.nonzero(steps == 1), np.nonzero(steps == -1)
    return (ends[-1] - starts[-1]).astype(np.float64)


def correlation_lengths(mask: np.ndarray) -> tuple[float, float]:
    """Lags (pixels) along x and y at which the two-point autocorrelation of the phase
    indicator falls to 1/e of its zero-lag value, linearly interpolated (half the image when it
    never does)."""
    centred = mask.astype(np.float64) - mask.mean()
    if not centred.any():
        return float("nan"), float("nan")
    power = np.abs(np.fft.fft2(centred)) ** 2
    auto = np.real(np.fft.ifft2(power))
    auto /= auto[0, 0]
    lengths = []
    for profile in (auto[0, : mask.shape[1] // 2], auto[: mask.shape[0] // 2, 0]):
        below = np.flatnonzero(profile < np.exp(-1))
        if not len(below):
            lengths.append(float(len(profile)))
            continue
        k = int(below[0])
        a, b = profile[k - 1], profile[k]
        lengths.append(k - 1 + (a - np.exp(-1)) / (a - b))
    return float(lengths[0]), float(lengths[1])


#: per switch of ``measures.measures``, the names of the values it gives
MEASURES = {"porosity": ("porosity",), "pore_diameter": ("pore_diameter",),
            "chord_length": ("pore_chord_x", "solid_chord_x", "pore_chord_y", "solid_chord_y"),
            "correlation_length": ("correlation_length",),
            "specific_perimeter": ("specific_perimeter",), "solid_size": ("solid_size",)}


def measure_names(enabled) -> list[str]:
    """The names of the values the ``enabled`` measures give, in their order."""
    return [name for switch, names in MEASURES.items() if switch in enabled for name in names]


def one_phase(pores: np.ndarray) -> str | None:
    """'pores' or 'solid' when the mask holds that phase only (a blank or saturated image:
    nothing to measure), else None."""
    porosity = float(pores.mean())
    return "pores" if porosity == 1.0 else "solid" if porosity == 0.0 else None


def measure_mask(pores: np.ndarray, pixel_nm: float | None, enabled) -> dict[str, float]:
    """The enabled measures of a pore mask; lengths in µm when ``pixel_nm`` is known, else
    pixels. A mask with no pores or no solid (:func:`one_phase`) gives NaN for every measure,
    porosity included: a blank image says nothing about the film."""
    scale = pixel_nm / 1000 if pixel_nm else 1.0
    out: dict[str, float] = {}
    single = one_phase(pores) is not None
    nan = float("nan")
    if "porosity" in enabled:
        out["porosity"] = float(pores.mean()) if not single else nan
    if "pore_diameter" in enabled:
        areas = np.array([r.area for r in measure.regionprops(measure.label(pores))])
        out["pore_diameter"] = (float(np.mean(2 * np.sqrt(areas / np.pi))) * scale
                                if len(areas) and not single else nan)
    if "chord_length" in enabled:
        for axis, name in ((1, "x"), (0, "y")):
            pore_chords, solid_chords = _chords(pores, axis), _chords(~pores, axis)
            out[f"pore_chord_{name}"] = (float(pore_chords.mean()) * scale
                                         if len(pore_chords) and not single else nan)
            out[f"solid_chord_{name}"] = (float(solid_chords.mean()) * scale
                                          if len(solid_chords) and not single else nan)
    if "correlation_length" in enabled:
        out["correlation_length"] = (float(np.mean(correlation_lengths(pores))) * scale
                                     if not single else nan)
    if "specific_perimeter" in enabled:
        # interface length per unit area (1/µm or 1/pixel)
        out["specific_perimeter"] = (measure.perimeter(pores) / pores.size / scale
                                     if not single else nan)
    if "solid_size" in enabled:
        # twice the mean distance to the nearest pore over the solid: particle and neck size
        # (distances run between pixel centres: half a pixel less reaches the boundary)
        distance = ndimage.distance_transform_edt(~pores)
        out["solid_size"] = (2 * (float(distance[~pores].mean()) - 0.5) * scale
                             if not single else nan)
    return out
