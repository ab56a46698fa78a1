"""One experiment end to end: embeddings -> folds -> head ensemble and baselines -> out-of-fold
evaluation -> run folder (written by :mod:`sinterlab.study.record`).

Under ``protocol=cv`` every group (sample by default) is tested once, by heads that never saw
it: the folds x seeds heads train together as one ensemble, the baselines are fitted on the
same folds, and every model is scored on its pooled out-of-fold predictions with intervals that
resample samples. ``protocol=holdout`` (the paper's single 80/10/10 split) is the one-fold case of
the same path. ``model=auto`` chooses the head by nested CV (:mod:`sinterlab.study.selection`).
The run folder also receives ``config.yaml`` and the ensemble checkpoints.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pandas as pd
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from sinterlab.atomic import write_text
from sinterlab.console import StageTiming, recorded_stages, stage
from sinterlab.data.descriptor import IMAGE, SAMPLE, SLIDE, str_label
from sinterlab.data.groups import group_means
from sinterlab.evaluation.baselines import baseline_outputs
from sinterlab.evaluation.display import selection_warning
from sinterlab.evaluation.instrument import instrument_check, settings_by_class
from sinterlab.evaluation.metrics import (
    evaluate_levels,
    evaluate_targets,
    first_rows,
)
from sinterlab.evaluation.reliability import (
    classification_calibration,
    conformal_coverage,
    conformal_sets,
)
from sinterlab.evaluation.results import (
    Bootstrap,
    Calibration,
    ConformalCheck,
    CrossValidation,
    Fold,
    InstrumentCheck,
    Metrics,
    Permutation,
    PredictionSetsCheck,
    ProtocolBlock,
    RunMetrics,
    Selection,
    Split,
    Training,
    record_of,
)
from sinterlab.evaluation.statistics import (
    LevelTables,
    bootstrap_intervals,
    fold_statistics,
    per_fold_metrics,
    permutation_test,
    selection_check,
    verdict,
)
from sinterlab.measures.trends import measures_oof
from sinterlab.runs import RunInterrupted, claim
from sinterlab.study.data_size import learning_curves, variance_block
from sinterlab.study.datamodule import GROUP_COLUMNS, SEMDataModule
from sinterlab.study.extraction import refuse_ddp
from sinterlab.study.fit import (
    FitRecord,
    Outputs,
    check_losses,
    fit_models,
    head_model,
    misfit,
    model_inputs,
    model_oof,
)
from sinterlab.study.record import IMAGE_ONLY, ProtocolOutputs, record_run
from sinterlab.study.selection import BEST_SINGLE, select_model
from sinterlab.threads import library_threads

log = logging.getLogger(__name__)
HEAD, AUTO, MEASURES = "head", "auto", "measures"
#: a bootstrap unit's column -> its name in metrics.json
UNIT_NAMES = {SLIDE: "slide", SAMPLE: "sample"}


def baselines_oof(cfg: DictConfig, dm: SEMDataModule, assignment: np.ndarray,
                  ) -> tuple[dict[str, np.ndarray], dict]:
    """The baselines of ``evaluation.baselines`` per fold, fitted on the fold's training and
    validation rows, each from scratch."""
    first = dm.descriptor.targets[0]
    num_classes = len(first.classes) if first.kind == "classification" else None
    shape = (len(dm.x), num_classes) if num_classes else (len(dm.x),)
    e = cfg.evaluation
    factories = {str(name): instantiate(spec) for name, spec in e.baselines.items()}
    out = {name: np.full(shape, np.nan) for name in factories}
    info = {}
    x, y = dm.image_x.numpy(), dm.y[:, 0].numpy()  # image-only, even with data.extra_inputs
    started = time.perf_counter()
    for fold in assignment:
        fit, test = np.flatnonzero(fold != "test"), np.flatnonzero(fold == "test")
        outputs, info = baseline_outputs(first.kind, x[fit], y[fit], x[test], factories,
                                         int(cfg.seed), num_classes, str(e.baseline_dtype))
        for name in factories:
            out[name][test] = outputs[name]
    return out, info | {"C": float(e.baseline_C),
                        "wall_s": round(time.perf_counter() - started, 2)}


def image_only_oof(cfg: DictConfig, dm: SEMDataModule, assignment: np.ndarray, run_dir: Path,
                   split_kind: str, model: DictConfig) -> np.ndarray:
    """The run's model trained on the same folds without ``data.extra_inputs`` (the image
    embeddings alone): its out-of-fold outputs of the first target, scored beside the model with
    extra inputs (pooled metrics with paired intervals, per fold)."""
    image_only = copy.copy(dm)
    image_only.x, image_only.extra_inputs = dm.image_x, []
    [(fitted, _)] = fit_models(cfg, image_only, assignment, run_dir,
                               [f"{split_kind}-{IMAGE_ONLY}"], [model])
    return model_oof(fitted, image_only, assignment).calibrated[0]


# -- evaluation of one split kind ---------------------------------------------------------------
def bootstrap_unit(split_kind: str) -> str:
    """Slides when the split is by slide; otherwise samples (images of a sample are not
    independent, so image and patch splits are resampled by sample too)."""
    return SLIDE if split_kind == "slide" else SAMPLE


def evaluate_protocol(cfg: DictConfig, dm: SEMDataModule, split_kind: str, run_dir: Path,
                      train_head: bool) -> tuple[ProtocolBlock, ProtocolOutputs]:
    """Primary model (optional) and baselines on the folds of ``split_kind``: the block of
    metrics.json, and the out-of-fold outputs it was computed from."""
    assignment = dm.assignment if split_kind == cfg.split.kind else dm.split(split_kind)
    test_fold = dm.test_fold(assignment)
    with stage(f"{split_kind} split: baselines"):
        outputs, baseline_info = baselines_oof(cfg, dm, assignment)
        if getattr(dm, "measures", None) is not None and split_kind != "patch":
            outputs[MEASURES] = measures_baseline(cfg, dm, test_fold)
    baselines = tuple(outputs)
    primary = train_primary(cfg, dm, split_kind, assignment, run_dir) if train_head else None
    if primary:
        outputs = primary.outputs | outputs
    scored = Scored(dm, split_kind, test_fold)
    block = ProtocolBlock(
        split=split_info(cfg, dm, split_kind, assignment),
        cv=cross_validation(cfg, dm, scored, assignment, outputs, primary, baselines),
        baseline={name: scored.metrics(outputs[name]) for name in baselines},
        baseline_info=baseline_info | {"fitted_on": "each fold's train + validation rows"},
        training=primary and primary.training, selection=primary and primary.selection)
    if primary:
        tested = scored.tested
        block.test = record_of(Metrics, evaluate_targets(
            [t.as_dict() for t in dm.descriptor.targets], scored.y[tested],
            [o[tested] for o in primary.head.calibrated], scored.images[tested],
            scored.samples[tested]))
        block.calibration = calibration_block(cfg, scored, primary.head,
                                              served_by(primary.info))
    return block, ProtocolOutputs(primary=primary and primary.head, models=outputs,
                                  test_fold=test_fold)


@dataclass
class Primary:
    """A block's own model: the head trained on the folds, or model=auto's nested choice."""

    #: the metrics.json key of its row: head or auto
    key: str
    head: Outputs
    #: its out-of-fold outputs (first target), with model=auto's candidates and the image-only
    #: twin, keyed as their rows
    outputs: dict[str, np.ndarray]
    #: the fit record fit_models gave (members, calibration)
    info: FitRecord
    selection: Selection | None = None

    @cached_property
    def training(self) -> Training:
        return self.info.training()


def train_primary(cfg: DictConfig, dm: SEMDataModule, split_kind: str, assignment: np.ndarray,
                  run_dir: Path) -> Primary:
    """model=auto's nested CV on the run's own split; otherwise the configured head (under
    model=auto on the contrast split: its first candidate) with, given data.extra_inputs, the
    same model on the image alone."""
    if cfg.model.name == "auto" and split_kind == cfg.split.kind:
        with stage(f"{split_kind} split: model selection (nested CV)"):
            selection, nested, info, candidates = select_model(cfg, dm, assignment, split_kind,
                                                               run_dir)
        head = Outputs(*nested)
        return Primary(AUTO, head, {AUTO: head.calibrated[0]} | candidates, info, selection)
    model = head_model(cfg)
    with stage(f"{split_kind} split: head training"):
        [(fitted, info)] = fit_models(cfg, dm, assignment, run_dir, [split_kind], [model])
    head = model_oof(fitted, dm, assignment, images=info.image_calibrations())
    outputs = {HEAD: head.calibrated[0]}
    if dm.extra_inputs and split_kind == cfg.split.kind:
        with stage(f"{split_kind} split: image-only {model.name} (same folds)"):
            outputs[IMAGE_ONLY] = image_only_oof(cfg, dm, assignment, run_dir, split_kind, model)
    return Primary(HEAD, head, outputs, info)


class Scored:
    """The rows a split kind's models are scored on: truth, image, sample and bootstrap unit
    per patch row, which rows were tested and in which fold."""

    def __init__(self, dm: SEMDataModule, split_kind: str, test_fold: np.ndarray):
        self.split_kind, self.test_fold = split_kind, test_fold
        self.tested = test_fold >= 0
        self.target = dm.descriptor.targets[0]
        self.y = dm.y.numpy()
        self.images = dm.patches[IMAGE].to_numpy().astype(str)
        self.samples = dm.patches[SAMPLE].to_numpy().astype(str)
        self.unit_column = bootstrap_unit(split_kind)
        self.units = dm.patches[self.unit_column].to_numpy().astype(str)
        #: an ordered target's level values: its errors in its units
        self.values = np.asarray(self.target.values) if self.target.ordered else None

    def metrics(self, output: np.ndarray) -> Metrics:
        """A model's pooled out-of-fold metrics (first target) at every level, no intervals."""
        t = self.tested
        return record_of(Metrics, evaluate_levels(self.target.kind, self.y[t, 0], output[t],
                                                  self.images[t], self.samples[t], self.values))

    def tables(self, output: np.ndarray) -> LevelTables:
        t = self.tested
        return LevelTables(self.target.kind, self.y[t, 0], output[t], self.images[t],
                           self.samples[t], self.units[t], self.values)


