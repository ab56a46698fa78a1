"""Calibration: temperature scaling per member, image calibration of what predict serves, ECE
before/after per level with intervals, conformal intervals whose coverage holds on residuals
they never saw."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from scipy.special import softmax

from sinterlab.cli import CONF_DIR
from sinterlab.errors import SinterlabError
from sinterlab.evaluation.reliability import (
    classification_calibration,
    conformal_coverage,
    conformal_sets,
    conformal_threshold,
    expected_calibration_error,
    prediction_sets,
    set_label,
)
from sinterlab.evaluation.report import report_markdown
from sinterlab.manifest import MANIFEST
from sinterlab.models import calibration as calibration_module
from sinterlab.models.calibration import (
    ImageCalibration,
    MapCheck,
    _fit,
    _fit_map,
    _fit_temperatures,
    calibration_path,
    fit_image_calibration,
    load_image_calibration,
    pool_images,
)
from sinterlab.models.head import HeadEnsemble
from sinterlab.models.scores import ranked_probability_scores
from sinterlab.predict import predict
from sinterlab.study.training import run_experiment
from sinterlab.threads import library_threads
from tests.conftest import predict_config, refit_scale

AUTO = ["model=auto", "protocol.folds=3", "protocol.seeds=[0]", "model.selection.inner_folds=2"]
#: the shipped image calibration settings
CALIBRATION = OmegaConf.load(CONF_DIR / "evaluation" / "default.yaml").calibration
CHECK = MapCheck.from_config(CALIBRATION)


def overconfident(n=4000, classes=3, factor=4.0, seed=0):
    """Labels drawn from softmax(z); the logits a member reports are factor * z."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, classes)) * 1.5
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    labels = np.array([rng.choice(classes, p=row) for row in p])
    return torch.tensor(z * factor, dtype=torch.float32), torch.tensor(labels)


def test_temperature_undoes_overconfidence_and_keeps_the_class():
    logits, labels = overconfident()
    [t] = _fit(logits[None], labels)
    assert 3.0 < float(t) < 5.0  # the true factor is 4
    raw = logits.softmax(1).numpy()
    scaled = (logits / t).softmax(1).numpy()
    assert (raw.argmax(1) == scaled.argmax(1)).all()
    y = labels.numpy()
    assert expected_calibration_error(scaled, y, 10) < 0.5 * expected_calibration_error(raw, y,
                                                                                        10)


def correlated_patches(images, patches=40, classes=3, image_sd=1.0, patch_sd=2.0, gap=1.5,
                       seed=0):
    """One member's patch probabilities that are calibrated per patch (each is the exact
    posterior of its own patch) while the patches of an image share its deviation u:
    z = gap * onehot(y) + u + e, so an image's patches are correlated evidence."""
    rng = np.random.default_rng(seed)
    y = rng.integers(classes, size=images)
    z = (gap * np.eye(classes)[y][:, None] + rng.normal(0, image_sd, (images, 1, classes))
         + rng.normal(0, patch_sd, (images, patches, classes)))
    probs = softmax(gap * z / (image_sd ** 2 + patch_sd ** 2), axis=2)
    return (probs.reshape(1, -1, classes), np.repeat(y, patches),
            np.repeat(np.arange(images).astype(str), patches))


def test_image_calibration_fixes_what_averaging_correlated_patches_breaks():
    """Calibrated patches, mean-probability images: under-confident; the default image
    calibration, fitted on other images, brings image ECE under 0.05."""
    probs, labels, images = correlated_patches(2000, seed=2)
    val_probs, val_labels, val_images = correlated_patches(300, seed=1)
    assert expected_calibration_error(probs[0], labels, 10) < 0.02  # patches: calibrated
    image_labels = labels[::40]
    raw = expected_calibration_error(probs[0].reshape(2000, 40, 3).mean(1), image_labels, 10)
    calibration = fit_image_calibration(val_probs, val_labels, val_images,
                                        [np.arange(len(val_labels))],
                                        [np.zeros(len(val_labels), bool)], CALIBRATION.pooling,
                                        CALIBRATION.calibrator, check=CHECK)
    # informative images, raw probabilities under-confident: the map beats them held out
    assert calibration.kept.all()
    assert calibration.loss_map[0] < calibration.loss_raw[0] - 0.1
    names, served = calibration.apply(probs, images)
    assert (names == images[::40]).all()
    ece = expected_calibration_error(served[0], image_labels, 10)
    assert raw > 0.2 and ece < 0.05


