"""Learning curves: how a model's out-of-fold score moves with the amount of training data, what
it projects for more, and what a future study of a given size would show.

The points come from the same model retrained on nested subsets of each outer fold's training
data and scored on the same test groups (:mod:`sinterlab.study.data_size`); this module holds
what follows from them alone:

* :func:`nested_keep`: the subsets, nested (a smaller fraction keeps a subset of a larger one's
  units) and stratified (every stratum, e.g. every class, keeps its share, at least one);
* :class:`PowerLaw` and :func:`fit_power_laws`: a loss (error rate, MAE) that falls with the data
  as ``floor + scale * x ** -exponent``, fitted to every bootstrap draw of the points at once
  (the floor is the loss more data cannot remove);
* :func:`project`: the expected score at k times the data with its interval, and the interval a
  run on that much data would measure (its own sampling noise added);
* :func:`simulate_studies`: future studies of n samples per class simulated by resampling
  today's samples whole (images of one sample stay together), for the width of their interval
  and the power of the run's permutation test.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sinterlab.evaluation.results import Cell, Projection


def nested_keep(units: np.ndarray, strata: np.ndarray, fractions: list[float],
                rng: np.random.Generator) -> np.ndarray:
    """(fractions, rows): which rows a subset at each fraction keeps. ``units`` (per row: the
    sample, image or patch it belongs to) are kept or dropped whole; each stratum (per row; one
    per unit, e.g. the sample's class) keeps ``max(1, round(f * n))`` of its ``n`` units, the
    first of one random order, so a smaller fraction's units are a subset of a larger one's."""
    units, strata = np.asarray(units).astype(str), np.asarray(strata).astype(str)
    names, first, position = np.unique(units, return_index=True, return_inverse=True)
    unit_stratum = strata[first]
    rank = np.empty(len(names), dtype=np.int64)
    size = np.empty(len(names), dtype=np.int64)
    for stratum in np.unique(unit_stratum):
        members = np.flatnonzero(unit_stratum == stratum)
        rank[rng.permutation(members)] = np.arange(len(members))
        size[members] = len(members)
    keep = [rank < np.maximum(1, np.floor(float(f) * size + 0.5)) for f in fractions]
    return np.stack(keep)[:, position]


@dataclass(frozen=True)
class PowerLaw:
    """A loss that falls with the amount of data x: ``floor + scale * x ** -exponent``
    (``scale >= 0``, ``exponent > 0``: never rises). Arrays of parameters hold one curve per
    bootstrap draw."""

    floor: np.ndarray
    scale: np.ndarray
    exponent: np.ndarray

    def __call__(self, x) -> np.ndarray:
        """(curves, len(x)) losses at the data sizes ``x``."""
        x = np.atleast_1d(np.asarray(x, dtype=np.float64))
        return (np.asarray(self.floor)[..., None]
                + np.asarray(self.scale)[..., None] * x ** -np.asarray(self.exponent)[..., None])

    def reach(self, loss: float) -> np.ndarray:
        """Per curve, the data size at which the loss falls to ``loss`` (inf: never, the floor
        is at or above it; the smallest size when the curve starts below it)."""
        floor, scale, c = (np.asarray(v, dtype=np.float64) for v in
                           (self.floor, self.scale, self.exponent))
        gap = loss - floor
        with np.errstate(divide="ignore", invalid="ignore"):
            x = np.where(gap > 0, (scale / np.where(gap > 0, gap, 1)) ** (1 / c), np.inf)
        return np.where(scale <= 0, np.where(gap > 0, 0.0, np.inf), x)

    def row(self, i: int) -> dict:
        return {"floor": float(np.atleast_1d(self.floor)[i]),
                "scale": float(np.atleast_1d(self.scale)[i]),
                "exponent": float(np.atleast_1d(self.exponent)[i])}


def _box_fit(z: np.ndarray, y: np.ndarray, w: np.ndarray, floor_low: float,
             floor_high: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Weighted least squares of ``y`` (draws, points) on ``floor + scale * z`` (z: points) with
    ``floor`` in [floor_low, floor_high] and ``scale >= 0``, for every draw at once: a convex
    problem in two parameters, so the optimum is the unconstrained one when it is feasible,
    else the best on a bound. Returns floor, scale and the weighted squared error (draws,)."""
    w = w / w.sum()
    zm, ym = float(w @ z), y @ w
    szz, szz0 = float(w @ (z - zm) ** 2), float(w @ z ** 2)
    ones = np.ones_like(ym)
    scale = ((y - ym[:, None]) @ (w * (z - zm))) / szz if szz > 0 else np.zeros_like(ym)
    floor = ym - scale * zm
    candidates = [(floor, scale, (scale >= 0) & (floor >= floor_low) & (floor <= floor_high))]
    for bound in (floor_low, floor_high):
        if np.isfinite(bound):
            candidates.append((bound * ones, np.maximum(((y - bound) @ (w * z)) / szz0, 0.0),
                               ones > 0))
    candidates.append((np.clip(ym, floor_low, floor_high), np.zeros_like(ym), ones > 0))
    errors = np.stack([np.where(ok, ((y - f[:, None] - s[:, None] * z) ** 2) @ w, np.inf)
                       for f, s, ok in candidates])
    pick = errors.argmin(axis=0)
    rows = np.arange(len(ym))
    return (np.stack([f for f, _, _ in candidates])[pick, rows],
            np.stack([s for _, s, _ in candidates])[pick, rows], errors[pick, rows])


def fit_power_laws(x: np.ndarray, losses: np.ndarray, sd: np.ndarray, floor: tuple[float, float],
                   exponents: np.ndarray) -> PowerLaw:
    """One :class:`PowerLaw` per row of ``losses`` (draws, points) at the sizes ``x``, weighted
    by 1 / ``sd`` ** 2 per point: for each exponent of the grid ``exponents`` the floor (within
    ``floor``) and scale in closed form, then per draw the exponent with the least weighted
    squared error (a profile fit: no starting values, no local minima)."""
    x = np.asarray(x, dtype=np.float64)
    losses = np.atleast_2d(np.asarray(losses, dtype=np.float64))
    w = 1.0 / np.maximum(np.asarray(sd, dtype=np.float64), 1e-3) ** 2
    best = None
    for c in np.atleast_1d(exponents).astype(np.float64):
        f, s, rss = _box_fit(x ** -c, losses, w, *floor)
        if best is None:
            best = [f, s, np.full(len(f), c), rss]
            continue
        better = rss < best[3] - 1e-15
        best = [np.where(better, f, best[0]), np.where(better, s, best[1]),
                np.where(better, c, best[2]), np.where(better, rss, best[3])]
    return PowerLaw(best[0], best[1], best[2])


def percentile_cell(values: np.ndarray, point: float, confidence: float) -> Cell:
    """``point`` with a percentile interval of the finite ``values``."""
    values = np.asarray(values, dtype=np.float64)
    finite = values[np.isfinite(values)]
    alpha = (1 - confidence) / 2
    low, high = (np.quantile(finite, [alpha, 1 - alpha]) if len(finite) else (None, None))
    return Cell(float(point), None if low is None else float(low),
                None if high is None else float(high))


def project(curve: PowerLaw, draws: PowerLaw, x_today: float, multipliers: list[float],
            today_draws: np.ndarray, higher_is_better: bool, confidence: float,
            rng: np.random.Generator) -> list[Projection]:
    """Per multiplier k: the loss (as the score: accuracy = 1 - error when
    ``higher_is_better``) the curve expects at k times today's data (``x_today``), its
    interval over the bootstrap ``draws`` of the curve, and the interval a run on that much data
    would measure: a curve draw plus a run's own sampling noise, today's (the spread of
    ``today_draws``, the bootstrap of today's point) shrunk by the square root of k (k times
    the samples to resample)."""
    sign = -1.0 if higher_is_better else 1.0
    offset = 1.0 if higher_is_better else 0.0
    noise = today_draws[np.isfinite(today_draws)] - np.nanmean(today_draws)
    out = []
    for k in multipliers:
        at = float(k) * x_today
        point = offset + sign * float(curve(at)[0, 0])
        values = offset + sign * draws(at)[:, 0]
        shift = rng.choice(noise, size=len(values)) / np.sqrt(float(k)) if len(noise) else 0.0
        run = percentile_cell(np.clip(values + shift, 0.0, 1.0) if higher_is_better
                              else np.maximum(values + shift, 0.0), point, confidence)
        cell = percentile_cell(values, point, confidence)
        out.append(Projection(float(k), at, cell.value, cell.low, cell.high, run.low, run.high))
    return out


@dataclass(frozen=True)
class SampleOutcomes:
    """Per tested sample of a run: its class, its images, the share of them read right and the
    share read as each class (out of fold), for resampling whole samples."""

    label: np.ndarray  # (samples,) class index
    images: np.ndarray  # (samples,) image count
    correct: np.ndarray  # (samples,) share of its images predicted right
    read_as: np.ndarray  # (samples, classes) share of its images predicted as each class


def study_draws(outcomes: SampleOutcomes, n: int, studies: int,
                rng: np.random.Generator) -> np.ndarray:
    """(studies, classes * n) sample indices: ``n`` samples of every class drawn with
    replacement (a study the size of n per class made of samples like today's)."""
    classes = np.unique(outcomes.label)
    return np.concatenate([rng.choice(np.flatnonzero(outcomes.label == c), size=(studies, n))
                           for c in classes], axis=1)


def simulate_studies(outcomes: SampleOutcomes, n: int, studies: int, permutations: int,
                     gain: np.ndarray, rng: np.random.Generator, chunk: int = 50,
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Studies of ``n`` samples per class resampled from today's samples (each drawn sample
    keeps its images' out-of-fold outcomes, so images of one sample stay as alike as they are):
    per study its image accuracy, moved by ``gain`` (per study: what the learning curve adds at
    this size, 0 for today's model), and the p-value of a permutation test against chance that
    permutes the labels between the drawn samples and keeps what each sample's images were read
    as (as the run's test permutes labels between samples). Returns (accuracies, p-values)."""
    index = study_draws(outcomes, n, studies, rng)
    weight = outcomes.images[index].astype(np.float64)  # (studies, k)
    total = weight.sum(axis=1)
    accuracy = np.clip((outcomes.correct[index] * weight).sum(axis=1) / total + gain, 0.0, 1.0)
    labels = outcomes.label[index]
    p_values = np.empty(studies)
    for start in range(0, studies, chunk):
        part = slice(start, start + chunk)
        b = labels[part].shape[0]
        order = rng.random((b, permutations, labels.shape[1])).argsort(axis=2)
        permuted = np.take_along_axis(np.broadcast_to(labels[part][:, None], order.shape),
                                      order, axis=2)
        read = outcomes.read_as[index[part]]  # (b, k, classes)
        shares = np.take_along_axis(np.broadcast_to(read[:, None], (*order.shape,
                                                                    read.shape[2])),
                                    permuted[..., None], axis=3)[..., 0]
        null = (shares * weight[part][:, None]).sum(axis=2) / total[part][:, None]
        p_values[part] = (1 + (null >= accuracy[part][:, None] - 1e-12).sum(axis=1)) / (
            1 + permutations)
    return accuracy, p_values


def size_grid(today: int, max_factor: float) -> list[int]:
    """Samples per class to simulate: every count up to twice today's, then steps of about a
    quarter of an octave up to ``max_factor`` times today's."""
    top = max(2, int(np.ceil(max_factor * today)))
    grid = set(range(2, min(2 * today, top) + 1))
    value = 2.0 * today
    while value < top:
        value *= 2 ** 0.25
        grid.add(min(top, int(np.ceil(value))))
    return sorted(grid)
