"""How much data is enough: the served model (and the best baseline) trained again on nested
subsets of each outer fold's training data and scored on the same test groups, along three
axes (samples, images per sample, patches per image); the learning curves fitted to them and
projected; simulated future studies; and the variance components of the reported model's
out-of-fold output.

A subset only marks rows of the outer fold's training data '-' (left out), never a test row:
every subset's test rows are its outer fold's, and no sample is ever fitted and tested in one
fold (checked for every subset). The rows a model fits on are thinned: a scikit-learn model's
training and validation rows, a head's training rows (its validation rows stay, for early
stopping and calibration). The points are image-level scores pooled over all tested images, with
intervals from the run's bootstrap over test samples; the same draws give the curves' intervals.
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from hydra.utils import instantiate
from omegaconf import DictConfig, open_dict

from sinterlab.data.descriptor import IMAGE, SAMPLE, SLIDE
from sinterlab.data.groups import group_means
from sinterlab.data.splits import check_disjoint
from sinterlab.evaluation.baselines import baseline_outputs
from sinterlab.evaluation.learning_curve import (
    PowerLaw,
    SampleOutcomes,
    fit_power_laws,
    nested_keep,
    percentile_cell,
    project,
    simulate_studies,
    size_grid,
)
from sinterlab.evaluation.metrics import expected_value, first_rows
from sinterlab.evaluation.results import (
    ACCURACY,
    MAE,
    SAMPLES_AXIS,
    Band,
    Bootstrap,
    CurveFit,
    CurvePoint,
    FutureStudies,
    Interval,
    LearningCurve,
    LearningCurves,
    PointCell,
    ProtocolBlock,
    SamplesNeeded,
    StudySize,
    VarianceComponents,
)
from sinterlab.evaluation.statistics import LevelTables
from sinterlab.evaluation.variance import (
    COMPONENTS,
    Components,
    advice,
    bootstrap_components,
    nested_components,
    reading_noise,
    sentence,
)
from sinterlab.study.datamodule import GROUP_COLUMNS, SEMDataModule
from sinterlab.study.fit import REPRESENTATION, fit_models, head_model, is_head
from sinterlab.study.record import ProtocolOutputs
from sinterlab.study.selection import point_config

log = logging.getLogger(__name__)
#: axis -> (the column whose values are kept or dropped whole, the column that stratifies them,
#: one of them, what holds them): the axis's size counts "<axis> per <holder>"
AXES = {"samples": (SAMPLE, "label", "sample", "class"),
        "images": (IMAGE, SAMPLE, "image", "sample"),
        "patches": ("patch_id", IMAGE, "patch", "image")}
FIT_ROLES = {"head": ("train",), "other": ("train", "val")}


# -- what is trained --------------------------------------------------------------------------
#: the numbers of a learning curve (floor, scale, exponent): an axis needs as many sizes
CURVE_PARAMETERS = 3


def served_config(cfg: DictConfig, block: ProtocolBlock) -> DictConfig | None:
    """The config of the model a run serves: model=auto's final point (its candidate with the
    chosen parameters), else the trained head's; None when the run trained none."""
    primary = block.cv.primary
    if primary == "auto":
        final = block.selection.final.proxy  # an ensemble: its heaviest member
        return point_config(cfg.model.candidates[final.model], final.params)
    if primary == "head":
        return head_model(cfg)
    return None


def served_name(block: ProtocolBlock, model: DictConfig | None) -> str | None:
    if model is None:
        return None
    return block.selection.final.proxy.point if block.selection else str(model.name)


def best_baseline(cfg: DictConfig, block: ProtocolBlock) -> str:
    """The entry of ``evaluation.baselines`` with the best headline score on the run's folds."""
    verdict = block.cv.verdict
    sign = 1 if verdict.higher_is_better else -1
    scores = {name: verdict.scores.get(name) for name in cfg.evaluation.baselines}
    return max((n for n in scores if scores[n] is not None), key=lambda n: sign * scores[n])