def test_image_maps_are_cross_fitted_blind_to_their_test_rows_and_the_refit_takes_the_median():
    """Two folds, each validating on the other's test images: a map fitted on every member's
    validation images but its own test rows changes only when those other images change."""
    probs, labels, images = correlated_patches(200, patches=10)
    halves = [np.arange(0, 1000), np.arange(1000, 2000)]
    members = np.repeat(probs, 2, axis=0)
    hidden = [np.isin(np.arange(2000), half) for half in halves[::-1]]

    def fit(p):
        return fit_image_calibration(p, labels, images, halves, hidden, "mean_log_probability",
                                     "temperature", check=CHECK)

    calibration = fit(members)
    assert calibration.kept.all()
    assert not np.allclose(calibration.scale[0], calibration.scale[1])
    scrambled = members.copy()
    scrambled[:, 1000:] = scrambled[:, 1000:][:, ::-1]  # member 0's test rows
    again = fit(scrambled)
    assert np.allclose(again.scale[0], calibration.scale[0])
    assert not np.allclose(again.scale[1], calibration.scale[1])
    final = calibration.median(3)
    assert final.scale.shape == (3, 3)
    assert np.allclose(final.scale, np.median(calibration.scale, axis=0))


def calibrated_images(images, patches=10, classes=5, signal=1.0, seed=0):
    """Image probabilities that are exact posteriors (each label drawn from its image's
    probabilities), carried by every patch of the image: the raw mean of the patch
    probabilities is calibrated, and no map can improve it."""
    rng = np.random.default_rng(seed)
    p = softmax(rng.normal(0, signal, (images, classes)), axis=1)
    y = np.array([rng.choice(classes, p=row) for row in p])
    return (np.repeat(p, patches, axis=0)[None], np.repeat(y, patches),
            np.repeat(np.arange(images).astype(str), patches))


def one_group(probs, labels, images, check=CHECK, units=None, ordered=False):
    """The image calibration of one member from its own validation images, its solves on one
    thread as in a run (``library_threads``)."""
    with library_threads(1):
        return fit_image_calibration(probs, labels, images, [np.arange(len(labels))],
                                     [np.zeros(len(labels), bool)], CALIBRATION.pooling,
                                     CALIBRATION.calibrator, check=check, units=units,
                                     ordered=ordered)


def log_loss_of(probs, labels):
    return float(-np.log(probs[np.arange(len(labels)), labels]).mean())


@pytest.mark.parametrize("ordered, score", [(False, "log-loss"),
                                           (True, "ranked probability score (RPS)")])
