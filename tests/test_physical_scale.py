"""One physical scale: the same microstructure imaged at two pixel sizes gives the same
statistics once resampled; a 16-bit FEI-style TIFF with a data bar goes through a run; the
imaging settings alone are checked for giving the answer away."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pandas as pd
import pytest
import tifffile
from omegaconf import OmegaConf

from sinterlab.data.preprocess import preprocess_image
from sinterlab.features.extract import scale_factors
from sinterlab.study.training import run_experiment
from sinterlab.synth.generate import fei_metadata, load_preset
from sinterlab.synth.microstructure import sinter_state, sintered_surface


def correlation_length(image: np.ndarray) -> float:
    """Lag (pixels) where the two-point autocorrelation along rows falls below 1/e."""
    centred = image.astype(float) - image.mean()
    spectrum = np.abs(np.fft.rfft(centred, axis=1)) ** 2
    auto = np.fft.irfft(spectrum, axis=1).mean(axis=0)
    auto /= auto[0]
    return float(np.argmax(auto < np.exp(-1)))


def imaged(tmp_path, name: str, pixel_nm: float, size_nm: float) -> str:
    """A sintered film of fixed physical size, imaged at ``pixel_nm`` (FEI tag, 16-bit)."""
    physics = load_preset("demo").physics
    state = sinter_state(1.0, 40.0, physics)
    side = int(size_nm / pixel_nm)
    height, _ = sintered_surface(np.random.default_rng(1), (side, side), state, pixel_nm,
                                 physics)
    image = cv2.normalize(height, None, 0, 65535, cv2.NORM_MINMAX).astype(np.uint16)
    path = tmp_path / name
    tifffile.imwrite(path, image, extratags=[(34682, "s", 0,
                                              fei_metadata(pixel_nm, 5, 4, "TLD"), True)])
    return str(path)


def test_two_pixel_sizes_agree_once_resampled_to_one_scale(tmp_path):
    fine, coarse = imaged(tmp_path, "fine.tif", 2.0, 1600), imaged(tmp_path, "coarse.tif", 4.0,
                                                                  1600)
    cfg = OmegaConf.create({"read": {"percentiles": [0, 100]},
                            "crop": {"mode": "none", "top": 0, "bottom": 0, "left": 0,
                                     "right": 0, "auto": {}},
                            "equalize": {"method": "none", "clahe_clip_limit": 2.0,
                                         "clahe_tile_grid": [8, 8]},
                            "scale": {"pixel_size_nm": 4.0}})
    factors, unknown = scale_factors([fine, coarse], None, cfg)  # pixel sizes from the tags
    assert factors == [0.5, 1.0] and not unknown
    as_read = [preprocess_image(p, cfg)[0] for p in (fine, coarse)]
    resampled = [preprocess_image(p, cfg, f)[0] for p, f in zip((fine, coarse), factors,
                                                                  strict=True)]
    assert resampled[0].shape == resampled[1].shape == (400, 400)
    lengths = [correlation_length(i) for i in resampled]
    assert lengths[0] == pytest.approx(lengths[1], rel=0.2)  # same physical texture
    raw = [correlation_length(i) for i in as_read]
    assert raw[0] > 1.6 * raw[1]  # in pixels as read, the finer image's texture is larger


@pytest.mark.slow
def test_a_16_bit_fei_tiff_with_a_data_bar_runs_at_one_scale(make_cfg, tiny_descriptor,
                                                            tmp_path):
    """Half the tiny images re-imaged at twice the magnification (2 nm pixels, 16-bit)."""
    table = pd.read_csv(tiny_descriptor)
    table["image"] = [str(tiny_descriptor.parent / p) for p in table["image"]]
    for i, source in enumerate(table["image"][::2]):
        image = tifffile.imread(source)
        finer = cv2.resize(image, None, fx=2, fy=2, interpolation=cv2.INTER_CUBIC)
        path = tmp_path / f"finer_{i}.tif"
        tifffile.imwrite(path, finer.astype(np.uint16) * 257, extratags=[
            (34682, "s", 0, fei_metadata(2.0, 5, 4, "TLD"), True)])
        table.loc[table["image"] == source, "image"] = str(path)
    csv = tmp_path / "mixed.csv"
    table.to_csv(csv, index=False)
    run = tmp_path / "run"
    cfg = make_cfg(f"data.descriptor={csv}", "preprocess.scale.pixel_size_nm=auto",
                   "protocol.folds=3", "protocol.seeds=[0]", "evaluation.gallery.enabled=false")
    run_experiment(cfg, run)
    images = pd.read_csv(run / "images.csv")
    assert sorted(images["pixel_size_nm"].unique()) == [2.0, 4.0]
    assert sorted(images["scale"].unique()) == [0.5, 1.0]
    assert (images["metadata_source"] == "FEI/Thermo tag").all()
    assert OmegaConf.load(run / "config.yaml").preprocess.scale.pixel_size_nm == 4.0
    patches = pd.read_csv(run / "patches.csv")
    finer = patches["image"].str.contains("finer")
    # 48 px patches at 4 nm are 96 source pixels of a 2 nm image
    assert (patches.loc[finer, "side"] >= 96).all() and (patches.loc[~finer, "side"] < 96).all()


@pytest.mark.slow
@pytest.mark.parametrize("confounded", [True, False])
def test_settings_that_give_the_answer_away_are_warned_about(make_cfg, tiny_descriptor,
                                                             tmp_path, confounded):
    table = pd.read_csv(tiny_descriptor)
    table["image"] = [str(tiny_descriptor.parent / p) for p in table["image"]]
    rng = np.random.default_rng(0)
    table["magnification"] = (table["burst_count"] * 100 if confounded
                              else rng.choice([20000, 50000], size=len(table)))
    csv = tmp_path / "d.csv"
    table.to_csv(csv, index=False)
    cfg = make_cfg(f"data.descriptor={csv}", "protocol.folds=3", "protocol.seeds=[0]",
                   "evaluation.permutation.n=200", "evaluation.gallery.enabled=false",
                   "evaluation.contrast.enabled=false")
    metrics = run_experiment(cfg, tmp_path / "run")
    check = metrics.cv.instrument
    assert "magnification" in check.features
    report = (tmp_path / "run" / "report.md").read_text()
    assert ("the imaging settings alone predict burst_count" in report) == confounded
    assert (check.warning is not None) == confounded
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert ("warning" in saved["cv"]["instrument"]) == confounded