# -- subsets -----------------------------------------------------------------------------------
def subsets(dm: SEMDataModule, assignment: np.ndarray, axis: str, fractions: list[float],
            draws: int, roles: tuple[str, ...], seed: int) -> list[list[np.ndarray]]:
    """Per fraction, per draw, the (folds, rows) assignment that keeps that fraction of each
    outer fold's fitted ``roles`` rows along ``axis`` (whole samples stratified by class, whole
    images within each sample, patches within each image), nested across fractions within a
    draw; the rows dropped are '-'."""
    unit_column, stratum_column, *_ = AXES[axis]
    table = dm.patches.assign(label=dm.y[:, 0].numpy())
    units = table[unit_column].to_numpy().astype(str)
    strata = table[stratum_column].to_numpy().astype(str)
    out = [[assignment.copy() for _ in range(draws)] for _ in fractions]
    for d in range(draws):
        rng = np.random.default_rng([seed, list(AXES).index(axis), d])
        for f, fold in enumerate(assignment):
            rows = np.flatnonzero(np.isin(fold, roles))
            keep = nested_keep(units[rows], strata[rows], fractions, rng)
            for k in range(len(fractions)):
                out[k][d][f, rows[~keep[k]]] = "-"
    return out


def check_subset(dm: SEMDataModule, outer: np.ndarray, subset: np.ndarray, kind: str) -> None:
    """A subset tests exactly its outer fold's test rows, fits only on rows its outer fold
    fits on, and never holds one group (sample, slide) in both (a leak raises)."""
    groups = dm.patches[GROUP_COLUMNS[kind]].to_numpy().astype(str)
    fitted = (subset == "train") | (subset == "val")
    if not np.array_equal(subset == "test", outer == "test"):
        raise AssertionError("a learning-curve subset changed its outer fold's test rows")
    if (fitted & ~((outer == "train") | (outer == "val"))).any():
        raise AssertionError("a learning-curve subset fits on a row its outer fold does not")
    for g, fold in enumerate(subset):
        used = fold != "-"
        check_disjoint(groups[used], np.where(fitted[g, used], "fit", "test"))


# -- fitting and scoring -----------------------------------------------------------------------
def served_outputs(cfg: DictConfig, dm: SEMDataModule, model: DictConfig,
                   assignments: list[np.ndarray], seeds: list[int]) -> list[np.ndarray]:
    """The first target's out-of-fold outputs (per patch, temperature-scaled like the run's
    pooled metrics) of ``model`` trained on each assignment; the assignments train as one
    ensemble of all their folds (heads: one stacked fit), in a scratch folder with no logger."""
    quiet = cfg.copy()
    with open_dict(quiet):
        quiet.logger = None
    stacked = np.concatenate(assignments)
    images = dm.patches[IMAGE].to_numpy().astype(str)
    with tempfile.TemporaryDirectory() as scratch, dm.reading(model.get(REPRESENTATION)):
        [(ensemble, _)] = fit_models(quiet, dm, stacked, Path(scratch), ["learning-curve"],
                                     [model], seeds)
        members = ensemble.predict_members(dm.x, images=images, measures=dm.row_measures()
                                           if ensemble.reads_measures else None)[0]
    per_group = ensemble.per_group
    outputs, group = [], 0
    for assignment in assignments:
        full = np.full(members.shape[1:], np.nan)
        for fold in assignment:
            rows = fold == "test"
            full[rows] = members[group * per_group:(group + 1) * per_group, rows].mean(axis=0)
            group += 1
        outputs.append(full)
    return outputs


