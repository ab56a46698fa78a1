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
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf, open_dict
from sklearn.metrics import accuracy_score, log_loss, mean_absolute_error, mean_squared_error

from sinterlab.console import stage
from sinterlab.data.descriptor import IMAGE, SAMPLE
from sinterlab.evaluation.metrics import (
    aggregate_by_group,
    first_rows,
    ranked_probability_scores,
)
from sinterlab.evaluation.results import FinalModel, GridPoint, Selection, record_of
from sinterlab.study.datamodule import SEMDataModule
from sinterlab.study.fit import (
    Outputs,
    fit_head,
    fit_models,
    group_outputs,
    image_calibrations,
    is_head,
    median_temperatures,
    model_inputs,
    model_oof,
)

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


def image_score(kind: str, score: str, y: np.ndarray, output: np.ndarray,
                images: np.ndarray) -> float:
    """``score`` of the image-level outputs (patch outputs averaged per image) of some rows;
    ``kind``: classification, ordered or regression."""
    if score not in SCORES[kind]:
        raise ValueError(f"model.selection.score.{kind}={score!r}: use one of "
                         f"{list(SCORES[kind])}")
    _, mean = aggregate_by_group(output, images)
    truth = y[first_rows(images)]
    if kind != "regression":
        truth = truth.astype(np.int64)
        mean = np.clip(mean, 1e-15, 1.0)
        mean = mean / mean.sum(axis=1, keepdims=True)
    return float(SCORES[kind][score](truth, mean))


#: per image: truth, image output -> its loss (the mean over images is the selection score)
IMAGE_LOSSES = {
    "rps": lambda y, p: np.sum((np.cumsum(p, axis=1) - np.cumsum(
        np.eye(p.shape[1])[y], axis=1))[:, :-1] ** 2, axis=1) / max(p.shape[1] - 1, 1),
    "log_loss": lambda y, p: -np.log(p[np.arange(len(y)), y]),
    "error": lambda y, p: (p.argmax(axis=1) != y).astype(np.float64),
    "mse": lambda y, p: (p - y) ** 2,
    "mae": lambda y, p: np.abs(p - y),
}


def sample_losses(kind: str, score: str, y: np.ndarray, output: np.ndarray,
                  images: np.ndarray, samples: np.ndarray) -> np.ndarray:
    """Per sample (in sorted order of its id), the mean over its images of each image's
    ``score`` loss: what two models are compared on, paired, when the inner CV may not tell
    them apart."""
    _, mean = aggregate_by_group(output, images)
    first = first_rows(images)
    truth = y[first]
    if kind != "regression":
        truth = truth.astype(np.int64)
        mean = np.clip(mean, 1e-15, 1.0)
        mean = mean / mean.sum(axis=1, keepdims=True)
    losses = IMAGE_LOSSES[score](truth, mean)
    return pd.Series(losses).groupby(np.asarray(samples)[first]).mean().sort_index().to_numpy()


def grid_points(name: str, model: DictConfig, searched: bool) -> list[tuple[str, DictConfig]]:
    """(label, config) of each point of the candidate's ``grid`` (dotted keys into its config,
    lists of values); its configured values alone when not ``searched`` or without a grid."""
    grid = OmegaConf.to_container(model.get("grid") or {})
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
    info: dict | None = None
    outputs: Outputs | None = None
    #: per outer fold, its per-sample losses on the fold's pooled inner held-out samples
    losses: list[np.ndarray] | None = None

    def tag(self, kind: str, inner: bool = False) -> str:
        """The checkpoint tag of its fit on the inner (``inner``) or the outer folds."""
        base = f"{kind}-{'inner-' if inner else ''}{self.candidate}"
        return base if self.grid_size == 1 else f"{base}-{self.index}"


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

    def per_fold(self, view: list) -> list[float]:
        """Per outer fold, the score of one view (per inner group, per target) of a point's
        inner fits on the fold's pooled inner held-out rows."""
        scores = []
        for f in range(self.folds):
            groups = range(f * self.per_outer, (f + 1) * self.per_outer)
            rows = np.concatenate([self.inner_test[g] for g in groups])
            scores.append(self.of(rows, np.concatenate([view[g][0] for g in groups])))
        return scores

    def losses_per_fold(self, view: list) -> list[np.ndarray]:
        """Per outer fold, the per-sample losses (:func:`sample_losses`) of one view."""
        out = []
        for f in range(self.folds):
            groups = range(f * self.per_outer, (f + 1) * self.per_outer)
            rows = np.concatenate([self.inner_test[g] for g in groups])
            out.append(sample_losses(self.kind, self.score, self.y[rows],
                                     np.concatenate([view[g][0] for g in groups]),
                                     self.images[rows], self.samples[rows]))
        return out


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
    search = model.get("search")
    search = OmegaConf.to_container(search, resolve=True) if search is not None else {}
    out = {}
    for key in model.get("grid") or {}:
        spec = search.get(key.split(".")[-1])
        if spec is None:
            continue
        scale = spec.get("scale", "log")
        if scale not in ("log", "linear") or (scale == "linear" and not spec.get("step")):
            raise ValueError(f"model {model.name}: search.{key.split('.')[-1]}: scale log "
                             "(with factor) or linear (with step)")
        out[key] = Dimension(key, scale, float(spec["low"]), float(spec["high"]),
                             float(spec.get("factor") or 10.0), spec.get("step"))
    return out


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


