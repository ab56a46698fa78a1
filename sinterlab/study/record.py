"""The run record: what a finished protocol evaluation leaves in the run folder.

From the evaluated blocks of :mod:`sinterlab.study.training` it writes ``metrics.json``,
``manifest.json`` (what sinterlab-predict serves), ``report.md``/``report.html``,
``figures/*.png``, ``oof_predictions.csv`` (one row per tested image), ``oof_patches.csv``,
``oof_samples.csv``, ``images.csv``, ``patches.csv`` (and ``measures.csv``), the gallery and
TensorBoard logs. Optional products that fail are recorded as skipped, never costing the run.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from sinterlab.atomic import write_json, write_text, write_with
from sinterlab.console import StageTiming, stage
from sinterlab.data.descriptor import IMAGE, SAMPLE
from sinterlab.data.groups import group_means
from sinterlab.data.metadata import PIXEL_SIZE
from sinterlab.errors import WriteFailed
from sinterlab.evaluation.figures import (
    plot_confusion,
    plot_expected_by_level,
    plot_learning_curves,
    plot_loss_curves,
    plot_measures,
    plot_overlay,
    plot_parity,
    plot_pca,
    plot_reliability,
    plot_roc,
    plot_variance_components,
)
from sinterlab.evaluation.metrics import expected_value
from sinterlab.evaluation.report import report_markdown, write_html_report
from sinterlab.evaluation.results import (
    Backbone,
    ClassGroups,
    CrossValidation,
    Data,
    GalleryEntry,
    Inputs,
    LearningCurves,
    MeasuresSummary,
    ProtocolBlock,
    RunMetrics,
    StageTime,
    jsonable,
    record_of,
)
from sinterlab.evaluation.statistics import sample_table
from sinterlab.evaluation.tensorboard import log_run
from sinterlab.explain.gallery import write_gallery
from sinterlab.manifest import MANIFEST, PixelSizes, RunManifest
from sinterlab.measures.compute import one_image
from sinterlab.measures.trends import summarise
from sinterlab.models.calibration import calibration_path
from sinterlab.study.datamodule import SEMDataModule
from sinterlab.study.fit import Outputs

log = logging.getLogger(__name__)
#: with data.extra_inputs, the run's model trained again on the image embeddings alone
IMAGE_ONLY = "image_only"
#: columns of the out-of-fold tables (oof_predictions.csv, oof_patches.csv) beside the
#: descriptor's: the fold that tested the row, and the model that predicted it
FOLD, MODEL = "fold", "model"
#: the optional product (and its entry in ``skipped``) of the report's gallery of maps
GALLERY = "gallery"


@dataclass
class ProtocolOutputs:
    """The out-of-fold outputs (one row per patch) a :class:`ProtocolBlock` was computed from:
    its primary model's (the trained head, or model=auto's nested choice; calibrated, raw and
    served, one array per target), every model's of the first target, and each row's test fold
    (-1: never tested)."""

    primary: Outputs | None
    models: dict[str, np.ndarray]
    test_fold: np.ndarray

    def reported(self, block: ProtocolBlock) -> list[np.ndarray]:
        """The outputs of the model the block reports: the primary model's, one array per
        target, or else the fallback baseline's (first target only)."""
        return self.primary.calibrated if self.primary else [self.models[block.reported]]