def test_a_harmful_map_fitted_on_too_few_images_is_rejected_for_the_raw_probabilities(
        ordered, score):
    """Calibrated raw probabilities, a temperature fitted on 12 images: on fresh images it
    makes them worse; held out within those 12 images it does not beat them (by the shipped
    check's score of unordered classes, and of ordered ones), so the member serves the raw
    probabilities (the mean of its patches')."""
    fresh, fresh_labels, fresh_images = calibrated_images(3000, seed=100)
    truth, raw = fresh_labels[::10], fresh[0][::10]
    probs, labels, images = calibrated_images(12, seed=0)
    scale, bias = _fit_map(pool_images(probs, images, CALIBRATION.pooling)[1][0], labels[::10],
                           CALIBRATION.calibrator)
    harmful = softmax(scale * pool_images(fresh, fresh_images, CALIBRATION.pooling)[1][0]
                      + bias, axis=1)
    # the map those 12 images give sharpens calibrated probabilities (T = 0.67): harmful
    assert 1 / scale[0] < 0.8
    assert expected_calibration_error(harmful, truth, 10) > \
        expected_calibration_error(raw, truth, 10) + 0.05
    assert log_loss_of(harmful, truth) > log_loss_of(raw, truth) + 0.03
    calibration = one_group(probs, labels, images, ordered=ordered)
    assert not calibration.kept[0]
    assert calibration.loss_map[0] > calibration.loss_raw[0]  # the held-out evidence
    assert (calibration.scale == 1).all() and (calibration.bias == 0).all()
    names, served = calibration.apply(fresh, fresh_images)
    np.testing.assert_allclose(served[0], raw, rtol=1e-6)  # the raw mean of the patches
    assert calibration.describe() == ("kept the raw probabilities (mean of the patch "
                                      "probabilities): the fitted image temperature did not "
                                      f"improve the held-out {score}")
    # over many draws of 12 images: most maps are rejected, and what is served is better
    # on fresh images than every fitted map would be
    every_map = replace(CHECK, min_gain=-np.inf, standard_errors=0.0)
    kept, served_loss, mapped_loss = 0, [], []
    for seed in range(1, 21):
        probs, labels, images = calibrated_images(12, seed=seed)
        checked = one_group(probs, labels, images, ordered=ordered)
        always = one_group(probs, labels, images, every_map, ordered=ordered)
        kept += int(checked.kept[0])
        served_loss.append(log_loss_of(checked.apply(fresh, fresh_images)[1][0], truth))
        mapped_loss.append(log_loss_of(always.apply(fresh, fresh_images)[1][0], truth))
    assert kept <= 2
    assert np.mean(served_loss) < np.mean(mapped_loss) - 0.01


def test_maps_that_help_on_informative_images_are_kept():
    """Under-confident raw image probabilities (correlated patches, mean of probabilities) on
    40 validation images: the map beats them held out in nearly every draw, and what is
    served beats the raw probabilities on fresh images."""
    fresh, fresh_labels, fresh_images = correlated_patches(1000, seed=100)
    truth = fresh_labels[::40]
    raw = log_loss_of(fresh[0].reshape(1000, 40, 3).mean(1), truth)
    kept, served = 0, []
    for seed in range(10):
        calibration = one_group(*correlated_patches(40, seed=seed))
        kept += int(calibration.kept[0])
        served.append(log_loss_of(calibration.apply(fresh, fresh_images)[1][0], truth))
    assert kept >= 8
    assert np.mean(served) < raw - 0.1


def samples_of_levels(samples, images=4, patches=10, levels=5, hard_offset=2.0, seed=0):
    """An ordered target's under-confident patch probabilities: each patch reads a position on
    the level axis (its sample's level plus the sample's, its image's and its own noise) and
    gives a wide distribution around it, softmax(-(position - level)^2 / 8). Every 15th sample
    (the first) reads ``hard_offset`` levels above its own: a hard sample, confidently wrong
    once a map sharpens its images. Returns (probs (1, N, levels), labels, images, samples)."""
    rng = np.random.default_rng(seed)
    y = np.arange(samples) % levels
    position = (y + hard_offset * (np.arange(samples) % 15 == 0))[:, None, None] + \
        rng.normal(0, 0.3, (samples, 1, 1)) + rng.normal(0, 0.3, (samples, images, 1)) + \
        rng.normal(0, 1.0, (samples, images, patches))
    probs = softmax(-(position[..., None] - np.arange(levels)) ** 2 / 8, axis=-1)
    return (probs.reshape(1, -1, levels), np.repeat(y, images * patches),
            np.repeat(np.arange(samples * images).astype(str), patches),
            np.repeat(np.arange(samples).astype(str), images * patches))


