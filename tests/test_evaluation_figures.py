"""Each figure shows what it says: the curves, counts, points and labels of its data (binary,
multiclass, regression), read from the matplotlib figure before it is saved."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pytest
from sklearn.decomposition import PCA
from sklearn.metrics import (
    confusion_matrix,
    mean_absolute_error,
    r2_score,
    roc_auc_score,
    roc_curve,
)

from sinterlab.evaluation import figures
from sinterlab.evaluation.results import Calibration, load


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def _case(num_classes: int, n: int = 120, dim: int = 16, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, num_classes, n)
    logits = rng.normal(size=(n, num_classes)) + 2 * np.eye(num_classes)[y]
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    emb = rng.normal(size=(n, dim)) + y[:, None]
    return y, probs, emb


def _names(num_classes: int) -> list[str]:
    return [f"{50 * (c + 1)} BC" for c in range(num_classes)]


def _labels(ax) -> list[str]:
    return [text.get_text() for text in ax.get_legend().get_texts()]


@pytest.mark.parametrize("num_classes", [2, 5])
def test_roc_draws_one_curve_per_class_with_its_auc(num_classes):
    y, probs, _ = _case(num_classes)
    names = _names(num_classes)
    [ax] = figures.roc_figure(y, probs, names).axes
    classes = [1] if num_classes == 2 else range(num_classes)
    *curves, chance = ax.get_lines()
    assert len(curves) == len(classes)
    for line, c in zip(curves, classes, strict=True):
        fpr, tpr, _ = roc_curve(y == c, probs[:, c])
        np.testing.assert_allclose(line.get_xdata(), fpr)
        np.testing.assert_allclose(line.get_ydata(), tpr)
        assert line.get_label() == f"{names[c]} (AUC = {roc_auc_score(y == c, probs[:, c]):.3f})"
    assert chance.get_label() == "chance" and list(chance.get_xdata()) == [0, 1]
    assert ax.get_title() == ("ROC" if num_classes == 2 else "ROC (one-vs-rest)")
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("false positive rate", "true positive rate")


def test_roc_names_a_class_missing_from_the_truth_without_a_curve():
    y, probs, _ = _case(3)
    y[y == 2] = 0
    [ax] = figures.roc_figure(y, probs, ["a", "b", "c"]).axes
    a, b, c, _ = ax.get_lines()
    assert c.get_label() == "c (AUC = n/a), not in test" and len(c.get_xdata()) == 0
    assert len(a.get_xdata()) > 2 and len(b.get_xdata()) > 2
    assert _labels(ax)[2] == "c (AUC = n/a), not in test"


@pytest.mark.parametrize("num_classes", [2, 5])
def test_confusion_shows_counts_and_row_rates_with_the_class_names(num_classes):
    y, probs, _ = _case(num_classes)
    names = _names(num_classes)
    predicted = probs.argmax(1)
    fig = figures.confusion_figure(y, predicted, names)
    counts, rates = fig.axes[:2]
    expected = confusion_matrix(y, predicted, labels=range(num_classes))
    np.testing.assert_array_equal(counts.images[0].get_array(), expected)
    np.testing.assert_allclose(rates.images[0].get_array(),
                               expected / expected.sum(axis=1, keepdims=True))
    assert (counts.get_title(), rates.get_title()) == ("counts", "row-normalised (recall)")
    assert rates.images[0].get_clim() == (0, 1)
    for ax in (counts, rates):
        assert [t.get_text() for t in ax.get_xticklabels()] == names
        assert [t.get_text() for t in ax.get_yticklabels()] == names
        assert (ax.get_xlabel(), ax.get_ylabel()) == ("Predicted label", "True label")


def test_ordered_confusion_counts_the_distance_from_the_diagonal():
    truth = np.array([0, 1, 2, 3, 4, 4])
    assert figures.distance_counts(truth, np.array([0, 2, 2, 1, 0, 4]), 5).tolist() == [
        3, 1, 1, 0, 1]
    y, probs, _ = _case(5)
    names = _names(5)
    plain = figures.confusion_figure(y, probs.argmax(1), names)
    ordered = figures.confusion_figure(y, probs.argmax(1), names, ordered=True)
    [far] = [ax for ax in ordered.axes if ax.get_title() == "how far off"]
    distances = figures.distance_counts(y, probs.argmax(1), 5)
    assert [bar.get_height() for bar in far.patches] == distances.tolist()
    shares = [t.get_text() for t in far.texts]
    assert shares == [f"{c / distances.sum():.0%}" for c in distances]
    assert "how far off" not in [ax.get_title() for ax in plain.axes]
    width = ordered.get_size_inches()[0] / plain.get_size_inches()[0]
    assert width == pytest.approx(1.5)  # a third panel of the same size


def test_pca_of_classes_has_one_point_cloud_per_class_at_its_projection():
    y, _, emb = _case(5)
    names = _names(5)
    [ax] = figures.pca_figure(emb, y, names).axes
    pca = PCA(n_components=2, random_state=0).fit(emb)
    xy = pca.transform(emb)
    assert len(ax.collections) == 5 and _labels(ax) == names
    for c, points in enumerate(ax.collections):
        np.testing.assert_allclose(points.get_offsets(), xy[y == c], atol=1e-9)
    ratio = pca.explained_variance_ratio_
    assert ax.get_xlabel() == f"PC1 ({100 * ratio[0]:.1f}% variance)"
    assert ax.get_ylabel() == f"PC2 ({100 * ratio[1]:.1f}% variance)"
    assert ax.get_title() == "PCA of patch embeddings"


def test_pca_of_a_continuous_target_colours_points_by_value():
    rng = np.random.default_rng(1)
    t = rng.uniform(0.1, 0.9, 80)
    emb = rng.normal(size=(80, 6)) + t[:, None]
    fig = figures.pca_figure(emb, t, None)
    ax, colorbar = fig.axes
    [points] = ax.collections
    np.testing.assert_allclose(points.get_array(), t)
    assert colorbar.get_ylabel() == "target" and ax.get_legend() is None


def test_loss_curves_show_the_mean_per_epoch_on_a_log_axis_when_losses_span_a_decade():
    history = [{"epoch": e, "train_loss": 1.0 / (e + 1),
                **({"val_loss": 1.2 / (e + 1)} if e % 10 == 9 else {})} for e in range(100)]
    [ax] = figures.loss_figure(history).axes
    train, validation = ax.get_lines()
    np.testing.assert_allclose(train.get_ydata(), [1.0 / (e + 1) for e in range(100)])
    np.testing.assert_array_equal(validation.get_xdata(), range(9, 100, 10))
    assert _labels(ax) == ["train", "validation"]
    assert ax.get_yscale() == "log" and ax.get_ylabel() == "loss (log scale)"
    assert train.get_marker() == "None" and validation.get_marker() == "o"  # 10 points: marked


def test_loss_curves_of_an_ensemble_draw_each_member_and_their_mean():
    history = [{"epoch": e, "train_loss": [1.0, 2.0, 3.0 + e]} for e in range(5)]
    [ax] = figures.loss_figure(history).axes
    *members, mean = ax.get_lines()
    assert len(members) == 3 and all(m.get_linewidth() == 0.5 for m in members)
    np.testing.assert_allclose(mean.get_ydata(), [(6.0 + e) / 3 for e in range(5)])
    assert _labels(ax) == ["train (mean of 3)"] and ax.get_yscale() == "linear"


def test_loss_curves_without_history_say_so():
    [ax] = figures.loss_figure([]).axes
    assert ax.get_lines() == [] and ax.get_legend() is None
    assert [t.get_text() for t in ax.texts] == ["no loss history"]


@pytest.mark.parametrize(("name", "unit", "scale"), [("duty_cycle", "", 1), ("burst_count",
                                                                             "BC", 200)])
def test_parity_plots_each_prediction_against_its_truth_with_mae_and_r2(name, unit, scale):
    rng = np.random.default_rng(1)
    t = rng.uniform(0.1, 0.9, 80) * scale
    p = t + rng.normal(0, 0.05, 80) * scale
    [ax] = figures.parity_figure(t, p, name, unit).axes
    [points] = ax.collections
    np.testing.assert_allclose(points.get_offsets(), np.column_stack([t, p]))
    [identity] = ax.get_lines()
    lo, hi = min(t.min(), p.min()), max(t.max(), p.max())
    np.testing.assert_allclose(identity.get_xydata(), [[lo, lo], [hi, hi]])
    mae = mean_absolute_error(t, p)
    assert ax.get_title() == (f"{name}: MAE = {mae:.3g}{f' {unit}' if unit else ''}, "
                              f"R² = {r2_score(t, p):.3f}")
    suffix = f" [{unit}]" if unit else ""
    assert (ax.get_xlabel(), ax.get_ylabel()) == (f"true {name}{suffix}",
                                                  f"predicted {name}{suffix}")


def test_reliability_has_a_panel_per_level_with_raw_and_calibrated_curves():
    def block(n, ece_raw, ece_calibrated):
        return {"n": n, "ece_raw": ece_raw, "ece_calibrated": ece_calibrated,
                "curve_raw": {"confidence": [0.4, 0.7, 0.9], "accuracy": [0.3, 0.6, 0.95]},
                "curve_calibrated": {"confidence": [0.45, 0.7], "accuracy": [0.4, 0.7]}}

    calibration = {"bins": 10, "served": "image temperature", "patch": block(240, 0.12, 0.03),
                   "image": block(24, 0.1, 0.02), "sample": block(6, 0.2, 0.1)}
    axes = figures.reliability_figure(load(Calibration, calibration)).axes
    assert [ax.get_title() for ax in axes] == ["per image (served) (n = 24, 10 bins)",
                                               "per patch (n = 240, 10 bins)",
                                               "per sample (n = 6, 10 bins)"]
    perfect, raw, calibrated = axes[0].get_lines()
    np.testing.assert_allclose(raw.get_xydata(), [[0.4, 0.3], [0.7, 0.6], [0.9, 0.95]])
    assert len(calibrated.get_xdata()) == 2
    assert _labels(axes[0]) == ["perfect", "raw (ECE 0.100)", "calibrated (ECE 0.020)"]


def test_a_figure_is_written_as_png_into_new_folders(tmp_path):
    y, probs, _ = _case(2)
    out = tmp_path / "run" / "figures" / "roc.png"
    assert figures.plot_roc(y, probs, _names(2), out) == out
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plt.imread(out).shape[:2] == (600, 660)  # 5.5 x 5 inches at 120 dpi
    assert not plt.get_fignums()  # closed once written