def baseline_oof(cfg: DictConfig, dm: SEMDataModule, name: str,
                 assignments: list[np.ndarray]) -> list[np.ndarray]:
    """The baseline ``name`` of ``evaluation.baselines`` fitted per fold of each assignment on
    its training and validation rows (each from scratch)."""
    first = dm.descriptor.targets[0]
    classes = len(first.classes) if first.kind == "classification" else None
    factory = {name: instantiate(cfg.evaluation.baselines[name])}
    x, y = dm.image_x.numpy(), dm.y[:, 0].numpy()
    outputs = []
    for assignment in assignments:
        full = np.full((len(x), classes) if classes else (len(x),), np.nan)
        for fold in assignment:
            fit, test = np.flatnonzero((fold == "train") | (fold == "val")), fold == "test"
            out, _ = baseline_outputs(first.kind, x[fit], y[fit], x[test], factory,
                                      int(cfg.seed), classes, str(cfg.evaluation.baseline_dtype))
            full[test] = out[name]
        outputs.append(full)
    return outputs


def curve_metrics(target) -> list[tuple[str, bool]]:
    """(metric, higher is better) the curves follow: accuracy (and MAE in the units for an
    ordered target) for classification, MAE for regression."""
    if target.kind == "classification":
        return [(ACCURACY, True)] + ([(MAE, False)] if target.ordered else [])
    return [(MAE, False)]


class Scorer:
    """Image-level metrics of out-of-fold outputs, and their values in the run's bootstrap
    draws over test samples (the same draws for every subset, so the points of one curve are
    paired)."""

    def __init__(self, cfg: DictConfig, dm: SEMDataModule, tested: np.ndarray, unit: str):
        first = dm.descriptor.targets[0]
        self.kind, self.metrics = first.kind, curve_metrics(first)
        self.values = np.asarray(first.values) if first.ordered else None
        self.tested = tested
        self.images = dm.patches[IMAGE].to_numpy().astype(str)[tested]
        rows = first_rows(self.images)
        self.y = dm.y[:, 0].numpy()[tested][rows]
        self.samples = dm.patches[SAMPLE].to_numpy().astype(str)[tested][rows]
        self.units = dm.patches[unit].to_numpy().astype(str)[tested][rows]
        self.image_ids = self.images[rows]
        b = cfg.evaluation.bootstrap
        probe = self.table(np.zeros((len(self.images), len(first.classes)))
                           if self.kind == "classification" else np.zeros(len(self.images)))
        self.counts = probe.unit_counts(int(b.n), int(b.seed))

    def table(self, output: np.ndarray) -> LevelTables:
        _, image_out = group_means(output, self.images)
        return LevelTables(self.kind, self.y, image_out, self.image_ids, self.samples,
                           self.units, self.values)

    def score(self, output: np.ndarray) -> dict[str, tuple[float, np.ndarray]]:
        """metric -> (value, its value in every bootstrap draw) at image level."""
        table = self.table(output[self.tested])
        point, draws = table.metrics()["image"], table.draw_metrics(self.counts)["image"]
        return {m: (float(point[m]), np.asarray(draws[m], dtype=np.float64))
                for m, _ in self.metrics}


@dataclass
class AxisScores:
    """One metric along one axis: per fraction the point (mean over the subset draws), each
    subset draw's value, and the bootstrap draws (draws of the bootstrap, fractions)."""

    point: np.ndarray
    per_draw: list[list[float]]
    draws: np.ndarray


def axis_points(scorer: Scorer, outputs: list[list[np.ndarray]]) -> dict[str, AxisScores]:
    """Per metric, its :class:`AxisScores` from ``outputs`` per fraction, per subset draw."""
    scored = [[scorer.score(o) for o in per_draw] for per_draw in outputs]
    return {metric: AxisScores(
                point=np.array([np.mean([s[metric][0] for s in f]) for f in scored]),
                per_draw=[[s[metric][0] for s in f] for f in scored],
                draws=np.stack([np.mean([s[metric][1] for s in f], axis=0) for f in scored],
                               axis=1))
            for metric, _ in scorer.metrics}


def kept_size(dm: SEMDataModule, assignments: list[np.ndarray], axis: str,
              roles: tuple[str, ...]) -> float:
    """The mean count of the axis's units in the fitted rows of a fold: samples per class,
    images per sample or patches per image."""
    unit_column, stratum_column, *_ = AXES[axis]
    table = dm.patches.assign(label=dm.y[:, 0].numpy())
    sizes = []
    for assignment in assignments:
        for fold in assignment:
            rows = table[np.isin(fold, roles)]
            sizes.append(rows.groupby(stratum_column)[unit_column].nunique().mean())
    return float(np.mean(sizes))


