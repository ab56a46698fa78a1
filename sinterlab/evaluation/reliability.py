"""How far to trust a run's outputs, measured on its out-of-fold predictions.

Classification: the expected calibration error (torchmetrics, top label, L1, equal-width bins)
of the pooled out-of-fold probabilities, before and after calibration, per patch (each member's
temperature, :mod:`sinterlab.models.calibration`), per image (what ``sinterlab-predict`` serves:
the members' image-calibrated probabilities) and per sample (the mean over its images), each
with a bootstrap interval that resamples samples, and the reliability curves (scikit-learn).

Prediction sets (classification): split-conformal sets of classes (crepes'
``ConformalClassifier``, non-conformity 1 - the probability of the true class) from the served
image probabilities; for an ordered target the set is the contiguous range of levels between its
lowest and highest member ("150-200 BC"), never a set with holes. The predicted class is always in
the set. Coverage is checked as cross-conformal, as for intervals.

Regression: split-conformal intervals (crepes' ``ConformalRegressor``) from the absolute
out-of-fold residuals of images. Their coverage is checked as cross-conformal: each fold's
images get the interval fitted on the other folds' residuals, so no image is in its own
calibration set; the interval for new images is fitted on all residuals.
"""

from __future__ import annotations

import numpy as np
import torch
from crepes import ConformalClassifier, ConformalRegressor
from sklearn.calibration import calibration_curve
from torchmetrics.functional.classification import multiclass_calibration_error

from sinterlab.evaluation.metrics import IMAGE_LEVEL, LEVELS, PATCH_LEVEL
from sinterlab.evaluation.statistics import LevelTables
from sinterlab.threads import small_torch


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int) -> float:
    return float(multiclass_calibration_error(
        torch.tensor(probs, dtype=torch.float32), torch.as_tensor(labels, dtype=torch.long),
        num_classes=probs.shape[1], n_bins=bins, norm="l1", validate_args=False))


def reliability_curve(probs: np.ndarray, labels: np.ndarray, bins: int) -> dict:
    """Accuracy against mean confidence of the predicted class, per non-empty bin."""
    confidence = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == labels).astype(int)
    accuracy, mean_confidence = calibration_curve(correct, confidence, n_bins=bins,
                                                  strategy="uniform")
    return {"confidence": mean_confidence.tolist(), "accuracy": accuracy.tolist()}


@small_torch
def classification_calibration(labels: np.ndarray, raw: np.ndarray, calibrated: np.ndarray,
                               served: np.ndarray, images: np.ndarray, samples: np.ndarray,
                               units: np.ndarray, bins: int, n: int, seed: int,
                               confidence: float) -> dict:
    """ECE before and after calibration per patch, image and sample, with intervals from ``n``
    bootstrap draws of ``units``, and the reliability curves.

    Before: the raw probabilities (per image and sample, the mean of its patches'). After: per
    patch the temperature-scaled ones, per image ``served`` (each row holds its image's
    probability), per sample the mean of its images'.
    """
    def tables(output):
        return LevelTables("classification", labels, output, images, samples, units)

    before, patch_after, after = tables(raw), tables(calibrated), tables(served)
    after.levels[PATCH_LEVEL] = patch_after.levels[PATCH_LEVEL]
    draws = before.draws(n, seed)
    alpha = (1 - confidence) / 2
    # the accuracy of the run is counted on the mean of temperature-scaled patch probabilities
    counted, served_image = patch_after.levels[IMAGE_LEVEL][1], after.levels[IMAGE_LEVEL][1]
    out = {"bins": bins, "headline_level": IMAGE_LEVEL, "confidence": confidence,
           "bootstrap": {"n": n, "seed": seed},
           "images_class_changed": int((counted.argmax(1) != served_image.argmax(1)).sum())}
    for level in LEVELS:
        y = before.levels[level][0]
        out[level] = {"n": int(len(y))}
        for key, table in (("raw", before), ("calibrated", after)):
            probs = table.levels[level][1]
            values = [expected_calibration_error(probs[d[level]], y[d[level]], bins)
                      for d in draws]
            low, high = np.quantile(values, [alpha, 1 - alpha]) if values else (None, None)
            out[level] |= {f"ece_{key}": expected_calibration_error(probs, y, bins),
                           f"ece_{key}_interval": [None if low is None else float(low),
                                                   None if high is None else float(high)],
                           f"curve_{key}": reliability_curve(probs, y, bins)}
    return out