def oof_tables(dm: SEMDataModule, block: ProtocolBlock, outputs: ProtocolOutputs,
               ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Out-of-fold predictions of the head (or, without one, the linear probe) per image and
    per patch: truth, fold, predicted value and class probabilities (per image: the served,
    image-calibrated ones; per patch: temperature-scaled)."""
    test_fold = outputs.test_fold
    head = outputs.reported(block)
    tested = test_fold >= 0
    patches = dm.patches.loc[tested, ["patch_id", IMAGE, SAMPLE]].copy()
    patches[FOLD] = test_fold[tested]
    patches[MODEL] = block.reported
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
        {SAMPLE: "first", FOLD: "first", MODEL: "first", "patch_id": "size",
         **{f"{t.name}_true": "first" for t in dm.descriptor.targets},
         **dict.fromkeys(values, "mean")}).rename(columns={"patch_id": "patches"}).reset_index()
    image_ids = dm.patches[IMAGE].to_numpy()[tested]
    served = outputs.primary.served if outputs.primary else []
    for target, output in zip(dm.descriptor.targets, served, strict=False):
        if target.kind == "classification":  # per image: what predict serves
            probs = group_means(output[tested], image_ids)[1]
            for c, name in enumerate(target.classes):
                images[f"{target.name}_p_{name}"] = probs[:, c].round(5)
    for target in dm.descriptor.targets:
        if target.kind == "classification":
            probs = images[[f"{target.name}_p_{c}" for c in target.classes]].to_numpy()
            images[f"{target.name}_predicted"] = np.asarray(target.classes)[probs.argmax(axis=1)]
            images[f"{target.name}_confidence"] = probs.max(axis=1).round(4)
    return images, patches


def make_figures(dm: SEMDataModule, block: ProtocolBlock, outputs: ProtocolOutputs,
                 fig_dir: Path, skipped: dict[str, str]) -> dict[str, Path]:
    """Figures of the pooled out-of-fold predictions (every tested patch and image); a figure
    that fails is left out with its reason in ``skipped``, never costing the run."""
    figures: dict[str, Path] = {}

    def add(name: str, draw) -> None:
        path = optional_stage(f"figure {name}", draw, skipped)
        if path is not None:
            figures[name] = path

    if block.training and block.training.history:
        add("loss", lambda: plot_loss_curves(block.training.history, fig_dir / "loss.png"))
    if block.calibration and block.calibration.patch:
        add("reliability", lambda: plot_reliability(block.calibration,
                                                    fig_dir / "reliability.png"))
    tested = outputs.test_fold >= 0
    image_ids = dm.patches[IMAGE].to_numpy().astype(str)[tested]
    head = outputs.reported(block)
    y = dm.y.numpy()[tested]
    for i, (target, output) in enumerate(zip(dm.descriptor.targets, head, strict=False)):
        suffix = "" if len(dm.descriptor.targets) == 1 else f"_{target.name}"
        out = output[tested]
        if target.kind == "classification":
            truth = y[:, i].astype(int)
            _, image_out = group_means(out, image_ids)
            _, image_truth = group_means(truth.astype(float), image_ids)
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
            _, image_out = group_means(out, image_ids)
            _, image_truth = group_means(y[:, i], image_ids)
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


def measure_figures(cfg: DictConfig, dm: SEMDataModule, record: MeasuresSummary, fig_dir: Path,
                    skipped: dict[str, str]) -> dict[str, Path]:
    """The measures against the parameter, and a few segmentation overlays."""
    first = dm.descriptor.targets[0]
    path = optional_stage("figure measures", lambda: plot_measures(
        record, first.name, first.unit, fig_dir / "measures.png"), skipped)
    out = {"measures": path} if path else {}
    target = cfg.preprocess.scale.pixel_size_nm
    for i, ref in enumerate(dm.refs[:int(cfg.measures.overlays)]):
        own = dm.metadata[PIXEL_SIZE].iloc[i]
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


def data_size_figures(dm: SEMDataModule, block: ProtocolBlock, run_dir: Path,
                      skipped: dict[str, str]) -> None:
    """The learning curves and the variance components ("How much data"); each block records
    its figure's path relative to the run folder."""
    first = dm.descriptor.targets[0]
    chance = 1 / len(first.classes) if first.kind == "classification" else None
    curves, variance = block.learning_curve, block.variance_components
    for name, record, draw in (
            ("learning_curve", curves, lambda path: plot_learning_curves(
                curves, path, first.error_unit if first.ordered else first.unit, chance)),
            ("variance_components", variance, lambda path: plot_variance_components(
                variance, path))):
        if record is None or isinstance(record, LearningCurves) and record.skipped:
            continue
        path = optional_stage(f"figure {name}", lambda d=draw, n=name: d(
            run_dir / "figures" / f"{n}.png"), skipped)
        record.figure = path and str(path.relative_to(run_dir))


def optional_stage(name: str, compute, skipped: dict[str, str]):
    """Run an optional product of a finished run (a figure, the gallery, TensorBoard, the
    HTML report): a failure is logged and recorded in ``skipped`` (metrics.json and the
    report say so), and the run goes on. Ctrl-C still stops it."""
    try:
        return compute()
    except Exception as err:  # any failure of an optional product: recorded, not raised
        reason = str(err) if isinstance(err, WriteFailed) else \
            f"{type(err).__name__}: {' '.join(str(err).split())[:300]}"
        log.warning("%s skipped: %s", name, reason, exc_info=True)
        skipped[name] = reason
        return None


def served_files(run_dir: Path, manifest: RunManifest) -> dict[str, str]:
    """{path relative to the run folder: what it holds} of every file predict reads: the
    manifest records their sha256, and predict refuses a run folder where one is missing or
    changed."""
    files = {"config.yaml": "the run's configuration (the preprocessing, backbone and "
                            "features its model was trained on)"}
    if not manifest.checkpoint:
        return files
    for member in manifest.members:
        whose = "the served model" if not manifest.blend else \
            f"the served ensemble's member {member.model}"
        files[member.checkpoint] = f"{whose}'s checkpoint"
        calibration = calibration_path(run_dir / member.checkpoint)
        if calibration.is_file():
            files[str(calibration.relative_to(run_dir))] = f"the image calibration of {whose}"
    return files


def pixel_sizes(dm: SEMDataModule, cfg: DictConfig) -> PixelSizes | None:
    """The range of the training images' recorded pixel sizes (None when none is known), for
    predict to name a new image measured at another scale."""
    known = pd.to_numeric(dm.metadata[PIXEL_SIZE], errors="coerce").dropna()
    if known.empty:
        return None
    target = cfg.preprocess.scale.pixel_size_nm
    return PixelSizes(float(known.min()), float(known.max()),
                      float(target) if target is not None else None)


def record_run(cfg: DictConfig, dm: SEMDataModule, run_dir: Path, main: ProtocolBlock,
               outputs: ProtocolOutputs, contrast: ProtocolBlock | None,
               stages: list[StageTiming]) -> RunMetrics:
    """Write the run folder from the evaluated protocol (``main`` and its ``outputs``) and the
    leak contrast: tables, figures, gallery, TensorBoard, then metrics.json, manifest.json and
    the reports, each file once; returns the run's metrics. ``stages``: the run's stage timings
    so far (the list grows with the stages below)."""
    images, patches = oof_tables(dm, main, outputs)
    first = dm.descriptor.targets[0]
    samples = sample_table(first, dm.y[:, 0].numpy(), outputs.reported(main)[0],
                           dm.patches[IMAGE].to_numpy().astype(str),
                           dm.patches[SAMPLE].to_numpy().astype(str), outputs.test_fold)
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
    measures = measures and record_of(MeasuresSummary, measures)
    with stage("figures"):
        figures = make_figures(dm, main, outputs, run_dir / "figures", skipped)
        if measures:
            figures |= measure_figures(cfg, dm, measures, run_dir / "figures", skipped)
        data_size_figures(dm, main, run_dir, skipped)
    run = RunMetrics(
        **{f.name: getattr(main, f.name) for f in dataclasses.fields(ProtocolBlock)},
        experiment=cfg.experiment_name, task=cfg.task, seed=int(cfg.seed),
        protocol=OmegaConf.to_container(cfg.protocol, resolve=True),
        targets=list(dm.descriptor.targets),
        backbone=record_of(Backbone, dm.backbone.describe() | {
            "embedding_dim": dm.representation.width(dm.backbone),
            "representation": dm.representation.describe(dm.backbone)}),
        preprocess=dm.cache.settings,  # exactly what keyed the embeddings
        data=Data(descriptor=str(dm.descriptor.csv), n_images=len(dm.descriptor.table),
                  n_samples=int(dm.descriptor.table[SAMPLE].nunique()),
                  n_patches=int(len(dm.x)), counts=dm.counts(dm.assignment, "image"),
                  patch_counts=dm.counts(dm.assignment, "patch"),
                  sample_id_note="; ".join(dm.descriptor.notes) or None,
                  warnings=list(dm.warnings), small_classes=list(dm.small_classes),
                  class_groups=class_groups_record(dm)),
        inputs=inputs_record(dm, main.cv),
        cache=dm.cache_stats,
        samples=record_of(list[dict[str, Any]], samples.to_dict(orient="records")),
        contrast=contrast,
        paper=OmegaConf.to_container(cfg.evaluation.paper) if cfg.evaluation.paper else None,
        skipped=skipped, measures=measures)
    if cfg.evaluation.gallery.enabled and dm.extra_inputs:
        skipped[GALLERY] = (f"maps read the image alone; the head also reads "
                              f"data.extra_inputs={dm.extra_inputs}")
    elif cfg.evaluation.gallery.enabled and main.cv.primary and cfg.split.kind != "patch":
        with stage("gallery"):
            gallery = optional_stage(GALLERY, lambda: write_gallery(
                cfg, dm, main, images, run_dir), skipped)
        run.gallery = gallery and record_of(list[GalleryEntry], gallery)
    with stage("TensorBoard"):
        board = optional_stage("tensorboard", lambda: log_run(
            cfg, dm, run, figures, outputs.test_fold,
            [run_dir / r.map for r in (run.gallery or [])[:4]]), skipped)
    run.tensorboard = str(board) if board else None
    run.stages = record_of(list[StageTime], [dataclasses.asdict(s) for s in stages])
    text = report_markdown(run, figures, run_dir)
    if optional_stage("report.html", lambda: write_html_report(run_dir, text, run.experiment),
                      skipped) is None:  # the Markdown report names what was left out
        text = report_markdown(run, figures, run_dir)
    metrics = jsonable(run)
    write_json(run_dir / "metrics.json", metrics)
    manifest = replace(RunManifest.from_metrics(metrics, run_dir / "metrics.json"),
                       pixel_size_nm=pixel_sizes(dm, cfg))
    manifest.with_files(run_dir, served_files(run_dir, manifest)).write(
        run_dir / MANIFEST)
    write_text(run_dir / "report.md", text)
    return run


def inputs_record(dm: SEMDataModule, cv: CrossValidation) -> Inputs:
    """What the models read: the image embedding and ``data.extra_inputs`` (metrics.json)."""
    if not dm.extra_inputs:
        return Inputs(extra=[], note="image embedding only")
    compared = IMAGE_ONLY in cv.pooled
    return Inputs(extra=list(dm.extra_inputs), image_only_compared=compared,
                  note="each standardised per fold with its training rows only (heads: inside "
                       "the module; scikit-learn: its scaler); baselines image-only; "
                       + ("image_only: the same model without them on the same folds"
                          if compared
                          else "model=auto: compare with a sweep data.extra_inputs=[],[...]"))


def class_groups_record(dm: SEMDataModule) -> dict[str, ClassGroups] | None:
    """Groups and images per class of the run's split (for the report's count table)."""
    counts = dm.class_groups()
    return None if counts is None else {
        str(c): ClassGroups(groups=int(r.groups), images=int(r.images))
        for c, r in counts.iterrows()}