def subset_sizes(dm: SEMDataModule, assignment: np.ndarray, smaller: list[list[np.ndarray]],
                 axis: str, roles: tuple[str, ...]) -> np.ndarray:
    """The x of each point along ``axis``: today's size scaled by the share of the fitted
    units each fraction's subsets keep, then today's."""
    today = dataset_size(dm, axis)
    full = kept_size(dm, [assignment], axis, roles)
    return np.array([today * kept_size(dm, per_draw, axis, roles) / full
                     for per_draw in smaller] + [today])


def dataset_size(dm: SEMDataModule, axis: str) -> float:
    """The data set's own size on ``axis``: samples per class, images per sample, patches per
    image (means)."""
    unit_column, stratum_column, *_ = AXES[axis]
    table = dm.patches.assign(label=dm.y[:, 0].numpy())
    return float(table.groupby(stratum_column)[unit_column].nunique().mean())


def fitted_curve(points: dict[str, AxisScores], x: np.ndarray, metric: str, higher: bool,
                 classes: int | None, lc: DictConfig) -> tuple[PowerLaw, PowerLaw]:
    """The power law of the loss (error rate, or the MAE) through the points, and one per
    bootstrap draw; the floor of an error rate stays below chance."""
    offset, sign = (1.0, -1.0) if higher else (0.0, 1.0)
    loss_point = offset + sign * points[metric].point
    loss_draws = offset + sign * points[metric].draws
    sd = np.nanstd(loss_draws, axis=0)
    ceiling = (1.0 - 1.0 / classes) if (higher and classes) else np.inf
    e = lc.fit.exponent
    exponents = np.linspace(float(e.low), float(e.high), int(e.steps))
    floor = (0.0, ceiling)
    finite = np.isfinite(loss_draws).all(axis=1)
    return (fit_power_laws(x, loss_point[None], sd, floor, exponents),
            fit_power_laws(x, loss_draws[finite], sd, floor, exponents))


def curve_fit(curve: PowerLaw, draws: PowerLaw, x: np.ndarray, higher: bool, lc: DictConfig,
              confidence: float) -> CurveFit:
    """The fitted curve as the metric (accuracy = 1 - error), its limit and its band."""
    offset, sign = (1.0, -1.0) if higher else (0.0, 1.0)
    grid = np.geomspace(float(x[0]), float(x[-1]) * max(float(m) for m in lc.projection),
                        int(lc.fit.band_points))
    band = offset + sign * draws(grid)
    alpha = (1 - confidence) / 2
    return CurveFit(
        **curve.row(0),
        model="loss = floor + scale * x ** -exponent" + (" (loss = 1 - accuracy)" if higher
                                                         else ""),
        limit=percentile_cell(offset + sign * draws.floor, offset + sign * float(curve.floor[0]),
                              confidence),
        band=Band(x=grid.tolist(), value=(offset + sign * curve(grid)[0]).tolist(),
                  low=np.quantile(band, alpha, axis=0).tolist(),
                  high=np.quantile(band, 1 - alpha, axis=0).tolist()))