def test_a_map_that_helps_is_kept_though_one_hard_sample_dominates_its_held_out_log_loss():
    """Issue 44's paper-preset level-value head: 15 samples of five ordered levels, raw image
    probabilities under-confident, one sample reading two levels off. The sharpening map helps
    fresh samples (hard ones among them at the same rate) by ECE, ranked probability score and
    log-loss; but held out, the hard sample's log-loss outweighs every other sample's gain
    (and 5 parts of 12 samples fit maps sharper than the one served), so the earlier check
    (5 parts, log-loss, 1 standard error) rejected it in most draws. The shipped check (each
    sample held out alone, the ranked probability score of ordered levels) keeps it."""
    fresh, fresh_labels, fresh_images, _ = samples_of_levels(600, seed=999)
    truth = fresh_labels[::10]
    raw = fresh[0].reshape(-1, 10, 5).mean(1)
    earlier = MapCheck(5, "log_loss", "log_loss", min_gain=0.0, standard_errors=1.0)
    kept, kept_earlier, served = 0, 0, []
    for seed in range(10):
        probs, labels, images, samples = samples_of_levels(15, seed=seed)
        calibration = one_group(probs, labels, images, units=samples, ordered=True)
        kept += int(calibration.kept[0])
        kept_earlier += int(one_group(probs, labels, images, earlier, units=samples,
                                      ordered=True).kept[0])
        served.append(calibration.apply(fresh, fresh_images)[1][0])
    assert kept >= 9 and kept_earlier <= 4

    def mean_over_draws(score):
        return np.mean([score(truth, probs) for probs in served])

    def ece(y, p):
        return expected_calibration_error(p, y, 10)

    def rps(y, p):
        return ranked_probability_scores(y, p).mean()

    assert mean_over_draws(ece) < ece(truth, raw) - 0.15
    assert mean_over_draws(rps) < rps(truth, raw) - 0.03
    assert mean_over_draws(lambda y, p: log_loss_of(p, y)) < log_loss_of(raw, truth) - 0.2


def test_the_checks_maps_fitted_in_one_solve_are_those_fitted_one_by_one():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, 120)
    scores = np.log(rng.dirichlet(np.ones(5), 120)) * 3 + 2 * np.eye(5)[labels]
    train = np.repeat(np.arange(30), 4)[None, :] != np.arange(30)[:, None]
    one_by_one = [1 / _fit_map(scores[m], labels[m], "temperature")[0][0] for m in train]
    np.testing.assert_allclose(_fit_temperatures(scores, labels, train), one_by_one, rtol=1e-3)


@pytest.mark.parametrize("folds", [None, 5])
def test_the_check_holds_out_whole_samples_and_deals_them_by_label(monkeypatch, folds):
    """The cross-fit parts: every sample's images in one part (the shipped check: each sample
    alone, ``folds: samples``), K parts each holding every label (as many samples per label as
    parts), each map fitted on the other parts only, and one last fit on every image for the
    map served."""
    probs, labels, images = correlated_patches(60, patches=4, seed=3)
    # 30 samples of two images each; labels per sample
    labels = np.repeat(np.arange(30) % 3, 8)
    units = np.repeat(np.arange(30).astype(str), 8)
    fits = []
    monkeypatch.setattr(calibration_module, "_fit_map", lambda scores, targets, calibrator: (
        fits.append((scores.copy(), targets.copy())) or _fit_map(scores, targets, calibrator)))
    # the check's maps are fitted in one solve, one mask per part
    monkeypatch.setattr(calibration_module, "_fit_temperatures", lambda scores, targets, train: (
        fits.extend((scores[m].copy(), targets[m].copy()) for m in train)
        or _fit_temperatures(scores, targets, train)))
    assert CHECK.folds is None  # conf: evaluation.calibration.check.folds=samples
    calibration = one_group(probs, labels, images, replace(CHECK, folds=folds), units=units)
    per_image_scores = pool_images(probs, images, CALIBRATION.pooling)[1][0]
    sample_of = units[::4]
    parts = folds or 30
    checks = fits[:parts] if calibration.kept[0] else fits
    assert len(checks) == parts and len(fits) == parts + int(calibration.kept[0])
    held_out = []
    for scores, _ in checks:
        fitted = {sample_of[np.flatnonzero((per_image_scores == row).all(1))[0]]
                  for row in scores}
        rest = set(sample_of) - fitted
        assert len(rest) == 30 // parts and len(scores) == 2 * (30 - len(rest))
        if folds:
            assert {int(s) % 3 for s in rest} == {0, 1, 2}  # every label held out in each
        held_out.append(rest)
    assert set().union(*held_out) == set(sample_of)  # every sample held out once
    if calibration.kept[0]:
        assert len(fits[-1][0]) == 60


