"""Fit a candidate on the folds of an assignment, and read its out-of-fold outputs.

:func:`fit_models` takes any kind of candidate (:mod:`sinterlab.models.kinds`, by the config's
``module._target_``) and returns :class:`~sinterlab.models.candidate.Candidate` ensembles. A
Lightning head trains every member of a run (folds x seeds) as one stacked
:class:`~sinterlab.models.head.HeadEnsemble` through ``Trainer.fit`` with the assignment's
:class:`~sinterlab.study.datamodule.FoldsDataModule`; holdout is the one-fold case. A
scikit-learn candidate (the affine :class:`~sinterlab.models.linear.LinearModel`, or any
estimator) is fitted per fold on a :class:`~sinterlab.models.candidate.FoldView` of the rows it
reads (``inputs``: patch embeddings, image means, the images' measures, or both).
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import lightning.pytorch as pl
import numpy as np
import pandas as pd
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from sklearn.preprocessing import StandardScaler

from sinterlab.atomic import writing
from sinterlab.console import on_terminal
from sinterlab.data.descriptor import IMAGE, SAMPLE
from sinterlab.errors import SinterlabError
from sinterlab.evaluation.metrics import first_rows
from sinterlab.evaluation.results import Member, Training, record_of
from sinterlab.features.representation import KINDS, Representation
from sinterlab.models.calibration import (
    ImageCalibration,
    MapCheck,
    fit_temperatures,
    head_image_calibration,
    save_image_calibration,
    set_temperatures,
)
from sinterlab.models.candidate import (
    Candidate,
    FoldView,
    check_inputs,
    raw_members,
    reads_measures,
)
from sinterlab.models.estimators import EstimatorEnsemble, kind_misfit
from sinterlab.models.head import POOLINGS, HeadEnsemble, image_means
from sinterlab.models.kinds import candidate_class
from sinterlab.study.datamodule import SEMDataModule
from sinterlab.study.model_config import ModelOptions, model_candidates, model_selection

log = logging.getLogger(__name__)


def head_targets(dm: SEMDataModule, train_rows: list[np.ndarray], seeds: list[int],
                 model: DictConfig) -> list[dict]:
    """Target specs: classes, and per member its fold's train mean/std or class weights."""
    weights = OmegaConf.to_container(model.loss_weights) or {}
    check_loss(dm.descriptor.targets, model)
    specs = []
    for i, target in enumerate(dm.descriptor.targets):
        columns = [dm.y[rows, i].numpy() for rows in train_rows for _ in seeds]
        if target.kind == "classification":
            c = len(target.classes)
            balanced = [(len(col) / (c * np.maximum(np.bincount(col.astype(int), minlength=c), 1))
                         ).tolist() for col in columns] \
                if model.class_weights == "balanced" else None
            scaling = {"num_classes": c, "class_weights": balanced}
        else:
            scaling = {"mean": [float(col.mean()) for col in columns],
                       "std": [float(col.std()) or 1.0 for col in columns]}
        specs.append(target.as_dict() | {"loss_weight": float(weights.get(target.name, 1.0))}
                     | scaling)
    return specs


def input_scaling(dm: SEMDataModule, train_rows: list[np.ndarray]) -> dict | None:
    """Per group, the mean and std of the extra input columns (``data.extra_inputs``, the last
    columns of ``dm.x``) over that group's training rows only; scikit-learn's StandardScaler
    (a constant column keeps scale 1). None without extra inputs."""
    E = len(dm.extra_inputs)
    if not E:
        return None
    extra = dm.x[:, -E:].numpy().astype(np.float64)
    scalers = [StandardScaler().fit(extra[rows]) for rows in train_rows]
    return {"names": list(dm.extra_inputs), "mean": [s.mean_.tolist() for s in scalers],
            "std": [s.scale_.tolist() for s in scalers]}