def curve_record(points: dict[str, AxisScores], x: np.ndarray, fractions: list[float],
                 scorer: Scorer, lc: DictConfig, confidence: float, classes: int | None, rng,
                 unit: str) -> tuple[LearningCurve, dict[str, tuple[PowerLaw, PowerLaw]]]:
    """Points, fit and projection of one model along one axis, per metric; and per metric the
    fitted curve with its bootstrap curves."""
    rows = [CurvePoint(float(f), float(x[k]), **{
                metric: PointCell(**vars(percentile_cell(points[metric].draws[:, k],
                                                         points[metric].point[k], confidence)),
                                  per_draw=[float(v) for v in points[metric].per_draw[k]])
                for metric, _ in scorer.metrics})
            for k, f in enumerate(fractions)]
    fits, projections, curves = {}, {}, {}
    for metric, higher in scorer.metrics:
        curve, draws = fitted_curve(points, x, metric, higher, classes, lc)
        fits[metric] = curve_fit(curve, draws, x, higher, lc, confidence)
        projections[metric] = project(
            curve, draws, float(x[-1]), [float(m) for m in lc.projection],
            points[metric].draws[:, -1], higher, confidence, rng)
        curves[metric] = (curve, draws)
    return LearningCurve(points=rows, fit=fits, projection=projections, unit=unit,
                         today=float(x[-1]), fractions=fractions), curves


def needed_samples(curve: PowerLaw, draws: PowerLaw, targets: list[float], today: float,
                   max_factor: float, confidence: float) -> list[SamplesNeeded]:
    """Per target accuracy, the samples per class (the data set's) at which the accuracy curve
    reaches it, with its interval; None (point or bound) beyond ``max_factor`` times
    ``today``'s samples, where the curve is not trusted; the share of bootstrap curves that
    reach it within that range."""
    top = max_factor * today
    out = []
    for target in targets:
        point = float(curve.reach(1.0 - target)[0])
        values = draws.reach(1.0 - target)
        cell = percentile_cell(np.minimum(values, 2 * top), point, confidence)
        out.append(SamplesNeeded(accuracy=float(target),
                                 samples_per_class=point if point <= top else None,
                                 low=cell.low if cell.low <= top else None,
                                 high=cell.high if cell.high <= top else None,
                                 within=top, reached_share=float(np.mean(values <= top))))
    return out


def sample_outcomes(dm: SEMDataModule, output: np.ndarray, tested: np.ndarray) -> SampleOutcomes:
    """Per tested sample: its class, images and what its images were read as (out of fold)."""
    images = dm.patches[IMAGE].to_numpy().astype(str)[tested]
    names, image_out = group_means(output[tested], images)
    rows = first_rows(images)
    label = dm.y[:, 0].numpy()[tested][rows].astype(np.int64)
    samples = dm.patches[SAMPLE].to_numpy().astype(str)[tested][rows]
    predicted = image_out.argmax(axis=1)
    sample_names, position = np.unique(samples, return_inverse=True)
    count = np.bincount(position).astype(np.float64)
    classes = image_out.shape[1]
    read = np.stack([np.bincount(position, weights=(predicted == c).astype(float))
                     for c in range(classes)], axis=1) / count[:, None]
    sample_label = np.zeros(len(sample_names), dtype=np.int64)
    sample_label[position] = label
    return SampleOutcomes(sample_label, count, read[np.arange(len(sample_names)), sample_label],
                          read)


