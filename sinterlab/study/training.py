"""One experiment end to end: embeddings -> folds -> head ensemble and baselines -> out-of-fold
evaluation -> run folder.

Under ``protocol=cv`` every group (sample by default) is tested once, by heads that never saw
it: the folds x seeds heads train together as one ensemble, the baselines are fitted on the
same folds, and every model is scored on its pooled out-of-fold predictions with intervals that
resample samples. ``protocol=holdout`` (the paper's single 80/10/10 split) is the one-fold case of
the same path. ``model=auto`` chooses the head by nested CV (:mod:`sinterlab.study.selection`).

The run folder receives ``metrics.json``, ``report.md``/``report.html``, ``figures/*.png``,
``oof_predictions.csv`` (one row per tested image), ``oof_patches.csv``, ``oof_samples.csv``,
``images.csv``, ``patches.csv``, ``config.yaml``, the ensemble checkpoint and TensorBoard logs.
"""

from __future__ import annotations

import copy
import logging
import time
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pandas as pd
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from sinterlab.atomic import write_json, write_text, write_with
from sinterlab.console import stage
from sinterlab.data.descriptor import IMAGE, SAMPLE, SLIDE, Target, str_label
from sinterlab.evaluation.baselines import baseline_outputs
from sinterlab.evaluation.calibration import (
    classification_calibration,
    conformal_coverage,
    conformal_sets,
)
from sinterlab.evaluation.crossval import (
    LevelTables,
    bootstrap_intervals,
    fold_statistics,
    per_fold_metrics,
    permutation_test,
    sample_table,
    verdict,
)
from sinterlab.evaluation.figures import (
    plot_confusion,
    plot_expected_by_level,
    plot_loss_curves,
    plot_measures,
    plot_overlay,
    plot_parity,
    plot_pca,
    plot_reliability,
    plot_roc,
)
from sinterlab.evaluation.instrument import instrument_check, settings_by_class
from sinterlab.evaluation.metrics import (
    aggregate_by_group,
    evaluate_levels,
    evaluate_targets,
    expected_value,
    first_rows,
)
from sinterlab.evaluation.report import write_html_report, write_markdown_report
from sinterlab.evaluation.tensorboard import log_run
from sinterlab.explain.gallery import write_gallery
from sinterlab.measures.compute import image_measures, one_image
from sinterlab.measures.trends import measure_columns, measures_oof, summarise
from sinterlab.runs import RunInterrupted, claim
from sinterlab.study.datamodule import GROUP_COLUMNS, SEMDataModule
from sinterlab.study.extraction import refuse_ddp
from sinterlab.study.fit import check_losses, fit_models, head_oof, image_calibrations, model_oof
from sinterlab.study.selection import select_model

log = logging.getLogger(__name__)
HEAD, AUTO, MEASURES = "head", "auto", "measures"
#: with data.extra_inputs, the run's model trained again on the image embeddings alone
IMAGE_ONLY = "image_only"


def baselines_oof(cfg: DictConfig, dm: SEMDataModule, assignment: np.ndarray,
                  ) -> tuple[dict[str, np.ndarray], dict]:
    """The baselines of ``evaluation.baselines`` per fold, fitted on the fold's training and
    validation rows; each fold starts from the previous fold's solution."""
    first = dm.descriptor.targets[0]
    num_classes = len(first.classes) if first.kind == "classification" else None
    shape = (len(dm.x), num_classes) if num_classes else (len(dm.x),)
    e = cfg.evaluation
    factories = {str(name): instantiate(spec) for name, spec in e.baselines.items()}
    out = {name: np.full(shape, np.nan) for name in factories}
    info, estimators = {}, None
    x, y = dm.image_x.numpy(), dm.y[:, 0].numpy()  # image-only, even with data.extra_inputs
    started = time.perf_counter()
    for fold in assignment:
        fit, test = np.flatnonzero(fold != "test"), np.flatnonzero(fold == "test")
        outputs, info = baseline_outputs(first.kind, x[fit], y[fit], x[test], factories,
                                         int(cfg.seed), num_classes, estimators)
        estimators = info.pop("estimators")
        for name in factories:
            out[name][test] = outputs[name]
    return out, info | {"C": float(e.baseline_C),
                        "wall_s": round(time.perf_counter() - started, 2)}


