"""A weighted ensemble of candidates, built and scored inside model selection.

Ensemble selection (Caruana et al. 2004; what AutoGluon's WeightedEnsemble and auto-sklearn
serve): starting from nothing, add with replacement the member whose addition gives the running
mean of members' image outputs the best score, for ``rounds`` rounds; the weights are the counts
of the best prefix. It reads only image outputs of inner held-out groups that selection already
computed, so it costs no fit. Its inner score is cross-fitted: the image outputs of each inner
held-out group are weighted by an ensemble built on the other inner groups of the same outer
fold, so no image scores weights it helped to choose, and the ensemble is compared with single
candidates on equal terms.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

#: image truth, image outputs -> score (lower is better)
Score = Callable[[np.ndarray, np.ndarray], float]


def greedy_weights(outputs: np.ndarray, truth: np.ndarray, score: Score,
                   rounds: int) -> np.ndarray:
    """(M,) weights summing to 1 of M members' image ``outputs`` (M, I, ...): forward
    selection with replacement for ``rounds`` rounds, the prefix with the best ``score`` kept
    (ties: the earlier, smaller ensemble; between members: the first)."""
    if rounds < 1:
        raise ValueError(f"model.selection.ensemble.rounds={rounds}: use 1 or more")
    counts = np.zeros(len(outputs))
    total = np.zeros_like(outputs[0], dtype=np.float64)
    best, kept = np.inf, None
    for r in range(1, rounds + 1):
        scores = [score(truth, (total + member) / r) for member in outputs]
        m = int(np.argmin(scores))
        counts[m] += 1
        total += outputs[m]
        if scores[m] < best - 1e-12:
            best, kept = scores[m], counts.copy()
    return kept / kept.sum()


def blend(outputs: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The weighted mean of members' outputs (M, ...) -> (...)."""
    return np.tensordot(np.asarray(weights, dtype=np.float64), outputs, axes=1)


def cross_fitted(outputs: np.ndarray, truth: np.ndarray, groups: np.ndarray, score: Score,
                 rounds: int) -> np.ndarray:
    """The ensemble's image outputs (I, ...), each inner group's images weighted by an ensemble
    selected on the other groups' images only."""
    out = np.empty_like(outputs[0], dtype=np.float64)
    for g in np.unique(groups):
        held = groups == g
        weights = greedy_weights(outputs[:, ~held], truth[~held], score, rounds)
        out[held] = blend(outputs[:, held], weights)
    return out
