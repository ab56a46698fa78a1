"""Microstructure measures on binary structures with known answers; a run's measures: one
unit, blank images NaN (and NaN handled downstream), wrong cache entries replaced."""

from __future__ import annotations

from types import SimpleNamespace

import cv2
import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from sinterlab.features.cache import file_sha256
from sinterlab.features.extract import ImageRef
from sinterlab.measures.compute import entry_problem, image_measures
from sinterlab.measures.microstructure import (
    correlation_lengths,
    measure_mask,
    measure_names,
    one_phase,
    segment_pores,
)
from sinterlab.measures.trends import measures_oof, summarise
from sinterlab.planning.responses import Response, load_samples

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
    """A blank image (no pores, or nothing but pores) says nothing about the film: every
    measure NaN, porosity included, and which phase it held."""
    for mask, phase in ((np.zeros((64, 64), bool), "solid"), (np.ones((64, 64), bool), "pores")):
        m = measure_mask(mask, None, ALL)
        assert list(m) == measure_names(ALL)
        assert all(np.isnan(v) for v in m.values())
        assert one_phase(mask) == phase
    assert one_phase(disks()) is None


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


# -- the measures of a run's images: one unit, blank images NaN, wrong cache entries replaced --
def film_and_blank(folder) -> list[ImageRef]:
    film, blank = folder / "film.png", folder / "blank.png"
    cv2.imwrite(str(film), np.where(disks(), 40, 200).astype(np.uint8))
    cv2.imwrite(str(blank), np.zeros((200, 200), np.uint8))
    return [ImageRef(str(p), file_sha256(p)) for p in (film, blank)]


def test_run_measures_one_unit_blank_nan_and_wrong_entries(make_cfg, tmp_path, caplog):
    cfg = make_cfg(f"measures.cache_dir={tmp_path / 'measures'}", "preprocess.crop.mode=none")
    refs = film_and_blank(tmp_path)
    names = measure_names(set(cfg.measures.measures))
    # one image without a pixel size: px for both, never µm beside px
    frame, warnings = image_measures(refs, [4.0, None], cfg.preprocess, cfg.measures)
    assert frame["length_unit"].tolist() == ["px", "px"]
    assert 0.1 < frame.loc[0, "porosity"] < 0.4  # the dark disks, about 28 % of the area
    assert frame.loc[1, names].isna().all() and frame["one_phase"].isna().tolist() == [True, False]
    assert frame.loc[1, "one_phase"] == "solid"
    assert warnings == [f"{refs[1].path}: segmentation found only solid (blank or saturated "
                        "image?); its measures are NaN"]
    both, _ = image_measures(refs, [4.0, 4.0], cfg.preprocess, cfg.measures)
    assert both["length_unit"].tolist() == ["µm", "µm"]
    assert both.loc[0, "pore_diameter"] == pytest.approx(frame.loc[0, "pore_diameter"] * 0.004)
    # a readable entry that is not measures: moved aside with a warning, measured again
    entry = next((tmp_path / "measures").rglob(f"{refs[0].key}-px.json"))
    entry.write_text('{"porosity": "0.3 (by eye)"}')
    again, _ = image_measures(refs, [None, None], cfg.preprocess, cfg.measures)
    assert again.loc[0, "porosity"] == frame.loc[0, "porosity"]
    assert len(list((entry.parent / "corrupt").glob(f"{entry.stem}.*.json"))) == 1
    assert "wrong measures cache entry" in caplog.text and "measuring" in caplog.text


def test_what_makes_a_measures_entry_wrong():
    names = ["porosity", "solid_size"]
    right = {"porosity": 0.3, "solid_size": float("nan"), "one_phase": None}
    assert entry_problem(right, names) is None
    assert entry_problem([0.3], names) == "a list, not measures"
    assert "expected ['porosity', 'solid_size']" in entry_problem({"porosity": 0.3}, names)
    assert entry_problem(right | {"porosity": "0.3"}, names) == (
        "porosity '0.3' is not a finite number or NaN")
    assert entry_problem(right | {"solid_size": float("inf")}, names) is not None
    assert entry_problem(right | {"one_phase": "both"}, names) == "one_phase 'both'"


def test_nan_measures_of_a_blank_image_leave_trends_and_the_baseline_working():
    """Sample s0 has one blank image (NaN), s5 only blank ones: the per-sample means skip
    them, the trends and the measures-only model still give numbers."""
    rng = np.random.default_rng(0)
    level = np.repeat(np.arange(6.0), 2)
    measures = pd.DataFrame({"path": [f"{i}.tif" for i in range(12)],
                             "porosity": 0.3 - 0.04 * level + rng.normal(0, 0.005, 12),
                             "length_unit": "px"})
    measures.loc[[0, 10, 11], "porosity"] = np.nan
    table = pd.DataFrame({"image": measures["path"], "sample_id": [f"s{int(v)}" for v in level],
                          "x": level})
    target = SimpleNamespace(name="x", kind="regression")
    frame, record = summarise(measures, table, target, 50, 0, 0.95)
    means = {row["sample_id"]: row["porosity"] for row in record["per_sample"]}
    assert means["s0"] == pytest.approx(measures.loc[1, "porosity"]) and np.isnan(means["s5"])
    assert record["unit"] == "px" and record["trends"][0]["rho"] == pytest.approx(-1.0)
    fold = np.arange(12) % 3
    out = measures_oof(measures[["porosity"]].to_numpy(), level, fold, "regression", None, 1.0)
    assert np.isfinite(out).all()
    with pytest.raises(ValueError, match="several units"):
        summarise(measures.assign(length_unit=["px"] * 11 + ["µm"]), table, target, 5, 0, 0.95)


def test_nan_measures_as_a_plan_response(tmp_path):
    """Blank images' NaN measures in the plan's measures source: a sample keeps the mean of its
    other images; a sample of blank images only has no value (n = 0), like an empty cell."""
    descriptor = tmp_path / "d.csv"
    pd.DataFrame({"image": ["a.tif", "b.tif", "c.tif"], "sample_id": ["s0", "s0", "s1"],
                  "x": [1.0, 1.0, 2.0]}).to_csv(descriptor, index=False)
    measures = pd.DataFrame({"sample_id": ["s0", "s0", "s1"],
                             "porosity": [0.2, np.nan, np.nan]})
    response = Response("porosity", "measures", "porosity")
    samples = load_samples(descriptor, ["x"], [response], measures=measures)
    assert samples["porosity"].tolist()[0] == pytest.approx(0.2)
    assert np.isnan(samples["porosity"].tolist()[1]) and samples["porosity_n"].tolist() == [1, 0]
