"""Model selection by nested grouped cross-validation (``model=auto``).

Every candidate (a Lightning head or a scikit-learn model) and every point of its
hyper-parameter grid is scored the same way: by one score of the image-level outputs
(``model.selection.score``; default the ranked probability score of the image probabilities
for ordered targets, their log-loss for unordered ones, the squared error for regression) on
the inner held-out groups of each outer fold. Outer test rows are never read.
"""

from __future__ import annotations

import itertools
import logging
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf, open_dict
from sklearn.metrics import accuracy_score, log_loss, mean_absolute_error, mean_squared_error

from sinterlab.console import stage
from sinterlab.data.descriptor import IMAGE, SAMPLE
from sinterlab.data.groups import group_means
from sinterlab.evaluation.metrics import first_rows
from sinterlab.evaluation.results import BlendPart, FinalModel, GridPoint, Selection, record_of
from sinterlab.models.scores import ranked_probability_scores
from sinterlab.study.datamodule import SEMDataModule
from sinterlab.study.ensemble import cross_fitted, greedy_weights
from sinterlab.study.fit import (
    REPRESENTATION,
    FitRecord,
    Outputs,
    fit_head,
    fit_models,
    group_outputs,
    is_head,
    model_inputs,
    model_oof,
)
from sinterlab.study.model_config import ModelOptions

log = logging.getLogger(__name__)


def ranked_probability_score(y: np.ndarray, probs: np.ndarray) -> float:
    """Mean ranked probability score of ordered classes (0 best, 1 worst): the squared distance
    between the predicted and the true cumulative distribution over the levels, so a
    neighbouring level costs less than a distant one (Epstein 1969; a proper score)."""
    return float(np.mean(ranked_probability_scores(y, probs)))


_CLASSIFICATION = {
    "log_loss": lambda y, p: log_loss(y, p, labels=np.arange(p.shape[1])),
    "error": lambda y, p: 1.0 - accuracy_score(y, p.argmax(axis=1))}
#: selection scores (lower is better), per kind of target: image truth, image outputs -> score
SCORES = {
    "classification": _CLASSIFICATION,
    "ordered": _CLASSIFICATION | {"rps": ranked_probability_score},
    "regression": {"mse": mean_squared_error, "mae": mean_absolute_error},
}


def score_kind(target) -> str:
    """Which ``model.selection.score`` entry ranks models of ``target``."""
    return "ordered" if getattr(target, "ordered", False) else target.kind


