"""Microstructure measures on binary structures with known answers."""

from __future__ import annotations

import numpy as np
import pytest
from omegaconf import OmegaConf

from sinterlab.measures.microstructure import correlation_lengths, measure_mask, segment_pores

ALL = {"porosity", "pore_diameter", "chord_length", "correlation_length", "specific_perimeter",
       "solid_size"}


def disks(radius: int = 6, spacing: int = 20, size: int = 200) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    cy, cx = (yy % spacing) - spacing // 2, (xx % spacing) - spacing // 2
    return cy ** 2 + cx ** 2 <= radius ** 2


def stripes(pore: int = 6, solid: int = 10, size: int = 192) -> np.ndarray:
    return (np.arange(size) % (pore + solid) < pore)[None, :].repeat(size, axis=0)


def test_a_disk_packing_has_its_area_fraction_and_diameter():
    mask = disks()
    m = measure_mask(mask, None, ALL)
    assert m["porosity"] == pytest.approx(np.pi * 36 / 400, rel=0.05)
    assert m["pore_diameter"] == pytest.approx(12, rel=0.05)
    # solid size: twice the mean distance from solid to the nearest pore, below the spacing
    assert 0 < m["solid_size"] < 20


def test_stripes_have_their_chord_and_correlation_lengths():
    m = measure_mask(stripes(6, 10), None, ALL)
    assert m["pore_chord_x"] == pytest.approx(6) and m["solid_chord_x"] == pytest.approx(10)
    assert m["pore_chord_y"] == 192  # along the stripes: the whole image
    x, _ = correlation_lengths(stripes(8, 8))
    # a square wave's autocorrelation is a triangle: 1 - 4 lag / period, 1/e at period (1-1/e)/4
    assert x == pytest.approx(16 * (1 - np.exp(-1)) / 4, rel=0.1)
    # two interfaces per period of 16 pixels along x, per row
    assert m["specific_perimeter"] == pytest.approx(2 / 16, rel=0.1)


def test_a_rescaled_copy_gives_the_same_measures_in_micrometres():
    coarse = measure_mask(disks(6, 20, 200), 10.0, ALL)  # 10 nm per pixel
    fine = measure_mask(disks(12, 40, 400), 5.0, ALL)  # the same film imaged at 5 nm
    for name in ALL - {"chord_length", "correlation_length"} | {"pore_chord_x",
                                                                "correlation_length"}:
        assert fine[name] == pytest.approx(coarse[name], rel=0.08), name


def test_one_phase_images_give_nan_not_zero():
    for mask in (np.zeros((64, 64), bool), np.ones((64, 64), bool)):
        m = measure_mask(mask, None, ALL)
        assert m["porosity"] in (0.0, 1.0)
        assert all(np.isnan(v) for k, v in m.items() if k != "porosity")


@pytest.mark.parametrize("method, phases, agreement", [
    ("otsu", 2, 0.97), ("multiotsu", 3, 0.97), ("local", 2, 0.9)])
def test_segmentation_finds_the_dark_pores(method, phases, agreement):
    """Two phases (pores, solid) or three (pores, necks, particles: multi-Otsu's case)."""
    truth = disks()
    necks = disks(9) & ~truth  # a grey ring around each pore
    image = np.where(truth, 40, np.where(necks & (phases == 3), 120, 200)).astype(float)
    image = np.clip(image + np.random.default_rng(0).normal(0, 8, image.shape), 0, 255)
    cfg = OmegaConf.create({"method": method, "classes": 3, "block_size": 21,
                            "smooth_sigma": 1.0, "min_size": 4})
    found = segment_pores(image.astype(np.uint8), cfg)
    assert (found == truth).mean() > agreement