def image_only_oof(cfg: DictConfig, dm: SEMDataModule, assignment: np.ndarray, run_dir: Path,
                   kind: str, model: DictConfig) -> np.ndarray:
    """The run's model trained on the same folds without ``data.extra_inputs`` (the image
    embeddings alone): its out-of-fold outputs of the first target, scored beside the model with
    extra inputs (pooled metrics with paired intervals, per fold)."""
    image_only = copy.copy(dm)
    image_only.x, image_only.extra_inputs = dm.image_x, []
    [(fitted, _)] = fit_models(cfg, image_only, assignment, run_dir, [f"{kind}-{IMAGE_ONLY}"],
                               [model])
    return model_oof(fitted, image_only, assignment)[0]


# -- evaluation of one split kind ---------------------------------------------------------------
def bootstrap_unit(kind: str) -> str:
    """Slides when the split is by slide; otherwise samples (images of a sample are not
    independent, so image and patch splits are resampled by sample too)."""
    return SLIDE if kind == "slide" else SAMPLE


def evaluate_protocol(cfg: DictConfig, dm: SEMDataModule, kind: str, run_dir: Path,
                      train_head: bool) -> dict:
    """Head (optional) and baselines on the folds of split ``kind``: the block of metrics.json."""
    assignment = dm.assignment if kind == cfg.split.kind else dm.split(kind)
    test_fold = dm.test_fold(assignment)
    tested = test_fold >= 0
    first = dm.descriptor.targets[0]
    y = dm.y.numpy()
    ids = {level: dm.patches[column].to_numpy().astype(str)
           for level, column in (("image", IMAGE), ("sample", SAMPLE))}
    unit_column = bootstrap_unit(kind)
    units = dm.patches[unit_column].to_numpy().astype(str)
    with stage(f"{kind} split: baselines"):
        outputs, pca = baselines_oof(cfg, dm, assignment)
        baselines = tuple(outputs)
        if getattr(dm, "measures", None) is not None and kind != "patch":
            outputs[MEASURES] = measures_baseline(cfg, dm, test_fold)
            baselines = (*baselines, MEASURES)
    block: dict = {"split": split_info(cfg, dm, kind, assignment),
                   "baseline_info": pca | {"fitted_on": "each fold's train + validation rows"}}
    head_outputs, head_raw, head_served, primary = None, None, None, None
    if train_head and cfg.model.name == "auto" and kind == cfg.split.kind:
        primary = AUTO
        with stage(f"{kind} split: model selection (nested CV)"):
            block["selection"], nested, block["training"], candidates = \
                select_model(cfg, dm, assignment, kind, run_dir)
        head_outputs, head_raw, head_served = nested
        outputs = {AUTO: head_outputs[0]} | candidates | outputs
    elif train_head:
        primary = HEAD
        # under model=auto the other split's head is the first candidate
        model = (next(iter(cfg.model.candidates.values())) if cfg.model.name == AUTO
                 else cfg.model)
        with stage(f"{kind} split: head training"):
            [(head, block["training"])] = fit_models(cfg, dm, assignment, run_dir, [kind],
                                                     [model])
        head_outputs = model_oof(head, dm, assignment)
        head_raw = model_oof(head, dm, assignment, calibrated=False)
        head_served = (head_oof(head, dm, assignment,
                                images=image_calibrations(block["training"]))
                       if block["training"].get("image_calibration") else head_outputs)
        outputs = {HEAD: head_outputs[0]} | outputs
        if dm.extra_inputs and kind == cfg.split.kind:
            with stage(f"{kind} split: image-only {model.name} (same folds)"):
                outputs = {HEAD: outputs[HEAD],
                           IMAGE_ONLY: image_only_oof(cfg, dm, assignment, run_dir, kind,
                                                      model)} | outputs
    if head_outputs is not None:
        targets = [t.as_dict() for t in dm.descriptor.targets]
        block["test"] = evaluate_targets(targets, y[tested],
                                         [o[tested] for o in head_outputs],
                                         ids["image"][tested], ids["sample"][tested])
        block["calibration"] = calibration_block(
            cfg, first, y[tested, 0], head_raw[0][tested], head_outputs[0][tested],
            head_served[0][tested], ids["image"][tested], ids["sample"][tested], units[tested],
            test_fold[tested], kind, served_by(block["training"]))
    values = np.asarray(first.values) if first.ordered else None  # errors in the units
    block["baseline"] = {name: evaluate_levels(first.kind, y[tested, 0], outputs[name][tested],
                                               ids["image"][tested], ids["sample"][tested],
                                               values)
                         for name in baselines}
    tables = {name: LevelTables(first.kind, y[tested, 0], out[tested], ids["image"][tested],
                                ids["sample"][tested], units[tested], values)
              for name, out in outputs.items()}
    b = cfg.evaluation.bootstrap
    with stage(f"{kind} split: bootstrap intervals"):
        pooled = bootstrap_intervals(tables, int(b.n), int(b.seed), float(b.confidence),
                                     reference=primary)
    per_fold = {name: per_fold_metrics(first.kind, y[:, 0], out, ids["image"], ids["sample"],
                                       test_fold, values) for name, out in outputs.items()}
    block["cv"] = {
        "protocol": cfg.protocol.name, "folds": len(assignment), "primary": primary,
        "head_model": (block.get("training") or {}).get("model"),
        "seeds": [int(s) for s in cfg.protocol.seeds], "split_seed": int(cfg.protocol.split_seed),
        "target": first.name,
        "per_fold": [{"fold": f, **fold_sizes(dm, assignment[f], kind),
                      **{name: per_fold[name][f] for name in outputs}}
                     for f in range(len(assignment))],
        "fold_statistics": {name: fold_statistics(per_fold[name], first.kind, first.ordered)
                            for name in outputs},
        "pooled": pooled,
        "bootstrap": {"n": int(b.n), "unit": {SLIDE: "slide", SAMPLE: "sample"}[unit_column],
                      "confidence": float(b.confidence),
                      "seed": int(b.seed),
                      "units": int(len(np.unique(units[tested])))},
        "verdict": verdict(pooled, first.kind, cfg.evaluation.headline_level, primary,
                           baselines),
    }
    if first.kind == "classification" and int(cfg.evaluation.permutation.n) > 0:
        with stage(f"{kind} split: permutation test"):
            block["cv"]["permutation"] = image_permutation_test(cfg, dm, test_fold)
        if cfg.evaluation.instrument.enabled and kind != "patch":
            block["cv"]["instrument"] = instrument_block(cfg, dm, test_fold)
    block["outputs"] = {"head": head_outputs, "head_raw": head_raw if head_outputs else None,
                        "head_served": head_served, "models": outputs, "test_fold": test_fold}
    return block


