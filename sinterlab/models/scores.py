"""Proper scores of probabilities per row, and what each score key means in words: what the
image calibration's check, model selection and the metrics compare models by."""

from __future__ import annotations

import numpy as np

#: what a score key means (model.selection.score, the image calibration's check), in words
SCORE_NAMES = {"rps": "ranked probability score (RPS)", "log_loss": "log-loss",
               "brier": "Brier score", "error": "error rate", "mse": "mean squared error",
               "mae": "mean absolute error"}


def ranked_probability_scores(y: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Per row, the ranked probability score of ordered classes (0 best, 1 worst): the squared
    distance between the predicted and the true cumulative distribution over the levels, over
    levels - 1, so a neighbouring level costs less than a distant one (Epstein 1969; a proper
    score, and a bounded one)."""
    probs = np.asarray(probs, dtype=np.float64)
    truth = np.zeros_like(probs)
    truth[np.arange(len(y)), y] = 1.0
    gaps = np.cumsum(probs, axis=1) - np.cumsum(truth, axis=1)
    return np.sum(gaps[:, :-1] ** 2, axis=1) / max(probs.shape[1] - 1, 1)


def brier_scores(y: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Per row, the Brier score (0 best, 2 worst): the squared distance between the predicted
    probabilities and the one-hot truth (a proper score, and a bounded one)."""
    probs = np.asarray(probs, dtype=np.float64)
    truth = np.zeros_like(probs)
    truth[np.arange(len(y)), y] = 1.0
    return np.sum((probs - truth) ** 2, axis=1)