def conformal_coverage(truth: np.ndarray, predicted: np.ndarray, folds: np.ndarray,
                       confidence: float) -> dict:
    """Cross-conformal coverage of split-conformal intervals on out-of-fold image predictions,
    and the half-width fitted on every residual (for new images)."""
    residuals = np.abs(truth - predicted)
    covered, checked, per_fold = np.zeros(len(truth), bool), np.zeros(len(truth), bool), []
    for fold in np.unique(folds):
        own = folds == fold
        if (~own).sum() < 2:  # holdout: one fold, nothing to calibrate its check on
            continue
        low, high = ConformalRegressor().fit(residuals=residuals[~own]).predict_int(
            y_hat=predicted[own], confidence=confidence).T
        covered[own], checked[own] = (truth[own] >= low) & (truth[own] <= high), True
        per_fold.append({"fold": int(fold), "images": int(own.sum()),
                         "coverage": float(covered[own].mean()),
                         "half_width": float(np.mean(high - low) / 2)})
    everything = ConformalRegressor().fit(residuals=residuals)
    half = everything.predict_int(y_hat=np.zeros(1), confidence=confidence)[0, 1]
    return {"confidence": confidence,
            "coverage": float(covered[checked].mean()) if checked.any() else None,
            "images": int(len(truth)), "half_width": float(half), "per_fold": per_fold}


def conformal_threshold(true_class_probs: np.ndarray, confidence: float) -> float:
    """The largest non-conformity (1 - probability of a class) still inside a split-conformal
    set at ``confidence``, from calibration images' probabilities of their true class: a class
    is in the set when crepes' (unsmoothed) p-value of its non-conformity is at least
    1 - confidence, and the p-value falls as the non-conformity grows."""
    alphas = 1.0 - np.asarray(true_class_probs, dtype=np.float64)
    candidates = np.unique(alphas)
    p_values = ConformalClassifier().fit(alphas).predict_p(candidates[:, None], smoothing=False)
    inside = candidates[p_values[:, 0] >= 1 - confidence]
    return float(inside.max()) if len(inside) else -np.inf


def prediction_sets(probs: np.ndarray, threshold: float, ordered: bool) -> np.ndarray:
    """Boolean (images x classes): the classes whose non-conformity is within ``threshold``,
    plus the predicted class; for ordered classes, every level between the lowest and highest
    of them."""
    sets = (1.0 - probs) <= threshold
    sets[np.arange(len(probs)), probs.argmax(axis=1)] = True
    if ordered:
        levels = np.arange(probs.shape[1])
        low = np.where(sets, levels, probs.shape[1]).min(axis=1)
        high = np.where(sets, levels, -1).max(axis=1)
        sets = (levels >= low[:, None]) & (levels <= high[:, None])
    return sets


def set_label(members: np.ndarray, classes: list[str], unit: str, ordered: bool) -> str:
    """``150–200 BC`` for a range of ordered levels, ``Cu | Ni`` for unordered classes."""
    chosen = [c for c, inside in zip(classes, members, strict=True) if inside]
    if ordered and len(chosen) > 1:
        return f"{chosen[0]}–{chosen[-1]} {unit}".strip()
    return " | ".join(f"{c} {unit}".strip() for c in chosen)


def conformal_sets(labels: np.ndarray, probs: np.ndarray, folds: np.ndarray,
                   confidence: float, ordered: bool) -> dict:
    """Cross-conformal check of prediction sets on out-of-fold image probabilities: each fold's
    images get the sets of the threshold fitted on the other folds' images; the threshold for
    new images is fitted on all of them."""
    true = probs[np.arange(len(labels)), labels]
    covered, size = np.zeros(len(labels), bool), np.zeros(len(labels))
    checked, per_fold = np.zeros(len(labels), bool), []
    for fold in np.unique(folds):
        own = folds == fold
        if (~own).sum() < 2:  # holdout: one fold, nothing to calibrate its check on
            continue
        sets = prediction_sets(probs[own], conformal_threshold(true[~own], confidence), ordered)
        covered[own] = sets[np.arange(own.sum()), labels[own]]
        size[own], checked[own] = sets.sum(axis=1), True
        per_fold.append({"fold": int(fold), "images": int(own.sum()),
                         "coverage": float(covered[own].mean()),
                         "mean_size": float(size[own].mean())})
    return {"confidence": confidence, "ordered": bool(ordered), "images": int(len(labels)),
            "threshold": conformal_threshold(true, confidence),
            "coverage": float(covered[checked].mean()) if checked.any() else None,
            "mean_size": float(size[checked].mean()) if checked.any() else None,
            "singletons": float((size[checked] == 1).mean()) if checked.any() else None,
            "per_fold": per_fold}