def measures_baseline(cfg: DictConfig, dm: SEMDataModule, test_fold: np.ndarray) -> np.ndarray:
    """The measures-only model's out-of-fold outputs, per patch (its image's)."""
    image_ids = dm.patches[IMAGE].to_numpy().astype(str)
    rows = first_rows(image_ids)
    position = pd.Series(np.arange(len(dm.descriptor.table)), dm.descriptor.table[IMAGE])
    features = dm.measures[measure_columns(dm.measures)].to_numpy(float)[
        position[image_ids[rows]].to_numpy()]
    first = dm.descriptor.targets[0]
    num_classes = len(first.classes) if first.kind == "classification" else None
    per_image = measures_oof(features, dm.y[rows, 0].numpy(), test_fold[rows], first.kind,
                             num_classes, float(cfg.measures.baseline_c))
    index = pd.Series(np.arange(len(rows)), image_ids[rows])[image_ids].to_numpy()
    return per_image[index]


def calibration_block(cfg: DictConfig, target: Target, y: np.ndarray, raw: np.ndarray,
                      calibrated: np.ndarray, served: np.ndarray, images: np.ndarray,
                      samples: np.ndarray, units: np.ndarray, folds: np.ndarray, split: str,
                      served_by: str | None) -> dict:
    """ECE per patch, image and sample before/after calibration, with intervals that resample
    ``units`` of ``split``, what is ``served_by`` and the conformal prediction sets of the
    served image probabilities (classification); or the conformal intervals (regression); each
    with its coverage checked fold by fold, on the tested rows' out-of-fold outputs."""
    c, b = cfg.evaluation.calibration, cfg.evaluation.bootstrap
    first = first_rows(images)
    if target.kind == "classification":
        out = classification_calibration(y, raw, calibrated, served, images, samples, units,
                                         int(c.bins), int(b.n), int(b.seed), float(b.confidence))
        out["bootstrap"]["unit"] = {SLIDE: "slide", SAMPLE: "sample"}[bootstrap_unit(split)]
        out["sets"] = conformal_sets(y[first].astype(np.int64), served[first], folds[first],
                                     float(c.conformal_confidence), target.ordered)
        return out | {"served": served_by}
    _, predicted = aggregate_by_group(calibrated, images)
    return {"conformal": conformal_coverage(y[first], predicted, folds[first],
                                            float(c.conformal_confidence))}


