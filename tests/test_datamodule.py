"""SEMDataModule on the tiny generated data with the random tiny backbone (debug=fast)."""

from __future__ import annotations

import shutil
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pandas as pd
import pytest
import torch

from sinterlab.data.splits import SUBSETS
from sinterlab.errors import SinterlabError
from sinterlab.study.datamodule import CROP_COLUMNS, FoldsDataModule, SEMDataModule
from sinterlab.study.fit import fit_head

PATCH_COLUMNS = ["patch_id", "image", "sample_id", "slide", "burst_count", "x0", "y0", "side",
                 "flip", "angle", "subset"]


def four_slides(tiny_descriptor: Path, folder: Path) -> Path:
    """The tiny descriptor with each (slide, set) as its own slide: four slides, so that
    split=slide has groups for train, val and test. Image paths are absolute."""
    table = pd.read_csv(tiny_descriptor)
    table["image"] = [str((tiny_descriptor.parent / p).resolve()) for p in table["image"]]
    table["slide"] = table["slide"].astype(str) + "-" + table["set"].astype(str)
    out = folder / "four_slides.csv"
    table.to_csv(out, index=False)
    return out


def setup(cfg) -> SEMDataModule:
    dm = SEMDataModule(cfg)
    dm.setup()
    return dm


def test_setup_shapes_and_tables(make_cfg, tiny_descriptor):
    cfg = make_cfg("split=sample", "protocol=holdout")
    dm = setup(cfg)
    descriptor = pd.read_csv(tiny_descriptor)
    per_image = int(cfg.preprocess.patches.per_image)
    n = len(descriptor) * per_image
    assert dm.x.ndim == 2 and dm.x.shape[0] == n and dm.x.shape[1] > 0
    assert dm.x.dtype == torch.float32 and torch.isfinite(dm.x).all()
    assert dm.y.shape == (n, 1)
    assert dm.assignment.shape == (1, n)
    # y aligned with the patch table: the class index of each patch's burst count
    classes = [int(c) for c in dm.descriptor.targets[0].classes]
    assert classes == [50, 150, 250]
    expected = dm.patches["burst_count"].map({c: i for i, c in enumerate(classes)})
    np.testing.assert_array_equal(dm.y[:, 0].numpy(), expected.to_numpy())
    # patches of one image are consecutive, per_image of them, in descriptor order
    assert list(dm.patches["image"][::per_image]) == list(descriptor["image"])
    assert (dm.patches.groupby("image").size() == per_image).all()

    images = dm.image_table()
    assert len(images) == len(descriptor)
    assert set(CROP_COLUMNS) | {"subset", "image", "sample_id"} <= set(images.columns)
    truth = pd.read_csv(tiny_descriptor.parent / "truth.csv").set_index("image")
    bar_top = truth.loc[images["image"], "micro_height"].to_numpy()
    assert np.abs(images["crop_bottom"].to_numpy() - bar_top).max() <= 2
    assert (images["crop_top"] == 0).all() and (images["crop_left"] == 0).all()
    assert (images["crop_right"] == 192).all()
    assert set(images["subset"]) == set(SUBSETS)

    patches = dm.patch_table()
    assert set(PATCH_COLUMNS) <= set(patches.columns)
    assert len(patches) == n and list(patches["patch_id"]) == list(range(n))
    # every patch box lies inside its image's kept (cropped) region, in source pixels
    box = patches.merge(images[["image", *CROP_COLUMNS]], on="image")
    assert (box["x0"] >= box["crop_left"]).all() and (box["y0"] >= box["crop_top"]).all()
    assert (box["x0"] + box["side"] <= box["crop_right"]).all()
    assert (box["y0"] + box["side"] <= box["crop_bottom"]).all()
    # the image table's subset is the subset of its patches
    by_image = patches.groupby("image")["subset"].agg(set)
    assert all(by_image[row.image] == {row.subset} for row in images.itertuples())


@pytest.mark.parametrize("kind", ["sample", "image", "slide"])
def test_grouped_splits_keep_groups_whole(make_cfg, tiny_descriptor, tmp_path, kind):
    descriptor = four_slides(tiny_descriptor, tmp_path)
    dm = setup(make_cfg(f"split={kind}", f"data.descriptor={descriptor}", "protocol.folds=4"))
    column = {"sample": "sample_id", "image": "image", "slide": "slide"}[kind]
    assert dm.assignment.shape[0] == 4
    groups = dm.patches[column].to_numpy()
    for fold in dm.assignment:
        per_group = pd.Series(fold).groupby(groups).nunique()
        assert per_group.max() == 1, per_group[per_group > 1]
        assert set(fold) == set(SUBSETS)
    # every group is tested by exactly one fold
    tested = pd.Series(dm.test_fold(dm.assignment)).groupby(groups).agg(set)
    assert all(len(f) == 1 and -1 not in f for f in tested)
    assert dm.patches["slide"].nunique() == 4
    # the training loader serves one full batch of each fold's own training rows per step
    train_rows = dm.rows(dm.assignment, "train")
    loader = dm.train_dataloader()
    order = loader.order(0)
    for g, rows in enumerate(train_rows):
        assert set(order[g].tolist()) == set(rows.tolist())
    x, y = next(iter(loader))
    assert x.shape == (4, cfg_batch(dm), dm.x.shape[1]) and y.shape[:2] == x.shape[:2]
    # the validation loader pads each fold's rows and weighs the padding 0
    xv, _, w = next(iter(dm.val_dataloader()))
    assert w.sum(axis=1).tolist() == [len(r) for r in dm.rows(dm.assignment, "val")]