def future_studies(dm: SEMDataModule, output: np.ndarray, tested: np.ndarray,
                   accuracy: tuple[PowerLaw, PowerLaw] | None, today: float, lc: DictConfig,
                   confidence: float, seed: int) -> FutureStudies:
    """Studies of n samples per class simulated by resampling today's samples whole: the width
    of their accuracy interval (today's model) and the power of the permutation test against
    chance, the accuracy moved by the learning curve's gain at n (a curve draw per study)."""
    outcomes = sample_outcomes(dm, output, tested)
    s = lc.studies
    rng = np.random.default_rng(seed)
    n_today = max(2, int(round(today)))
    alpha = (1 - confidence) / 2
    rows = []
    for n in size_grid(n_today, float(lc.max_factor)):
        gain = np.zeros(int(s.studies))
        if accuracy is not None:
            draws = accuracy[1]
            pick = rng.integers(0, len(draws.floor), int(s.studies))
            gain = (draws(today)[pick, 0] - draws(float(n))[pick, 0])  # loss falls: a gain
        accuracies, _ = simulate_studies(outcomes, n, int(s.studies), 0, np.zeros(1), rng)
        low, high = np.quantile(accuracies, [alpha, 1 - alpha])
        _, p_values = simulate_studies(outcomes, n, int(s.studies), int(s.permutations), gain,
                                       rng)
        rows.append(StudySize(samples_per_class=n, interval_width=float(high - low),
                              power=float(np.mean(p_values < float(s.alpha)))))
    # the simulated widths fall as a power of n (a straight line in logs, slope about -1/2):
    # the line, not one noisy simulation, says where the width reaches the ratio
    sizes = np.array([r.samples_per_class for r in rows], dtype=np.float64)
    widths = np.array([r.interval_width for r in rows])
    slope, width_today, narrow = None, 0.0, None
    if (widths > 0).sum() >= 2:  # else every study reads the same (a constant model)
        slope, intercept = np.polyfit(np.log(sizes[widths > 0]), np.log(widths[widths > 0]), 1)
        width_today = float(np.exp(intercept + slope * np.log(n_today)))
        narrow = float(n_today * float(s.interval_ratio) ** (1 / slope)) if slope < 0 else None
    powered = next((r.samples_per_class for r in rows if r.power >= float(s.power)), None)
    return FutureStudies(
        today=n_today, by_size=rows, alpha=float(s.alpha), power=float(s.power),
        interval_ratio=float(s.interval_ratio), interval_width_today=width_today,
        width_exponent=None if slope is None else float(slope), narrower_at=narrow,
        powered_at=powered, max_simulated=rows[-1].samples_per_class,
        method="today's samples resampled whole, n per class (their images' out-of-fold "
               "outcomes kept together); permutation test: labels permuted between the drawn "
               "samples, what each sample's images were read as kept; accuracy moved by the "
               "learning curve's gain at n")


def thinned_axes(dm: SEMDataModule, assignment: np.ndarray, lc: DictConfig, tried: list[str],
                 roles: tuple[str, ...], skipped: dict[str, str]
                 ) -> tuple[list[str], dict[str, list[float]], dict, dict[str, np.ndarray]]:
    """The axes of ``tried`` a curve can be fitted along (the others recorded in ``skipped``
    with why), and per axis its fractions, its subsets per fraction and draw, and the sizes
    they count."""
    axes = [axis for axis in tried if axis not in skipped]
    fractions = {axis: [float(f) for f in lc.fractions[axis] if float(f) < 1.0] + [1.0]
                 for axis in axes}
    smaller = {axis: subsets(dm, assignment, axis, fractions[axis][:-1], int(lc.draws), roles,
                             int(lc.seed)) for axis in axes}
    sizes = {axis: subset_sizes(dm, assignment, smaller[axis], axis, roles) for axis in axes}
    for axis in list(axes):  # a curve of three numbers needs three distinct sizes
        distinct = np.unique(np.round(sizes[axis], 9))
        if len(distinct) < CURVE_PARAMETERS:
            skipped[axis] = (
                f"the subsets hold only {len(distinct)} distinct size(s) "
                f"({', '.join(f'{v:.3g}' for v in distinct)} {axis} per {AXES[axis][3]}; "
                f"today's data is too small to thin), and a curve of {CURVE_PARAMETERS} "
                "numbers needs as many: no curve and no projection")
            axes.remove(axis)
    return axes, fractions, smaller, sizes


def subset_outputs(cfg: DictConfig, dm: SEMDataModule, model: DictConfig | None, baseline: str,
                   chunks: list[list[np.ndarray]], seeds: list[int]) -> list[list[np.ndarray]]:
    """Per chunk of assignments, the out-of-fold outputs of ``model`` (None: the baseline)
    trained on each. A head trains every subset in one stacked fit (its cost is the steps, not
    the members: measured 2x faster than a fit per fraction), a scikit-learn model one fit per
    chunk (all its draws)."""
    if model is None:
        return [baseline_oof(cfg, dm, baseline, chunk) for chunk in chunks]
    if is_head(model):
        flat = served_outputs(cfg, dm, model, [a for c in chunks for a in c], seeds)
        ends = np.cumsum([len(c) for c in chunks])
        return [flat[end - len(c):end] for c, end in zip(chunks, ends, strict=True)]
    return [served_outputs(cfg, dm, model, chunk, seeds) for chunk in chunks]