def served_by(training: dict) -> str | None:
    """What the first target's image probabilities are (None: regression)."""
    first = (image_calibrations(training) or [None])[0]
    return first and first.describe()


def fold_sizes(dm: SEMDataModule, fold: np.ndarray, kind: str) -> dict:
    test = fold == "test"
    return {"test_groups": int(dm.patches[GROUP_COLUMNS[kind]][test].nunique()),
            "test_images": int(dm.patches[IMAGE][test].nunique()),
            "test_patches": int(test.sum()), "train_patches": int((fold == "train").sum()),
            "val_patches": int((fold == "val").sum())}


def image_permutation_test(cfg: DictConfig, dm: SEMDataModule, test_fold: np.ndarray) -> dict:
    """The permutation test on image-mean embeddings (images of patch-split folds: skipped)."""
    image_ids = dm.patches[IMAGE].to_numpy().astype(str)
    folds_per_image = pd.Series(test_fold).groupby(image_ids, sort=False).nunique()
    if (folds_per_image > 1).any():
        return {"skipped": "the patches of one image sit in several folds (patch split)"}
    _, x_image = aggregate_by_group(dm.image_x.numpy(), image_ids)
    rows = first_rows(image_ids)
    p = cfg.evaluation.permutation
    return permutation_test(x_image, dm.y[rows, 0].numpy(), dm.patches[SAMPLE].to_numpy()[rows],
                            test_fold[rows], int(p.n), int(p.seed), float(p.alpha))


def instrument_block(cfg: DictConfig, dm: SEMDataModule, test_fold: np.ndarray) -> dict:
    """The imaging settings alone on the run's folds (see :mod:`evaluation.instrument`)."""
    image_ids = dm.patches[IMAGE].to_numpy().astype(str)
    rows = first_rows(image_ids)
    by_image = dm.images.set_index(IMAGE).loc[image_ids[rows]]
    p, c = cfg.evaluation.permutation, cfg.evaluation.instrument
    result = instrument_check(by_image.reset_index(), dm.y[rows, 0].numpy(),
                              dm.patches[SAMPLE].to_numpy()[rows], test_fold[rows], int(p.n),
                              int(p.seed), int(c.depth), float(c.alpha),
                              dm.descriptor.targets[0].name)
    first = dm.descriptor.targets[0]
    result["by_class"] = settings_by_class(dm.images, dm.images[first.name].map(str_label))
    if "warning" in result:
        log.warning(result["warning"])
    return result