def cross_validation(cfg: DictConfig, dm: SEMDataModule, scored: Scored,
                     assignment: np.ndarray, outputs: dict[str, np.ndarray],
                     primary: Primary | None, baselines: tuple[str, ...]) -> CrossValidation:
    """Every model's pooled metrics with intervals (bootstrap over units), per fold and their
    spread, the verdict, and (classification) the permutation test and the instrument check."""
    first, key = scored.target, primary and primary.key
    b = cfg.evaluation.bootstrap
    with stage(f"{scored.split_kind} split: bootstrap intervals"):
        pooled = bootstrap_intervals({name: scored.tables(out) for name, out in outputs.items()},
                                     int(b.n), int(b.seed), float(b.confidence), reference=key)
    per_fold = {name: per_fold_metrics(first.kind, scored.y[:, 0], out, scored.images,
                                       scored.samples, scored.test_fold, scored.values)
                for name, out in outputs.items()}
    cv = CrossValidation(
        protocol=cfg.protocol.name, folds=len(assignment), primary=key,
        head_model=primary and primary.training.model,
        seeds=[int(s) for s in cfg.protocol.seeds], split_seed=int(cfg.protocol.split_seed),
        target=first.name,
        per_fold=[Fold(fold=f, **fold_sizes(dm, assignment[f], scored.split_kind),
                       models={name: record_of(Metrics, per_fold[name][f]) for name in outputs})
                  for f in range(len(assignment))],
        fold_statistics={name: fold_statistics(per_fold[name], first.kind, first.ordered)
                         for name in outputs},
        pooled=pooled,
        bootstrap=Bootstrap(n=int(b.n), unit=UNIT_NAMES[scored.unit_column],
                            confidence=float(b.confidence), seed=int(b.seed),
                            units=int(len(np.unique(scored.units[scored.tested])))),
        verdict=verdict(pooled, first.kind, cfg.evaluation.headline_level, key, baselines))
    selection = primary and primary.selection
    if selection:
        v = cv.verdict
        v.selection = selection_check(pooled, v.level, v.metric, v.higher_is_better,
                                      {"nested": AUTO, "final": selection.final.model},
                                      [*selection.candidates, *(
                                          [BEST_SINGLE] if selection.ensemble else [])])
        for _, check in v.selection.checks():
            if check.disagrees:
                log.warning(selection_warning(check, v.level, v.metric))
    if first.kind == "classification" and int(cfg.evaluation.permutation.n) > 0:
        with stage(f"{scored.split_kind} split: permutation test"):
            reported = cv.cell(key or "", "image", "accuracy")
            cv.permutation = image_permutation_test(
                cfg, dm, scored.test_fold, served_model(cfg, selection, key),
                reported and reported.value)
        if cfg.evaluation.instrument.enabled and scored.split_kind != "patch":
            cv.instrument = instrument_block(cfg, dm, scored.test_fold)
    return cv


