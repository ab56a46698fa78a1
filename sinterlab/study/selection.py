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
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf, open_dict
from sklearn.metrics import accuracy_score, log_loss, mean_absolute_error, mean_squared_error

from sinterlab.console import stage
from sinterlab.data.descriptor import IMAGE
from sinterlab.evaluation.metrics import aggregate_by_group, first_rows
from sinterlab.evaluation.results import FinalModel, GridPoint, Selection, record_of
from sinterlab.study.datamodule import SEMDataModule
from sinterlab.study.fit import (
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
    truth = np.zeros_like(probs)
    truth[np.arange(len(y)), y] = 1.0
    gaps = np.cumsum(probs, axis=1) - np.cumsum(truth, axis=1)
    return float(np.mean(np.sum(gaps[:, :-1] ** 2, axis=1)) / max(probs.shape[1] - 1, 1))


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


def select_model(cfg: DictConfig, dm: SEMDataModule, assignment: np.ndarray, kind: str,
                 run_dir: Path,
                 ) -> tuple[Selection, tuple[list[np.ndarray], ...], dict, dict[str, np.ndarray]]:
    """Nested grouped CV over ``cfg.model.candidates`` and their grids.

    Each grid point of each candidate is fitted on the inner training groups of every outer
    fold's non-test groups and scored on the pooled inner held-out groups of that outer fold,
    by the image probabilities predict would serve. Outer fold f of the nested (``auto``) row
    takes the best point of all candidates on f, trained on f's training groups; the final
    model is the point with the best mean inner score, refitted on every group (heads: for the
    median of their CV members' best epoch counts). Only those points are trained on the outer
    folds (``model.selection.outer_fits=winners``); with ``all`` every point is, and each
    candidate's row takes its best point per outer fold. Returns the selection record, the
    nested out-of-fold outputs (per target; calibrated, raw and served per image), the final
    point's CV training record and the tuned out-of-fold output (first target) of every
    candidate trained on all outer folds.
    """
    started = time.perf_counter()
    sel = cfg.model.selection
    target = dm.descriptor.targets[0]
    kind_of_score = score_kind(target)
    score = str(sel.score[kind_of_score])
    inner_seeds = [int(s) for s in sel.inner_seeds]
    inner = dm.inner_folds(assignment, kind, int(sel.inner_folds))
    folds, names = len(assignment), list(cfg.model.candidates)
    per_outer = len(inner) // folds
    y = dm.y[:, 0].numpy()
    images = dm.patches[IMAGE].to_numpy().astype(str)
    inner_test = dm.rows(inner, "test")
    test_fold = dm.test_fold(assignment)
    points: dict[str, GridPoint] = {}
    configs, outputs, infos, spent, grids = {}, {}, {}, {}, {}
    for number, name in enumerate(names, 1):
        model = cfg.model.candidates[name]
        grid = grid_points(name, model, searched(sel, model))
        points_word = "grid point" if len(grid) == 1 else "grid points"
        with stage(f"model selection: candidate {name} ({number} of {len(names)}, "
                   f"{len(grid)} {points_word})") as timing:
            labels = [label for label, _ in grid]
            tags = [f"{kind}-inner-{name}" if len(grid) == 1 else f"{kind}-inner-{name}-{j}"
                    for j in range(len(grid))]
            fitted = fit_models(cfg, dm, inner, run_dir, tags, [m for _, m in grid], inner_seeds)
            keys = list(model.get("grid") or {}) if len(grid) > 1 else []
            for label, (ensemble, info), (_, point) in zip(labels, fitted, grid, strict=True):
                configs[label] = point
                # what predict would serve: each inner member's image probabilities through
                # its image calibration, fitted on inner validation images of its own outer
                # fold's training groups, never on the inner held-out groups scored here
                views = group_outputs(ensemble, dm, inner, images=image_calibrations(info))
                held_out, unserved = views.served, views.calibrated
                scores, before = [], []
                for f in range(folds):
                    groups = range(f * per_outer, (f + 1) * per_outer)
                    rows = np.concatenate([inner_test[g] for g in groups])
                    for out, into in ((held_out, scores), (unserved, before)):
                        into.append(image_score(kind_of_score, score, y[rows],
                                                np.concatenate([out[g][0] for g in groups]),
                                                images[rows]))
                # inner_scores_unserved: the same score of raw image means (the rule before
                # issue 33), so a reader sees where calibration decided
                points[label] = GridPoint(
                    candidate=name, inner_scores=scores, inner_scores_unserved=before,
                    params={k: OmegaConf.select(point, k) for k in keys})
            grids[name] = grid
        spent[name] = timing["wall_s"]

    def best(labels: list[str], f: int) -> str:
        return min(labels, key=lambda n: points[n].inner_scores[f])

    tuned = {name: [best([n for n in points if points[n].candidate == name], f)
                    for f in range(folds)] for name in names}
    winner_points = [best(list(points), f) for f in range(folds)]
    chosen = min(points, key=lambda n: float(np.mean(points[n].inner_scores)))
    mode = str(sel.outer_fits)
    if mode not in ("winners", "all"):
        raise ValueError(f"model.selection.outer_fits={mode!r}: use winners or all")
    # a point that wins no outer fold and is not the final model is never trained on the outer
    # folds (it cannot change the answer); outer_fits=all trains every point, so every
    # candidate also gets its own out-of-fold row
    needed = set(points) if mode == "all" else {*winner_points, chosen}
    tested = test_fold >= 0
    for name in names:
        grid = [(label, point) for label, point in grids[name] if label in needed]
        if not grid:
            continue
        with stage(f"model selection: outer folds of {name} ({len(grid)} of "
                   f"{len(grids[name])} grid points)") as timing:
            tags = [f"{kind}-{name}" if len(grids[name]) == 1 else
                    f"{kind}-{name}-{[g for g, _ in grids[name]].index(label)}"
                    for label, _ in grid]
            for (label, _), (ensemble, info) in zip(grid, fit_models(
                    cfg, dm, assignment, run_dir, tags, [m for _, m in grid]), strict=True):
                # calibrated, raw and served (image-calibrated probabilities; regression: the
                # outputs themselves) views of one pass of predictions
                outputs[label] = model_oof(ensemble, dm, assignment,
                                           images=image_calibrations(info))
                points[label].cv_score = image_score(kind_of_score, score, y[tested],
                                                     outputs[label][2][0][tested],
                                                     images[tested])
                points[label].checkpoint, points[label].kind = info["checkpoint"], info["kind"]
                infos[label] = info
        spent[name] += timing["wall_s"]

    def combine(per_fold: list[str], calibrated: int) -> list[np.ndarray]:
        """Per target, outer fold f's rows from the outputs of ``per_fold[f]``."""
        first = outputs[per_fold[0]][calibrated]
        combined = [np.full_like(out, np.nan) for out in first]
        for f, label in enumerate(per_fold):
            rows = test_fold == f
            for t, out in enumerate(outputs[label][calibrated]):
                combined[t][rows] = out[rows]
        return combined

    nested = combine(winner_points, 0), combine(winner_points, 1), combine(winner_points, 2)
    trained = [name for name in names if all(p in outputs for p in tuned[name])]
    candidate_oof = {name: combine(tuned[name], 0)[0] for name in trained}
    name, model = points[chosen].candidate, configs[chosen]
    everything = np.full((1, len(dm.x)), "train")
    final_info = {"model": name, "point": chosen, "params": points[chosen].params,
                  "module": OmegaConf.to_container(model.module, resolve=True),
                  "inputs": model_inputs(model)}
    with stage(f"model selection: final model ({chosen}) refitted on all groups"):
        if is_head(model):
            best_epochs = [m["best_epoch"] for m in infos[chosen]["members"]
                           if m["best_epoch"] is not None]
            epochs = int(np.median(best_epochs)) + 1 if best_epochs else int(cfg.trainer.max_epochs)
            _, final = fit_head(cfg, dm, everything, run_dir, "final", model=model,
                                max_epochs=epochs, temperatures=median_temperatures(infos[chosen]),
                                image_calibration=image_calibrations(infos[chosen]))
            final_info |= {"epochs": epochs, "temperatures": median_temperatures(infos[chosen]),
                           "image_calibration": final.get("image_calibration")}
        else:
            [(_, final)] = fit_models(cfg, dm, everything, run_dir, ["final"], [model],
                                      image_calibration=image_calibrations(infos[chosen]))
            final_info |= {"epochs": None, "temperatures": None,
                           "image_calibration": final.get("image_calibration")}
    final_info |= {"members": final["n_members"], "checkpoint": final["checkpoint"],
                   "kind": final["kind"], "wall_s": final["wall_s"]}
    record = Selection(
        candidates=names, score=score, grid=str(sel.grid), inner_folds=int(sel.inner_folds),
        inner_seeds=inner_seeds, points=points,
        inner_scores={n: [points[tuned[n][f]].inner_scores[f] for f in range(folds)]
                      for n in names},
        tuned_points=tuned,
        cv_scores={n: image_score(kind_of_score, score, y[tested],
                                  combine(tuned[n], 2)[0][tested], images[tested])
                   for n in trained},
        outer_fits=mode, not_trained=[n for n in names if n not in trained],
        winners=[points[p].candidate for p in winner_points], winner_points=winner_points,
        fold_checkpoints=[points[p].checkpoint for p in winner_points],
        final=record_of(FinalModel, final_info), candidate_wall_s=spent,
        wall_s=round(time.perf_counter() - started, 2))
    return record, nested, infos[chosen], candidate_oof