def split_info(cfg: DictConfig, dm: SEMDataModule, kind: str, assignment: np.ndarray) -> dict:
    columns = {"image": cfg.data.image_column, "sample": cfg.data.sample_column,
               "slide": cfg.data.slide_column}
    return {"kind": kind, "leaky": kind == "patch", "group_column": columns.get(kind),
            "protocol": cfg.protocol.name, "folds": len(assignment),
            "fractions": OmegaConf.to_container(cfg.split.fractions),
            "split_seed": int(cfg.protocol.split_seed),
            "note": "; ".join(dm.descriptor.notes) or None}


# -- records -------------------------------------------------------------------------------------
def oof_tables(dm: SEMDataModule, block: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Out-of-fold predictions of the head (or, without one, the linear probe) per image and
    per patch: truth, fold, predicted value and class probabilities (per image: the served,
    image-calibrated ones; per patch: temperature-scaled)."""
    outputs, test_fold = block["outputs"], block["outputs"]["test_fold"]
    head = outputs["head"] or [outputs["models"]["linear_probe"]]
    tested = test_fold >= 0
    patches = dm.patches.loc[tested, ["patch_id", IMAGE, SAMPLE]].copy()
    patches["fold"] = test_fold[tested]
    patches["model"] = block["cv"]["primary"] or "linear_probe"
    for target, output in zip(dm.descriptor.targets, head, strict=False):
        out = output[tested]
        patches[f"{target.name}_true"] = dm.patches.loc[tested, target.name].to_numpy()
        if target.kind == "classification":
            classes = np.asarray(target.classes)
            patches[f"{target.name}_predicted"] = classes[out.argmax(axis=1)]
            for c, name in enumerate(target.classes):
                patches[f"{target.name}_p_{name}"] = out[:, c].round(5)
        else:
            patches[f"{target.name}_predicted"] = out.round(4)
    values = [c for c in patches.columns if "_p_" in c] + [
        f"{t.name}_predicted" for t in dm.descriptor.targets if t.kind == "regression"]
    images = patches.groupby(IMAGE, sort=False).agg(
        {SAMPLE: "first", "fold": "first", "model": "first", "patch_id": "size",
         **{f"{t.name}_true": "first" for t in dm.descriptor.targets},
         **dict.fromkeys(values, "mean")}).rename(columns={"patch_id": "patches"}).reset_index()
    image_ids = dm.patches[IMAGE].to_numpy()[tested]
    for target, output in zip(dm.descriptor.targets, outputs.get("head_served") or [],
                              strict=False):
        if target.kind == "classification":  # per image: what predict serves
            probs = aggregate_by_group(output[tested], image_ids)[1]
            for c, name in enumerate(target.classes):
                images[f"{target.name}_p_{name}"] = probs[:, c].round(5)
    for target in dm.descriptor.targets:
        if target.kind == "classification":
            probs = images[[f"{target.name}_p_{c}" for c in target.classes]].to_numpy()
            images[f"{target.name}_predicted"] = np.asarray(target.classes)[probs.argmax(axis=1)]
            images[f"{target.name}_confidence"] = probs.max(axis=1).round(4)
    return images, patches


def make_figures(dm: SEMDataModule, block: dict, fig_dir: Path,
                 skipped: dict[str, str]) -> dict[str, Path]:
    """Figures of the pooled out-of-fold predictions (every tested patch and image); a figure
    that fails is left out with its reason in ``skipped``, never costing the run."""
    figures: dict[str, Path] = {}

    def add(name: str, draw) -> None:
        path = optional_stage(f"figure {name}", draw, skipped)
        if path is not None:
            figures[name] = path

    if (block.get("training") or {}).get("history"):
        add("loss", lambda: plot_loss_curves(block["training"]["history"], fig_dir / "loss.png"))
    if "patch" in (block.get("calibration") or {}):
        add("reliability", lambda: plot_reliability(block["calibration"],
                                                    fig_dir / "reliability.png"))
    test_fold = block["outputs"]["test_fold"]
    tested = test_fold >= 0
    image_ids = dm.patches[IMAGE].to_numpy().astype(str)[tested]
    head = block["outputs"]["head"] or [block["outputs"]["models"]["linear_probe"]]
    y = dm.y.numpy()[tested]
    for i, (target, output) in enumerate(zip(dm.descriptor.targets, head, strict=False)):
        suffix = "" if len(dm.descriptor.targets) == 1 else f"_{target.name}"
        out = output[tested]
        if target.kind == "classification":
            truth = y[:, i].astype(int)
            _, image_out = aggregate_by_group(out, image_ids)
            _, image_truth = aggregate_by_group(truth.astype(float), image_ids)
            image_truth = image_truth.astype(int)
            names = target.class_names
            add(f"roc{suffix}", lambda t=image_truth, o=image_out, n=names, s=suffix: plot_roc(
                t, o, n, fig_dir / f"roc{s}.png"))
            add(f"confusion_images{suffix}", lambda t=image_truth, o=image_out, n=names,
                s=suffix, r=target.ordered: plot_confusion(
                    t, o.argmax(axis=1), n, fig_dir / f"confusion_images{s}.png", ordered=r))
            add(f"confusion_patches{suffix}", lambda t=truth, o=out, n=names, s=suffix,
                r=target.ordered: plot_confusion(t, o.argmax(axis=1), n,
                                                 fig_dir / f"confusion_patches{s}.png",
                                                 ordered=r))
            if target.ordered:
                add(f"expected_by_level{suffix}", lambda t=image_truth, o=image_out, tg=target,
                    s=suffix: plot_expected_by_level(
                        t, expected_value(o, np.asarray(tg.values)), tg.values,
                        tg.class_names, tg.error_unit, fig_dir / f"expected_by_level{s}.png"))
        else:
            _, image_out = aggregate_by_group(out, image_ids)
            _, image_truth = aggregate_by_group(y[:, i], image_ids)
            add(f"parity{suffix}", lambda t=image_truth, o=image_out, tg=target, s=suffix:
                plot_parity(t, o, tg.name, tg.unit, fig_dir / f"parity{s}.png"))
    first = dm.descriptor.targets[0]
    if first.kind == "classification":
        labels, names = dm.y[:, 0].numpy().astype(int), first.class_names
    else:
        values = dm.patches[first.name].to_numpy()
        names = [f"{v:g} {first.unit}".strip() for v in np.unique(values)]
        labels = np.searchsorted(np.unique(values), values)
    add("pca", lambda: plot_pca(dm.image_x.numpy(), labels, names, fig_dir / "pca.png"))
    return figures


def measure_figures(cfg: DictConfig, dm: SEMDataModule, record: dict, fig_dir: Path,
                    skipped: dict[str, str]) -> dict[str, Path]:
    """The measures against the parameter, and a few segmentation overlays."""
    first = dm.descriptor.targets[0]
    out = {}
    path = optional_stage("figure measures", lambda: plot_measures(
        record, first.name, first.unit, fig_dir / "measures.png"), skipped)
    if path:
        out["measures"] = path
    target = (cfg.preprocess.get("scale") or {}).get("pixel_size_nm")
    for i, ref in enumerate(dm.refs[:int(cfg.measures.overlays)]):
        own = dm.metadata["pixel_size_nm"].iloc[i]
        pixel = target if target is not None else (None if pd.isna(own) else float(own))

        def draw(ref=ref, pixel=pixel, i=i):
            _, micrograph, pores = one_image(ref.path, cfg.preprocess, cfg.measures,
                                             ref.scale, pixel)
            return plot_overlay(micrograph, pores, Path(ref.path).name,
                                fig_dir / f"segmentation_{i}.png", pixel)
        path = optional_stage(f"figure segmentation_{i}", draw, skipped)
        if path:
            out[f"segmentation_{i}"] = path
    return out


def optional_stage(name: str, compute, skipped: dict[str, str]):
    """Run an optional product of a finished run (a figure, the gallery, TensorBoard, the
    HTML report): a failure is logged and recorded in ``skipped`` (metrics.json and the
    report say so), and the run goes on. Ctrl-C still stops it."""
    try:
        return compute()
    except Exception as err:  # any failure of an optional product: recorded, not raised
        reason = f"{type(err).__name__}: {' '.join(str(err).split())[:300]}"
        log.warning("%s skipped: %s", name, reason, exc_info=True)
        skipped[name] = reason
        return None


def resolved_yaml(cfg: DictConfig) -> str:
    """The run's config with every interpolation resolved (what sinterlab-predict reads)."""
    plain = cfg.copy()
    with open_dict(plain):
        plain.pop("hydra", None)
    return OmegaConf.to_yaml(plain, resolve=True)


def run_experiment(cfg: DictConfig, run_dir: Path) -> dict:
    """Train and evaluate one configured experiment into ``run_dir``; returns the metrics."""
    run_dir = Path(run_dir)
    note = claim(run_dir, keep_own=True)
    if note:
        log.warning(note)
    pl.seed_everything(int(cfg.seed), workers=True)
    write_text(run_dir / "config.yaml", resolved_yaml(cfg))
    refuse_ddp(cfg)
    dm = SEMDataModule(cfg, checks=[lambda targets: check_losses(cfg, targets)])
    with stage("descriptor checks and embeddings"):
        dm.setup("fit")
    write_text(run_dir / "config.yaml", resolved_yaml(cfg))  # with the scale resolved
    dm.measures = None
    if cfg.measures.enabled:
        with stage("microstructure measures"):
            dm.measures, warnings = image_measures(
                dm.refs, dm.metadata["pixel_size_nm"].tolist(), cfg.preprocess, cfg.measures)
        for warning in warnings:
            log.warning(warning)
        dm.warnings += warnings
    try:
        return _train_and_evaluate(cfg, dm, run_dir)
    except RunInterrupted as err:
        err.cached = err.cached or (dm.cache_stats["images"], dm.cache_stats["images"],
                                    dm.cache.folder)
        raise


def _train_and_evaluate(cfg: DictConfig, dm: SEMDataModule, run_dir: Path) -> dict:
    kind = cfg.split.kind
    main = evaluate_protocol(cfg, dm, kind, run_dir, train_head=True)
    contrast = None
    if cfg.evaluation.contrast.enabled:
        other = "sample" if kind == "patch" else "patch"
        with stage(f"leak contrast ({other} split)"):
            contrast = evaluate_protocol(cfg, dm, other, run_dir,
                                         bool(cfg.evaluation.contrast.train_head))
        contrast.pop("outputs")
    images, patches = oof_tables(dm, main)
    first = dm.descriptor.targets[0]
    outputs = main["outputs"]
    samples = sample_table(first.as_dict(), dm.y[:, 0].numpy(), (outputs["head"] or [
        outputs["models"]["linear_probe"]])[0], dm.patches[IMAGE].to_numpy().astype(str),
        dm.patches[SAMPLE].to_numpy().astype(str), outputs["test_fold"])
    tables = [("oof_predictions", images), ("oof_patches", patches), ("oof_samples", samples),
              ("images", dm.image_table()), ("patches", dm.patch_table())]
    measures = None
    if dm.measures is not None:
        p = cfg.evaluation.permutation
        frame, measures = summarise(dm.measures, dm.descriptor.table, first, int(p.n),
                                    int(p.seed), float(cfg.evaluation.bootstrap.confidence))
        tables.append(("measures", frame))
    for name, frame in tables:
        write_with(run_dir / f"{name}.csv", lambda p, f=frame: f.to_csv(p, index=False))
    skipped: dict[str, str] = {}
    with stage("figures"):
        figures = make_figures(dm, main, run_dir / "figures", skipped)
        if measures:
            figures |= measure_figures(cfg, dm, measures, run_dir / "figures", skipped)
    test_fold = main.pop("outputs")["test_fold"]
    metrics = {
        "experiment": cfg.experiment_name, "task": cfg.task, "seed": int(cfg.seed),
        "protocol": OmegaConf.to_container(cfg.protocol, resolve=True),
        "targets": [t.as_dict() for t in dm.descriptor.targets],
        "split": main["split"], "backbone": dm.backbone.describe(),
        "preprocess": dm.cache.settings,  # exactly what keyed the embeddings
        "data": {"descriptor": str(dm.descriptor.csv), "n_images": len(dm.descriptor.table),
                 "n_samples": int(dm.descriptor.table[SAMPLE].nunique()),
                 "n_patches": int(len(dm.x)), "counts": dm.counts(dm.assignment, "image"),
                 "patch_counts": dm.counts(dm.assignment, "patch"),
                 "sample_id_note": "; ".join(dm.descriptor.notes) or None,
                 "warnings": dm.warnings, "small_classes": dm.small_classes,
                 "class_groups": class_groups_record(dm)},
        "inputs": inputs_record(dm, main["cv"]),
        "cache": dict(dm.cache_stats) | {"folder": str(dm.cache.folder)},
        "training": main["training"], "test": main["test"], "baseline": main["baseline"],
        "baseline_info": main["baseline_info"], "cv": main["cv"],
        "calibration": main.get("calibration"),
        "selection": main.get("selection"),
        "samples": samples.to_dict(orient="records"),
        "contrast": contrast,
        "paper": OmegaConf.to_container(cfg.evaluation.paper) if cfg.evaluation.paper else None,
        "skipped": skipped,
        "measures": measures,
    }
    # the results first: a failure of an optional product below never costs them
    write_json(run_dir / "metrics.json", metrics)
    write_markdown_report(run_dir, metrics, figures)
    if cfg.evaluation.gallery.enabled and dm.extra_inputs:
        skipped["gallery"] = (f"maps read the image alone; the head also reads "
                              f"data.extra_inputs={dm.extra_inputs}")
    elif cfg.evaluation.gallery.enabled and main["cv"]["primary"] and kind != "patch":
        with stage("gallery"):
            metrics["gallery"] = optional_stage(
                "gallery", lambda: write_gallery(cfg, dm, metrics, images, run_dir), skipped)
    with stage("TensorBoard"):
        board = optional_stage("tensorboard", lambda: log_run(
            cfg, dm, metrics, figures, test_fold,
            [run_dir / r["map"] for r in (metrics.get("gallery") or [])[:4]]), skipped)
    metrics["tensorboard"] = str(board) if board else None
    write_markdown_report(run_dir, metrics, figures)
    optional_stage("report.html", lambda: write_html_report(run_dir, metrics), skipped)
    write_json(run_dir / "metrics.json", metrics)
    if skipped:  # the report names what was left out
        write_markdown_report(run_dir, metrics, figures)
    return metrics


def inputs_record(dm: SEMDataModule, cv: dict) -> dict:
    """What the models read: the image embedding and ``data.extra_inputs`` (metrics.json)."""
    if not dm.extra_inputs:
        return {"extra": [], "note": "image embedding only"}
    compared = IMAGE_ONLY in cv["pooled"]
    return {"extra": list(dm.extra_inputs), "image_only_compared": compared,
            "note": "each standardised per fold with its training rows only (heads: inside the "
                    "module; scikit-learn: its scaler); baselines image-only; "
                    + ("image_only: the same model without them on the same folds" if compared
                       else "model=auto: compare with a sweep data.extra_inputs=[],[...]")}


def class_groups_record(dm: SEMDataModule) -> dict | None:
    """Groups and images per class of the run's split (for the report's count table)."""
    counts = dm.class_groups()
    return None if counts is None else {
        str(c): {"groups": int(r.groups), "images": int(r.images)}
        for c, r in counts.iterrows()}