def measures_baseline(cfg: DictConfig, dm: SEMDataModule, test_fold: np.ndarray) -> np.ndarray:
    """The measures-only model's out-of-fold outputs, per patch (its image's)."""
    image_ids = dm.patches[IMAGE].to_numpy().astype(str)
    rows = first_rows(image_ids)
    features = dm.row_measures()[rows]
    first = dm.descriptor.targets[0]
    num_classes = len(first.classes) if first.kind == "classification" else None
    per_image = measures_oof(features, dm.y[rows, 0].numpy(), test_fold[rows], first.kind,
                             num_classes, float(cfg.measures.baseline_c))
    index = pd.Series(np.arange(len(rows)), image_ids[rows])[image_ids].to_numpy()
    return per_image[index]


def calibration_block(cfg: DictConfig, scored: Scored, head: Outputs,
                      served_by: str | None) -> Calibration:
    """ECE per patch, image and sample before/after calibration of the primary model's tested
    rows, with intervals that resample the split's units, what is ``served_by`` and the
    conformal prediction sets of the served image probabilities (classification); or the
    conformal intervals (regression); each with its coverage checked fold by fold."""
    c, b = cfg.evaluation.calibration, cfg.evaluation.bootstrap
    t = scored.tested
    y, images, folds = scored.y[t, 0], scored.images[t], scored.test_fold[t]
    first = first_rows(images)
    if scored.target.kind == "classification":
        served = head.served[0][t]
        out = record_of(Calibration, classification_calibration(
            y, head.raw[0][t], head.calibrated[0][t], served, images, scored.samples[t],
            scored.units[t], int(c.bins), int(b.n), int(b.seed), float(b.confidence)))
        out.bootstrap.unit = UNIT_NAMES[scored.unit_column]
        out.sets = record_of(PredictionSetsCheck, conformal_sets(
            y[first].astype(np.int64), served[first], folds[first],
            float(c.conformal_confidence), scored.target.ordered))
        out.served = served_by
        return out
    _, predicted = group_means(head.calibrated[0][t], images)
    return Calibration(conformal=record_of(ConformalCheck, conformal_coverage(
        y[first], predicted, folds[first], float(c.conformal_confidence))))


