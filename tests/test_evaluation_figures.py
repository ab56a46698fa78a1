"""Every figure is written as a non-empty PNG (binary, multiclass, regression)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pytest

from sinterlab.evaluation import figures

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _assert_png(path):
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert len(data) > 1000


def _case(num_classes: int, n: int = 120, dim: int = 16, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, num_classes, n)
    logits = rng.normal(size=(n, num_classes)) + 2 * np.eye(num_classes)[y]
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    emb = rng.normal(size=(n, dim)) + y[:, None]
    return y, probs, emb


@pytest.mark.parametrize("num_classes", [2, 5])
def test_classification_figures(tmp_path, num_classes):
    y, probs, emb = _case(num_classes)
    names = [f"{50 * (c + 1)} BC" for c in range(num_classes)]
    out = tmp_path / f"c{num_classes}" / "figures"  # parent folders are created
    paths = [
        figures.plot_roc(y, probs, names, out / "roc.png"),
        figures.plot_confusion(y, probs.argmax(1), names, out / "confusion.png"),
        figures.plot_pca(emb, y, names, out / "pca.png"),
    ]
    for p in paths:
        assert p.parent == out
        _assert_png(p)


def test_ordered_confusion_counts_the_distance_from_the_diagonal(tmp_path):
    truth = np.array([0, 1, 2, 3, 4, 4])
    assert figures.distance_counts(truth, np.array([0, 2, 2, 1, 0, 4]), 5).tolist() == [
        3, 1, 1, 0, 1]
    y, probs, _ = _case(5)
    names = [f"{50 * (c + 1)} BC" for c in range(5)]
    plain = figures.plot_confusion(y, probs.argmax(1), names, tmp_path / "plain.png")
    ordered = figures.plot_confusion(y, probs.argmax(1), names, tmp_path / "ordered.png",
                                     ordered=True)
    width = {p: plt.imread(p).shape[1] for p in (plain, ordered)}
    assert width[ordered] == pytest.approx(1.5 * width[plain], rel=0.05)  # a third panel


def test_roc_with_class_missing_from_truth(tmp_path):
    y, probs, _ = _case(3)
    y[y == 2] = 0
    _assert_png(figures.plot_roc(y, probs, ["a", "b", "c"], tmp_path / "roc.png"))


def test_loss_curves(tmp_path):
    history = [
        {
            "epoch": e,
            "train_loss": 1.0 / (e + 1),
            **({"val_loss": 1.2 / (e + 1)} if e % 10 == 9 else {}),
        }
        for e in range(100)
    ]
    _assert_png(figures.plot_loss_curves(history, tmp_path / "loss.png"))
    _assert_png(figures.plot_loss_curves([], tmp_path / "empty_loss.png"))


def test_regression_figures(tmp_path):
    rng = np.random.default_rng(1)
    t = rng.uniform(0.1, 0.9, 80)
    p = t + rng.normal(0, 0.05, 80)
    _assert_png(figures.plot_parity(t, p, "duty_cycle", "", tmp_path / "parity.png"))
    _assert_png(figures.plot_parity(t * 200, p * 200, "burst_count", "BC", tmp_path / "p2.png"))
    emb = rng.normal(size=(80, 6)) + t[:, None]
    _assert_png(figures.plot_pca(emb, t, None, tmp_path / "pca_reg.png"))