def check_losses(cfg: DictConfig, targets: list) -> None:
    """Every candidate the run will fit (the model, or each candidate of model=auto) suits the
    targets and has its inputs; called before any backbone time is spent. Candidates of
    model=auto that cannot learn the target (CORN and level value without an ordered one, a
    scikit-learn classifier on values or regressor on classes) or read the images' measures
    when ``measures.enabled=false`` are left out of the run."""
    if "module" in cfg.model:
        check_loss(targets, cfg.model)
        reason = misfit(cfg, targets, cfg.model)
        if reason:
            raise SinterlabError(f"model {cfg.model.name}: {reason}")
    candidates = model_candidates(cfg)
    if not candidates:
        return
    unfit = {name: reason for name, model in candidates.items()
             if "module" in model and (reason := misfit(cfg, targets, model))}
    if unfit and len(unfit) == len(candidates):
        raise SinterlabError(f"model.candidates: every candidate ({', '.join(unfit)}) "
                             f"{next(iter(unfit.values()))}; add a candidate that can")
    with open_dict(cfg):
        for name, reason in unfit.items():
            log.info("model=auto leaves out candidate %s: it %s", name, reason)
            del candidates[name]
    for model in candidates.values():
        if "module" in model:
            check_loss(targets, model)
    expand_representations(cfg)


#: the candidate key naming the part of each patch's embedding it reads (final, stages, both)
REPRESENTATION = "representation"


def expand_representations(cfg: DictConfig) -> None:
    """``model.selection.representations`` (a list of final, stages, both): every candidate of
    model=auto is tried on each, as ``<candidate>@<representation>``, all read from one
    extraction of ``features.representation=both`` (a view is a part of its columns); None
    (the default): each reads the whole extracted embedding, as before."""
    selection = model_selection(cfg)
    views = selection.representations if selection is not None else None
    if not views:
        return
    views = [str(v) for v in views]
    unknown = [v for v in views if v not in KINDS]
    if unknown or len(set(views)) < len(views):
        raise SinterlabError(f"model.selection.representations={views}: "
                             + (f"{unknown[0]} is not one of {', '.join(KINDS)}" if unknown
                                else "a representation named twice") + "; name each once")
    extracted = Representation.from_config(cfg.features).kind
    if extracted != "both" and views != [extracted]:
        raise SinterlabError(f"model.selection.representations={views} needs "
                             f"features.representation=both (it is {extracted}): one forward "
                             "pass gives the final embedding and the stage statistics")
    candidates = cfg.model.candidates
    if all(REPRESENTATION in model for model in candidates.values()):
        return  # expanded already (the run's own config read again)
    with open_dict(cfg):
        for name in list(candidates):
            model = candidates.pop(name)
            for view in views:
                copy = model.copy()
                with open_dict(copy):
                    copy[REPRESENTATION] = view
                candidates[f"{name}@{view}"] = copy


def misfit(cfg: DictConfig, targets: list, model: DictConfig,
           split_kind: str | None = None) -> str | None:
    """Why ``model`` cannot take part in this run (None when it can): a loss that cannot learn
    the first target, an estimator of the other task, a head on other inputs than patches or
    image means, a bag head on a patch split (``split_kind``, default the run's), or the
    images' measures when the run computes none."""
    kind = candidate_class(model.module, model.name)
    read = model_inputs(model)
    if issubclass(kind, HeadEnsemble):
        if read not in POOLINGS:
            return f"is a head and reads patch embeddings or image means (inputs=patch or " \
                   f"image_mean, not {read})"
        if read == "image_mean" and (split_kind or cfg.split.kind) == "patch":
            return "is a bag head (one row per image) and a patch split puts an image's " \
                   "patches in several folds"
        return order_misfit(targets, model)
    if reads_measures(read) and not cfg.measures.enabled:
        return f"reads the images' measures (inputs={read}); measures.enabled is false"
    if issubclass(kind, EstimatorEnsemble):
        return kind_misfit(instantiate(model.module), [t.as_dict() for t in targets])
    return None


def model_inputs(model: DictConfig) -> str:
    """What the candidate reads (``inputs``; patch embeddings when the config says nothing)."""
    return check_inputs(str(ModelOptions.of(model).inputs), model.name)


def order_misfit(targets: list, model: DictConfig) -> str | None:
    """Why ``model``'s loss cannot learn the first target (None when it can)."""
    loss = ModelOptions.of(model).loss
    first = targets[0]
    if loss == "cross_entropy":
        return None
    if first.kind != "classification" or not first.ordered:
        return f"needs an ordered classification target ({first.name!r} is not)"
    if loss == "corn" and len(first.classes) < 3:
        return f"needs at least three levels ({first.name!r} has {len(first.classes)})"
    return None


