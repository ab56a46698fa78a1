"""How much data: nested, stratified subsets that never touch a test sample; a learning curve
that rises on embeddings with a known signal and projects monotonically; the power law fit;
simulated studies; the report section, its figure and its console line."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from matplotlib.collections import PolyCollection

from sinterlab.cli.train import summary_lines
from sinterlab.errors import SinterlabError
from sinterlab.evaluation.data_report import console_line, how_much_data_section
from sinterlab.evaluation.figures import learning_curve_figure
from sinterlab.evaluation.learning_curve import (
    PowerLaw,
    SampleOutcomes,
    fit_power_laws,
    nested_keep,
    simulate_studies,
)
from sinterlab.evaluation.results import FinalModel, LearningCurves, jsonable, load
from sinterlab.study.data_size import (
    check_subset,
    learning_curves,
    served_config,
    served_outputs,
    subsets,
    variance_block,
)
from sinterlab.study.datamodule import SEMDataModule
from sinterlab.study.fit import Outputs, fit_models
from sinterlab.study.record import ProtocolOutputs
from sinterlab.synth.generate import generate_dataset, load_preset
from tests.conftest import FAST, compose_train, made_once

#: model=auto with the fast image-mean candidate only, three folds
FAST_AUTO = ["model=auto", "protocol.folds=3", "protocol.seeds=[0]",
             *(f"~model.candidates.{name}" for name in ("mlp", "linear", "mlp_small", "sk_logreg",
                                                       "sk_pca_logreg", "corn", "level_value",
                                                       "mlp_image", "level_value_image")),
             "evaluation.learning_curve.draws=2", "evaluation.bootstrap.n=200",
             "evaluation.learning_curve.studies.studies=100",
             "evaluation.learning_curve.studies.permutations=50",
             "evaluation.learning_curve.max_factor=3",
             "evaluation.variance_components.bootstrap=50"]


def test_nested_keep_is_nested_and_stratified():
    rng = np.random.default_rng(0)
    units = np.repeat([f"s{i}" for i in range(20)], 3)  # 20 samples of 3 rows
    strata = np.repeat(["a"] * 12 + ["b"] * 8, 3)  # 12 and 8 samples per class
    fractions = [0.1, 0.25, 0.5, 1.0]
    keep = nested_keep(units, strata, fractions, rng)
    for smaller, larger in zip(keep[:-1], keep[1:], strict=True):
        assert not (smaller & ~larger).any()  # nested
    for k, f in enumerate(fractions):
        for stratum, n in (("a", 12), ("b", 8)):
            kept = {u for u in units[keep[k] & (strata == stratum)]}
            assert len(kept) == max(1, int(np.floor(f * n + 0.5)))
        # whole units only: a unit's rows are kept or dropped together
        for u in np.unique(units):
            assert len(set(keep[k][units == u])) == 1
    assert keep[-1].all()


def test_power_law_fit_recovers_a_known_curve_and_projects_monotonically():
    x = np.array([1.5, 3.0, 4.5, 6.0])
    truth = PowerLaw(np.array([0.15]), np.array([0.6]), np.array([0.7]))
    rng = np.random.default_rng(1)
    noisy = truth(x) + rng.normal(0, 0.01, (300, 4))
    draws = fit_power_laws(x, noisy, np.full(4, 0.01), (0.0, 0.8), np.linspace(0.1, 2, 39))
    at = np.array([12.0, 24.0])
    assert np.median(draws(at), axis=0) == pytest.approx(truth(at)[0], abs=0.02)
    grid = np.geomspace(1, 100, 50)
    assert (np.diff(draws(grid), axis=1) <= 1e-12).all()  # a loss that never rises
    assert np.median(draws.reach(0.3)) == pytest.approx(truth.reach(0.3)[0], rel=0.15)
    assert np.isinf(truth.reach(0.1)[0])  # below the floor: never
    # a flat (or falling) score gives a flat curve, not a rising projection
    flat = fit_power_laws(x, np.array([[0.5, 0.52, 0.49, 0.51]]), np.full(4, 0.02),
                          (0.0, 0.8), np.linspace(0.1, 2, 39))
    assert flat(48.0)[0, 0] == pytest.approx(flat(6.0)[0, 0], abs=0.02)


def test_simulated_studies_keep_a_samples_images_together():
    # samples read all right or all wrong: the permutation null is as wide as the samples', and
    # a clear signal reaches p < 0.05 more often with more samples
    label = np.repeat([0, 1], 6)
    correct = np.array([1, 1, 1, 1, 1, 0] * 2, dtype=float)
    read = np.zeros((12, 2))
    read[np.arange(12), np.where(correct > 0, label, 1 - label)] = 1.0
    outcomes = SampleOutcomes(label, np.full(12, 10.0), correct, read)
    rng = np.random.default_rng(0)
    power = []
    for n in (3, 12):
        accuracy, p = simulate_studies(outcomes, n, 200, 100, np.zeros(200), rng)
        assert np.mean(accuracy) == pytest.approx(5 / 6, abs=0.05)
        power.append(np.mean(p < 0.05))
    assert power[0] < power[1]
    # an image-level test would count 10 images per sample as independent: far more power at 3
    assert power[0] < 0.6


@pytest.fixture(scope="module")
def many_samples(tmp_path_factory):
    """12 samples per burst count (3 counts) of 2 tiny images each."""
    cfg = load_preset("tiny", design__sets=6)
    return made_once(tmp_path_factory, "many_samples",
                     lambda folder: generate_dataset(cfg, folder))


def signal_embeddings(dm: SEMDataModule, strength: float, seed: int = 0) -> None:
    """Replace the embeddings by a known signal: class means along three directions, plus
    noise per sample (large), per image and per patch, in 24 dimensions."""
    rng = np.random.default_rng(seed)
    y = dm.y[:, 0].numpy().astype(int)
    dim = 24
    centers = rng.normal(size=(3, dim)) * strength
    x = centers[y]
    for column, scale in (("sample_id", 1.0), ("image", 0.3)):
        codes = np.unique(dm.patches[column].to_numpy().astype(str), return_inverse=True)[1]
        x = x + rng.normal(size=(codes.max() + 1, dim))[codes] * scale
    x = x + rng.normal(size=x.shape) * 0.2
    dm.x = torch.from_numpy(x.astype(np.float32))


def fake_block(dm: SEMDataModule, point: str, params: dict,
               ) -> tuple[SimpleNamespace, ProtocolOutputs]:
    """What learning_curves reads of an evaluated block (the primary model and its final point,
    the baselines' scores) and its out-of-fold outputs (the reported model's)."""
    tested = dm.test_fold(dm.assignment)
    output = np.full((len(dm.x), 3), 1 / 3)
    block = SimpleNamespace(
        cv=SimpleNamespace(primary="auto", verdict=SimpleNamespace(
            higher_is_better=True, scores={"pca_logreg": 0.6, "linear_probe": 0.5})),
        selection=SimpleNamespace(final=FinalModel(
            model=point, point=f"{point} C=1.0", params=params, module={}, inputs="image",
            members=1, checkpoint="", kind="sklearn", wall_s=0.0)),
        reported="auto")
    return block, ProtocolOutputs(primary=Outputs([output], [output], [output]), models={},
                                  test_fold=tested)


@pytest.fixture(scope="module")
def curve_run(many_samples, shared_cache, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("curve")
    cfg = compose_train(FAST + [f"data.descriptor={many_samples}",
                                f"features.cache_dir={shared_cache}", *FAST_AUTO], run_dir)
    dm = SEMDataModule(cfg)
    dm.setup()
    signal_embeddings(dm, strength=0.45)
    block, oof = fake_block(dm, "sk_logreg_image", {"module.C": 1.0})
    return cfg, dm, (block, oof), learning_curves(cfg, dm, block, oof)


def test_subsets_are_nested_stratified_and_never_touch_a_test_sample(curve_run):
    cfg, dm, _, _ = curve_run
    outer = dm.assignment
    fractions = [0.25, 0.5, 0.75]
    labels = dm.y[:, 0].numpy()
    samples = dm.patches["sample_id"].to_numpy().astype(str)
    per_fraction = subsets(dm, outer, "samples", fractions, 2, ("train", "val"), 0)
    for d in range(2):
        for f in range(len(outer)):
            fit_outer = np.isin(outer[f], ("train", "val"))
            kept = [set(samples[np.isin(per_fraction[k][d][f], ("train", "val"))])
                    for k in range(len(fractions))]
            assert kept[0] <= kept[1] <= kept[2]  # nested
            for k, fraction in enumerate(fractions):
                subset = per_fraction[k][d]
                check_subset(dm, outer, subset, "sample")
                assert np.array_equal(subset[f] == "test", outer[f] == "test")
                for c in np.unique(labels):
                    n = len(set(samples[fit_outer & (labels == c)]))
                    got = len(set(samples[np.isin(subset[f], ("train", "val"))
                                          & (labels == c)]))
                    assert got == max(1, int(np.floor(fraction * n + 0.5)))  # stratified
                tested = set(samples[subset[f] == "test"])
                assert not tested & kept[k]  # fold disjointness
    leaky = per_fraction[0][0].copy()
    leaky[0, np.flatnonzero(outer[0] == "test")[0]] = "train"
    with pytest.raises(AssertionError, match="test rows"):
        check_subset(dm, outer, leaky, "sample")
    leaky = per_fraction[0][0].copy()
    other = np.flatnonzero((outer[0] == "train") & (leaky[0] == "-"))[0]
    leaky[0, other] = "test"
    leaky[0, outer[0] == "test"] = "test"
    with pytest.raises((AssertionError, SinterlabError)):
        check_subset(dm, outer, leaky, "sample")


def test_no_test_sample_reaches_a_subset_model(curve_run, tmp_path):
    """Fold 0's subset models (every fraction, and all of today's data) fit the same weights
    whatever fold 0's test samples hold: their labels and embeddings changed, nothing moves."""
    cfg, dm, (block, _), _ = curve_run
    model = served_config(cfg, block)
    fold0 = [a[:1] for a in [dm.assignment, *subsets(dm, dm.assignment, "samples",
                                                      [0.25, 0.5], 1, ("train", "val"), 0)[0]]]
    test0 = dm.assignment[0] == "test"
    y, x = dm.y.clone(), dm.x.clone()
    [(clean, _)] = fit_models(cfg, dm, np.concatenate(fold0), tmp_path, ["a"], [model], [0])
    try:
        dm.y[test0, 0] = (dm.y[test0, 0] + 1) % 3
        dm.x[test0] = torch.randn(int(test0.sum()), dm.x.shape[1]) * 5
        [(changed, _)] = fit_models(cfg, dm, np.concatenate(fold0), tmp_path, ["b"], [model],
                                    [0])
    finally:
        dm.y, dm.x = y, x
    for before, after in zip(clean.weights, changed.weights, strict=True):
        np.testing.assert_array_equal(before, after)
    # and the outputs the curve scores are the test rows' only, one per tested patch
    outputs = served_outputs(cfg, dm, model, [dm.assignment], [0])[0]
    assert np.isfinite(outputs[dm.test_fold(dm.assignment) >= 0]).all()


