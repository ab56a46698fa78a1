"""Out-of-fold evaluation: per-fold and pooled metrics, group bootstrap intervals, a permutation
test against chance, and the per-sample table.

Every model of a run (the MLP head and the baselines) leaves one out-of-fold output per tested
patch. The pooled metrics use all of them at once; their 95% intervals come from a seeded
bootstrap that resamples whole *units* (samples by default): the patches and images of one
sample are not independent observations, so resampling them would overstate the evidence.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.preprocessing import StandardScaler

from sinterlab.data.descriptor import Target
from sinterlab.data.groups import group_means
from sinterlab.evaluation.baselines import BASELINES
from sinterlab.evaluation.metrics import (
    IMAGE_LEVEL,
    LEVELS,
    ORDINAL,
    PATCH_LEVEL,
    SAMPLE_LEVEL,
    classification_metrics,
    evaluate_levels,
    expected_value,
    first_rows,
    regression_metrics,
)
from sinterlab.evaluation.results import (
    Interval,
    Intervals,
    SelectionCheck,
    SelectionChecks,
    Spread,
    Spreads,
    Verdict,
)

#: scalar metrics that get intervals and fold statistics; (name, higher is better)
SCALARS = {"classification": (("accuracy", True), ("f1_macro", True), ("auroc", True)),
           "regression": (("mae", False), ("rmse", False), ("r2", True))}


def main_metric(kind: str) -> tuple[str, bool]:
    return SCALARS[kind][0]


def scalars(kind: str, ordered: bool = False) -> tuple[tuple[str, bool], ...]:
    """The scalar metrics of a target: an ordered one adds its errors in units (ORDINAL)."""
    return SCALARS[kind] + (ORDINAL if ordered else ())


def _scalars(kind: str, y: np.ndarray, output: np.ndarray,
             values: np.ndarray | None = None) -> dict[str, float | None]:
    if kind == "classification":
        m = classification_metrics(y, output, values)
    else:
        m = regression_metrics(y, output)
    return {name: m[name] for name, _ in scalars(kind, values is not None)}


@dataclass
class UnitSums:
    """Per-unit sums of one level's rows (arrays over units; per class where two-dimensional)
    from which every scalar metric of a bootstrap draw follows."""

    n: np.ndarray
    correct: np.ndarray | None = None
    true: np.ndarray | None = None
    predicted: np.ndarray | None = None
    true_positives: np.ndarray | None = None
    #: (classes, units, units): positives of a class in one unit scored above negatives in
    #: another (ties half)
    pairs: np.ndarray | None = None
    #: (units, true, predicted) counts of an ordered target
    confusion: np.ndarray | None = None
    abs_error: np.ndarray | None = None
    abs_expected: np.ndarray | None = None
    within_one: np.ndarray | None = None
    #: (unit, true value, expected value) of every row: Spearman's rho by draw
    rows: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
    squared_error: np.ndarray | None = None
    y: np.ndarray | None = None
    y_squared: np.ndarray | None = None


class LevelTables:
    """Truth, output and bootstrap unit per row at patch, image and sample level.

    A bootstrap draw picks units with replacement, so every metric of a draw is a function of
    how often each unit was drawn. :meth:`unit_statistics` sums each level's rows per unit once
    (correct predictions, per-class counts, pairwise AUROC counts, error sums);
    :meth:`draw_metrics` then scores all draws at once with matrix products, equal to
    recomputing the metrics on the duplicated rows of every draw (tested).
    """

    def __init__(self, kind: str, y: np.ndarray, output: np.ndarray, image_ids: np.ndarray,
                 sample_ids: np.ndarray, units: np.ndarray, values: np.ndarray | None = None):
        self.kind = kind
        #: an ordered target's level values (one per class): adds the ORDINAL metrics
        self.values = None if values is None else np.asarray(values, dtype=np.float64)
        y, output = np.asarray(y), np.asarray(output, dtype=np.float64)
        if kind == "classification":
            y = y.astype(np.int64)
        self.levels: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {
            PATCH_LEVEL: (y, output, np.asarray(units).astype(str))}
        for level, ids in ((IMAGE_LEVEL, image_ids), (SAMPLE_LEVEL, sample_ids)):
            _, mean = group_means(output, ids)
            rows = first_rows(ids)
            self.levels[level] = (y[rows], mean, np.asarray(units).astype(str)[rows])
        self.unit_names = np.unique(np.asarray(units).astype(str))

    def metrics(self, draw: dict[str, np.ndarray] | None = None) -> dict:
        """Scalar metrics per level, on all rows or on the rows of a bootstrap ``draw``."""
        out = {}
        for level, (y, output, _) in self.levels.items():
            rows = slice(None) if draw is None else draw[level]
            out[level] = _scalars(self.kind, y[rows], output[rows], self.values)
        return out

    def unit_counts(self, n: int, seed: int) -> np.ndarray:
        """(n, units): how often each unit is drawn in each of ``n`` seeded bootstrap draws."""
        rng = np.random.default_rng(seed)
        size = len(self.unit_names)
        return np.stack([np.bincount(rng.choice(size, size=size, replace=True), minlength=size)
                         for _ in range(n)]).astype(np.float64)

    def draws(self, n: int, seed: int) -> list[dict[str, np.ndarray]]:
        """The draws of :meth:`unit_counts` as row indices per level (rows repeated)."""
        counts = self.unit_counts(n, seed)
        index = {level: np.searchsorted(self.unit_names, units)
                 for level, (_, _, units) in self.levels.items()}
        return [{level: np.concatenate([np.flatnonzero(rows == u)
                                        for u in np.repeat(np.arange(len(c)), c.astype(int))])
                 for level, rows in index.items()} for c in counts]

    def unit_statistics(self, level: str) -> UnitSums:
        """Per-unit sums of ``level``'s rows from which every scalar metric of a draw follows."""
        y, output, units = self.levels[level]
        unit = np.searchsorted(self.unit_names, units)
        size = len(self.unit_names)

        def per_unit(values: np.ndarray) -> np.ndarray:
            return np.bincount(unit, weights=values.astype(np.float64), minlength=size)

        if self.kind != "classification":
            error = output.reshape(-1) - y.astype(np.float64)
            return UnitSums(n=per_unit(np.ones(len(y))), abs_error=per_unit(np.abs(error)),
                            squared_error=per_unit(error ** 2), y=per_unit(y),
                            y_squared=per_unit(y ** 2))
        classes = output.shape[1]
        predicted = output.argmax(axis=1)
        stats = UnitSums(
            n=per_unit(np.ones(len(y))), correct=per_unit(predicted == y),
            true=np.stack([per_unit(y == c) for c in range(classes)], axis=1),
            predicted=np.stack([per_unit(predicted == c) for c in range(classes)], axis=1),
            true_positives=np.stack([per_unit((y == c) & (predicted == c))
                                     for c in range(classes)], axis=1))
        # pairs[c, u, v]: positives of class c in unit u scored above negatives in unit v (ties
        # count half), the Mann-Whitney form of the one-vs-rest AUROC
        pairs = np.zeros((classes, size, size))
        for c in range(classes):
            positive = y == c
            for v in range(size):
                negatives = np.sort(output[(unit == v) & ~positive, c])
                scores = output[positive, c]
                below = np.searchsorted(negatives, scores, side="left")
                ties = np.searchsorted(negatives, scores, side="right") - below
                pairs[c, :, v] = np.bincount(unit[positive], weights=below + 0.5 * ties,
                                             minlength=size)
        stats.pairs = pairs
        if self.values is not None:
            values = self.values
            stats.confusion = np.stack([  # (units, true, predicted)
                np.bincount(y[unit == u] * classes + predicted[unit == u],
                            minlength=classes ** 2).reshape(classes, classes)
                for u in range(size)]).astype(np.float64)
            stats.abs_error = per_unit(np.abs(values[predicted] - values[y]))
            expected = expected_value(output, values)
            stats.abs_expected = per_unit(np.abs(expected - values[y]))
            stats.within_one = per_unit(np.abs(predicted - y) <= 1)
            stats.rows = (unit, values[y], expected)
        return stats

    def draw_metrics(self, counts: np.ndarray) -> dict[str, dict[str, np.ndarray]]:
        """Scalar metrics of every draw (``counts``: (draws, units)) per level; NaN where a
        metric is undefined in a draw."""
        out = {}
        for level in self.levels:
            stats = self.unit_statistics(level)
            n = counts @ stats.n
            with np.errstate(divide="ignore", invalid="ignore"):
                if self.kind == "classification":
                    out[level] = _draw_classification(counts, stats, n)
                    if self.values is not None:
                        out[level] |= _draw_ordinal(counts, stats, n)
                else:
                    out[level] = _draw_regression(counts, stats, n)
        return out


