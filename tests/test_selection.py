"""model=auto: nested grouped CV chooses among the candidate heads and scikit-learn models
without reading a test row, and predict serves the final model."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf

from sinterlab.data.descriptor import Target
from sinterlab.errors import SinterlabError
from sinterlab.predict import predict
from sinterlab.study.datamodule import SEMDataModule
from sinterlab.study.fit import check_losses
from sinterlab.study.selection import ranked_probability_score, select_model
from sinterlab.study.training import run_experiment
from tests.conftest import SHIPPED_CANDIDATES, made_once, predict_config

AUTO = ["model=auto", "protocol.folds=3", "protocol.seeds=[0]", "model.selection.inner_folds=2"]
CANDIDATES = set(SHIPPED_CANDIDATES)


@pytest.mark.slow
def test_auto_reports_the_nested_score_and_predict_uses_the_final_model(
        make_cfg, tiny_descriptor, tmp_path):
    run_dir = tmp_path / "run"
    run_experiment(make_cfg(*AUTO), run_dir)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    selection, cv = metrics["selection"], metrics["cv"]
    # the configured candidates, and the weighted ensemble of their tuned points
    assert set(selection["candidates"]) == CANDIDATES | {"ensemble"}
    assert len(selection["winners"]) == 3 and set(selection["winners"]) <= CANDIDATES | {
        "ensemble"}
    assert all(len(v) == 3 for v in selection["inner_scores"].values())
    final = selection["final"]
    assert final["model"] in CANDIDATES | {"ensemble"}
    assert final["point"].startswith(final["model"])
    assert (run_dir / final["checkpoint"]).is_file()
    # burst counts are numbers, so ordered: ranked by the RPS, and the report says so
    assert selection["score"] == "rps" and selection["grid"] == "linear"
    # the scikit-learn candidates searched their grid, the heads did not
    points = selection["points"]
    # the written grid's five points, and any the search added past its edges, marked so
    searched = [p for p in points.values() if p["candidate"] == "sk_logreg"]
    assert sum(not p["extended"] for p in searched) == 5
    assert sum(p["candidate"] == "mlp" for p in points.values()) == 1
    for name, tuned in selection["tuned_points"].items():
        for f, label in enumerate(tuned):
            assert selection["inner_scores"][name][f] == min(
                p["inner_scores"][f] for p in points.values() if p["candidate"] == name)
            assert points[label]["candidate"] == name
    # the nested score, each candidate's plain CV score and the baselines, on the same folds
    assert cv["primary"] == "auto" and cv["verdict"]["primary"] == "auto"
    # only what won an outer fold, and the final model, was trained on the outer folds; the
    # final model has the best mean inner score
    trained = set(selection["candidates"]) - set(selection["not_trained"])
    assert "ensemble" in trained  # its members are trained on the outer folds for its row
    assert {"auto", "best_single", *trained, "pca_logreg", "linear_probe", "measures"} == set(
        cv["pooled"])
    # every winning point and the final point were trained on the outer folds (a candidate's
    # own row needs all its tuned points: a winner's other folds may have tuned elsewhere)
    singles = [p for p in [*selection["winner_points"], final["point"]]
               if not p.startswith("ensemble")]  # an ensemble's members are
    assert all(points[p]["checkpoint"] for p in singles) and all(selection["fold_checkpoints"])
    saved = {p.name.split(".")[0] for p in (run_dir / "checkpoints").iterdir()}
    recorded = {Path(p["checkpoint"]).name.split(".")[0] for p in points.values()
                if p.get("checkpoint")}
    for name in selection["not_trained"]:  # only its points that won were trained outside
        assert {s for s in saved if s == f"sample-{name}" or s.startswith(f"sample-{name}-")
                } <= recorded
    assert final["point"].split(":")[0] == min(
        points, key=lambda p: np.mean(points[p]["inner_scores"]))
    assert all("cv_score" in points[p] for p in singles if p != final["point"])
    assert "ensemble" in selection["cv_scores"]
    # outer fold f's out-of-fold predictions are its winner's
    for fold, winner in enumerate(selection["winners"]):
        models = cv["per_fold"][fold]["models"]
        if winner in models:
            assert models["auto"] == models[winner]
    report = (run_dir / "report.md").read_text()
    assert "## Model selection (nested CV)" in report and "Final model" in report
    assert "scored by the **ranked probability score (RPS)**" in report
    assert "auto-selected model (nested CV), image-level accuracy" in report

    images = sorted((tiny_descriptor.parent / "images").glob("*.tif"))[:2]
    cfg = predict_config(run_dir, images=[str(p) for p in images])
    table, _ = predict(cfg)
    served = "weighted mean of" if final.get("blend") else f"mean of {final['members']} refitted"
    assert table["model"].str.startswith(f"{final['point']}: {served}").all()


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
    # every grid point of every candidate, those the search added past a grid's edge too (the
    # other folds' optima move with their scrambled rows, so they may add other points)
    for label in clean.points.keys() & scrambled.points.keys():
        point, again = clean.points[label], scrambled.points[label].inner_scores
        assert again[0] == point.inner_scores[0]
        assert again[1:] != point.inner_scores[1:]
    assert scrambled.winner_points[0] == clean.winner_points[0]
    # the weighted ensemble of fold 0 was built on fold 0's inner images alone
    assert scrambled.ensemble[0] == clean.ensemble[0]
    assert scrambled.points["ensemble"].inner_scores[0] == clean.points["ensemble"].inner_scores[0]
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
    assert set(cfg.model.candidates) == CANDIDATES - {"corn", "level_value", "level_value_image"}
    numbers = make_cfg(*AUTO)
    check_losses(numbers, [Target("bc", "classification", ("50", "150", "250"), "BC", True,
                                  (50.0, 150.0, 250.0))])
    assert set(numbers.model.candidates) == CANDIDATES
    only = make_cfg(*AUTO, *(f"~model.candidates.{n}" for n in CANDIDATES
                             - {"corn", "level_value", "level_value_image"}))
    with pytest.raises(SinterlabError, match="every candidate .* needs an ordered"):
        check_losses(only, [Target("grade", "classification", ("low", "mid", "high"))])


@pytest.fixture(scope="module")
def two_level_descriptor(tmp_path_factory):
    """Two burst counts, 16 samples each (4 slides x 4 sets), two images per sample."""
    from sinterlab.synth.generate import generate_dataset, load_preset

    cfg = load_preset("tiny", design__burst_counts=[100, 250], design__slides=4, design__sets=4,
                      design__images_per_sample=2)
    return made_once(tmp_path_factory, "two_levels", lambda folder: generate_dataset(cfg, folder))


def test_selection_scores_what_predict_serves_not_raw_image_means(
        two_level_descriptor, shared_cache, tmp_path):
    """Issue 33: a patch-level model that is more accurate but under-confident per image (the
    mean of 40 weak patch probabilities sits near the middle), against an image-mean model that
    is sharp but less accurate. Scored on raw image means the sharp one wins every outer fold;
    scored on the image-calibrated probabilities predict serves, the accurate one does."""
    from tests.conftest import FAST, compose_train

    cfg = compose_train(FAST + [
        f"data.descriptor={two_level_descriptor}", f"features.cache_dir={shared_cache}",
        "model=auto", "protocol.seeds=[0]", "preprocess.patches.per_image=40",
        "model.selection.grid=none", "model.selection.outer_fits=all",
        "model.candidates.sk_logreg.module.C=1.0",
        "model.candidates.sk_logreg_image.module.C=1.0",
        *(f"~model.candidates.{n}" for n in CANDIDATES - {"sk_logreg", "sk_logreg_image"})],
        tmp_path)
    dm = SEMDataModule(cfg)
    dm.setup()
    # the level shows in one dimension, weakly per patch (noise 3 around +-1); 48 more dimensions
    # hold patch noise alone, which averages to a few images' worth of spurious structure
    rng = np.random.default_rng(0)
    y = dm.y[:, 0].numpy()
    dm.x = torch.tensor(np.hstack([(2 * y - 1 + rng.normal(scale=3.0, size=len(y)))[:, None],
                                   rng.normal(scale=5.0, size=(len(y), 48))]),
                        dtype=torch.float32)
    record, nested, _, candidates = select_model(cfg, dm, dm.assignment, "sample", tmp_path)
    from sinterlab.data.groups import group_means
    from sinterlab.evaluation.metrics import first_rows

    images = dm.patches["image"].to_numpy().astype(str)
    truth = y[first_rows(images)]
    accuracy, sureness = {}, {}
    for name, out in candidates.items():
        _, per_image = group_means(out, images)
        accuracy[name] = float(np.mean(per_image.argmax(axis=1) == truth))
        sureness[name] = float(np.mean(per_image.max(axis=1)))
    assert accuracy["sk_logreg"] > accuracy["sk_logreg_image"] + 0.1
    assert sureness["sk_logreg"] < sureness["sk_logreg_image"]  # under-confident per image
    points = record.points
    singles = [p for p in points if points[p].candidate != "ensemble"]
    raw_rule = [min(singles, key=lambda p: points[p].inner_scores_unserved[f])
                for f in range(5)]
    assert raw_rule == ["sk_logreg_image"] * 5  # the rule before: the sharp one, every fold
    assert record.winners == ["sk_logreg"] * 5
    assert record.final.model == "sk_logreg"


def test_a_chosen_model_behind_another_candidate_is_named():
    from sinterlab.evaluation.results import Interval, Intervals
    from sinterlab.evaluation.statistics import selection_check

    def cell(value, width):
        return Intervals(image={"accuracy": Interval(value, value - width / 2,
                                                      value + width / 2)})

    pooled = {"auto": cell(0.60, 0.10), "a": cell(0.60, 0.1), "b": cell(0.75, 0.1),
              "c": cell(0.70, 0.3)}
    check = selection_check(pooled, "image", "accuracy", True, {"nested": "auto", "final": "c"},
                            ["a", "b", "c"])
    assert check.nested.best_other == "b" and check.nested.disagrees
    assert abs(check.nested.behind_by - 0.15) < 1e-9
    assert check.final.best_other == "b" and not check.final.disagrees  # 0.05 < 0.3
    # lower is better (MAE): behind means larger
    check = selection_check({"auto": Intervals(image={"mae": Interval(30.0, 28, 32)}),
                             "a": Intervals(image={"mae": Interval(20.0)})}, "image", "mae",
                            False, {"nested": "auto"}, ["a"])
    assert check.nested.behind_by == 10.0 and check.nested.disagrees


def test_the_p_value_tests_the_served_image_model_or_names_its_proxy(make_cfg):
    from sinterlab.study.training import image_permutation_test

    cfg = make_cfg("evaluation.permutation.n=20")
    dm = SEMDataModule(cfg)
    dm.setup()
    test_fold = dm.test_fold(dm.assignment)
    image_model = OmegaConf.to_container(make_cfg("model=sk_logreg_image").model.module)
    served = image_permutation_test(cfg, dm, test_fold, ("sk_logreg_image C=0.01", image_model,
                                                         "image_mean"))
    assert served.tests_served_model and "sk_logreg_image C=0.01" in served.model
    assert served.n_permutations == 20 and 0 < served.p_value <= 1
    head = OmegaConf.to_container(cfg.model.module)
    proxy = image_permutation_test(cfg, dm, test_fold, ("mlp", head, "patch"), 0.9)
    assert not proxy.tests_served_model and proxy.proxy_for == "mlp"
    assert proxy.model == "ridge classifier on image-mean embeddings"
    assert proxy.served_accuracy == 0.9


def test_a_bag_head_trains_on_each_images_mean_row_and_serves_it_to_its_patches(make_cfg,
                                                                                tmp_path):
    from sinterlab.study.fit import fit_models, group_outputs, image_view, misfit

    cfg = make_cfg("model=mlp_image", "protocol.folds=3", "protocol.seeds=[0]")
    dm = SEMDataModule(cfg)
    dm.setup()
    view, first = image_view(dm)
    images = dm.patches["image"].to_numpy()
    assert len(view.x) == len(set(images)) == len(first)
    for row, image in enumerate(view.patches["image"]):  # its mean row, with its labels
        assert torch.allclose(view.x[row], dm.x[images == image].mean(dim=0), atol=1e-5)
        assert (dm.y[images == image] == view.y[row]).all()
    [(head, info)] = fit_models(cfg, dm, dm.assignment, tmp_path, ["bag"], [cfg.model])
    assert head.inputs == info.inputs == "image_mean"
    served = group_outputs(head, dm, dm.assignment).served
    for rows, per_target in zip(dm.rows(dm.assignment, "test"), served, strict=True):
        for image in set(images[rows]):  # every patch of an image: its image's output
            same = per_target[0][images[rows] == image]
            assert np.allclose(same, same[0])
    # a patch split puts an image's patches in several folds: no bag head there
    patch = make_cfg("model=mlp_image", "split=patch")
    assert "bag head" in misfit(patch, [Target("grade", "classification", ("low", "high"))],
                                patch.model)


@pytest.mark.slow
def test_a_bag_head_run_is_served_the_mean_of_each_images_patches(make_cfg, tiny_descriptor,
                                                                   tmp_path):
    """model=mlp_image end to end: the run records that its head read image means, and
    predict serves it (that a bag head reads an image's mean: tests/test_head.py)."""
    run_dir = tmp_path / "run"
    run_experiment(make_cfg("model=mlp_image", "evaluation.contrast.train_head=true"), run_dir)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["training"]["inputs"] == "image_mean"
    # the leak contrast's patch split puts an image's patches in several folds: no bag head
    # there, its baselines only
    assert "head" not in metrics["contrast"]["cv"]["pooled"]
    assert "linear_probe" in metrics["contrast"]["cv"]["pooled"]
    images = sorted((tiny_descriptor.parent / "images").glob("*.tif"))[:2]
    cfg = predict_config(run_dir, images=[str(p) for p in images])
    table, _ = predict(cfg)
    assert len(table) == 2 and table["model"].str.startswith("mlp_image").all()


def grid_point(name: str, params: dict, scores: list[float]):
    from sinterlab.evaluation.results import GridPoint
    from sinterlab.study.selection import Point

    return Point(f"{name} {params}", name, None, 0, 2, GridPoint(
        candidate=name, inner_scores=scores, inner_scores_unserved=scores, params=params))


def test_a_search_extends_the_edge_an_optimum_lies_on_until_a_hard_bound():
    from sinterlab.study.selection import Dimension, extension, where_optimum

    c = Dimension("module.C", "log", 1e-4, 1e2)
    assert c.beyond(10.0, +1) == 100.0 and c.beyond(100.0, +1) is None
    assert c.beyond(1e-3, -1) == 1e-4 and c.bound(100.0) == "high" and c.bound(1.0) is None
    pca = Dimension("module.pca", "log", 4, 64, factor=2)
    assert pca.beyond(16, +1) == 32 and pca.beyond(64, +1) is None
    dropout = Dimension("module.dropout", "linear", 0.0, 0.9, step=0.2)
    assert dropout.beyond(0.5, +1) == 0.7 and dropout.beyond(0.9, +1) is None
    # fold 0's optimum on the upper edge, fold 1's interior: one point one decade up
    points = [grid_point("lr", {"module.C": c_}, scores)
              for c_, scores in ((0.1, [0.5, 0.4]), (1.0, [0.4, 0.3]), (10.0, [0.3, 0.35]))]
    assert extension(points, {"module.C": c}, folds=2) == [{"module.C": 100.0}]
    points.append(grid_point("lr", {"module.C": 100.0}, [0.2, 0.5]))
    # still on the edge, but that edge is the hard bound: nothing more to try
    assert extension(points, {"module.C": c}, folds=2) == []
    written = {"module.C": [0.1, 1.0, 10.0]}
    assert where_optimum(points, points[-1], {"module.C": c}, written) == \
        "C=100 (at its hard bound (high))"
    assert where_optimum(points, points[1], {"module.C": c}, written) == "C=1"
    points.insert(0, grid_point("lr", {"module.C": 0.01}, [0.6, 0.6]))
    assert where_optimum(points, points[1], {"module.C": c}, {"module.C": [1.0, 10.0]}) == \
        "C=0.1 (past the written grid)"
    # a dimension without a search block is never extended, and its edge is named
    assert extension(points, {}, folds=2) == []
    assert where_optimum(points, points[-1], {}, written) == \
        "C=100 (on an edge of the values tried)"
    # the other dimensions stay at the best point's values; both edges of a one-value axis
    two = [grid_point("pca", {"module.pca": 16, "module.C": 1.0}, [0.1])]
    assert extension(two, {"module.pca": pca}, folds=1) == [
        {"module.pca": 32, "module.C": 1.0}, {"module.pca": 8, "module.C": 1.0}]


def test_the_one_se_rule_serves_the_simplest_candidate_the_inner_cv_cannot_tell_apart():
    import numpy as np

    from sinterlab.study.selection import choose

    rng = np.random.default_rng(0)
    base = 0.5 + rng.normal(0, 0.2, 40)
    wobble = rng.normal(0, 0.1, 40)
    wobble = (wobble - wobble.mean()) / wobble.std(ddof=1) * 0.1  # sd 0.1: SE 0.016

    def point(name, shift, spread=0.0):
        p = grid_point(name, {}, [])
        p.losses = [base + shift + wobble * (spread > 0)]
        p.record.inner_scores = [float(np.mean(p.losses[0]))]
        return p

    mlp = point("mlp", -0.01, spread=0.1)  # the best mean, by less than its noise
    measures = point("sk_measures", 0.0)
    svm = point("sk_svm", 0.3)  # clearly behind
    complexity = {"sk_measures": 1, "sk_svm": 9, "mlp": 13}
    picked, ties = choose([mlp, measures, svm], [0], "one_se", complexity)
    assert picked is measures and ties == ["sk_measures"]
    picked, ties = choose([mlp, measures, svm], [0], "best", complexity)
    assert picked is mlp and ties == ["sk_measures"]  # the report says so either way
    # a best point clearly ahead of every other is served by both rules
    clear = point("mlp", -0.3)
    assert choose([clear, measures, svm], [0], "one_se", complexity) == (clear, [])