def cfg_batch(dm) -> int:
    return int(dm.cfg.model.batch_size)


def test_patch_split_has_no_image_subsets(make_cfg):
    dm = setup(make_cfg("split=patch", "protocol=holdout"))
    assert "subset" not in dm.image_table().columns
    patches = dm.patch_table()
    assert set(patches["subset"]) == set(SUBSETS)
    assert patches.groupby("image")["subset"].nunique().max() > 1  # the paper's leaky split


def test_corrupt_image_fails_before_any_cache_entry(make_cfg, tiny_descriptor, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(tiny_descriptor.parent, data)
    table = pd.read_csv(data / "descriptor.csv")
    broken = data / table["image"].iloc[len(table) // 2]
    broken.write_bytes(np.random.default_rng(0).integers(0, 256, 2048, np.uint8).tobytes())
    cache = tmp_path / "fresh_cache"
    dm = SEMDataModule(make_cfg(f"data.descriptor={data / 'descriptor.csv'}",
                                f"features.cache_dir={cache}"))
    with pytest.raises(SinterlabError, match=broken.name) as info:
        dm.prepare_data()
    assert "\n" not in str(info.value)
    assert not cache.exists() or not list(cache.rglob("*.npz"))  # nothing was extracted


def test_prepare_data_fills_the_cache_and_keeps_nothing(make_cfg, tmp_path):
    """Lightning's contract: ``prepare_data`` (one process per node) writes the cache but
    assigns no state; ``setup`` (every process) reads it and assigns everything."""
    cache = tmp_path / "contract_cache"
    prepared = SEMDataModule(make_cfg(f"features.cache_dir={cache}"))
    prepared.prepare_data()
    assert prepared.x is None and prepared.descriptor is None and prepared.assignment is None
    assert not prepared.cache_stats and not prepared.planned
    assert list(cache.rglob("*.npz"))  # the embeddings are on disk
    fresh = SEMDataModule(make_cfg(f"features.cache_dir={cache}"))
    fresh.setup("fit")
    assert fresh.cache_stats.extracted == 0
    assert fresh.cache_stats.from_cache == fresh.cache_stats.images == len(fresh.images)
    assert fresh.x is not None and fresh.assignment is not None


def test_a_head_trains_through_its_folds_datamodule(make_cfg, tmp_path, monkeypatch):
    """``fit_head`` hands ``Trainer.fit`` the assignment's view as its datamodule; the view's
    loaders take no arguments and serve the assignment's rows; its val loss is logged."""
    cfg = make_cfg("protocol.folds=3", "protocol.seeds=[0]")
    dm = setup(cfg)
    view = dm.folds()
    assert isinstance(view, FoldsDataModule) and view.validates
    assert [len(r) for r in view.train_dataloader().rows] == [
        len(r) for r in dm.rows(dm.assignment, "train")]
    assert view.val_dataloader().weight.sum(axis=1).tolist() == [
        len(r) for r in dm.rows(dm.assignment, "val")]
    received = []
    original = pl.Trainer.fit

    def fit(trainer, model, *args, **kwargs):
        assert not args and set(kwargs) == {"datamodule"}
        received.append(kwargs["datamodule"])
        original(trainer, model, **kwargs)
        received.append(dict(trainer.callback_metrics))

    monkeypatch.setattr(pl.Trainer, "fit", fit)
    head, info = fit_head(cfg, dm, dm.assignment, tmp_path, "view")
    datamodule, metrics = received
    assert isinstance(datamodule, FoldsDataModule) and datamodule.data is dm
    assert np.array_equal(datamodule.assignment, dm.assignment)
    assert "val/loss" in metrics and np.isfinite(float(metrics["val/loss"]))
    assert info.best_val_loss is not None
    # every row as training (the final refit): no validation loop, no val loss
    received.clear()
    _, refit = fit_head(cfg, dm, np.full((1, len(dm.x)), "train"), tmp_path, "refit",
                        max_epochs=2)
    assert not received[0].validates and "val/loss" not in received[1]
    assert refit.best_val_loss is None