def candidate_points(name: str, model: DictConfig, sel: DictConfig) -> list[Point]:
    """The grid points of candidate ``name`` (its configured values alone when not searched)."""
    grid = grid_points(name, model, searched(sel, model))
    keys = list(model.get("grid") or {}) if len(grid) > 1 else []
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
    fitted = fit_models(cfg, dm, inner, run_dir, [p.tag(kind, inner=True) for p in points],
                        [p.config for p in points], inner_seeds)
    for point, (ensemble, info) in zip(points, fitted, strict=True):
        views = group_outputs(ensemble, dm, inner, images=image_calibrations(info))
        point.record.inner_scores = scoring.per_fold(views.served)
        point.losses = scoring.losses_per_fold(views.served)
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
    fitted = fit_models(cfg, dm, assignment, run_dir, [p.tag(kind) for p in points],
                        [p.config for p in points])
    for point, (ensemble, info) in zip(points, fitted, strict=True):
        point.outputs = model_oof(ensemble, dm, assignment, images=image_calibrations(info))
        point.info = info
        point.record.cv_score = scoring.of(np.flatnonzero(tested),
                                           point.outputs.served[0][tested])
        point.record.checkpoint, point.record.kind = info["checkpoint"], info["kind"]


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


def refit_final(cfg: DictConfig, dm: SEMDataModule, run_dir: Path, point: Point) -> dict:
    """The chosen point refitted on every group (a head for the median of its CV members' best
    epoch counts, with their median temperatures), its image calibration the median of its CV
    members'; returns the final model's record."""
    model, info = point.config, point.info
    everything = np.full((1, len(dm.x)), "train")
    record = {"model": point.candidate, "point": point.label, "params": point.record.params,
              "module": OmegaConf.to_container(model.module, resolve=True),
              "inputs": model_inputs(model)}
    with stage(f"model selection: final model ({point.label}) refitted on all groups"):
        if is_head(model):
            best_epochs = [m["best_epoch"] for m in info["members"]
                           if m["best_epoch"] is not None]
            epochs = int(np.median(best_epochs)) + 1 if best_epochs else int(cfg.trainer.max_epochs)
            _, final = fit_head(cfg, dm, everything, run_dir, "final", model=model,
                                max_epochs=epochs, temperatures=median_temperatures(info),
                                image_calibration=image_calibrations(info))
            record |= {"epochs": epochs, "temperatures": median_temperatures(info)}
        else:
            [(_, final)] = fit_models(cfg, dm, everything, run_dir, ["final"], [model],
                                      image_calibration=image_calibrations(info))
            record |= {"epochs": None, "temperatures": None}
    return record | {"image_calibration": final.get("image_calibration"),
                     "members": final["n_members"], "checkpoint": final["checkpoint"],
                     "kind": final["kind"], "wall_s": final["wall_s"]}