def check_loss(targets: list, model: DictConfig) -> None:
    """A CORN head needs an ordered first target of three or more levels, a level_value head an
    ordered one; neither takes class weights."""
    loss = ModelOptions.of(model).loss
    if loss == "cross_entropy":
        return
    first = targets[0]
    if first.kind != "classification" or not first.ordered:
        raise SinterlabError(f"model {model.name}: model.module.loss={loss} needs an ordered "
                             f"classification target ({first.name!r} is not: give numbers, or "
                             f"data.order.{first.name}=[...]); or use model=mlp")
    if loss == "corn" and len(first.classes) < 3:
        raise SinterlabError(f"model {model.name}: model.module.loss=corn needs at least three "
                             f"levels ({first.name!r} has {len(first.classes)}); with two, "
                             "ordinal and plain classification are the same: use model=mlp")
    if model.class_weights:
        raise SinterlabError(f"model {model.name}: model.class_weights={model.class_weights} "
                             f"is for cross-entropy; set model.class_weights=null with {loss}")


def fit_head(cfg: DictConfig, dm: SEMDataModule, assignment: np.ndarray, run_dir: Path,
             tag: str, model: DictConfig | None = None, seeds: list[int] | None = None,
             max_epochs: int | None = None, temperatures: list[float | None] | None = None,
             image_calibration: list[ImageCalibration | None] | None = None,
             ) -> tuple[HeadEnsemble, FitRecord]:
    """Train every member (folds x seeds) of ``model`` (default: ``cfg.model``) at once on the
    train rows of ``assignment``; members end with their best weights by their validation
    rows, then get their temperatures from the same rows and their image calibration from
    every member's validation rows but their own test rows (cross-fitted); without
    validation rows, they keep their weights after ``max_epochs`` and take ``temperatures``
    (one per target) and the median member of ``image_calibration``."""
    # seeded here, not only at start: extraction (cache misses) consumes random numbers, and a
    # run must not depend on whether its embeddings came from the cache
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    model = cfg.model if model is None else model
    pooling = model_inputs(model)
    if pooling == "image_mean":  # a bag head trains on one mean row per image
        dm, first = image_view(dm)
        assignment = assignment[:, first]
    seeds = [int(s) for s in (cfg.protocol.seeds if seeds is None else seeds)]
    max_epochs = int(cfg.trainer.max_epochs if max_epochs is None else max_epochs)
    batch, lr = head_batch(model, dm.rows(assignment, "train"))
    folds = dm.folds(assignment, batch)
    train_rows = folds.rows("train")
    validate = folds.validates
    stop = cfg.protocol.early_stopping
    patience = model_patience(cfg, model)
    head: HeadEnsemble = instantiate(model.module)(
        in_features=dm.x.shape[1], targets=head_targets(dm, train_rows, seeds, model), lr=lr,
        max_epochs=max_epochs, groups=len(assignment), seeds=seeds,
        patience=patience if validate else None, min_delta=float(stop.min_delta),
        inputs=input_scaling(dm, train_rows), pooling=pooling)
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    loggers = [instantiate(spec, version=f"{spec.version}-{tag}")
               for spec in (cfg.get("logger") or {}).values()]
    # a progress bar only on a terminal; no validation loop when no fold has validation rows
    trainer: pl.Trainer = instantiate(
        cfg.trainer, logger=loggers or False, enable_checkpointing=False, max_epochs=max_epochs,
        enable_progress_bar=bool(cfg.trainer.enable_progress_bar) and on_terminal(),
        **({} if validate else {"limit_val_batches": 0}))
    started = time.perf_counter()
    with writing(loggers[0].log_dir if loggers else run_dir):  # TensorBoard writes as it goes
        trainer.fit(head, datamodule=folds)
    wall = time.perf_counter() - started
    calibration = cfg.evaluation.calibration
    images = [None] * len(head.targets)
    if validate:
        if not head.corn:  # softmax temperatures do not apply to CORN's logits
            fit_temperatures(head, dm.x, dm.y, folds.rows("val"))
        images = head_image_calibration(head, dm.x, dm.y, dm.patches[IMAGE].to_numpy(),
                                        folds.rows("val"), unseen_rows(assignment),
                                        calibration.pooling, calibration.calibrator,
                                        calibration_pools(assignment),
                                        check=MapCheck.from_config(calibration),
                                        units=dm.patches[SAMPLE].to_numpy())
    else:
        if temperatures is not None:
            set_temperatures(head, temperatures)
        if image_calibration is not None:
            images = [c and c.median(head.members) for c in image_calibration]
    checkpoint = head.save(run_dir / "checkpoints" / f"{tag}-ensemble{head.suffix}")
    save_image_calibration(checkpoint, images)
    members = [Member(**row) for row in head.member_summary()]
    validated = [m.best_val_loss for m in members if m.best_val_loss is not None]
    return head, FitRecord(
        model=model.name, kind=head.kind, inputs=head.inputs,
        protocol=protocol_name(cfg, model), checkpoint=str(checkpoint.relative_to(run_dir)),
        n_members=len(members), wall_s=round(wall, 2), temperatures=head.temperatures(),
        image_calibration=[c and c.as_dict() for c in images],
        extra_inputs=head.extra_inputs, members=members,
        max_epochs=max_epochs, epochs_run=trainer.current_epoch,
        early_stopping_patience=patience, batch_size=batch, lr=lr,
        best_val_loss=float(np.mean(validated)) if validated else None,
        s_per_epoch=round(wall / max(trainer.current_epoch, 1), 4), history=head.history)