def served_by(training: FitRecord) -> str | None:
    """What the first target's image probabilities are (None: regression)."""
    first = (training.image_calibrations() or [None])[0]
    return first and first.describe()


def fold_sizes(dm: SEMDataModule, fold: np.ndarray, split_kind: str) -> dict:
    test = fold == "test"
    return {"test_groups": int(dm.patches[GROUP_COLUMNS[split_kind]][test].nunique()),
            "test_images": int(dm.patches[IMAGE][test].nunique()),
            "test_patches": int(test.sum()), "train_patches": int((fold == "train").sum()),
            "val_patches": int((fold == "val").sum())}


def served_model(cfg: DictConfig, selection: Selection | None, primary: str | None,
                 ) -> tuple[str, dict, str] | None:
    """(name, module config, inputs) of the model a block's headline reports (the final model
    of model=auto, else the trained head's config); None without one."""
    if primary == AUTO:
        final = selection.final  # an ensemble has no one module: a proxy stands for it
        return final.point, final.module, final.inputs
    if primary == HEAD:
        model = head_model(cfg)
        return (str(model.name), OmegaConf.to_container(model.module, resolve=True),
                model_inputs(model))
    return None


def image_permutation_test(cfg: DictConfig, dm: SEMDataModule, test_fold: np.ndarray,
                           served: tuple[str, dict, str] | None = None,
                           served_accuracy: float | None = None) -> Permutation:
    """Is the reported model's out-of-fold accuracy above chance? Labels permuted between
    samples, folds kept (images of patch-split folds: skipped). A served scikit-learn model on
    image-mean embeddings is itself refitted per permutation, with its chosen settings; any
    other (a head, a patch-level model: hundreds of refits) is represented by a ridge classifier
    on image-mean embeddings in closed form, and the result names it as that model's proxy."""
    image_ids = dm.patches[IMAGE].to_numpy().astype(str)
    folds_per_image = pd.Series(test_fold).groupby(image_ids, sort=False).nunique()
    if (folds_per_image > 1).any():
        return Permutation(skipped="the patches of one image sit in several folds (patch split)")
    _, x_image = group_means(dm.image_x.numpy(), image_ids)
    rows = first_rows(image_ids)
    p = cfg.evaluation.permutation
    name, module, inputs = served or (None, {}, None)
    refit = (str(module.get("_target_", "")).endswith("linear.LinearModel")
             and inputs == "image_mean" and not dm.extra_inputs)
    make_model = None
    if refit:
        linear = instantiate(module)
        make_model = lambda: linear.image_classifier(int(cfg.seed))  # noqa: E731
    result = record_of(Permutation, permutation_test(
        x_image, dm.y[rows, 0].numpy(), dm.patches[SAMPLE].to_numpy()[rows], test_fold[rows],
        int(p.n), int(p.seed), float(p.alpha), make_model))
    if refit:
        return dataclasses.replace(
            result, model=f"the served model ({name}), refitted per permutation",
            tests_served_model=True)
    return dataclasses.replace(result, tests_served_model=False, proxy_for=name,
                               served_accuracy=served_accuracy)