def model_curves(cfg: DictConfig, dm: SEMDataModule, scorer: Scorer, model: DictConfig | None,
                 baseline: str, tried: list[str], skipped: dict[str, str], rng
                 ) -> dict[str, tuple[LearningCurve, dict[str, tuple[PowerLaw, PowerLaw]]]]:
    """Per axis of ``tried`` that can be thinned, the curve of ``model`` (None: the baseline)
    and its fitted power laws. Every axis ends at all of today's data, trained once."""
    lc = cfg.evaluation.learning_curve
    assignment = dm.assignment
    first = dm.descriptor.targets[0]
    classes = len(first.classes) if first.kind == "classification" else None
    roles = FIT_ROLES["head" if model is not None and is_head(model) else "other"]
    axes, fractions, smaller, sizes = thinned_axes(dm, assignment, lc, tried, roles, skipped)
    chunks = [[assignment]] + [per_draw for axis in axes for per_draw in smaller[axis]]
    for chunk in chunks[1:]:
        for subset in chunk:
            check_subset(dm, assignment, subset, cfg.split.kind)
    outputs = subset_outputs(cfg, dm, model, baseline, chunks, [int(s) for s in lc.head_seeds])
    curves, start = {}, 1
    for axis in axes:
        grouped = outputs[start:start + len(smaller[axis])] + [outputs[0]]
        start += len(smaller[axis])
        curves[axis] = curve_record(axis_points(scorer, grouped), sizes[axis], fractions[axis],
                                    scorer, lc, float(cfg.evaluation.bootstrap.confidence),
                                    classes, rng, f"{axis} per {AXES[axis][3]}")
    return curves


def learning_curves(cfg: DictConfig, dm: SEMDataModule, block: ProtocolBlock,
                    oof: ProtocolOutputs) -> LearningCurves:
    """The learning-curve block of metrics.json: per axis the points, the fit (with its band
    for the figure) and the projection; the baseline's along samples; the samples per class
    needed for the target accuracies and the simulated future studies."""
    started = time.perf_counter()
    lc = cfg.evaluation.learning_curve
    kind = cfg.split.kind
    if kind not in ("sample", "slide"):
        return LearningCurves(skipped=f"split={kind}: a test image's sample is among the "
                                      "training data, so fewer training samples mean nothing; "
                                      "use split=sample")
    first = dm.descriptor.targets[0]
    tested = dm.test_fold(dm.assignment) >= 0
    scorer = Scorer(cfg, dm, tested, SLIDE if kind == "slide" else SAMPLE)
    confidence = float(cfg.evaluation.bootstrap.confidence)
    rng = np.random.default_rng(int(lc.seed))
    model = served_config(cfg, block)
    baseline = best_baseline(cfg, block)
    # an axis with one unit per stratum (one image per sample) has nothing to thin
    skipped = {axis: f"one {AXES[axis][2]} per {AXES[axis][3]}: nothing to thin"
               for axis in AXES if dataset_size(dm, axis) <= 1}
    own = model_curves(cfg, dm, scorer, model, baseline, list(AXES), skipped, rng) \
        if model is not None else {}
    base = model_curves(cfg, dm, scorer, None, baseline, [SAMPLES_AXIS], skipped, rng)
    if not own and not base:
        return LearningCurves(skipped="; ".join(f"{axis}: {why}"
                                                for axis, why in skipped.items()))
    record = LearningCurves(
        model=served_name(block, model), baseline=baseline, level="image",
        metrics=[m for m, _ in scorer.metrics], draws=int(lc.draws),
        head_seeds=[int(s) for s in lc.head_seeds] if model is not None and is_head(model)
        else None,
        axes={axis: curve for axis, (curve, _) in own.items()},
        baseline_curve=base[SAMPLES_AXIS][0] if base else None, axes_skipped=skipped)
    samples = own.get(SAMPLES_AXIS) or base.get(SAMPLES_AXIS)
    if first.kind == "classification" and samples is not None:
        accuracy = samples[1][ACCURACY]
        record.needed = needed_samples(*accuracy, [float(a) for a in lc.targets],
                                       samples[0].today, float(lc.max_factor), confidence)
        record.studies = future_studies(dm, oof.reported(block)[0], tested, accuracy,
                                        samples[0].today, lc, confidence, int(lc.seed))
    record.wall_s = round(time.perf_counter() - started, 2)
    return record