def test_a_curve_with_a_known_signal_rises_and_projects_monotonically(curve_run):
    _, dm, _, record = curve_run
    samples = record.axes["samples"]
    points = [p.accuracy.value for p in samples.points]
    assert points[-1] > points[0] + 0.05  # more samples, better on the same test samples
    assert [p.x for p in samples.points] == sorted(p.x for p in samples.points)
    assert samples.today == pytest.approx(12.0)
    projection = samples.projection["accuracy"]
    assert [p.multiplier for p in projection] == [2.0, 4.0]
    fit = samples.fit["accuracy"]
    fitted_today = 1 - fit.floor - fit.scale * 12.0 ** -fit.exponent
    assert fitted_today <= projection[0].value <= projection[1].value
    for p in projection:
        assert p.low <= p.value <= p.high
        assert p.run_low <= p.value <= p.run_high
    assert np.all(np.diff(fit.band.value) >= -1e-12)
    # the baseline's curve, the images and patches axes, the samples needed, the studies
    assert record.baseline_curve.points[-1].x == pytest.approx(12.0)
    # two images per sample thin to 1 or 2 only: two sizes cannot fit a curve of three numbers
    assert set(record.axes) == {"samples", "patches"}
    assert "only 2 distinct size(s) (1, 2 images per sample" in record.axes_skipped["images"]
    assert [n.accuracy for n in record.needed] == [0.8, 0.9]
    assert record.studies.today == 12
    # metrics.json-ready, and read back as the same record
    assert load(LearningCurves, json.loads(json.dumps(jsonable(record)))) == record


