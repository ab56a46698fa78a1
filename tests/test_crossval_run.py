"""Cross-validation runs end to end on tiny data: out-of-fold files, the cv block, no leak."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from sinterlab.study.datamodule import SEMDataModule
from sinterlab.study.fit import fit_head
from sinterlab.study.training import run_experiment

#: whole runs end to end: `make test-slow` (CI runs it after `make test`)
pytestmark = pytest.mark.slow

def read(run_dir):
    return (json.loads((run_dir / "metrics.json").read_text()),
            pd.read_csv(run_dir / "oof_predictions.csv"),
            pd.read_csv(run_dir / "oof_patches.csv"))


@pytest.mark.parametrize("split", ["sample", "image"])
def test_cv_predicts_every_image_once_from_a_fold_that_never_saw_it(make_cfg, tiny_descriptor,
                                                                    tmp_path, split):
    cfg = make_cfg(f"split={split}", "protocol.folds=4", "protocol.seeds=[0,1]")
    run_experiment(cfg, tmp_path)
    metrics, images, patches = read(tmp_path)
    descriptor = pd.read_csv(tiny_descriptor)
    assert sorted(images["image"]) == sorted(descriptor["image"])  # each image exactly once
    assert images["patches"].eq(cfg.preprocess.patches.per_image).all()
    np.testing.assert_allclose(images[[c for c in images if "_p_" in c]].sum(axis=1), 1.0,
                               atol=1e-4)
    group = "sample_id" if split == "sample" else "image"
    assert images.groupby(group)["fold"].nunique().max() == 1  # test folds disjoint by group
    assert set(images["fold"]) == {0, 1, 2, 3}
    assert len(patches) == len(descriptor) * cfg.preprocess.patches.per_image
    cv = metrics["cv"]
    assert cv["protocol"] == "cv" and cv["folds"] == 4 and len(cv["per_fold"]) == 4
    assert sum(f["test_images"] for f in cv["per_fold"]) == len(descriptor)
    assert len(metrics["training"]["members"]) == 8  # 4 folds x 2 seeds
    assert cv["bootstrap"]["unit"] == "sample" and cv["bootstrap"]["units"] == 12
    for model in ("head", "pca_logreg", "linear_probe", "measures"):
        for level in ("patch", "image", "sample"):
            cell = cv["pooled"][model][level]["accuracy"]
            assert cell["low"] <= cell["value"] <= cell["high"]
        assert set(cv["fold_statistics"][model]["image"]["accuracy"]) == {"mean", "sd"}
    assert 0 < cv["permutation"]["p_value"] <= 1
    assert cv["verdict"]["best_model"] in ("head", "pca_logreg", "linear_probe", "measures")
    contrast = metrics["contrast"]
    assert contrast["split"]["leaky"] and contrast["cv"]["folds"] == 4
    assert "skipped" in contrast["cv"]["permutation"]  # an image's patches span folds
    report = (tmp_path / "report.md").read_text()
    assert "## Headline" in report and "bootstrap resamples of the 12 samples" in report
    assert "CV by patch (LEAKY)" in report
    samples = pd.read_csv(tmp_path / "oof_samples.csv")
    assert len(samples) == 12 and samples["images"].sum() == len(descriptor)


def test_cv_regression_reports_errors_with_intervals(make_cfg, design_descriptor, tmp_path):
    cfg = make_cfg("experiment=regression", f"data.descriptor={design_descriptor}",
                   "protocol.folds=3", "protocol.seeds=[0]")
    run_experiment(cfg, tmp_path)
    metrics, images, _ = read(tmp_path)
    assert images["burst_count_predicted"].notna().all()
    for model in ("head", "linear_probe"):
        for metric in ("mae", "rmse", "r2"):
            assert set(metrics["cv"]["pooled"][model]["image"][metric]) >= {"value", "low", "high"}
    assert "permutation" not in metrics["cv"]
    assert metrics["cv"]["verdict"]["metric"] == "mae"
    conformal = metrics["calibration"]["conformal"]
    assert conformal["confidence"] == 0.9 and conformal["half_width"] > 0
    assert 0 <= conformal["coverage"] <= 1 and len(conformal["per_fold"]) == 3
    assert "How far to trust a value" in (tmp_path / "report.md").read_text()


def test_holdout_is_the_one_fold_case(make_cfg, tiny_descriptor, tmp_path):
    run_experiment(make_cfg("protocol=holdout"), tmp_path)
    metrics, images, _ = read(tmp_path)
    assert metrics["cv"]["protocol"] == "holdout" and metrics["cv"]["folds"] == 1
    assert len(metrics["training"]["members"]) == 1
    table = pd.read_csv(tmp_path / "images.csv")
    assert sorted(images["image"]) == sorted(table.loc[table["subset"] == "test", "image"])


def test_the_search_objective_reads_no_test_row(make_cfg, tmp_path):
    """hparams_search minimises the members' mean best validation loss: scrambling every test
    row's embedding leaves it unchanged."""
    cfg = make_cfg("protocol.folds=4", "protocol.seeds=[0,1]")
    dm = SEMDataModule(cfg)
    dm.setup()
    _, clean = fit_head(cfg, dm, dm.assignment, tmp_path, "clean")
    tested = torch.from_numpy(dm.test_fold(dm.assignment) >= 0)
    assert tested.all()  # under cv every row is some fold's test row ...
    fold0 = torch.from_numpy(dm.assignment[0] == "test")
    # ... so scramble fold 0's test rows and check fold 0's members alone
    dm.x[fold0] = torch.randn(int(fold0.sum()), dm.x.shape[1])
    _, scrambled = fit_head(cfg, dm, dm.assignment, tmp_path, "scrambled")
    fold0_members = [r for r in clean.members if r.fold == 0]
    again = [r for r in scrambled.members if r.fold == 0]
    assert [r.best_val_loss for r in fold0_members] == [r.best_val_loss for r in again]
    others = [r.best_val_loss for r in scrambled.members if r.fold != 0]
    assert others != [r.best_val_loss for r in clean.members if r.fold != 0]