def select_model(cfg: DictConfig, dm: SEMDataModule, assignment: np.ndarray, kind: str,
                 run_dir: Path,
                 ) -> tuple[Selection, tuple[list[np.ndarray], ...], dict, dict[str, np.ndarray]]:
    """Nested grouped CV over ``cfg.model.candidates`` and their grids.

    Every grid point is scored on each outer fold's inner folds (:func:`score_inner`). Outer
    fold f of the nested (``auto``) row takes the best point on f, trained on f's training
    groups; the final model is the point with the best mean inner score, refitted on every
    group (:func:`refit_final`). Only those points are trained on the outer folds
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
    tested = test_fold >= 0
    candidates = {name: candidate_points(name, cfg.model.candidates[name], sel)
                  for name in names}
    spent = {}
    for number, name in enumerate(names, 1):
        points = candidates[name]
        points_word = "grid point" if len(points) == 1 else "grid points"
        with stage(f"model selection: candidate {name} ({number} of {len(names)}, "
                   f"{len(points)} {points_word})") as timing:
            score_inner(cfg, dm, inner, run_dir, kind, points, scoring, inner_seeds)
            extend(cfg, dm, inner, run_dir, kind, points, scoring, inner_seeds)
        spent[name] = timing["wall_s"]
    every = [p for name in names for p in candidates[name]]

    def best(among: list[Point], f: int) -> Point:
        return min(among, key=lambda p: p.record.inner_scores[f])

    tuned = {name: [best(candidates[name], f) for f in range(folds)] for name in names}
    rule = str(sel.rule)
    if rule not in ("best", "one_se"):
        raise ValueError(f"model.selection.rule={rule!r}: use best or one_se")
    complexity = {n: int(cfg.model.candidates[n].get("complexity") or 0) for n in names}
    choices = [choose(every, [f], rule, complexity) for f in range(folds)]
    winners = [point for point, _ in choices]
    chosen, final_ties = choose(every, range(folds), rule, complexity)
    # a point that wins no outer fold and is not the final model is never trained on the outer
    # folds (it cannot change the answer); outer_fits=all trains every point, so every
    # candidate also gets its own out-of-fold row
    needed = every if mode == "all" else [*winners, chosen]
    for name in names:
        points = [p for p in candidates[name] if any(p is q for q in needed)]
        if not points:
            continue
        with stage(f"model selection: outer folds of {name} ({len(points)} of "
                   f"{len(candidates[name])} grid points)") as timing:
            fit_outer(cfg, dm, assignment, run_dir, kind, points, scoring, tested)
        spent[name] += timing["wall_s"]

    nested = tuple(combine(winners, view, test_fold) for view in Outputs._fields)
    trained = [name for name in names if all(p.outputs is not None for p in tuned[name])]
    final = refit_final(cfg, dm, run_dir, chosen)
    record = Selection(
        candidates=names, score=scoring.score, grid=str(sel.grid),
        inner_folds=int(sel.inner_folds), inner_seeds=inner_seeds,
        points={p.label: p.record for p in every},
        inner_scores={n: [tuned[n][f].record.inner_scores[f] for f in range(folds)]
                      for n in names},
        tuned_points={n: [p.label for p in tuned[n]] for n in names},
        cv_scores={n: scoring.of(np.flatnonzero(tested),
                                 combine(tuned[n], "served", test_fold)[0][tested])
                   for n in trained},
        optimum={n: [where_optimum(candidates[n], tuned[n][f],
                                   dimensions(cfg.model.candidates[n]),
                                   OmegaConf.to_container(cfg.model.candidates[n].grid))
                     for f in range(folds)]
                 for n in names if any(p.record.params for p in candidates[n])},
        rule=rule, not_separated=[ties for _, ties in choices], final_not_separated=final_ties,
        outer_fits=mode, not_trained=[n for n in names if n not in trained],
        winners=[p.candidate for p in winners], winner_points=[p.label for p in winners],
        fold_checkpoints=[p.record.checkpoint for p in winners],
        final=record_of(FinalModel, final), candidate_wall_s=spent,
        wall_s=round(time.perf_counter() - started, 2))
    candidate_oof = {n: combine(tuned[n], "calibrated", test_fold)[0] for n in trained}
    return record, nested, chosen.info, candidate_oof