def instrument_block(cfg: DictConfig, dm: SEMDataModule, test_fold: np.ndarray,
                     ) -> InstrumentCheck:
    """The imaging settings alone on the run's folds (see :mod:`evaluation.instrument`)."""
    image_ids = dm.patches[IMAGE].to_numpy().astype(str)
    rows = first_rows(image_ids)
    by_image = dm.images.set_index(IMAGE).loc[image_ids[rows]]
    p, c = cfg.evaluation.permutation, cfg.evaluation.instrument
    first = dm.descriptor.targets[0]
    result = record_of(InstrumentCheck, instrument_check(
        by_image.reset_index(), dm.y[rows, 0].numpy(), dm.patches[SAMPLE].to_numpy()[rows],
        test_fold[rows], int(p.n), int(p.seed), int(c.depth), float(c.alpha), first.name)
        | {"by_class": settings_by_class(dm.images, dm.images[first.name].map(str_label))})
    if result.warning:
        log.warning(result.warning)
    return result


def split_info(cfg: DictConfig, dm: SEMDataModule, split_kind: str,
               assignment: np.ndarray) -> Split:
    columns = {"image": cfg.data.image_column, "sample": cfg.data.sample_column,
               "slide": cfg.data.slide_column}
    return Split(kind=split_kind, leaky=split_kind == "patch",
                 group_column=columns.get(split_kind), protocol=cfg.protocol.name,
                 folds=len(assignment), fractions=OmegaConf.to_container(cfg.split.fractions),
                 split_seed=int(cfg.protocol.split_seed),
                 note="; ".join(dm.descriptor.notes) or None)


def resolved_yaml(cfg: DictConfig) -> str:
    """The run's config with every interpolation resolved (what sinterlab-predict reads)."""
    plain = cfg.copy()
    with open_dict(plain):
        plain.pop("hydra", None)
    return OmegaConf.to_yaml(plain, resolve=True)


def run_experiment(cfg: DictConfig, run_dir: Path) -> RunMetrics:
    """Train and evaluate one configured experiment into ``run_dir``; returns the metrics."""
    run_dir = Path(run_dir)
    note = claim(run_dir, keep_own=True)
    if note:
        log.warning(note)
    pl.seed_everything(int(cfg.seed), workers=True)
    refuse_ddp(cfg)
    with recorded_stages() as stages, library_threads(cfg.library_threads):
        dm = SEMDataModule(cfg, checks=[lambda targets: check_losses(cfg, targets)])
        with stage("descriptor checks and embeddings"):
            # the configuration is resolved before any work (the physical scale `auto` picks,
            # the model=auto candidates that suit the targets) and written once
            inputs = dm.check_inputs()
            write_text(run_dir / "config.yaml", resolved_yaml(cfg))
            dm.setup("fit", inputs)
        if cfg.measures.enabled:
            with stage("microstructure measures"):
                warnings = dm.measure_images()
            for warning in warnings:
                log.warning(warning)
            dm.warnings += warnings
        try:
            return _train_and_evaluate(cfg, dm, run_dir, stages)
        except RunInterrupted as err:
            err.cached = err.cached or (dm.cache_stats.images, dm.cache_stats.images,
                                        dm.cache.folder)
            raise


def _train_and_evaluate(cfg: DictConfig, dm: SEMDataModule, run_dir: Path,
                        stages: list[StageTiming]) -> RunMetrics:
    split_kind = cfg.split.kind
    main, outputs = evaluate_protocol(cfg, dm, split_kind, run_dir, train_head=True)
    with stage("how much data: variance components"):
        main.variance_components = variance_block(cfg, dm, main, outputs)
    if cfg.evaluation.learning_curve.enabled:
        with stage("how much data: learning curves"):
            main.learning_curve = learning_curves(cfg, dm, main, outputs)
    contrast = None
    if cfg.evaluation.contrast.enabled:
        other = "sample" if split_kind == "patch" else "patch"
        train_head = bool(cfg.evaluation.contrast.train_head)
        unfit = train_head and misfit(cfg, dm.descriptor.targets, head_model(cfg), other)
        if unfit:  # a bag head on the patch split
            log.info("leak contrast: %s %s; the contrast has its baselines only",
                     head_model(cfg).name, unfit)
            train_head = False
        with stage(f"leak contrast ({other} split)"):
            contrast, _ = evaluate_protocol(cfg, dm, other, run_dir, train_head)
    return record_run(cfg, dm, run_dir, main, outputs, contrast, stages)
