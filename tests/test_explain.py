"""Prediction maps and Grad-CAM: a micrograph whose left half comes from one class and right half
from another gets a map whose halves disagree the expected way; the CLIs write what they say."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib_scalebar.scalebar import ScaleBar
from omegaconf import OmegaConf

from sinterlab.data.patches import GridSampler, GridSpec
from sinterlab.evaluation.figures import add_scale_bar
from sinterlab.explain.attribution import cam_layer_name
from sinterlab.explain.maps import grid_maps
from sinterlab.manifest import MANIFEST
from sinterlab.predict import load_run_model
from tests.conftest import FAST, predict_config, run

#: 50 vs 250 BC, enough patches and epochs for the tiny random backbone to tell them apart
#: whole runs end to end: `make test-slow` (CI runs it after `make test`)
pytestmark = pytest.mark.slow

TWO_CLASSES = ["data.classes=[50,250]", "preprocess.patches.per_image=16",
               "trainer.max_epochs=30", "protocol.folds=3", "protocol.seeds=[0]",
               "evaluation.contrast.enabled=false"]


@pytest.fixture(scope="module")
def two_class_run(tmp_path_factory, tiny_descriptor, shared_cache) -> Path:
    """Trained as a user would (its own process, like `trained_run`)."""
    run_dir = tmp_path_factory.mktemp("two_class_run")
    done = run("sinterlab-train", *FAST, f"data.descriptor={tiny_descriptor}",
               f"features.cache_dir={shared_cache}", *TWO_CLASSES, f"hydra.run.dir={run_dir}",
               f"paths.log_dir={run_dir / 'logs'}", cwd=run_dir)
    assert done.returncode == 0, done.stderr[-2000:]
    return run_dir


@pytest.fixture(scope="module")
def half_and_half(tiny_descriptor, tmp_path_factory) -> Path:
    """Left half of a 50 BC micrograph beside the right half of a 250 BC one (the data bar of
    the first kept below both)."""
    table = pd.read_csv(tiny_descriptor)
    first = {bc: cv2.imread(str(tiny_descriptor.parent / table.loc[table["burst_count"] == bc,
                                                                    "image"].iloc[0]),
                            cv2.IMREAD_UNCHANGED) for bc in (50, 250)}
    low, high = first[50], first[250]
    rows = min(len(low), len(high))
    image = low[:rows].copy()
    half = image.shape[1] // 2
    image[:, half:] = high[:rows, half:]
    path = tmp_path_factory.mktemp("mixed") / "left50_right250.tif"
    cv2.imwrite(str(path), image)
    return path


def model_of(run: Path):
    return load_run_model(predict_config(run))


def test_grid_covers_the_micrograph_to_its_edges():
    params = GridSampler(GridSpec(0, 40, 32, False, 0.0, 0, 25), (0.5,) * 3,
                         (0.5,) * 3).params(100, 130, "0" * 16)
    assert params[:, 0].max() + 40 == 130 and params[:, 1].max() + 40 == 100
    assert (params[:, 3:] == 0).all() and len(params) == 4 * 5


def test_map_halves_disagree_the_expected_way(two_class_run, half_and_half):
    model = model_of(two_class_run)
    size = int(model.cfg.preprocess.patches.size)
    [m], bad = grid_maps(model, [half_and_half], stride=size // 4)
    assert not bad
    centre = m.params[:, 0] + m.params[:, 2] / 2
    middle = m.micrograph.shape[1] / 2
    p50 = m.outputs[:, 0]  # classes in numeric order: 50, 250
    left, right = p50[centre < middle - size / 2], p50[centre > middle + size / 2]
    assert len(left) and len(right)
    # each half is read as its own class, and the halves differ clearly
    assert left.mean() > 0.5 > right.mean() and left.mean() - right.mean() > 0.1, \
        (left.mean(), right.mean())
    pixel = m.covered_mean()
    assert pixel.shape == (*m.micrograph.shape, 2) and not np.isnan(pixel).any()


def test_maps_carry_the_instruments_pixel_size_for_their_scale_bar(two_class_run,
                                                                    tiny_descriptor,
                                                                    half_and_half):
    """The generator writes 4 nm pixels into its FEI tag: the map knows them and its figure
    gets a scale bar; an image saved without metadata gets none."""
    model = model_of(two_class_run)
    image = sorted((tiny_descriptor.parent / "images").glob("*.tif"))[0]
    [m, stripped], _ = grid_maps(model, [image, half_and_half], stride=64)
    assert m.pixel_nm == pytest.approx(4.0) and stripped.pixel_nm is None
    fig, (ax, bare) = plt.subplots(1, 2)
    add_scale_bar(ax, m.pixel_nm)
    add_scale_bar(bare, stripped.pixel_nm)
    [bar] = [a for a in ax.artists if isinstance(a, ScaleBar)]
    assert bar.dx == pytest.approx(4.0) and bar.units == "nm"
    assert not bare.artists
    plt.close(fig)


def test_explain_cli_writes_maps_cams_and_the_grid(two_class_run, half_and_half, tmp_path):
    out = tmp_path / "explained"
    done = run("sinterlab-explain", f"run={two_class_run}", f"images=[{half_and_half}]",
               f"out={out}", "cam_patches=3", f"hydra.run.dir={tmp_path / 'hydra'}",
               cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    for name in ("left50_right250_map.png", "left50_right250_cam.png", "grid_predictions.csv"):
        assert (out / name).stat().st_size > 0 and str(out / name) in done.stdout
    grid = pd.read_csv(out / "grid_predictions.csv")
    assert {"x0", "y0", "size", "burst_count", "burst_count_confidence", "p_50",
            "p_250"} <= set(grid.columns)
    np.testing.assert_allclose(grid["p_50"] + grid["p_250"], 1, atol=1e-3)


def test_predict_maps_true_writes_maps_beside_the_csv(trained_run, tiny_descriptor, tmp_path):
    images = sorted((tiny_descriptor.parent / "images").glob("*.tif"))[:2]
    csv = tmp_path / "p.csv"
    done = run("sinterlab-predict", f"run={trained_run}",
               f"images=[{','.join(map(str, images))}]", f"out={csv}", "maps=true",
               "cam_patches=2", f"hydra.run.dir={tmp_path / 'hydra'}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"maps: {tmp_path / 'p_maps'}" in done.stdout
    maps = sorted(p.name for p in (tmp_path / "p_maps").iterdir())
    assert maps == sorted([f"{p.stem}_{k}.png" for p in images for k in ("map", "cam")]
                          + ["grid_predictions.csv"])
    assert json.loads((trained_run / "metrics.json").read_text())["backbone"]["name"]


def test_a_run_saved_before_backbone_targets_loads_the_same(two_class_run, tmp_path):
    """config.yaml of runs made before conf/backbone had ``_target_``: the factory is filled in,
    and the caller's backbone config (which has it) still equals the run's (a run from before
    the manifest recorded the files it serves: the manifest of its metrics.json)."""
    old = tmp_path / "old_run"
    shutil.copytree(two_class_run, old)
    (old / MANIFEST).unlink()
    cfg = OmegaConf.load(old / "config.yaml")
    cfg.backbone.pop("_target_", None)
    OmegaConf.save(cfg, old / "config.yaml")
    requested = OmegaConf.load(Path(__file__).parents[1] / "conf/backbone/random_tiny.yaml")
    older = load_run_model(predict_config(old, backbone=requested))
    new = model_of(two_class_run)
    assert older.backbone.describe() == new.backbone.describe()
    assert older.backbone.channels_last == new.backbone.channels_last
    assert cam_layer_name(older) == cam_layer_name(new) == requested.cam_layer