def test_a_refit_keeps_the_median_map_only_where_most_members_kept_theirs():
    scale = np.array([[0.5] * 3, [0.7] * 3, [0.9] * 3, [1.0] * 3])
    bias = np.zeros((4, 3))
    mostly = ImageCalibration("mean_log_probability", "temperature", scale, bias,
                              np.array([True, True, False, True]))
    final = mostly.median(2)
    assert final.kept.all() and np.allclose(final.scale, 0.7)  # median of 0.5, 0.7, 1.0
    half = ImageCalibration("mean_log_probability", "temperature", scale, bias,
                            np.array([True, False, False, True]))
    raw = half.median(2)
    assert not raw.kept.any() and (raw.scale == 1).all() and (raw.bias == 0).all()
    assert "2 of 4 members" in half.describe()
    assert mostly.describe().startswith("image temperature on the mean log probability of "
                                        "the patches for 3 of 4 members")
    # served per member: the map where kept, the raw mean of the patch probabilities where not
    probs, _, images = correlated_patches(5, patches=4)
    members = np.repeat(probs, 4, axis=0)
    _, served = half.apply(members, images)
    means = probs[0].reshape(5, 4, 3).mean(1)
    np.testing.assert_allclose(served[1], means, rtol=1e-6)
    np.testing.assert_allclose(served[2], means, rtol=1e-6)
    assert not np.allclose(served[0], means)
    np.testing.assert_allclose(served[0], softmax(0.5 * pool_images(
        probs, images, "mean_log_probability")[1][0], axis=1))


def test_the_calibration_record_round_trips_and_an_older_one_keeps_every_map():
    probs, labels, images = correlated_patches(40, seed=0)
    calibration = one_group(probs, labels, images)
    record = calibration.as_dict()
    assert set(record) == {"pooling", "calibrator", "scale", "bias", "kept", "heldout_score",
                           "heldout_score_raw", "heldout_score_map", "heldout_gain_error"}
    again = ImageCalibration.from_dict(json.loads(json.dumps(record)))
    np.testing.assert_array_equal(again.kept, calibration.kept)
    np.testing.assert_allclose(again.loss_raw, calibration.loss_raw)
    assert again.score == calibration.score == "log_loss"  # unordered classes
    refit = ImageCalibration.from_dict(json.loads(json.dumps(calibration.median(2).as_dict())))
    assert refit.as_dict()["heldout_score_raw"] == [None, None]  # no check of its own
    older = {k: record[k] for k in ("pooling", "calibrator", "scale", "bias")}
    assert ImageCalibration.from_dict(older).kept.all()
    # a record from before the score was named: its held-out losses were log-losses
    unnamed = older | {"kept": record["kept"], "heldout_log_loss_raw": [0.9],
                       "heldout_log_loss_map": [0.8], "heldout_gain_error": [0.05]}
    read = ImageCalibration.from_dict(unnamed)
    assert read.score == "log_loss" and read.loss_raw.tolist() == [0.9]
    assert read.loss_map.tolist() == [0.8]


def test_calibration_block_reports_three_levels_with_intervals():
    logits, labels = overconfident(n=600)
    raw = logits.softmax(1).numpy()
    scaled = (logits / 4).softmax(1).numpy()
    images = np.repeat(np.arange(150).astype(str), 4)
    samples = np.repeat(np.arange(30).astype(str), 20)
    served = np.repeat(scaled.reshape(150, 4, 3).mean(1), 4, axis=0)
    out = classification_calibration(labels.numpy(), raw, scaled, served, images, samples,
                                     samples, 10, 50, 0, 0.95)
    assert [out[level]["n"] for level in ("patch", "image", "sample")] == [600, 150, 30]
    assert out["patch"]["ece_calibrated"] < out["patch"]["ece_raw"]
    for level in ("patch", "image", "sample"):
        for key in ("raw", "calibrated"):
            low, high = out[level][f"ece_{key}_interval"]
            assert 0 <= low < high <= 1
    # resampling samples, the calibrated patches are still clearly better
    assert out["patch"]["ece_calibrated_interval"][1] < out["patch"]["ece_raw_interval"][0]
    assert out["images_class_changed"] == 0  # served: the mean of the counted probabilities
    assert out["image"]["ece_calibrated"] == pytest.approx(
        expected_calibration_error(served[::4], labels.numpy()[::4], 10))