def _draw_classification(counts: np.ndarray, stats: UnitSums, n: np.ndarray) -> dict:
    """Accuracy, macro F1 (sklearn's, absent classes 0) and AUROC (binary: class 1; else the
    mean over classes present with positives and negatives) from per-unit statistics."""
    true, predicted, tp = (counts @ s for s in (stats.true, stats.predicted,
                                                stats.true_positives))
    denominator = true + predicted
    f1 = np.where(denominator > 0, 2 * tp / np.where(denominator > 0, denominator, 1), 0.0)
    positives = true
    negatives = n[:, None] - true
    pairs = np.einsum("du,cuv,dv->dc", counts, stats.pairs, counts)
    defined = (positives > 0) & (negatives > 0)
    per_class = np.where(defined, pairs / np.where(defined, positives * negatives, 1), np.nan)
    present = (positives > 0).sum(axis=1)
    if per_class.shape[1] == 2:
        auroc = per_class[:, 1]
    else:
        # the mean over the classes each draw defines (none: NaN, without numpy's warning on
        # an empty slice: a bootstrap draw of a tiny holdout may hold one class only)
        count = defined.sum(axis=1)
        auroc = np.where(count > 0, np.where(defined, per_class, 0.0).sum(axis=1)
                         / np.maximum(count, 1), np.nan)
    auroc = np.where(present >= 2, auroc, np.nan)
    return {"accuracy": counts @ stats.correct / n, "f1_macro": f1.mean(axis=1),
            "auroc": auroc}