def test_report_section_figure_and_console_line(curve_run):
    cfg, dm, block, record = curve_run
    vc = variance_block(cfg, dm, *block)
    text = "\n".join(how_much_data_section(record, vc, dm.descriptor.targets[0]))
    assert text.startswith("## How much data")
    assert "**More samples** (today 12.0 samples per class)" in text
    assert "**2x (projected)**" in text and "**4x (projected)**" in text
    assert "sk_logreg_image C=1.0" in text and "PCA + logistic/ridge, more samples" in text
    assert "image accuracy 0.8:" in text
    assert "A permutation test against chance reaches p < 0.05" in text
    assert vc.sentence[1:] in text
    line = console_line(record, vc)
    assert line.startswith("how much data: image accuracy") and "2x samples (24 per class)" in line
    assert vc.advice in line
    fig = learning_curve_figure(record, "BC", chance=1 / 3)
    axes = fig.axes
    assert [a.get_title() for a in axes] == ["more samples", "more patches",
                                              "more samples", "more patches"]
    assert "More images per sample: not measured (the subsets hold only 2" in text
    assert axes[0].get_xlabel() == "samples per class"
    assert axes[0].get_ylabel() == "image accuracy" and axes[2].get_ylabel() == "image MAE (BC)"
    assert any(isinstance(c, PolyCollection) for c in axes[0].collections)  # the band
    labels = axes[0].get_legend_handles_labels()[1]
    assert "pca_logreg: measured" in labels and "today" in labels and "chance" in labels
    # without learning curves: the variance sentence and how to turn them on
    off = how_much_data_section(None, vc, dm.descriptor.targets[0])
    assert "evaluation.learning_curve.enabled=true" in "\n".join(off)


