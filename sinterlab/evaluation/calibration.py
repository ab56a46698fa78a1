"""How far to trust a run's outputs, measured on its out-of-fold predictions.

Classification: the expected calibration error (torchmetrics, top label, L1, equal-width bins)
of the pooled out-of-fold probabilities, before and after temperature scaling
(:mod:`sinterlab.models.calibration`), per patch and per image (mean probability over its
patches), with the reliability curve (scikit-learn) for the figure.

Regression: split-conformal intervals (crepes' ``ConformalRegressor``) from the absolute
out-of-fold residuals of images. Their coverage is checked as cross-conformal: each fold's
images get the interval fitted on the other folds' residuals, so no image is in its own
calibration set; the interval for new images is fitted on all residuals.
"""

from __future__ import annotations

import numpy as np
import torch
from crepes import ConformalRegressor
from sklearn.calibration import calibration_curve
from torchmetrics.functional.classification import multiclass_calibration_error

from sinterlab.evaluation.metrics import aggregate_by_group, first_rows


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int) -> float:
    return float(multiclass_calibration_error(
        torch.as_tensor(probs, dtype=torch.float32), torch.as_tensor(labels, dtype=torch.long),
        num_classes=probs.shape[1], n_bins=bins, norm="l1"))


def reliability_curve(probs: np.ndarray, labels: np.ndarray, bins: int) -> dict:
    """Accuracy against mean confidence of the predicted class, per non-empty bin."""
    confidence = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == labels).astype(int)
    accuracy, mean_confidence = calibration_curve(correct, confidence, n_bins=bins,
                                                  strategy="uniform")
    return {"confidence": mean_confidence.tolist(), "accuracy": accuracy.tolist()}


def classification_calibration(labels: np.ndarray, raw: np.ndarray, calibrated: np.ndarray,
                               images: np.ndarray, bins: int) -> dict:
    """ECE before and after temperature scaling, per patch and per image, and the curves."""
    out = {"bins": bins}
    image_ids, image_raw = aggregate_by_group(raw, images)
    _, image_cal = aggregate_by_group(calibrated, images)
    image_labels = labels[first_rows(images)].astype(int)
    for level, y, before, after in (("patch", labels.astype(int), raw, calibrated),
                                    ("image", image_labels, image_raw, image_cal)):
        out[level] = {"n": int(len(y)),
                      "ece_raw": expected_calibration_error(before, y, bins),
                      "ece_calibrated": expected_calibration_error(after, y, bins),
                      "curve_raw": reliability_curve(before, y, bins),
                      "curve_calibrated": reliability_curve(after, y, bins)}
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
