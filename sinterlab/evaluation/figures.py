"""Run figures (matplotlib, Agg backend). ``*_figure`` builds a figure and returns it (what a
test inspects); ``plot_*`` builds the same figure, writes it as one PNG and returns its path."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib_scalebar.scalebar import ScaleBar  # noqa: E402
from sklearn.decomposition import PCA  # noqa: E402
from sklearn.metrics import ConfusionMatrixDisplay, confusion_matrix, roc_curve  # noqa: E402

from sinterlab.atomic import write_with  # noqa: E402
from sinterlab.evaluation.display import number  # noqa: E402
from sinterlab.evaluation.metrics import classification_metrics, regression_metrics  # noqa: E402
from sinterlab.evaluation.results import (  # noqa: E402
    ACCURACY,
    MAE,
    SAMPLES_AXIS,
    Calibration,
    LearningCurve,
    LearningCurves,
    LevelCalibration,
    MeasuresSummary,
    VarianceComponents,
)


def add_scale_bar(ax, pixel_nm: float | None) -> None:
    """A scale bar in nm or µm (matplotlib-scalebar picks a round length) on a micrograph
    shown pixel for pixel; nothing when its pixel size is unknown."""
    if pixel_nm is None or not np.isfinite(pixel_nm) or pixel_nm <= 0:
        return
    ax.add_artist(ScaleBar(float(pixel_nm), "nm", location="lower left", box_alpha=0.7,
                           font_properties={"size": 8}))


def save_figure(fig, path, dpi: float | None = None) -> Path:
    """Lay out ``fig``, write it as PNG atomically (a killed run leaves no half image), close."""
    path = Path(path)
    try:
        fig.tight_layout()
        write_with(path, lambda tmp: fig.savefig(tmp, dpi=dpi or fig.dpi, format="png"))
    finally:
        plt.close(fig)
    return path


def loss_figure(history: list[dict], log_scale: bool | None = None, log_span: float = 10.0,
                dpi: int = 120):
    """Train (and, where logged, validation) loss per epoch: one thin line per ensemble member
    (a history value may be a list, one loss per member) and their mean in bold.

    ``log_scale=None`` picks a log y axis when all losses are positive and they span at least
    ``log_span`` (max / min).
    """
    fig, ax = plt.subplots(figsize=(6, 4), dpi=dpi)
    values: list[float] = []
    for (key, label), color in zip((("train_loss", "train"), ("val_loss", "validation")),
                                   ("C0", "C1"), strict=True):
        rows = [(r["epoch"], np.atleast_1d(np.asarray(r[key], dtype=float)))
                for r in history if r.get(key) is not None and "epoch" in r]
        if not rows:
            continue
        epochs = np.array([e for e, _ in rows])
        losses = np.stack([v for _, v in rows])  # (epochs, members)
        losses = np.where(np.isfinite(losses), losses, np.nan)
        if losses.shape[1] > 1:
            ax.plot(epochs, losses, color=color, lw=0.5, alpha=0.35)
        marker = "o" if len(rows) < 30 else None
        ax.plot(epochs, np.nanmean(losses, axis=1), color=color, lw=2, marker=marker, ms=3,
                label=label + (f" (mean of {losses.shape[1]})" if losses.shape[1] > 1 else ""))
        values.extend(v for v in losses.ravel() if math.isfinite(v))
    if log_scale is None:
        log_scale = bool(values) and min(values) > 0 and max(values) / min(values) >= log_span
    if log_scale:
        ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss" + (" (log scale)" if log_scale else ""))
    ax.set_title("Training and validation loss")
    if values:
        ax.legend()
    else:
        ax.text(0.5, 0.5, "no loss history", ha="center", va="center", transform=ax.transAxes)
    ax.grid(True, alpha=0.3)
    return fig


def plot_loss_curves(history: list[dict], path, log_scale: bool | None = None,
                     log_span: float = 10.0, dpi: int = 120) -> Path:
    return save_figure(loss_figure(history, log_scale, log_span, dpi), path)


def roc_figure(y_true: np.ndarray, probs: np.ndarray, class_names: Sequence[str],
               dpi: int = 120):
    """ROC curve: the positive class (binary) or one-vs-rest per class (multiclass)."""
    y = np.asarray(y_true).astype(np.int64).reshape(-1)
    probs = np.asarray(probs, dtype=np.float64)
    num_classes = probs.shape[1]
    names = list(class_names) if class_names else [str(c) for c in range(num_classes)]
    per_class = classification_metrics(y, probs)["auroc_per_class"]
    classes = [1] if num_classes == 2 else list(range(num_classes))

    fig, ax = plt.subplots(figsize=(5.5, 5), dpi=dpi)
    for c in classes:
        is_c = (y == c).astype(np.int64)
        label = f"{names[c]} (AUC = {number(per_class[c], missing='n/a')})"
        if per_class[c] is None:
            ax.plot([], [], linestyle="none", label=label + ", not in test")
            continue
        fpr, tpr, _ = roc_curve(is_c, probs[:, c])
        ax.plot(fpr, tpr, label=label)
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="chance")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_aspect("equal")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title("ROC" if num_classes == 2 else "ROC (one-vs-rest)")
    ax.legend(loc="lower right", fontsize="small")
    ax.grid(True, alpha=0.3)
    return fig


def plot_roc(y_true: np.ndarray, probs: np.ndarray, class_names: Sequence[str], path,
             dpi: int = 120) -> Path:
    return save_figure(roc_figure(y_true, probs, class_names, dpi), path)


def distance_counts(y_true: np.ndarray, y_pred: np.ndarray, levels: int) -> np.ndarray:
    """How many predictions are 0, 1, ... levels away from the true level."""
    distance = np.abs(np.asarray(y_true, dtype=int) - np.asarray(y_pred, dtype=int))
    return np.bincount(distance, minlength=levels)


def confusion_figure(y_true: np.ndarray, y_pred: np.ndarray, class_names: Sequence[str],
                     dpi: int = 120, cmap: str = "Blues", ordered: bool = False):
    """Confusion matrix as counts (left) and row-normalised (right); rows are the truth. For
    ordered levels a third panel counts the predictions by their distance from the diagonal
    (0: right, 1: a neighbouring level, ...)."""
    names = list(class_names)
    labels = list(range(len(names)))
    counts = confusion_matrix(np.asarray(y_true), np.asarray(y_pred), labels=labels)
    row_sums = counts.sum(axis=1, keepdims=True)
    rates = np.divide(counts, row_sums, out=np.zeros(counts.shape), where=row_sums > 0)

    size = max(4.0, 0.9 * len(names) + 2.5)
    fig, axes = plt.subplots(1, 3 if ordered else 2, figsize=((3 if ordered else 2) * size, size),
                             dpi=dpi)
    if ordered:
        per_distance = distance_counts(y_true, y_pred, len(names))
        bars = axes[2].bar(labels, per_distance, color="tab:blue")
        axes[2].bar_label(bars, [f"{c / max(per_distance.sum(), 1):.0%}" for c in per_distance],
                          fontsize=8)
        axes[2].set_xticks(labels)
        axes[2].set_xlabel("levels from the true one (distance from the diagonal)")
        axes[2].set_ylabel("predictions")
        axes[2].set_title("how far off")
    for ax, matrix, fmt, title in (
        (axes[0], counts, "d", "counts"),
        (axes[1], rates, ".2f", "row-normalised (recall)"),
    ):
        ConfusionMatrixDisplay(matrix, display_labels=names).plot(
            ax=ax, cmap=cmap, values_format=fmt, colorbar=True, xticks_rotation=45
        )
        ax.set_title(title)
    if rates.size:
        axes[1].images[0].set_clim(0, 1)
    return fig


def plot_confusion(y_true: np.ndarray, y_pred: np.ndarray, class_names: Sequence[str], path,
                   dpi: int = 120, cmap: str = "Blues", ordered: bool = False) -> Path:
    return save_figure(confusion_figure(y_true, y_pred, class_names, dpi, cmap, ordered), path)


def plot_expected_by_level(truth: np.ndarray, expected: np.ndarray, values: Sequence[float],
                           class_names: Sequence[str], unit: str, path, dpi: int = 120,
                           seed: int = 0) -> Path:
    """An ordered target's out-of-fold expected value per image against its true level: one
    jittered strip per level, the levels' own values as dashes; off by a level is a point at
    the next dash."""
    values = np.asarray(values, dtype=float)
    fig, ax = plt.subplots(figsize=(max(4.0, 1.1 * len(values) + 2), 4), dpi=dpi)
    jitter = np.random.default_rng(seed).uniform(-0.15, 0.15, size=len(truth))
    ax.scatter(np.asarray(truth) + jitter, expected, s=12, alpha=0.6)
    ax.hlines(values, np.arange(len(values)) - 0.3, np.arange(len(values)) + 0.3,
              colors="k", linewidth=1.5)
    ax.set_xticks(range(len(values)), list(class_names))
    ax.set_xlabel("true level")
    ax.set_ylabel(f"expected value (out of fold){f' [{unit}]' if unit else ''}")
    ax.set_title("expected value per image by true level")
    return save_figure(fig, path)


def plot_measures(record: MeasuresSummary, target: str, unit: str, path,
                  dpi: int = 110) -> Path:
    """One panel per measure: each sample's mean against the process parameter, titled with
    Spearman's rho and its permutation p-value."""
    per_sample = record.per_sample
    trends = {t.measure: t for t in record.trends}
    names = record.measures
    columns = min(4, len(names))
    rows = -(-len(names) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 2.8 * rows), dpi=dpi,
                             squeeze=False)
    x = [row[target] for row in per_sample]
    numeric = all(isinstance(v, (int, float)) for v in x)
    for ax, name in zip(axes.flat, names, strict=False):
        y = [row[name] for row in per_sample]
        ax.scatter(x if numeric else [str(v) for v in x], y, s=14, alpha=0.7)
        t = trends.get(name)
        if t and t.rho is not None:
            ax.set_title(f"{name}\nρ = {t.rho:.2f}, p = {t.p_value:.3f}", fontsize=9)
        else:
            ax.set_title(name, fontsize=9)
        ax.set_xlabel(f"{target} {unit}".strip(), fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    return save_figure(fig, path)


def plot_overlay(micrograph: np.ndarray, pores: np.ndarray, title: str, path,
                 pixel_nm: float | None = None, dpi: int = 110) -> Path:
    """A micrograph beside its pore mask drawn over it, to judge the segmentation by eye; a
    scale bar on both when the pixel size is known."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.5 * micrograph.shape[0] / micrograph.shape[1]),
                             dpi=dpi)
    axes[0].imshow(micrograph, cmap="gray")
    axes[1].imshow(micrograph, cmap="gray")
    axes[1].imshow(np.ma.masked_where(~pores, pores), cmap="autumn", alpha=0.45)
    for ax, label in zip(axes, ("micrograph", f"pores {pores.mean():.1%}"), strict=True):
        ax.set_title(label, fontsize=9)
        ax.axis("off")
        add_scale_bar(ax, pixel_nm)
    fig.suptitle(title, fontsize=9)
    return save_figure(fig, path)


def pca_figure(embeddings: np.ndarray, labels: np.ndarray, class_names: Sequence[str] | None,
               seed: int = 0, dpi: int = 120, point_size: float = 8.0, alpha: float = 0.6):
    """2-D PCA scatter of the embeddings coloured by class.

    ``class_names=None`` treats ``labels`` as continuous values (colour bar), e.g. for a
    regression target.
    """
    x = np.asarray(embeddings, dtype=np.float64)
    labels = np.asarray(labels).reshape(-1)
    n_comp = min(2, x.shape[0], x.shape[1])
    pca = PCA(n_components=n_comp, random_state=seed)
    xy = pca.fit_transform(x)
    if n_comp < 2:
        xy = np.column_stack([xy, np.zeros(len(xy))])
    ratio = list(pca.explained_variance_ratio_) + [0.0] * (2 - n_comp)

    fig, ax = plt.subplots(figsize=(6, 5), dpi=dpi)
    if class_names is None:
        sc = ax.scatter(xy[:, 0], xy[:, 1], c=labels.astype(float), s=point_size, alpha=alpha)
        fig.colorbar(sc, ax=ax, label="target")
    else:
        ints = labels.astype(np.int64)
        for c, name in enumerate(class_names):
            mask = ints == c
            if mask.any():
                ax.scatter(xy[mask, 0], xy[mask, 1], s=point_size, alpha=alpha, label=name)
        ax.legend(fontsize="small", markerscale=2)
    ax.set_xlabel(f"PC1 ({100 * ratio[0]:.1f}% variance)")
    ax.set_ylabel(f"PC2 ({100 * ratio[1]:.1f}% variance)")
    ax.set_title("PCA of patch embeddings")
    ax.grid(True, alpha=0.3)
    return fig


def plot_pca(embeddings: np.ndarray, labels: np.ndarray, class_names: Sequence[str] | None,
             path, seed: int = 0, dpi: int = 120, point_size: float = 8.0,
             alpha: float = 0.6) -> Path:
    return save_figure(pca_figure(embeddings, labels, class_names, seed, dpi, point_size, alpha),
                       path)


def parity_figure(y_true: np.ndarray, y_pred: np.ndarray, name: str, unit: str, dpi: int = 120,
                  point_size: float = 10.0, alpha: float = 0.6):
    """Predicted vs true with the identity line; MAE and R^2 in the title."""
    t = np.asarray(y_true, dtype=np.float64).reshape(-1)
    p = np.asarray(y_pred, dtype=np.float64).reshape(-1)
    m = regression_metrics(t, p)
    suffix = f" [{unit}]" if unit else ""

    fig, ax = plt.subplots(figsize=(5.5, 5), dpi=dpi)
    ax.scatter(t, p, s=point_size, alpha=alpha)
    lo = float(min(t.min(), p.min()))
    hi = float(max(t.max(), p.max()))
    ax.plot([lo, hi], [lo, hi], linestyle="--", color="grey", linewidth=1, label="identity")
    ax.set_xlabel(f"true {name}{suffix}")
    ax.set_ylabel(f"predicted {name}{suffix}")
    unit_txt = f" {unit}" if unit else ""
    r2 = number(m["r2"], missing="n/a")
    ax.set_title(f"{name}: MAE = {m['mae']:.3g}{unit_txt}, R² = {r2}")
    ax.legend(loc="upper left")
    ax.grid(True, alpha=0.3)
    return fig


def plot_parity(y_true: np.ndarray, y_pred: np.ndarray, name: str, unit: str, path,
                dpi: int = 120, point_size: float = 10.0, alpha: float = 0.6) -> Path:
    return save_figure(parity_figure(y_true, y_pred, name, unit, dpi, point_size, alpha), path)


def reliability_figure(calibration: Calibration, dpi: int = 120):
    """Reliability diagrams (accuracy against confidence of the predicted class) per image (what
    predict serves, first), patch and sample, raw and calibrated, with the ECE of each."""
    levels = [lvl for lvl in ("image", "patch", "sample") if calibration.at(lvl)]
    fig, axes = plt.subplots(1, len(levels), figsize=(5 * len(levels), 4.6), dpi=dpi)
    for ax, level in zip(np.atleast_1d(axes), levels, strict=True):
        block: LevelCalibration = calibration.at(level)
        ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="perfect")
        for curve, ece, label, marker in (
                (block.curve_raw, block.ece_raw, "raw", "o"),
                (block.curve_calibrated, block.ece_calibrated, "calibrated", "s")):
            ax.plot(curve.confidence, curve.accuracy, marker=marker,
                    label=f"{label} (ECE {ece:.3f})")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("confidence of the predicted class")
        ax.set_ylabel("share correct")
        served = " (served)" if level == "image" and calibration.served is not None else ""
        ax.set_title(f"per {level}{served} (n = {block.n}, {calibration.bins} bins)")
        ax.legend(loc="upper left", fontsize=8)
        ax.grid(True, alpha=0.3)
    return fig


def plot_reliability(calibration: Calibration, path, dpi: int = 120) -> Path:
    return save_figure(reliability_figure(calibration, dpi), path)


#: how a learning curve's metric is labelled on its axis
CURVE_LABELS = {ACCURACY: "image accuracy", MAE: "image MAE"}


def _draw_curve(ax, curve: LearningCurve, metric: str, name: str, color: str) -> None:
    """One model's curve on one panel: the points (mean over the subset draws, with their
    interval; each draw a dot), the fit (dashed where it extrapolates) with its band, and the
    projections with the interval a run would measure."""
    x = np.array([p.x for p in curve.points])
    cells = [p.metric(metric) for p in curve.points]
    value = np.array([c.value for c in cells])
    low = np.array([c.low for c in cells], dtype=float)
    high = np.array([c.high for c in cells], dtype=float)
    ax.errorbar(x, value, yerr=[value - low, high - value], fmt="o", color=color, capsize=3,
                label=f"{name}: measured")
    for p, c in zip(curve.points, cells, strict=True):
        ax.plot([p.x] * len(c.per_draw), c.per_draw, ".", color=color, alpha=0.35, ms=4)
    band = curve.fit[metric].band
    bx = np.array(band.x)
    inside = bx <= x.max() * (1 + 1e-9)
    ax.fill_between(bx, band.low, band.high, color=color, alpha=0.15,
                    label=f"{name}: fit, interval")
    ax.plot(bx[inside], np.array(band.value)[inside], color=color, lw=1.5)
    ax.plot(bx[~inside], np.array(band.value)[~inside], color=color, lw=1.5, ls="--")
    for proj in curve.projection[metric]:
        ax.errorbar([proj.x], [proj.value], yerr=[[proj.value - proj.run_low],
                                                  [proj.run_high - proj.value]],
                    fmt="D", color=color, mfc="white", capsize=4)
        ax.annotate(f"{proj.multiplier:g}x", (proj.x, proj.value), textcoords="offset points",
                    xytext=(6, 6), fontsize=8)


def learning_curve_figure(record: LearningCurves, error_unit: str = "",
                          chance: float | None = None, dpi: int = 120):
    """The learning curves of a run's ``learning_curve`` block: one column per axis (samples,
    images per sample, patches per image), one row per metric; per panel the points (mean over
    the subset draws, with their interval; each draw a dot), the fitted curve (dashed where it
    extrapolates) with its interval as a band, the projections at k times today's size with
    the interval a run would measure, today's size as a vertical line, and along samples the
    best baseline in grey. Returns the figure (not saved)."""
    axes_names = list(record.axes or {}) or [SAMPLES_AXIS]
    metrics = record.metrics
    fig, grid = plt.subplots(len(metrics), len(axes_names), dpi=dpi, squeeze=False,
                             figsize=(4.6 * len(axes_names), 3.6 * len(metrics)))
    for col, axis in enumerate(axes_names):
        curves = [((record.axes or {}).get(axis), record.model or "served model", "C0")]
        if axis == SAMPLES_AXIS and record.baseline_curve:
            curves.append((record.baseline_curve, record.baseline, "grey"))
        shown = record.curve(axis)
        for row, metric in enumerate(metrics):
            ax = grid[row, col]
            for curve, name, color in curves:
                if curve is not None:
                    _draw_curve(ax, curve, metric, name, color)
            ax.axvline(shown.today, color="black", ls=":", lw=1, label="today")
            if metric == ACCURACY and chance is not None:
                ax.axhline(chance, color="red", ls=":", lw=1, label="chance")
            ax.set_xlabel(shown.unit)
            ax.set_ylabel(CURVE_LABELS.get(metric, metric)
                          + (f" ({error_unit})" if metric == MAE and error_unit else ""))
            ax.set_title(f"more {axis}")
            ax.grid(True, alpha=0.3)
            if row == 0 and col == 0:
                ax.legend(fontsize=7, loc="best")
    fig.suptitle("How much data: scores on the same test samples, fitted and projected "
                 "(diamonds: k x today, bars: what a run would measure)", fontsize=9)
    return fig


def plot_learning_curves(record: LearningCurves, path, error_unit: str = "",
                         chance: float | None = None) -> Path:
    return save_figure(learning_curve_figure(record, error_unit, chance), path)


def variance_figure(record: VarianceComponents, dpi: int = 120):
    """The variance components of a run's ``variance_components`` block as shares of a sample's
    reading noise, each with its interval. Returns the figure (not saved)."""
    names = list(record.shares)
    labels = [name.replace("_", " ") for name in names]
    values = np.array([record.shares[n].value for n in names], dtype=float)
    low = np.array([record.shares[n].low for n in names], dtype=float)
    high = np.array([record.shares[n].high for n in names], dtype=float)
    fig, ax = plt.subplots(figsize=(6, 2.8), dpi=dpi)
    ax.barh(labels, values, xerr=[np.nan_to_num(values - low), np.nan_to_num(high - values)],
            color=["C0", "C1", "C2"], capsize=4)
    ax.set_xlim(0, 1)
    ax.invert_yaxis()
    ax.set_xlabel(f"share of a sample's reading noise ({record.images_per_sample:g} images "
                  f"of {record.patches_per_image:g} patches)")
    ax.set_title(f"Where the {record.output} varies within a class", fontsize=10)
    ax.grid(True, axis="x", alpha=0.3)
    return fig


def plot_variance_components(record: VarianceComponents, path) -> Path:
    return save_figure(variance_figure(record), path)
