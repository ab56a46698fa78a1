"""Calibration: temperature scaling per member, ECE before/after, conformal intervals whose
coverage holds on residuals they never saw."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from sinterlab.evaluation.calibration import (
    classification_calibration,
    conformal_coverage,
    expected_calibration_error,
)
from sinterlab.models.calibration import _fit
from sinterlab.models.head import HeadEnsemble
from sinterlab.training import run_experiment


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


def test_calibration_block_reports_both_levels():
    logits, labels = overconfident(n=600)
    raw = logits.softmax(1).numpy()
    scaled = (logits / 4).softmax(1).numpy()
    images = np.repeat(np.arange(150).astype(str), 4)
    out = classification_calibration(labels.numpy(), raw, scaled, images, 10)
    assert out["patch"]["n"] == 600 and out["image"]["n"] == 150
    assert out["patch"]["ece_calibrated"] < out["patch"]["ece_raw"]
    assert len(out["patch"]["curve_raw"]["confidence"]) == len(
        out["patch"]["curve_raw"]["accuracy"])


def test_conformal_intervals_cover_what_they_promise():
    rng = np.random.default_rng(0)
    truth = rng.uniform(50, 250, 600)
    predicted = truth + rng.normal(0, 20, 600)
    folds = np.arange(600) % 5
    out = conformal_coverage(truth, predicted, folds, 0.9)
    assert 0.86 <= out["coverage"] <= 0.94
    assert out["half_width"] == pytest.approx(1.645 * 20, rel=0.15)
    assert conformal_coverage(truth, predicted, np.zeros(600), 0.9)["coverage"] is None


def test_a_run_reports_ece_before_and_after(make_cfg, tmp_path):
    run_experiment(make_cfg("protocol.folds=3", "protocol.seeds=[0,1]"), tmp_path)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    cal = metrics["calibration"]
    assert {"ece_raw", "ece_calibrated"} <= set(cal["image"])
    [temps] = metrics["training"]["temperatures"]
    assert len(temps) == 6 and all(0.05 <= t <= 20 for t in temps)
    assert (tmp_path / "figures" / "reliability.png").stat().st_size > 0
    assert "ECE temperature-scaled" in (tmp_path / "report.md").read_text()
    # a checkpoint from before temperature scaling loads, uncalibrated
    checkpoint = tmp_path / metrics["training"]["checkpoint"]
    state = torch.load(checkpoint, weights_only=False)
    del state["state_dict"]["temperature_0"]
    torch.save(state, checkpoint)
    head = HeadEnsemble.load_from_checkpoint(checkpoint, map_location="cpu")
    assert head.temperatures()[0] == [1.0] * 6