@pytest.mark.slow
def test_a_run_with_learning_curves_records_and_reports_them(make_cfg, tmp_path):
    from sinterlab.study.training import run_experiment
    run_dir = tmp_path / "run"
    metrics = run_experiment(make_cfg(*FAST_AUTO, "evaluation.learning_curve.enabled=true",
                                      "evaluation.contrast.enabled=false"), run_dir)
    saved = json.loads((run_dir / "metrics.json").read_text())
    lc, vc = saved["learning_curve"], saved["variance_components"]
    assert {"points", "fit", "projection"} <= set(lc["axes"]["samples"])
    assert lc["figure"] == "figures/learning_curve.png" and (run_dir / lc["figure"]).is_file()
    assert set(vc["components"]) == {"between_samples", "between_images", "between_patches"}
    report = (run_dir / "report.md").read_text()
    assert "## How much data" in report and "![learning curves](figures/learning_curve.png)" \
        in report
    assert any(line.startswith("how much data:") for line in summary_lines(metrics, run_dir))
    assert any(s["stage"] == "how much data: learning curves" for s in saved["stages"])


def test_a_head_thins_its_training_rows_only_and_trains_every_subset_at_once(
        curve_run, many_samples, shared_cache, tmp_path):
    _, dm, _, _ = curve_run
    cfg = compose_train(FAST + [f"data.descriptor={many_samples}",
                                f"features.cache_dir={shared_cache}", "model=linear",
                                "protocol.folds=3"], tmp_path)
    head = cfg.model
    smaller = subsets(dm, dm.assignment, "samples", [0.25], 2, ("train",), 0)[0]
    for subset in smaller:
        check_subset(dm, dm.assignment, subset, "sample")
        assert np.array_equal(subset == "val", dm.assignment == "val")  # early stopping's rows
        assert (subset == "train").sum() < (dm.assignment == "train").sum()
    outputs = served_outputs(cfg, dm, head, [dm.assignment, *smaller], [0])
    tested = dm.test_fold(dm.assignment) >= 0
    for out in outputs:
        assert out.shape == (len(dm.x), 3) and np.isfinite(out[tested]).all()
        np.testing.assert_allclose(out[tested].sum(axis=1), 1.0, rtol=1e-5)


def test_subsets_that_cannot_differ_give_no_projection(shared_cache, tmp_path):
    """Two samples per class: every 'fewer samples' subset keeps as many as today's data
    (a class needs its samples), so no curve or projection is drawn through identical points;
    the record says why in one sentence."""
    data = generate_dataset(load_preset("tiny", design__sets=1), tmp_path / "data")
    cfg = compose_train(FAST + [f"data.descriptor={data}", f"features.cache_dir={shared_cache}",
                                *FAST_AUTO], tmp_path / "run")
    dm = SEMDataModule(cfg)
    dm.setup()
    signal_embeddings(dm, strength=0.45)
    block, oof = fake_block(dm, "sk_logreg_image", {"module.C": 1.0})
    record = learning_curves(cfg, dm, block, oof)
    skipped = {**(record.axes_skipped or {}),
               **({"all": record.skipped} if record.skipped else {})}
    assert any("distinct size" in why and "no projection" in why
               for why in skipped.values()), record
    assert "samples" not in (record.axes or {})
    line = console_line(record, None)
    assert line is None or "samples (" not in line