def _draw_ordinal(counts: np.ndarray, stats: UnitSums, n: np.ndarray) -> dict:
    """MAE (predicted level, expected value), within-one share, quadratic weighted kappa and
    Spearman's rho of an ordered target for every draw."""
    confusion = np.einsum("du,utp->dtp", counts, stats.confusion)
    classes = confusion.shape[1]
    weights = (np.arange(classes)[:, None] - np.arange(classes)[None, :]) ** 2.0
    expected = np.einsum("dt,dp->dtp", confusion.sum(axis=2), confusion.sum(axis=1)) / \
        n[:, None, None]
    observed_cost = (confusion * weights).sum(axis=(1, 2))
    expected_cost = (expected * weights).sum(axis=(1, 2))
    seen = ((confusion.sum(axis=2) > 0) | (confusion.sum(axis=1) > 0)).sum(axis=1)
    qwk = np.where((expected_cost > 0) & (seen > 1),
                   1 - observed_cost / np.where(expected_cost > 0, expected_cost, 1), np.nan)
    return {"mae": counts @ stats.abs_error / n, "mae_expected": counts @ stats.abs_expected / n,
            "within_one": counts @ stats.within_one / n, "qwk": qwk,
            "spearman": _weighted_spearman(counts, *stats.rows)}


def _weighted_ranks(x: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Mid-ranks of ``x`` in each draw whose rows are repeated ``weights`` (draws, rows) times:
    the ranks a draw's duplicated rows would get, ties averaged."""
    order = np.argsort(x, kind="stable")
    sorted_x = x[order]
    starts = np.flatnonzero(np.r_[True, sorted_x[1:] != sorted_x[:-1]])
    group = np.empty(len(x), dtype=np.int64)
    group[order] = np.cumsum(np.r_[True, sorted_x[1:] != sorted_x[:-1]]) - 1
    in_group = np.add.reduceat(weights[:, order], starts, axis=1)
    before = np.cumsum(in_group, axis=1) - in_group
    return (before + (in_group + 1) / 2)[:, group]


def _weighted_spearman(counts: np.ndarray, unit: np.ndarray, truth: np.ndarray,
                       expected: np.ndarray, chunk: int = 100) -> np.ndarray:
    """Spearman's rho of ``expected`` with ``truth`` in every draw, as on its duplicated rows."""
    out = []
    for start in range(0, len(counts), chunk):
        w = counts[start:start + chunk][:, unit]
        a, b = _weighted_ranks(truth, w), _weighted_ranks(expected, w)
        total = w.sum(axis=1, keepdims=True)
        a = a - (w * a).sum(axis=1, keepdims=True) / total
        b = b - (w * b).sum(axis=1, keepdims=True) / total
        covariance = (w * a * b).sum(axis=1)
        spread = np.sqrt((w * a * a).sum(axis=1) * (w * b * b).sum(axis=1))
        out.append(np.where(spread > 0, covariance / np.where(spread > 0, spread, 1), np.nan))
    return np.concatenate(out)


def _draw_regression(counts: np.ndarray, stats: UnitSums, n: np.ndarray) -> dict:
    sq = counts @ stats.squared_error
    total = counts @ stats.y_squared - (counts @ stats.y) ** 2 / n
    defined = (n >= 2) & (total > 1e-12 * np.maximum(counts @ stats.y_squared, 1e-300))
    return {"mae": counts @ stats.abs_error / n, "rmse": np.sqrt(sq / n),
            "r2": np.where(defined, 1 - sq / np.where(defined, total, 1), np.nan)}


def bootstrap_intervals(tables: dict[str, LevelTables], n: int, seed: int,
                        confidence: float = 0.95, reference: str | None = None,
                        ) -> dict[str, Intervals]:
    """Pooled metrics with percentile intervals for every model, from the same unit draws.

    ``tables``: model name -> its :class:`LevelTables` (same rows and units). With
    ``reference`` (a model name), each other model also gets the paired interval of its
    difference to it (other minus reference), from the same draws.
    Returns model -> its :class:`Intervals` (level -> metric -> :class:`Interval`).
    """
    first = next(iter(tables.values()))
    counts = first.unit_counts(n, seed)
    alpha = (1 - confidence) / 2
    point = {name: t.metrics() for name, t in tables.items()}
    boot = {name: t.draw_metrics(counts) for name, t in tables.items()}
    out: dict[str, Intervals] = {}
    for name, t in tables.items():
        levels: dict[str, dict[str, Interval]] = {}
        for level in LEVELS:
            levels[level] = {}
            for metric, _ in scalars(t.kind, t.values is not None):
                values = boot[name][level][metric]
                cell = Interval(point[name][level][metric], *_interval(values, alpha))
                if reference and name != reference:
                    cell.diff = _sub(point[name][level][metric], point[reference][level][metric])
                    cell.diff_low, cell.diff_high = _interval(
                        values - boot[reference][level][metric], alpha)
                levels[level][metric] = cell
        out[name] = Intervals(**levels)
    return out


def _sub(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def _interval(values: np.ndarray, alpha: float) -> tuple[float | None, float | None]:
    """(low, high) percentiles of the finite ``values``."""
    values = values[np.isfinite(values)]
    if not len(values):
        return None, None
    low, high = np.quantile(values, [alpha, 1 - alpha])
    return float(low), float(high)


def fold_statistics(per_fold: list[dict], kind: str, ordered: bool = False) -> Spreads:
    """Mean and sd over folds of each level's scalar metrics (``per_fold``: evaluate_levels)."""
    out = {}
    for level in LEVELS:
        out[level] = {}
        for metric, _ in scalars(kind, ordered):
            values = np.array([f[level][metric] for f in per_fold
                               if f[level][metric] is not None], dtype=float)
            out[level][metric] = Spread(float(values.mean()) if len(values) else None,
                                        float(values.std(ddof=1)) if len(values) > 1 else None)
    return Spreads(**out)


def per_fold_metrics(kind: str, y: np.ndarray, output: np.ndarray, image_ids: np.ndarray,
                     sample_ids: np.ndarray, test_fold: np.ndarray,
                     values: np.ndarray | None = None) -> list[dict]:
    """``evaluate_levels`` on each fold's test rows."""
    out = []
    for f in range(int(test_fold.max()) + 1):
        rows = test_fold == f
        out.append(evaluate_levels(kind, y[rows], output[rows], image_ids[rows],
                                   sample_ids[rows], values))
    return out


class RidgeFolds:
    """Every fold's ridge classifier (standardised inputs, intercept, one ±1 column per class:
    scikit-learn's ``make_pipeline(StandardScaler(), RidgeClassifier(alpha))``) for any number
    of labellings at once. The fitted decision on a fold's test rows is linear in the training
    labels, ``H_f (Y - mean Y) + mean Y``, so ``H_f`` is solved once per fold and each
    labelling costs one product: a permutation test without refits."""

    def __init__(self, x: np.ndarray, image_fold: np.ndarray, alpha: float):
        self.folds = []
        for f in range(int(image_fold.max()) + 1):
            test, train = image_fold == f, (image_fold != f)
            scaler = StandardScaler().fit(x[train])
            xt, xs = scaler.transform(x[train]), scaler.transform(x[test])
            xt = xt - xt.mean(axis=0)
            if len(xt) <= xt.shape[1]:  # the kernel form, as scikit-learn's solver picks it
                gram = xt @ xt.T + alpha * np.eye(len(xt))
                hat = np.linalg.solve(gram, xt @ xs.T).T
            else:
                gram = xt.T @ xt + alpha * np.eye(xt.shape[1])
                hat = xs @ np.linalg.solve(gram, xt.T)
            self.folds.append((test, train, hat))

    def correct(self, labels: np.ndarray) -> np.ndarray:
        """Per labelling (rows of ``labels``, integer classes, shape (L, n)): the number of
        test images classified right, summed over folds."""
        labels = np.atleast_2d(labels)
        classes = int(labels.max()) + 1
        correct = np.zeros(len(labels), dtype=np.int64)
        for test, train, hat in self.folds:
            y = labels[:, train]
            coded = np.where(y[..., None] == np.arange(classes), 1.0, -1.0)  # (L, n, K)
            present = (y[..., None] == np.arange(classes)).any(axis=1)  # (L, K)
            mean = coded.mean(axis=1, keepdims=True)
            decision = np.einsum("tn,lnk->ltk", hat, coded - mean) + mean
            decision = np.where(present[:, None, :], decision, -np.inf)
            # two classes: one column decides (> 0: the second class), ties go to the first,
            # as argmax over the two symmetric columns does
            predicted = decision.argmax(axis=2)
            single = present.sum(axis=1) == 1  # a training fold of one class predicts it
            predicted[single] = present[single].argmax(axis=1)[:, None]
            correct += (predicted == labels[:, test]).sum(axis=1)
        return correct


def permutation_test(x_image: np.ndarray, y_image: np.ndarray, groups: np.ndarray,
                     image_fold: np.ndarray, n: int, seed: int, alpha: float,
                     make_model=None) -> dict:
    """Is the out-of-fold accuracy above chance? Labels permuted between groups, folds kept.

    The model refitted for every permutation is a ridge classifier on standardised image-mean
    embeddings, trained on each fold's non-test images and scored on its test images (all
    permutations at once: :class:`RidgeFolds`); p = (1 + #{permuted accuracy >= observed}) /
    (1 + n). ``make_model``: another scikit-learn classifier factory, refitted per permutation.
    """
    groups = np.asarray(groups).astype(str)
    names, first = np.unique(groups, return_index=True)
    group_label = y_image[first]
    position = np.searchsorted(names, groups)
    tested = int(np.sum(image_fold >= 0))
    rng = np.random.default_rng(seed)
    labellings = np.stack([y_image] + [rng.permutation(group_label)[position]
                                       for _ in range(n)])

    def accuracy(labels: np.ndarray) -> float:
        correct = 0
        for f in range(int(image_fold.max()) + 1):
            test = image_fold == f
            train = ~test
            if len(np.unique(labels[train])) < 2:
                correct += int(np.sum(labels[test] == labels[train][0]))
                continue
            model = make_model()
            model.fit(x_image[train], labels[train])
            correct += int(np.sum(model.predict(x_image[test]) == labels[test]))
        return correct / tested

    if make_model is None:
        scores = RidgeFolds(np.asarray(x_image, dtype=np.float64), image_fold,
                            alpha).correct(labellings.astype(np.int64)) / tested
    else:
        scores = np.array([accuracy(labels) for labels in labellings])
    observed, permuted = float(scores[0]), scores[1:]
    return {"model": "ridge classifier on image-mean embeddings",
            "observed_accuracy": observed, "n_permutations": int(n),
            "permuted_accuracy_mean": float(permuted.mean()) if n else None,
            "p_value": float((1 + np.sum(permuted >= observed)) / (1 + n))}


def sample_table(target: Target, y: np.ndarray, output: np.ndarray, image_ids: np.ndarray,
                 sample_ids: np.ndarray, test_fold: np.ndarray) -> pd.DataFrame:
    """One row per tested sample: its truth, fold, images, and what its images were read as."""
    tested = test_fold >= 0
    names, image_out = group_means(output[tested], image_ids[tested])
    frame = pd.DataFrame({"image": names})
    first = pd.DataFrame({"image": image_ids[tested].astype(str),
                          "sample": sample_ids[tested].astype(str), "y": y[tested],
                          "fold": test_fold[tested]}).drop_duplicates("image").set_index("image")
    frame = frame.join(first, on="image")
    rows = []
    for sample, part in frame.groupby("sample", sort=True):
        index, head = part.index.to_numpy(), next(part.itertuples())
        row = {"sample": sample, "fold": int(head.fold), "images": len(part)}
        if target.kind == "classification":
            classes = target.class_names
            truth = int(head.y)
            votes = np.bincount(image_out[index].argmax(axis=1), minlength=len(classes))
            row |= {"true": classes[truth], "images_correct": float(votes[truth] / len(part)),
                    "read_as": ", ".join(f"{classes[c]} x{v}" for c, v in enumerate(votes) if v),
                    "mean_probability_true": float(image_out[index, truth].mean())}
        else:
            predicted = image_out[index]
            row |= {"true": float(head.y), "predicted_mean": float(predicted.mean()),
                    "predicted_sd": float(predicted.std())}
        rows.append(row)
    return pd.DataFrame(rows)


def verdict(pooled: dict[str, Intervals], kind: str, level: str, primary: str | None,
            baselines: tuple[str, ...] = BASELINES) -> Verdict:
    """Which model is best at ``level`` on the main metric, and does the ``primary`` model (the
    head, or the auto-selected one) beat the best baseline by more than its interval width."""
    metric, higher = main_metric(kind)
    scores = {name: row.cell(level, metric).value for name, row in pooled.items()}
    ranked = sorted((n for n in scores if scores[n] is not None),
                    key=lambda n: scores[n], reverse=higher)
    out = Verdict(level=level, metric=metric, higher_is_better=higher,
                  best_model=ranked[0] if ranked else None, scores=scores)
    ranked_baselines = [n for n in ranked if n in baselines]
    if primary is None or not ranked_baselines or scores[primary] is None:
        return out
    best = ranked_baselines[0]
    cell, head_cell = pooled[best].cell(level, metric), pooled[primary].cell(level, metric)
    margin = (scores[primary] - scores[best]) * (1 if higher else -1)
    width = head_cell.width
    # the paired interval of (baseline - head) from the same bootstrap draws
    low, high = cell.diff_low, cell.diff_high
    clear = low is not None and ((high < 0) if higher else (low > 0))
    return dataclasses.replace(
        out, primary=primary, best_baseline=best, primary_margin=margin,
        primary_interval_width=width,
        primary_beats_by_more_than_interval=bool(width is not None and margin > width),
        baseline_minus_primary_interval=[low, high], primary_clearly_better=bool(clear))


def selection_check(pooled: dict[str, Intervals], level: str, metric: str, higher: bool,
                    chosen: dict[str, str], candidates: list[str]) -> SelectionChecks:
    """Does what model selection chose score worse than another candidate on the same folds, by
    more than its own interval width? ``chosen``: role (nested, final) -> model key (the nested
    ``auto`` row, and the final model's candidate); ``candidates``: the keys of every
    candidate's row. Per role: its value, the best other candidate's, the margin and whether
    they disagree."""
    def cell(name: str) -> Interval | None:
        return pooled[name].cell(level, metric) if name in pooled else None

    def value(name: str) -> float | None:
        return cell(name).value if cell(name) else None

    sign = 1 if higher else -1
    out = SelectionChecks(level=level, metric=metric)
    for role, name in chosen.items():
        others = [c for c in candidates if c != name and value(c) is not None]
        if value(name) is None or not others:
            continue
        best = max(others, key=lambda c: sign * value(c))
        margin = sign * (value(best) - value(name))
        width = cell(name).width
        setattr(out, role, SelectionCheck(
            model=name, value=value(name), best_other=best, best_value=value(best),
            behind_by=margin, interval_width=width,
            disagrees=bool(width is not None and margin > width)))
    return out
