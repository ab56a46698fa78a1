"""model=auto: nested grouped CV chooses among the candidate heads and scikit-learn models
without reading a test row, and predict serves the final model."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf

from sinterlab.cli import CONF_DIR
from sinterlab.data.descriptor import Target
from sinterlab.errors import SinterlabError
from sinterlab.predict import predict
from sinterlab.study.datamodule import SEMDataModule
from sinterlab.study.fit import check_losses
from sinterlab.study.selection import ranked_probability_score, select_model
from sinterlab.study.training import run_experiment

AUTO = ["model=auto", "protocol.folds=3", "protocol.seeds=[0]", "model.selection.inner_folds=2"]
CANDIDATES = {"mlp", "linear", "mlp_small", "sk_logreg", "sk_pca_logreg", "sk_logreg_image", "corn",
              "level_value"}


@pytest.mark.slow
def test_auto_reports_the_nested_score_and_predict_uses_the_final_model(
        make_cfg, tiny_descriptor, tmp_path):
    run_dir = tmp_path / "run"
    run_experiment(make_cfg(*AUTO), run_dir)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    selection, cv = metrics["selection"], metrics["cv"]
    assert set(selection["candidates"]) == CANDIDATES
    assert len(selection["winners"]) == 3 and set(selection["winners"]) <= CANDIDATES
    assert all(len(v) == 3 for v in selection["inner_scores"].values())
    final = selection["final"]
    assert final["model"] in CANDIDATES and final["point"].startswith(final["model"])
    assert (run_dir / final["checkpoint"]).is_file()
    # burst counts are numbers, so ordered: ranked by the RPS, and the report says so
    assert selection["score"] == "rps" and selection["grid"] == "linear"
    # the scikit-learn candidates searched their grid, the heads did not
    points = selection["points"]
    assert sum(p["candidate"] == "sk_logreg" for p in points.values()) == 5
    assert sum(p["candidate"] == "mlp" for p in points.values()) == 1
    for name, tuned in selection["tuned_points"].items():
        for f, label in enumerate(tuned):
            assert selection["inner_scores"][name][f] == min(
                p["inner_scores"][f] for p in points.values() if p["candidate"] == name)
            assert points[label]["candidate"] == name
    # the nested score, each candidate's plain CV score and the baselines, on the same folds
    assert cv["primary"] == "auto" and cv["verdict"]["primary"] == "auto"
    assert {"auto", *CANDIDATES, "pca_logreg", "linear_probe", "measures"} == set(cv["pooled"])
    # outer fold f's out-of-fold predictions are its winner's
    for fold, winner in enumerate(selection["winners"]):
        assert cv["per_fold"][fold]["auto"] == cv["per_fold"][fold][winner]
    report = (run_dir / "report.md").read_text()
    assert "## Model selection (nested CV)" in report and "Final model" in report
    assert "scored by the **ranked probability score (RPS)**" in report
    assert "auto-selected model (nested CV), image-level accuracy" in report

    images = sorted((tiny_descriptor.parent / "images").glob("*.tif"))[:2]
    cfg = OmegaConf.load(CONF_DIR / "predict.yaml")
    cfg.run, cfg.images = str(run_dir), [str(p) for p in images]
    table, _ = predict(cfg)
    assert table["model"].str.startswith(f"{final['point']}: mean of 1 refitted").all()


@pytest.mark.slow
def test_no_outer_test_row_reaches_selection(make_cfg, tmp_path):
    cfg = make_cfg(*AUTO)
    dm = SEMDataModule(cfg)
    dm.setup()
    clean, *_ = select_model(cfg, dm, dm.assignment, "sample", tmp_path)
    fold0 = torch.from_numpy(dm.assignment[0] == "test")
    dm.x[fold0] = torch.randn(int(fold0.sum()), dm.x.shape[1]) * 10
    dm.y[fold0, 0] = dm.y[fold0, 0].flip(0)  # and their labels
    scrambled, *_ = select_model(cfg, dm, dm.assignment, "sample", tmp_path)
    for label, point in clean["points"].items():  # every grid point of every candidate
        again = scrambled["points"][label]["inner_scores"]
        assert again[0] == point["inner_scores"][0]
        assert again[1:] != point["inner_scores"][1:]
    assert scrambled["winner_points"][0] == clean["winner_points"][0]
    # the inner folds never hold an outer test row
    inner = dm.inner_folds(dm.assignment, "sample", 2)
    outer_test = np.repeat(dm.assignment == "test", 2, axis=0)
    assert (inner[outer_test] == "-").all() and not (inner[~outer_test] == "-").any()
    assert pd.Series(inner[0]).isin(["train", "val", "test", "-"]).all()


def test_grids_search_the_heads_only_when_asked(make_cfg):
    from sinterlab.study.selection import grid_points, searched

    cfg = make_cfg("model=auto")
    heads, linear = cfg.model.candidates.mlp, cfg.model.candidates.sk_pca_logreg
    assert searched(cfg.model.selection, linear) and not searched(cfg.model.selection, heads)
    assert grid_points("mlp", heads, False) == [("mlp", heads)]
    points = dict(grid_points("mlp", heads, True))
    assert len(points) == 4 and "mlp weight_decay=0.01 dropout=0.5" in points
    chosen = points["mlp weight_decay=0.01 dropout=0.5"]
    assert (chosen.module.weight_decay, chosen.module.dropout) == (0.01, 0.5)
    assert heads.module.dropout == 0.3  # the candidate itself is unchanged
    assert len(grid_points("sk_pca_logreg", linear, True)) == 2 * 4
    every = make_cfg("model=auto", "model.selection.grid=all").model
    assert searched(every.selection, every.candidates.mlp)


def test_the_ranked_probability_score_charges_distance_between_levels():
    y = np.array([2])
    assert ranked_probability_score(y, np.array([[0, 0, 1.0, 0, 0]])) == 0
    near = ranked_probability_score(y, np.array([[0, 0, 0, 1.0, 0]]))
    far = ranked_probability_score(y, np.array([[1.0, 0, 0, 0, 0]]))
    assert near == 0.25 and far == 0.5  # one of four steps, two of four
    # log-loss cannot tell these apart; the RPS prefers the spread around the true level
    around = ranked_probability_score(y, np.array([[0, 0.5, 0, 0.5, 0]]))
    apart = ranked_probability_score(y, np.array([[0.5, 0, 0, 0, 0.5]]))
    assert around < apart


def test_auto_leaves_out_ordinal_candidates_for_unordered_targets(make_cfg):
    """Names without an order: the CORN and level-value candidates cannot learn them, so
    model=auto runs without them (and says so in the log); with only those, it refuses."""
    cfg = make_cfg(*AUTO)
    check_losses(cfg, [Target("grade", "classification", ("low", "mid", "high"))])
    assert set(cfg.model.candidates) == CANDIDATES - {"corn", "level_value"}
    numbers = make_cfg(*AUTO)
    check_losses(numbers, [Target("bc", "classification", ("50", "150", "250"), "BC", True,
                                  (50.0, 150.0, 250.0))])
    assert set(numbers.model.candidates) == CANDIDATES
    only = make_cfg(*AUTO, *(f"~model.candidates.{n}" for n in CANDIDATES
                             - {"corn", "level_value"}))
    with pytest.raises(SinterlabError, match="every candidate .* needs an ordered"):
        check_losses(only, [Target("grade", "classification", ("low", "mid", "high"))])