def image_view(dm: SEMDataModule) -> tuple[SEMDataModule, np.ndarray]:
    """``dm`` with one row per image (its patches' mean row, the first patch's labels and
    table row), and the patch row each image row comes from: what a bag head trains on. The
    folds of a sample, slide or image split keep an image's patches together, so an
    assignment's columns at those rows are the images' folds."""
    images = dm.patches[IMAGE].to_numpy().astype(str)
    first = first_rows(images)  # images in order of first appearance, as image_means gives them
    view = copy.copy(dm)
    view.x = image_means(dm.x[None], images[None])[0][0]
    view.y, view.patches = dm.y[first], dm.patches.iloc[first].reset_index(drop=True)
    return view, first


def head_batch(model: DictConfig, train_rows: list[np.ndarray]) -> tuple[int, float]:
    """The batch size and learning rate a head trains with: its ``batch_size`` and
    ``module.lr``, except where its members' training rows (the median member's) would give
    fewer than ``min_steps_per_epoch`` steps an epoch: then the batch shrinks to that many
    steps, not below ``min_batch_size``, and the learning rate by the square root of the
    ratio (as model=auto's raised them; measured on the demo's 2,400 patches: the heads lost
    at batch 128, see conf/model/auto.yaml)."""
    batch, lr = int(model.batch_size), float(model.module.lr)
    options = ModelOptions.of(model)
    steps = options.min_steps_per_epoch
    if not steps or not train_rows:
        return batch, lr
    rows = int(np.median([len(r) for r in train_rows]))
    fitted = max(int(options.min_batch_size), min(batch, rows // int(steps)))
    return fitted, lr * float(np.sqrt(fitted / batch))


def model_patience(cfg: DictConfig, model: DictConfig) -> int | None:
    """Validations without improvement before a member stops: the model's own
    ``early_stopping.patience`` (model=auto's candidates set theirs), else the protocol's."""
    own = ModelOptions.of(model).early_stopping
    return cfg.protocol.early_stopping.patience if own is None else own.patience


def protocol_name(cfg: DictConfig, model: DictConfig) -> str:
    used = {"max_epochs": cfg.trainer.max_epochs, "batch_size": model.batch_size,
            "lr": model.module.lr, "check_val_every_n_epoch": cfg.trainer.check_val_every_n_epoch}
    stop = model_patience(cfg, model)
    stopping = f"; early stopping after {stop} validations without improvement" if stop else ""
    paper = OmegaConf.to_container(cfg.evaluation.paper_training)
    if used == paper:
        return ("paper training (" + ", ".join(f"{k}={v}" for k, v in paper.items()) + ")"
                + stopping)
    changed = ", ".join(f"{k}={v}" for k, v in used.items() if paper[k] != v)
    return f"reduced/changed training ({changed}); not the paper's" + stopping


@dataclass
class FitRecord(Training):
    """What fitting one candidate on the folds of an assignment left beside its checkpoint: the
    run's training record (:class:`~sinterlab.evaluation.results.Training`), its image
    calibration as the models save it (a dict per target; None: regression)."""

    image_calibration: list[dict[str, Any] | None] = field(default_factory=list)

    def training(self) -> Training:
        """The record metrics.json holds."""
        return record_of(Training, dataclasses.asdict(self))

    def median_temperatures(self) -> list[float | None]:
        """Per target, the median of the members' temperatures."""
        return [None if t is None else float(np.median(t)) for t in self.temperatures]

    def image_calibrations(self) -> list[ImageCalibration | None]:
        """Per target, the image calibration (None: regression)."""
        return [c and ImageCalibration.from_dict(c) for c in self.image_calibration]

    def best_epochs(self) -> list[int]:
        """The best epoch of each member that had validation rows."""
        return [m.best_epoch for m in self.members if m.best_epoch is not None]


def head_model(cfg: DictConfig) -> DictConfig:
    """The model a run trains as its head: under model=auto its first candidate (the head of
    the leak contrast), else the run's model."""
    return next(iter(cfg.model.candidates.values())) if cfg.model.name == "auto" else cfg.model


def is_head(model: DictConfig) -> bool:
    """Lightning heads train through :func:`fit_head`; scikit-learn candidates per fold."""
    return issubclass(candidate_class(model.module, model.name), HeadEnsemble)


def fold_view(cfg: DictConfig, dm: SEMDataModule, assignment: np.ndarray) -> FoldView:
    """What a candidate fitted per fold reads: every row, and per group its training and
    validation rows (it needs no validation)."""
    targets = [t.as_dict() | ({"num_classes": len(t.classes)} if t.kind == "classification"
                              else {}) for t in dm.descriptor.targets]
    return FoldView(dm.x.numpy(), dm.y.numpy(), dm.patches[IMAGE].to_numpy().astype(str),
                    dm.row_measures(),
                    [np.flatnonzero((fold == "train") | (fold == "val")) for fold in assignment],
                    targets, int(cfg.seed), len(dm.extra_inputs))


def fit_models(cfg: DictConfig, dm: SEMDataModule, assignment: np.ndarray, run_dir: Path,
               tags: list[str], models: list[DictConfig], seeds: list[int] | None = None,
               image_calibration: list[ImageCalibration | None] | None = None,
               ) -> list[tuple[Candidate, FitRecord]]:
    """Each of ``models`` (grid points of one candidate) on the folds of ``assignment``, saved
    as ``checkpoints/<tag>``: heads through :func:`fit_head`, one per model; scikit-learn
    models all at once on each fold's training and validation rows (they need no validation),
    their image calibration cross-fitted on the other folds' out-of-fold images (without test
    rows: the median member of ``image_calibration``)."""
    kind = candidate_class(models[0].module, models[0].name)
    if issubclass(kind, HeadEnsemble):
        return [fit_head(cfg, dm, assignment, run_dir, tag, model=model, seeds=seeds,
                         image_calibration=image_calibration)
                for tag, model in zip(tags, models, strict=True)]
    view = fold_view(cfg, dm, assignment)
    ensembles, wall = kind.fit_folds([instantiate(m.module) for m in models],
                                     [model_inputs(m) for m in models], view)
    out = []
    test_rows = dm.rows(assignment, "test")
    calibration = cfg.evaluation.calibration
    for tag, model, ensemble in zip(tags, models, ensembles, strict=True):
        checkpoint = ensemble.save(run_dir / "checkpoints" / f"{tag}{ensemble.suffix}")
        if any(len(rows) for rows in test_rows):
            images = head_image_calibration(ensemble, dm.x, dm.y, dm.patches[IMAGE].to_numpy(),
                                            test_rows, unseen_rows(assignment),
                                            calibration.pooling, calibration.calibrator,
                                            calibration_pools(assignment),
                                            view.measures if ensemble.reads_measures else None,
                                            check=MapCheck.from_config(calibration),
                                            units=dm.patches[SAMPLE].to_numpy())
        else:
            images = [c and c.median(ensemble.members) for c in image_calibration or
                      [None] * len(view.targets)]
        save_image_calibration(checkpoint, images)
        out.append((ensemble, FitRecord(
            model=model.name, kind=ensemble.kind, inputs=ensemble.inputs,
            protocol=f"scikit-learn, fitted per fold on its training and validation rows "
                     f"({protocol_inputs(ensemble.inputs)})",
            checkpoint=str(checkpoint.relative_to(run_dir)), n_members=ensemble.members,
            wall_s=round(wall / len(models), 2), temperatures=ensemble.temperatures(),
            image_calibration=[c and c.as_dict() for c in images],
            params=ensemble.describe()["params"])))
    return out


def protocol_inputs(inputs: str) -> str:
    """What a per-fold model read, in words."""
    return {"patch": "patch embeddings", "image_mean": "image_mean embeddings",
            "measures": "the images' measures",
            "image_mean+measures": "image_mean embeddings and the images' measures",
            "patch+measures": "patch embeddings and their images' measures"}[inputs]


def unseen_rows(assignment: np.ndarray) -> list[np.ndarray]:
    """Per group, the rows its members never fit on: its test rows, and the rows its
    assignment leaves out ('-': the outer test fold of model selection's inner folds). An image
    calibration used by a group's members is never fitted on them."""
    return [np.flatnonzero((fold != "train") & (fold != "val")) for fold in assignment]


def calibration_pools(assignment: np.ndarray) -> np.ndarray:
    """(G, G): may group k's members calibrate group g's? Not when k trained or validated on a
    row g's assignment leaves out ('-': the outer test fold of an inner group), so model
    selection inside one outer fold never depends on that fold's test rows; within a plain
    assignment every group may."""
    left_out = assignment == "-"
    used = (assignment == "train") | (assignment == "val")
    return ~(left_out.astype(np.int32) @ used.T.astype(np.int32) > 0)


class Outputs(NamedTuple):
    """Three views of one pass of predictions, each per target (and per group, from
    :func:`group_outputs`): class probabilities temperature-scaled (``calibrated``), ``raw``,
    and as predict serves them (``served``: a classification target with an image calibration
    gives each row its image's calibrated probability; otherwise the calibrated output)."""

    calibrated: list
    raw: list
    served: list


def group_outputs(model: Candidate, dm: SEMDataModule, assignment: np.ndarray,
                  images: list[ImageCalibration | None] | None = None) -> Outputs:
    """Per group (fold) of ``assignment``, per target, the outputs of its test rows from its
    own members (mean over seeds), in the three views of :class:`Outputs`; an image-mean model
    gives each row its image's output. ``images``: the image calibration per target (served:
    each member's raw probabilities pooled and calibrated per image, mean over seeds)."""
    loader = dm.folds(assignment).test_dataloader()
    index = loader.index
    image_ids = dm.patches[IMAGE].to_numpy().astype(str)
    batch_images = np.where(loader.weight.numpy() > 0, image_ids[index.numpy()], "")
    measures = dm.row_measures()[index.numpy()] if model.reads_measures else None
    x = dm.x[index]
    per_member = model.predict_members(x, images=batch_images, measures=measures)
    raw = raw_members(model, per_member, x, images=batch_images, measures=measures)
    calibrations = images or [None] * len(per_member)
    views = Outputs([], [], [])
    for g, rows in enumerate(dm.rows(assignment, "test")):
        own = slice(g * model.per_group, (g + 1) * model.per_group)
        calibrated = [members[own, :len(rows)].mean(axis=0) for members in per_member]
        served = list(calibrated)
        for t, calibration in enumerate(calibrations):
            if calibration is not None:
                _, probs = calibration.apply(raw[t][own, :len(rows)], image_ids[rows], own)
                served[t] = probs.mean(axis=0)[pd.factorize(image_ids[rows])[0]]
        views.calibrated.append(calibrated)
        views.raw.append([members[own, :len(rows)].mean(axis=0) for members in raw])
        views.served.append(served)
    return views


def model_oof(model: Candidate, dm: SEMDataModule, assignment: np.ndarray,
              images: list[ImageCalibration | None] | None = None) -> Outputs:
    """Per target, each tested patch's output from its own fold's members, in the three views
    of :class:`Outputs` (see :func:`group_outputs`); untested rows NaN."""
    test_rows = dm.rows(assignment, "test")

    def spread(per_group: list[list[np.ndarray]]) -> list[np.ndarray]:
        out = []
        for t, first in enumerate(per_group[0]):
            full = np.full((len(dm.x), *first.shape[1:]), np.nan)
            for rows, outputs in zip(test_rows, per_group, strict=True):
                full[rows] = outputs[t]
            out.append(full)
        return out

    return Outputs(*map(spread, group_outputs(model, dm, assignment, images)))