def test_conformal_intervals_cover_what_they_promise():
    rng = np.random.default_rng(0)
    truth = rng.uniform(50, 250, 600)
    predicted = truth + rng.normal(0, 20, 600)
    folds = np.arange(600) % 5
    out = conformal_coverage(truth, predicted, folds, 0.9)
    assert 0.86 <= out["coverage"] <= 0.94
    assert out["half_width"] == pytest.approx(1.645 * 20, rel=0.15)
    assert conformal_coverage(truth, predicted, np.zeros(600), 0.9)["coverage"] is None


def _probabilities(n: int, classes: int, signal: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    logits = rng.normal(size=(n, classes))
    logits[np.arange(n), labels] += signal
    probs = np.exp(logits)
    return labels, probs / probs.sum(axis=1, keepdims=True)


def test_prediction_sets_cover_what_they_promise():
    labels, probs = _probabilities(600, 5, 1.5)
    folds = np.arange(600) % 5
    plain = conformal_sets(labels, probs, folds, 0.9, ordered=False)
    assert 0.86 <= plain["coverage"] <= 0.94 and 1 < plain["mean_size"] < 5
    assert len(plain["per_fold"]) == 5
    # an ordered target's sets are ranges: never smaller, so never less often right
    ordered = conformal_sets(labels, probs, folds, 0.9, ordered=True)
    assert ordered["coverage"] >= plain["coverage"]
    assert ordered["mean_size"] >= plain["mean_size"]
    sets = prediction_sets(probs, ordered["threshold"], ordered=True)
    for row in sets:  # contiguous: one run of True
        assert np.diff(row.astype(int)).clip(0).sum() <= 1 - row[0]
    # a sharper model gets smaller sets at the same coverage
    labels, sharp = _probabilities(600, 5, 4.0)
    assert conformal_sets(labels, sharp, folds, 0.9, False)["mean_size"] < plain["mean_size"]
    # the predicted class is always in the set, even at a low confidence
    loose = prediction_sets(probs, conformal_threshold(probs[:, 0], 0.1), ordered=False)
    assert loose[np.arange(600), probs.argmax(axis=1)].all()
    assert conformal_sets(labels, sharp, np.zeros(600), 0.9, False)["coverage"] is None


def test_set_labels_read_as_ranges_or_lists():
    classes = ["50", "100", "150", "200", "250"]
    members = np.array([False, False, True, True, False])
    assert set_label(members, classes, "BC", ordered=True) == "150–200 BC"
    assert set_label(members, classes, "BC", ordered=False) == "150 BC | 200 BC"
    assert set_label(np.array([True, False]), ["Cu", "Ni"], "", ordered=False) == "Cu"


@pytest.mark.slow
def test_a_run_reports_ece_before_and_after(make_cfg, tmp_path):
    run_experiment(make_cfg("protocol.folds=3", "protocol.seeds=[0,1]"), tmp_path)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    cal = metrics["calibration"]
    for level in ("patch", "image", "sample"):
        assert {"ece_raw", "ece_calibrated", "ece_calibrated_interval"} <= set(cal[level])
    assert cal["bootstrap"]["unit"] == "sample"
    [temps] = metrics["training"]["temperatures"]
    assert len(temps) == 6 and all(0.05 <= t <= 20 for t in temps)
    [image] = metrics["training"]["image_calibration"]
    assert np.asarray(image["scale"]).shape == (6, 3)
    # per fold (its two seeds alike) the map or the raw probabilities, by the held-out ranked
    # probability score of the ordered levels
    assert image["heldout_score"] == CHECK.ordered_score == "rps"
    kept = np.asarray(image["kept"])
    gain = np.subtract(image["heldout_score_raw"], image["heldout_score_map"])
    needed = CHECK.min_gain + CHECK.standard_errors * np.asarray(image["heldout_gain_error"])
    assert (kept == (gain > needed)).all() and (kept[::2] == kept[1::2]).all()
    assert (np.asarray(image["scale"])[~kept] == 1).all()
    assert cal["served"] == ImageCalibration.from_dict(image).describe()
    assert (tmp_path / "figures" / "reliability.png").stat().st_size > 0
    report = (tmp_path / "report.md").read_text()
    assert "Image level (what `sinterlab-predict` serves): ECE" in report
    sets = cal["sets"]
    assert sets["ordered"] and sets["confidence"] == 0.9 and len(sets["per_fold"]) == 3
    assert 0 <= sets["coverage"] <= 1 and 1 <= sets["mean_size"] <= 3
    assert "**Prediction sets at 90%**" in report
    # the report of a run from before image calibration still reads its (patch, image) block
    older = {k: v for k, v in cal.items() if k in ("bins", "patch", "image")}
    older = {k: {m: x for m, x in v.items() if "interval" not in m} if isinstance(v, dict)
             else v for k, v in older.items()}
    text = report_markdown(metrics | {"calibration": older}, None, tmp_path)
    assert "ECE temperature-scaled" in text and "reports the mean of the" in text
    # a checkpoint from before temperature scaling loads, uncalibrated
    checkpoint = tmp_path / metrics["training"]["checkpoint"]
    assert load_image_calibration(checkpoint)[0].scale.shape == (6, 3)
    state = torch.load(checkpoint, weights_only=False)
    del state["state_dict"]["temperature_0"]
    torch.save(state, checkpoint)
    head = HeadEnsemble.load_from_checkpoint(checkpoint, map_location="cpu")
    assert head.temperatures()[0] == [1.0] * 6


@pytest.mark.slow
def test_predict_serves_the_image_calibration_of_the_final_model(make_cfg, tiny_descriptor,
                                                                  tmp_path):
    """model=auto: the refit without validation rows serves the median calibration of its
    candidate's CV members; without its calibration the run is refused, and a run from before
    image calibration (no manifest recording it) says what it serves (one model served: an
    ensemble's members are tested in test_ensemble.py)."""
    run_experiment(make_cfg(*AUTO, "model.selection.ensemble.enabled=false"), tmp_path)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    final = metrics["selection"]["final"]
    members = metrics["training"]["image_calibration"][0]
    assert final["image_calibration"][0]["scale"] == [refit_scale(members)]
    served = ImageCalibration.from_dict(final["image_calibration"][0]).describe()
    cfg = predict_config(tmp_path)
    cfg.images = [str(p) for p in sorted((tiny_descriptor.parent / "images").glob("*.tif"))[:3]]
    table, _ = predict(cfg)
    assert table["burst_count_calibration"].eq(served).all()
    # the conformal set holds the predicted level; numbers are ordered: a range, in BC
    for level, members in zip(table["burst_count"], table["burst_count_set"], strict=True):
        low, _, high = members.removesuffix(" BC").partition("–")
        assert int(low) <= int(level) <= int(high or low)  # a range holds every level inside
        assert not high or int(low) < int(high)
    assert (table["set_confidence"] == 0.9).all()
    expected = table["burst_count_expected"]
    assert ((expected >= 50) & (expected <= 250)).all()
    served = table["burst_count_confidence"].to_numpy()
    calibration_path(tmp_path / final["checkpoint"]).unlink()
    with pytest.raises(SinterlabError, match="image calibration of the served model is missing"):
        predict(cfg)
    (tmp_path / MANIFEST).unlink()
    older, _ = predict(cfg)
    assert older["burst_count_calibration"].str.startswith("patch temperature (older run)").all()
    # (the tiny run's probabilities are almost uniform: the two maps may agree to the table's
    # four decimals, so only the label and the range are asserted here)
    assert ((older["burst_count_confidence"] >= 1 / 3 - 1e-4) & (served <= 1)).all()