# -- variance components -------------------------------------------------------------------------
def patch_scores(target, output: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, str]:
    """Each patch's output on one scale, and its name: an ordered target's expected level (in
    its units), an unordered target's probability of the true class, a regression's value."""
    if target.kind != "classification":
        return output.astype(np.float64), f"predicted {target.name}"
    if target.ordered:
        return (expected_value(output, np.asarray(target.values, dtype=np.float64)),
                f"expected {target.name}" + (f" ({target.error_unit})"
                                             if target.error_unit else ""))
    return output[np.arange(len(y)), y.astype(np.int64)], "probability of the true class"


def variance_block(cfg: DictConfig, dm: SEMDataModule, block: ProtocolBlock,
                   oof: ProtocolOutputs) -> VarianceComponents:
    """Variance components of the reported model's out-of-fold output per patch (within each
    class: between samples, between images of a sample, between patches of an image), their
    intervals (samples resampled within class) and the sentence."""
    tested = oof.test_fold >= 0
    first = dm.descriptor.targets[0]
    name = block.reported
    output = oof.reported(block)[0][tested]
    y = dm.y[:, 0].numpy()[tested]
    score, scale = patch_scores(first, output, y)
    classes = dm.patches[first.name].to_numpy().astype(str)[tested]
    samples = dm.patches[SAMPLE].to_numpy().astype(str)[tested]
    images = dm.patches[IMAGE].to_numpy().astype(str)[tested]
    point = nested_components(score, classes, samples, images)
    b, v = cfg.evaluation.bootstrap, cfg.evaluation.variance_components
    draws = bootstrap_components(score, classes, samples, images, int(v.bootstrap), int(b.seed))
    confidence = float(b.confidence)
    per_sample = float(np.mean([len(np.unique(images[samples == s])) for s in np.unique(samples)]))
    per_image = float(len(images) / len(np.unique(images)))
    noise = reading_noise(point, per_sample, per_image)
    noise_draws = [reading_noise(d, per_sample, per_image) for d in draws]
    known = [value for _, value in point.items() if value is not None]
    shared = (point.between_patches or 0.0) <= 1e-12 * max(sum(known), 1e-300)

    def cells(point: Components, draws: list[Components]) -> dict[str, Interval]:
        """Per level, the point with its percentile interval over the draws (NaN: not
        estimable)."""
        def nan(value: float | None) -> float:
            return np.nan if value is None else value
        columns = np.array([[nan(v) for _, v in d.items()] for d in draws],
                           dtype=np.float64).reshape(len(draws), len(COMPONENTS))
        return {name: Interval(**vars(percentile_cell(columns[:, k], nan(value), confidence)))
                for k, (name, value) in enumerate(point.items())}
    return VarianceComponents(
        model=name, output=scale, images_per_sample=per_sample, patches_per_image=per_image,
        components=cells(point, draws), shares=cells(noise.shares, [d.shares for d in noise_draws]),
        twice_images=noise.twice_images, twice_patches=noise.twice_patches,
        twice_samples=noise.twice_samples,
        bootstrap=Bootstrap(n=int(v.bootstrap), unit="sample, within its class"),
        advice=advice(noise, float(v.worthwhile)),
        sentence=sentence(noise, float(v.worthwhile), per_sample, per_image),
        note=("the patches of one image share one output (the model reads the image's mean "
              "embedding)" if shared else None))