def image_level(kind: str, y: np.ndarray, output: np.ndarray,
                images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(truth, output) per image, images in order of first appearance: the patch outputs
    averaged per image; class probabilities clipped and normalised."""
    _, mean = group_means(output, images)
    truth = y[first_rows(images)]
    if kind != "regression":
        truth = truth.astype(np.int64)
        mean = np.clip(mean, 1e-15, 1.0)
        mean = mean / mean.sum(axis=1, keepdims=True)
    return truth, mean


def check_score(kind: str, score: str) -> None:
    if score not in SCORES[kind]:
        raise ValueError(f"model.selection.score.{kind}={score!r}: use one of "
                         f"{list(SCORES[kind])}")


def image_score(kind: str, score: str, y: np.ndarray, output: np.ndarray,
                images: np.ndarray) -> float:
    """``score`` of the image-level outputs (patch outputs averaged per image) of some rows;
    ``kind``: classification, ordered or regression."""
    check_score(kind, score)
    return float(SCORES[kind][score](*image_level(kind, y, output, images)))


#: per image: truth, image output -> its loss (the mean over images is the selection score)
IMAGE_LOSSES = {
    "rps": ranked_probability_scores,
    "log_loss": lambda y, p: -np.log(p[np.arange(len(y)), y]),
    "error": lambda y, p: (p.argmax(axis=1) != y).astype(np.float64),
    "mse": lambda y, p: (p - y) ** 2,
    "mae": lambda y, p: np.abs(p - y),
}


def per_sample(losses: np.ndarray, samples: np.ndarray) -> np.ndarray:
    """Per sample (in sorted order of its id), the mean of its images' ``losses``."""
    return pd.Series(losses).groupby(np.asarray(samples)).mean().sort_index().to_numpy()


def sample_losses(kind: str, score: str, y: np.ndarray, output: np.ndarray,
                  images: np.ndarray, samples: np.ndarray) -> np.ndarray:
    """Per sample (in sorted order of its id), the mean over its images of each image's
    ``score`` loss: what two models are compared on, paired, when the inner CV may not tell
    them apart."""
    truth, mean = image_level(kind, y, output, images)
    return per_sample(IMAGE_LOSSES[score](truth, mean), np.asarray(samples)[first_rows(images)])


def grid_points(name: str, model: DictConfig, searched: bool) -> list[tuple[str, DictConfig]]:
    """(label, config) of each point of the candidate's ``grid`` (dotted keys into its config,
    lists of values); its configured values alone when not ``searched`` or without a grid."""
    grid = ModelOptions.of(model).grid
    if not searched or not grid:
        return [(name, model)]
    points = []
    for values in itertools.product(*grid.values()):
        params = dict(zip(grid, values, strict=True))
        label = " ".join(f"{key.split('.')[-1]}={value}" for key, value in params.items())
        points.append((f"{name} {label}", point_config(model, params)))
    return points


def point_config(model: DictConfig, params: dict) -> DictConfig:
    """A copy of the candidate's config with a grid point's ``params`` (dotted keys) set."""
    point = model.copy()
    with open_dict(point):  # a grid may set what the config leaves at its default
        for key, value in params.items():
            OmegaConf.update(point, key, value, merge=False)
    return point


def searched(sel: DictConfig, model: DictConfig) -> bool:
    """``model.selection.grid``: none | linear (scikit-learn candidates) | all (heads too)."""
    if sel.grid not in ("none", "linear", "all"):
        raise ValueError(f"model.selection.grid={sel.grid!r}: use none, linear or all")
    return sel.grid == "all" or (sel.grid == "linear" and not is_head(model))


@dataclass
class Point:
    """One grid point of one candidate on its way through model selection: its configuration,
    its typed record (inner scores, and where trained on the outer folds its CV score), and
    once trained on the outer folds, its training record and out-of-fold views."""

    label: str
    candidate: str
    config: DictConfig
    #: its place in its candidate's grid, and the grid's size (they name its checkpoints)
    index: int
    grid_size: int
    record: GridPoint
    info: FitRecord | None = None
    outputs: Outputs | None = None
    #: per outer fold, its per-sample losses on the fold's pooled inner held-out samples
    losses: list[np.ndarray] | None = None
    #: per outer fold, its served image outputs on the fold's inner held-out images
    inner_images: list[np.ndarray] | None = None
    #: the weighted ensemble: per outer fold, its members and their weights
    blend: list[list[tuple[Point, float]]] | None = None

    def tag(self, kind: str, inner: bool = False) -> str:
        """The checkpoint tag of its fit on the inner (``inner``) or the outer folds."""
        base = f"{kind}-{'inner-' if inner else ''}{self.candidate}"
        return base if self.grid_size == 1 else f"{base}-{self.index}"


@dataclass(frozen=True)
class FoldImages:
    """The images of one outer fold's pooled inner held-out groups, in order of first
    appearance: their truth, inner group and sample."""

    rows: np.ndarray
    images: np.ndarray
    truth: np.ndarray
    groups: np.ndarray
    samples: np.ndarray


@dataclass
class Scoring:
    """The one score every point is ranked by: ``score`` of the served image outputs of some
    rows (lower is better), per outer fold on its pooled inner held-out groups."""

    kind: str
    score: str
    y: np.ndarray
    images: np.ndarray
    #: per inner group, its held-out rows; ``per_outer`` consecutive inner groups per outer fold
    inner_test: list[np.ndarray]
    folds: int
    per_outer: int
    samples: np.ndarray

    def of(self, rows: np.ndarray, output: np.ndarray) -> float:
        return image_score(self.kind, self.score, self.y[rows], output, self.images[rows])

    def groups_of(self, f: int) -> range:
        return range(f * self.per_outer, (f + 1) * self.per_outer)

    @cached_property
    def fold_images(self) -> list[FoldImages]:
        out = []
        for f in range(self.folds):
            rows = np.concatenate([self.inner_test[g] for g in self.groups_of(f)])
            group = np.concatenate([np.full(len(self.inner_test[g]), g)
                                    for g in self.groups_of(f)])
            order = first_rows(self.images[rows])
            first = rows[order]
            truth = self.y[first] if self.kind == "regression" else \
                self.y[first].astype(np.int64)
            out.append(FoldImages(rows, self.images[first], truth, group[order],
                                  self.samples[first]))
        return out

    def image_outputs(self, view: list) -> list[np.ndarray]:
        """Per outer fold, one view's (per inner group, per target) image outputs of the
        first target on the fold's pooled inner held-out rows (:func:`image_level`)."""
        check_score(self.kind, self.score)
        return [image_level(self.kind, self.y[fold.rows],
                            np.concatenate([view[g][0] for g in self.groups_of(f)]),
                            self.images[fold.rows])[1]
                for f, fold in enumerate(self.fold_images)]

    def score_images(self, f: int, output: np.ndarray) -> float:
        """The score of image outputs of outer fold ``f``'s inner held-out images."""
        return float(SCORES[self.kind][self.score](self.fold_images[f].truth, output))

    def image_losses(self, f: int, output: np.ndarray) -> np.ndarray:
        """Per sample, the mean loss of its images' ``output`` on outer fold ``f``."""
        fold = self.fold_images[f]
        return per_sample(IMAGE_LOSSES[self.score](fold.truth, output), fold.samples)

    def per_fold(self, view: list) -> list[float]:
        """Per outer fold, the score of one view (per inner group, per target) of a point's
        inner fits on the fold's pooled inner held-out rows."""
        return [self.score_images(f, out) for f, out in enumerate(self.image_outputs(view))]

    def loss(self, truth: np.ndarray, output: np.ndarray) -> float:
        """The score as the mean of the images' losses (what the ensemble is built by)."""
        return float(IMAGE_LOSSES[self.score](truth, output).mean())


@dataclass(frozen=True)
class Dimension:
    """How a grid dimension may be searched past the written grid (``search.<name>`` of a
    candidate): its scale (log: a step multiplies by ``factor``; linear: adds ``step``) and its
    hard bounds."""

    key: str
    scale: str
    low: float
    high: float
    factor: float = 10.0
    step: float | None = None

    @classmethod
    def of(cls, key: str, model: str, *, low: float, high: float, scale: str = "log",
           factor: float | None = None, step: float | None = None, **_ignored) -> Dimension:
        """From a candidate's ``search.<name>`` (``model``: the candidate's name)."""
        if scale not in ("log", "linear") or (scale == "linear" and not step):
            raise ValueError(f"model {model}: search.{key.split('.')[-1]}: scale log "
                             "(with factor) or linear (with step)")
        return cls(key, scale, float(low), float(high), float(factor or 10.0), step)

    def beyond(self, value, direction: int):
        """The next value past ``value`` (up for +1, down for -1), or None past a bound."""
        if self.scale == "log":
            nxt = float(f"{value * self.factor ** direction:.6g}")
        else:
            nxt = float(f"{value + direction * self.step:.6g}")
        if isinstance(value, int) and not isinstance(value, bool):
            nxt = int(round(nxt))
            if nxt == value:
                nxt = value + direction
        return nxt if self.low <= nxt <= self.high else None

    def bound(self, value) -> str | None:
        """Which hard bound ``value`` stops at (no step past it fits), if any."""
        return "high" if self.beyond(value, +1) is None else \
            "low" if self.beyond(value, -1) is None else None


def dimensions(model: DictConfig) -> dict[str, Dimension]:
    """The candidate's searchable grid dimensions, by grid key (``search`` names a key by its
    last part: ``search.C`` for ``module.C``)."""
    options = ModelOptions.of(model)
    specs = {key: options.search.get(key.split(".")[-1]) for key in options.grid}
    return {key: Dimension.of(key, model.name, **spec)
            for key, spec in specs.items() if spec is not None}


def extension(points: list[Point], dims: dict[str, Dimension], folds: int) -> list[dict]:
    """The grid points to add where an outer fold's best inner point lies on an edge of the
    values tried so far: that dimension one step past the edge (the others as the best
    point's), unless past a hard bound or tried already."""
    tried = [p.record.params for p in points]
    new: list[dict] = []
    for f in range(folds):
        best = min(points, key=lambda p: p.record.inner_scores[f]).record.params
        for key, dim in dims.items():
            values = sorted({params[key] for params in tried})
            for edge, direction in ((values[-1], +1), (values[0], -1)):
                nxt = dim.beyond(best[key], direction) if best[key] == edge else None
                params = {**best, key: nxt}
                if nxt is not None and params not in tried and params not in new:
                    new.append(params)
    return new


def view_of(points: list[Point]) -> str | None:
    """The part of the embedding one candidate's ``points`` read (``representation``; None:
    all of it)."""
    return points[0].config.get(REPRESENTATION)


def candidate_points(name: str, model: DictConfig, sel: DictConfig) -> list[Point]:
    """The grid points of candidate ``name`` (its configured values alone when not searched)."""
    grid = grid_points(name, model, searched(sel, model))
    keys = list(ModelOptions.of(model).grid) if len(grid) > 1 else []
    return [Point(label, name, point, j, len(grid), GridPoint(
                candidate=name, inner_scores=[], inner_scores_unserved=[],
                params={k: OmegaConf.select(point, k) for k in keys}))
            for j, (label, point) in enumerate(grid)]


def score_inner(cfg: DictConfig, dm: SEMDataModule, inner: np.ndarray, run_dir: Path,
                kind: str, points: list[Point], scoring: Scoring,
                inner_seeds: list[int]) -> None:
    """Fit one candidate's ``points`` on the inner folds and record each one's inner scores:
    of the image probabilities predict would serve (each inner member through its image
    calibration, fitted on inner validation images of its own outer fold's training groups,
    never on the inner held-out groups scored here) and, for a reader to see where calibration
    decided, of the raw image means (the rule before issue 33)."""
    with dm.reading(view_of(points)):
        fitted = fit_models(cfg, dm, inner, run_dir,
                            [p.tag(kind, inner=True) for p in points],
                            [p.config for p in points], inner_seeds)
        outputs = [group_outputs(ensemble, dm, inner, images=info.image_calibrations())
                   for ensemble, info in fitted]
    for point, views in zip(points, outputs, strict=True):
        point.inner_images = scoring.image_outputs(views.served)
        point.record.inner_scores = [scoring.score_images(f, out)
                                     for f, out in enumerate(point.inner_images)]
        point.losses = [scoring.image_losses(f, out) for f, out in enumerate(point.inner_images)]
        point.record.inner_scores_unserved = scoring.per_fold(views.calibrated)


def where_optimum(points: list[Point], best: Point, dims: dict[str, Dimension],
                  written: dict[str, list]) -> str:
    """Where one outer fold's best point of a candidate lies in its searched space: each grid
    value, marked where it sits at a declared hard bound, stays on an edge of the values tried
    (no search declared, or the rounds ran out), or was found past the ``written`` grid."""
    parts = []
    for key, value in best.record.params.items():
        values = sorted({p.record.params[key] for p in points})
        note = ""
        if key in dims and dims[key].bound(value) and value in (values[0], values[-1]):
            note = f"at its hard bound ({dims[key].bound(value)})"
        elif len(values) > 1 and value in (values[0], values[-1]):
            note = "on an edge of the values tried"
        elif value not in written.get(key, [value]):
            note = "past the written grid"
        shown = f"{value:g}" if isinstance(value, int | float) else str(value)
        parts.append(f"{key.split('.')[-1]}={shown}" + (f" ({note})" if note else ""))
    return ", ".join(parts)


def choose(points: list[Point], folds: range | list[int], rule: str,
           complexity: dict[str, int]) -> tuple[Point, list[str]]:
    """The point served over ``folds`` (one outer fold, or all for the final model) and the
    other candidates the inner CV could not tell from the best (whatever the rule). ``best``:
    the lowest mean inner score. ``one_se``: among the points whose mean per-sample loss
    (paired over the same inner held-out samples) lies within one standard error of the
    best's, the one of the simplest candidate (``complexity`` in its model config), then the
    lowest score."""
    def mean_score(p: Point) -> float:
        return float(np.mean([p.record.inner_scores[f] for f in folds]))

    best = min(points, key=mean_score)
    if best.losses is None:
        return best, []
    base = np.concatenate([best.losses[f] for f in folds])
    within = []
    for p in points:
        gap = np.concatenate([p.losses[f] for f in folds]) - base
        se = float(np.std(gap, ddof=1) / np.sqrt(len(gap))) if len(gap) > 1 else 0.0
        if p is best or float(np.mean(gap)) <= se:
            within.append(p)
    pick = best if rule == "best" else min(
        within, key=lambda p: (complexity[p.candidate], mean_score(p)))
    return pick, sorted({p.candidate for p in within} - {best.candidate})


#: the names of the weighted ensemble's row and of the best single candidate's nested row
ENSEMBLE, BEST_SINGLE = "ensemble", "best_single"
#: the nested row among one representation's candidates alone: ``auto@<representation>``
NESTED = "auto"


def unique(points: list[Point]) -> list[Point]:
    """``points`` without repeats, in order."""
    out: list[Point] = []
    for p in points:
        if not any(p is q for q in out):
            out.append(p)
    return out


def ensemble_point(tuned: dict[str, list[Point]], scoring: Scoring, rounds: int) -> Point:
    """The weighted ensemble of the candidates' tuned points as one more point: on each outer
    fold, greedy selection (:func:`greedy_weights`) over that fold's tuned point of every
    candidate, on the fold's inner held-out images; its inner score cross-fitted over the inner
    groups (:func:`cross_fitted`), so it competes with single candidates on equal terms."""
    scores, losses, blends = [], [], []
    for f, fold in enumerate(scoring.fold_images):
        pool = unique([points[f] for points in tuned.values()])
        outputs = np.stack([p.inner_images[f] for p in pool])
        crossed = cross_fitted(outputs, fold.truth, fold.groups, scoring.loss, rounds)
        scores.append(scoring.score_images(f, crossed))
        losses.append(scoring.image_losses(f, crossed))
        weights = greedy_weights(outputs, fold.truth, scoring.loss, rounds)
        blends.append([(p, float(w)) for p, w in zip(pool, weights, strict=True) if w > 0])
    record = GridPoint(candidate=ENSEMBLE, inner_scores=scores, inner_scores_unserved=scores,
                       params={})
    return Point(ENSEMBLE, ENSEMBLE, None, 0, 1, record, losses=losses, blend=blends)


def final_blend(candidates: dict[str, list[Point]], scoring: Scoring,
                rounds: int) -> list[tuple[Point, float]]:
    """The served ensemble: greedy selection over each candidate's point with the best mean
    inner score, on the inner held-out images of every outer fold together."""
    pool = [min(points, key=lambda p: float(np.mean(p.record.inner_scores)))
            for points in candidates.values()]
    outputs = np.stack([np.concatenate(p.inner_images) for p in pool])
    truth = np.concatenate([fold.truth for fold in scoring.fold_images])
    weights = greedy_weights(outputs, truth, scoring.loss, rounds)
    return [(p, float(w)) for p, w in zip(pool, weights, strict=True) if w > 0]


def blend_outputs(point: Point, test_fold: np.ndarray) -> Outputs:
    """The ensemble's out-of-fold outputs in every view: outer fold f's rows the weighted mean
    of its members' (trained on the outer folds); NaN on folds whose members were not."""
    template = next(m for parts in point.blend for m, _ in parts if m.outputs is not None)
    views = []
    for view in Outputs._fields:
        combined = [np.full_like(out, np.nan) for out in getattr(template.outputs, view)]
        for f, parts in enumerate(point.blend):
            if any(m.outputs is None for m, _ in parts):
                continue
            rows = test_fold == f
            for t, out in enumerate(combined):
                out[rows] = sum(w * getattr(m.outputs, view)[t][rows] for m, w in parts)
        views.append(combined)
    return Outputs(*views)


def blend_words(parts: list[tuple[Point, float]]) -> str:
    """An ensemble's members and weights, heaviest first."""
    return " + ".join(f"{w:.2f} x {p.label}" for p, w in sorted(parts, key=lambda x: -x[1]))


def extend(cfg: DictConfig, dm: SEMDataModule, inner: np.ndarray, run_dir: Path, kind: str,
           points: list[Point], scoring: Scoring, inner_seeds: list[int]) -> None:
    """Search one candidate past its written grid (:func:`extension`), each new point fitted and
    scored on the same inner folds, until every outer fold's best point is interior or at a
    declared bound, or ``model.selection.max_extensions`` rounds are spent."""
    sel = cfg.model.selection
    if not points or len(points) == 1 and not points[0].record.params:
        return
    model = cfg.model.candidates[points[0].candidate]
    dims = dimensions(model)
    for _ in range(int(sel.max_extensions) if dims else 0):
        added = extension(points, dims, scoring.folds)
        if not added:
            return
        size = max(points[0].grid_size, 2)
        new = [Point(f"{points[0].candidate} " + " ".join(
                         f"{key.split('.')[-1]}={value}" for key, value in params.items()),
                     points[0].candidate, point_config(model, params), len(points) + i, size,
                     GridPoint(candidate=points[0].candidate, inner_scores=[],
                               inner_scores_unserved=[], params=params, extended=True))
               for i, params in enumerate(added)]
        log.info("%s: best inner point on the edge of its grid; trying %s", new[0].candidate,
                 ", ".join(p.label for p in new))
        for point in new:  # each alone: its score never depends on which others joined it
            score_inner(cfg, dm, inner, run_dir, kind, [point], scoring, inner_seeds)
        points.extend(new)


def fit_outer(cfg: DictConfig, dm: SEMDataModule, assignment: np.ndarray, run_dir: Path,
              kind: str, points: list[Point], scoring: Scoring, tested: np.ndarray) -> None:
    """Fit one candidate's ``points`` on the outer folds: each gets its training record, its
    calibrated, raw and served out-of-fold views (one pass of predictions) and its CV score."""
    with dm.reading(view_of(points)):
        fitted = fit_models(cfg, dm, assignment, run_dir, [p.tag(kind) for p in points],
                            [p.config for p in points])
        outputs = [model_oof(ensemble, dm, assignment, images=info.image_calibrations())
                   for ensemble, info in fitted]
    for point, (_, info), out in zip(points, fitted, outputs, strict=True):
        point.outputs, point.info = out, info
        point.record.cv_score = scoring.of(np.flatnonzero(tested),
                                           point.outputs.served[0][tested])
        point.record.checkpoint, point.record.kind = info.checkpoint, info.kind


def combine(per_fold: list[Point], view: str, test_fold: np.ndarray) -> list[np.ndarray]:
    """Per target, outer fold f's rows from ``view`` (calibrated, raw or served) of the
    out-of-fold outputs of ``per_fold[f]``."""
    first = getattr(per_fold[0].outputs, view)
    combined = [np.full_like(out, np.nan) for out in first]
    for f, point in enumerate(per_fold):
        rows = test_fold == f
        for t, out in enumerate(getattr(point.outputs, view)):
            combined[t][rows] = out[rows]
    return combined


def refit_final(cfg: DictConfig, dm: SEMDataModule, run_dir: Path, point: Point,
                tag: str = "final") -> FinalModel:
    """The chosen point refitted on every group (a head for the median of its CV members' best
    epoch counts, with their median temperatures), its image calibration the median of its CV
    members', saved as checkpoint ``tag``; returns the final model's record."""
    model, info = point.config, point.info
    everything = np.full((1, len(dm.x)), "train")
    epochs = temperatures = None
    with stage(f"model selection: final model ({point.label}) refitted on all groups"), \
            dm.reading(model.get(REPRESENTATION)):
        if is_head(model):
            best_epochs = info.best_epochs()
            epochs = int(np.median(best_epochs)) + 1 if best_epochs else int(cfg.trainer.max_epochs)
            temperatures = info.median_temperatures()
            _, final = fit_head(cfg, dm, everything, run_dir, tag, model=model,
                                max_epochs=epochs, temperatures=temperatures,
                                image_calibration=info.image_calibrations())
        else:
            [(_, final)] = fit_models(cfg, dm, everything, run_dir, [tag], [model],
                                      image_calibration=info.image_calibrations())
    return record_of(FinalModel, {
        "model": point.candidate, "point": point.label, "params": point.record.params,
        "module": OmegaConf.to_container(model.module, resolve=True),
        "inputs": model_inputs(model), "members": final.n_members,
        "checkpoint": final.checkpoint, "kind": final.kind, "wall_s": final.wall_s,
        "epochs": epochs, "temperatures": temperatures,
        "image_calibration": final.image_calibration,
        "representation": model.get(REPRESENTATION)})


def refit_blend(cfg: DictConfig, dm: SEMDataModule, run_dir: Path,
                parts: list[tuple[Point, float]]) -> FinalModel:
    """The served ensemble: each member refitted on every group (:func:`refit_final`, its own
    checkpoint), with its weight; the record names the heaviest member's checkpoint and kind
    (what a reader of one model finds) and every member in ``blend``."""
    parts = sorted(parts, key=lambda x: -x[1])
    members = [BlendPart(w, refit_final(cfg, dm, run_dir, p, f"final-{p.candidate}"))
               for p, w in parts]
    heaviest = members[0].model
    return FinalModel(model=ENSEMBLE, point=f"{ENSEMBLE}: {blend_words(parts)}", params={},
                      module={}, inputs=heaviest.inputs,
                      members=sum(m.model.members for m in members),
                      checkpoint=heaviest.checkpoint, kind=heaviest.kind,
                      wall_s=round(sum(m.model.wall_s for m in members), 2), blend=members)


@dataclass
class Choice:
    """What model selection chose: per outer fold its point (and the single point it would be
    without the ensemble), the final point (its ensemble members where the ensemble won), and
    the candidates the inner CV could not tell apart."""

    winners: list[Point]
    single_winners: list[Point]
    chosen: Point
    final_parts: list[tuple[Point, float]] | None
    not_separated: list[list[str]]
    final_not_separated: list[str]
    #: per representation (model.selection.representations, when several), per outer fold
    #: the point the rule chose among that representation's candidates alone
    by_view: dict[str, list[Point]]

    def needed(self, every: list[Point], mode: str) -> list[Point]:
        """The points trained on every outer fold: those whose outputs a row or the final
        model reads (every point with ``outer_fits=all``; the final ensemble's members)."""
        points = [*(every if mode == "all" else [*self.winners, self.chosen]),
                  *self.single_winners, *(p for p, _ in self.final_parts or []),
                  *(p for winners in self.by_view.values() for p in winners)]
        return unique([p for p in points if not p.blend])

    @staticmethod
    def member_folds(ensemble: Point | None, trained: list[Point]) -> list[tuple[Point, list]]:
        """The weighted ensemble's members not in ``trained``, each with the outer folds whose
        ensemble it is in: trained on those folds alone, for the ensemble's row (a member of
        one fold's ensemble costs one fold's fit, not five)."""
        folds: dict[int, tuple[Point, list[int]]] = {}
        for f, parts in enumerate(ensemble.blend if ensemble else []):
            for member, _ in parts:
                if not any(member is p for p in trained):
                    folds.setdefault(id(member), (member, []))[1].append(f)
        return list(folds.values())


def choose_points(cfg: DictConfig, candidates: dict[str, list[Point]], scoring: Scoring,
                  tuned: dict[str, list[Point]]) -> tuple[Choice, Point | None]:
    """Per outer fold and for the final model, the point served under ``model.selection.rule``
    among every point and, where ``model.selection.ensemble.enabled``, the weighted ensemble
    (returned too: its row is reported whether or not it is served)."""
    sel = cfg.model.selection
    rule = str(sel.rule)
    if rule not in ("best", "one_se"):
        raise ValueError(f"model.selection.rule={rule!r}: use best or one_se")
    complexity = {n: int(ModelOptions.of(cfg.model.candidates[n]).complexity)
                  for n in candidates}
    every = [p for points in candidates.values() for p in points]
    blend_cfg = sel.ensemble
    ensemble = None
    if bool(blend_cfg.enabled) and len(candidates) > 1:
        ensemble = ensemble_point(tuned, scoring, int(blend_cfg.rounds))
        complexity[ENSEMBLE] = int(blend_cfg.complexity)
    contenders = every + ([ensemble] if ensemble else [])
    choices = [choose(contenders, [f], rule, complexity) for f in range(scoring.folds)]
    single = [choose(every, [f], rule, complexity)[0] for f in range(scoring.folds)]
    chosen, final_ties = choose(contenders, range(scoring.folds), rule, complexity)
    parts = final_blend(candidates, scoring, int(blend_cfg.rounds)) if chosen is ensemble \
        else None
    views = list(dict.fromkeys(p.config.get(REPRESENTATION) for p in every))
    by_view = {view: [choose([p for p in every if p.config.get(REPRESENTATION) == view], [f],
                             rule, complexity)[0] for f in range(scoring.folds)]
               for view in views} if len(views) > 1 else {}
    return Choice([p for p, _ in choices], single, chosen, parts, [t for _, t in choices],
                  final_ties, by_view), ensemble


def select_model(cfg: DictConfig, dm: SEMDataModule, assignment: np.ndarray, kind: str,
                 run_dir: Path,
                 ) -> tuple[Selection, tuple[list[np.ndarray], ...], dict, dict[str, np.ndarray]]:
    """Nested grouped CV over ``cfg.model.candidates`` and their grids.

    Every grid point is scored on each outer fold's inner folds (:func:`score_inner`), and so
    is the weighted ensemble of each fold's tuned points (:func:`ensemble_point`). Outer fold f
    of the nested (``auto``) row takes the best point on f, trained on f's training groups;
    the final model is the point with the best mean inner score, refitted on every group
    (:func:`refit_final`; an ensemble's members each, :func:`refit_blend`). Only the points a
    row or the final model reads are trained on the outer folds
    (``model.selection.outer_fits=winners``); with ``all`` every point is, and each
    candidate's row takes its best point per outer fold. Returns the selection record, the
    nested out-of-fold outputs (per target; calibrated, raw, served), the final point's CV
    training record and each fully trained candidate's tuned out-of-fold output.
    """
    started = time.perf_counter()
    sel = cfg.model.selection
    mode = str(sel.outer_fits)
    if mode not in ("winners", "all"):
        raise ValueError(f"model.selection.outer_fits={mode!r}: use winners or all")
    target = dm.descriptor.targets[0]
    inner_seeds = [int(s) for s in sel.inner_seeds]
    inner = dm.inner_folds(assignment, kind, int(sel.inner_folds))
    folds, names = len(assignment), list(cfg.model.candidates)
    scoring = Scoring(score_kind(target), str(sel.score[score_kind(target)]),
                      dm.y[:, 0].numpy(), dm.patches[IMAGE].to_numpy().astype(str),
                      dm.rows(inner, "test"), folds, len(inner) // folds,
                      dm.patches[SAMPLE].to_numpy().astype(str))
    test_fold = dm.test_fold(assignment)
    candidates = {name: candidate_points(name, cfg.model.candidates[name], sel)
                  for name in names}
    spent = score_candidates(cfg, dm, inner, run_dir, kind, candidates, scoring, inner_seeds)
    every = [p for name in names for p in candidates[name]]
    tuned = {name: [min(candidates[name], key=lambda p, f=f: p.record.inner_scores[f])
                    for f in range(folds)] for name in names}
    with stage("model selection: the rule's choice, and the weighted ensemble") as timing:
        choice, ensemble = choose_points(cfg, candidates, scoring, tuned)
    choosing = timing.wall_s
    fit_needed_outer(cfg, dm, assignment, run_dir, kind, candidates, choice.needed(every, mode),
                     ensemble, scoring, spent)
    if ensemble:
        ensemble.outputs = blend_outputs(ensemble, test_fold)
        candidates[ENSEMBLE], tuned[ENSEMBLE] = [ensemble], [ensemble] * folds
        names.append(ENSEMBLE)
        spent[ENSEMBLE] = choosing
    nested = tuple(combine(choice.winners, view, test_fold) for view in Outputs._fields)
    trained = [n for n in names if all(p.outputs is not None and not np.isnan(
        p.outputs.served[0][test_fold == f]).any() for f, p in enumerate(tuned[n]))]
    final = refit_blend(cfg, dm, run_dir, choice.final_parts) if choice.final_parts else \
        refit_final(cfg, dm, run_dir, choice.chosen)
    record = selection_record(cfg, candidates, tuned, choice, scoring, test_fold, trained)
    record.final, record.candidate_wall_s = final, spent
    record.wall_s = round(time.perf_counter() - started, 2)
    info = (choice.final_parts[0][0] if choice.final_parts else choice.chosen).info
    return record, nested, info, candidate_outputs(tuned, trained, choice, ensemble, test_fold)


def score_candidates(cfg: DictConfig, dm: SEMDataModule, inner: np.ndarray, run_dir: Path,
                     kind: str, candidates: dict[str, list[Point]], scoring: Scoring,
                     inner_seeds: list[int]) -> dict[str, float]:
    """Every candidate's grid points scored on each outer fold's inner folds, a grid with a
    ``search`` block extended past its edges; returns the seconds each candidate took."""
    spent = {}
    for number, (name, points) in enumerate(candidates.items(), 1):
        points_word = "grid point" if len(points) == 1 else "grid points"
        with stage(f"model selection: candidate {name} ({number} of {len(candidates)}, "
                   f"{len(points)} {points_word})") as timing:
            score_inner(cfg, dm, inner, run_dir, kind, points, scoring, inner_seeds)
            extend(cfg, dm, inner, run_dir, kind, points, scoring, inner_seeds)
        spent[name] = timing.wall_s
    return spent


def fit_needed_outer(cfg: DictConfig, dm: SEMDataModule, assignment: np.ndarray, run_dir: Path,
                     kind: str, candidates: dict[str, list[Point]], needed: list[Point],
                     ensemble: Point | None, scoring: Scoring, spent: dict[str, float]) -> None:
    """The ``needed`` points trained on every outer fold, and each ensemble-only member on the
    outer folds whose ensemble holds it; their seconds added to ``spent``."""
    test_fold = dm.test_fold(assignment)
    for name, every in candidates.items():
        points = [p for p in every if any(p is q for q in needed)]
        if not points:
            continue
        with stage(f"model selection: outer folds of {name} ({len(points)} of "
                   f"{len(every)} grid points)") as timing:
            fit_outer(cfg, dm, assignment, run_dir, kind, points, scoring, test_fold >= 0)
        spent[name] += timing.wall_s
    for point, member_of in Choice.member_folds(ensemble, needed):
        with stage(f"model selection: {point.label} on outer folds {member_of} (a member of "
                   "their weighted ensembles)") as timing:
            fit_outer(cfg, dm, assignment[member_of], run_dir, kind, [point], scoring,
                      np.isin(test_fold, member_of))
        point.record.cv_score = None  # not a score over every outer fold
        spent[point.candidate] += timing.wall_s


def candidate_outputs(tuned: dict[str, list[Point]], trained: list[str], choice: Choice,
                      ensemble: Point | None, test_fold: np.ndarray) -> dict[str, np.ndarray]:
    """Each fully trained candidate's tuned out-of-fold output (calibrated), the best single
    candidate's beside an ensemble, and the nested row of each representation."""
    out = {n: combine(tuned[n], "calibrated", test_fold)[0] for n in trained}
    if ensemble:
        out[BEST_SINGLE] = combine(choice.single_winners, "calibrated", test_fold)[0]
    for view, winners in choice.by_view.items():
        out[f"{NESTED}@{view}"] = combine(winners, "calibrated", test_fold)[0]
    return out


def selection_record(cfg: DictConfig, candidates: dict[str, list[Point]],
                     tuned: dict[str, list[Point]], choice: Choice, scoring: Scoring,
                     test_fold: np.ndarray, trained: list[str]) -> Selection:
    """The typed record of model selection (its final model and timings set by the caller)."""
    sel, names, folds = cfg.model.selection, list(candidates), scoring.folds
    tested = test_fold >= 0
    configured = [n for n in names if n in cfg.model.candidates]
    ensemble = candidates.get(ENSEMBLE, [None])[0]
    return Selection(
        candidates=names, score=scoring.score, grid=str(sel.grid),
        inner_folds=int(sel.inner_folds), inner_seeds=[int(s) for s in sel.inner_seeds],
        points={p.label: p.record for n in names for p in candidates[n]},
        inner_scores={n: [tuned[n][f].record.inner_scores[f] for f in range(folds)]
                      for n in names},
        tuned_points={n: [p.label for p in tuned[n]] for n in configured},
        cv_scores={n: scoring.of(np.flatnonzero(tested),
                                 combine(tuned[n], "served", test_fold)[0][tested])
                   for n in trained},
        optimum={n: [where_optimum(candidates[n], tuned[n][f],
                                   dimensions(cfg.model.candidates[n]),
                                   OmegaConf.to_container(cfg.model.candidates[n].grid))
                     for f in range(folds)]
                 for n in configured if any(p.record.params for p in candidates[n])},
        rule=str(sel.rule), not_separated=choice.not_separated,
        final_not_separated=choice.final_not_separated, outer_fits=str(sel.outer_fits),
        not_trained=[n for n in names if n not in trained],
        winners=[p.candidate for p in choice.winners],
        winner_points=[p.label for p in choice.winners],
        fold_checkpoints=[(choice.single_winners[f] if p.blend else p).record.checkpoint
                          for f, p in enumerate(choice.winners)],
        ensemble=[{p.label: w for p, w in parts} for parts in ensemble.blend] if ensemble
        else [], single_winners=[p.label for p in choice.single_winners] if ensemble else [],
        representations={view: [p.label for p in winners]
                         for view, winners in choice.by_view.items()},
        final=None, candidate_wall_s={}, wall_s=0.0)
