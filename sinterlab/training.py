"""One experiment end to end: embeddings -> split -> MLP head -> evaluation -> run folder.

The run folder receives ``metrics.json``, ``report.md``/``report.html``, ``figures/*.png``,
``images.csv`` (crop box and subset per image), ``patches.csv`` (the patch descriptor),
``config.yaml`` (resolved), the best Lightning checkpoint and the TensorBoard logs.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
from hydra.utils import instantiate
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from omegaconf import DictConfig, OmegaConf, open_dict

from sinterlab.atomic import write_json, write_text, write_with
from sinterlab.data.datamodule import SEMDataModule
from sinterlab.data.descriptor import IMAGE, SAMPLE
from sinterlab.evaluation.baselines import run_baselines
from sinterlab.evaluation.figures import (
    plot_confusion,
    plot_loss_curves,
    plot_parity,
    plot_pca,
    plot_roc,
)
from sinterlab.evaluation.metrics import evaluate_targets
from sinterlab.evaluation.report import write_report
from sinterlab.models.head import ProcessParameterHead

log = logging.getLogger(__name__)
PAPER_PROTOCOL = {"max_epochs": 1000, "batch_size": 32, "lr": 1e-3,
                  "check_val_every_n_epoch": 10}


def head_targets(dm: SEMDataModule, subsets: np.ndarray, cfg: DictConfig) -> list[dict]:
    """Target specs for the head: classes, train-set mean/std, loss and class weights."""
    train = dm.subset_mask("train", subsets)
    weights = OmegaConf.to_container(cfg.model.loss_weights) or {}
    specs = []
    for i, target in enumerate(dm.descriptor.targets):
        spec = target.as_dict() | {"loss_weight": float(weights.get(target.name, 1.0))}
        column = dm.y[train, i].numpy()
        if target.kind == "classification":
            spec["num_classes"] = len(target.classes)
            if cfg.model.class_weights == "balanced":
                counts = np.bincount(column.astype(int), minlength=len(target.classes))
                spec["class_weights"] = (len(column) / (len(counts) * np.maximum(counts, 1))
                                         ).tolist()
        else:
            spec["mean"] = float(column.mean())
            spec["std"] = float(column.std()) or 1.0
        specs.append(spec)
    return specs


def fit_head(cfg: DictConfig, dm: SEMDataModule, subsets: np.ndarray, run_dir: Path,
             tag: str) -> tuple[ProcessParameterHead, dict]:
    """Train a head on ``subsets``; the best checkpoint by validation loss is the one returned."""
    # seeded here, not only at start: extraction (cache misses) consumes random numbers, and a
    # run must not depend on whether its embeddings came from the cache
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    targets = head_targets(dm, subsets, cfg)
    m = cfg.model
    head = ProcessParameterHead(dm.x.shape[1], targets, list(m.hidden), m.dropout, m.batch_norm,
                                m.optimizer, m.lr, m.weight_decay,
                                OmegaConf.to_container(m.scheduler), cfg.trainer.max_epochs)
    c = cfg.callbacks
    checkpoint = ModelCheckpoint(dirpath=run_dir / "checkpoints", filename=f"{tag}-best",
                                 monitor=c.checkpoint.monitor, mode=c.checkpoint.mode,
                                 save_top_k=1, save_last=c.checkpoint.save_last)
    callbacks = [checkpoint]
    if c.early_stopping.enabled:
        callbacks.append(EarlyStopping(monitor=c.early_stopping.monitor,
                                       mode=c.early_stopping.mode,
                                       patience=c.early_stopping.patience))
    loggers = [instantiate(spec, version=f"{spec.version}-{tag}")
               for spec in (cfg.logger or {}).values()]
    trainer: pl.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    started = time.perf_counter()
    trainer.fit(head, dm.loader("train", subsets, shuffle=True), dm.loader("val", subsets))
    wall = time.perf_counter() - started
    best = checkpoint.best_model_path or None
    trainer.test(head, dm.loader("test", subsets), ckpt_path=best, verbose=False)
    val_rows = [r for r in head.history if "val_loss" in r]
    best_row = min(val_rows, key=lambda r: r["val_loss"]) if val_rows else None
    info = {"max_epochs": int(cfg.trainer.max_epochs), "epochs_run": trainer.current_epoch,
            "best_epoch": best_row["epoch"] if best_row else None,
            "best_val_loss": best_row["val_loss"] if best_row else None,
            "checkpoint": str(Path(best).relative_to(run_dir)) if best else None,
            "wall_s": round(wall, 2), "s_per_epoch": round(wall / max(trainer.current_epoch, 1), 4),
            "protocol": protocol_name(cfg), "history": head.history}
    return head, info


def protocol_name(cfg: DictConfig) -> str:
    used = {"max_epochs": cfg.trainer.max_epochs, "batch_size": cfg.model.batch_size,
            "lr": cfg.model.lr, "check_val_every_n_epoch": cfg.trainer.check_val_every_n_epoch}
    if used == PAPER_PROTOCOL:
        return "paper protocol (1000 epochs, batch 32, lr 1e-3, validation every 10 epochs)"
    changed = ", ".join(f"{k}={v}" for k, v in used.items() if PAPER_PROTOCOL[k] != v)
    return f"reduced/changed protocol ({changed}); not the paper's"


def evaluate_split(cfg: DictConfig, dm: SEMDataModule, subsets: np.ndarray, run_dir: Path,
                   tag: str, train_head: bool) -> dict:
    """Head (optional) and baselines on one split; returns the metrics block of that split."""
    test = dm.subset_mask("test", subsets)
    train = dm.subset_mask("train", subsets)
    image_ids = dm.patches[IMAGE].to_numpy()[test]
    sample_ids = dm.patches[SAMPLE].to_numpy()[test]
    y_test = dm.y[test].numpy()
    block: dict = {"split": split_info(cfg, dm, tag)}
    first = dm.descriptor.targets[0]
    block["baseline"] = run_baselines(
        first.kind, dm.x[train].numpy(), dm.y[train, 0].numpy(), dm.x[test].numpy(),
        y_test[:, 0], image_ids, sample_ids, int(cfg.evaluation.pca_components),
        int(cfg.evaluation.baseline_max_iter), int(cfg.seed))
    if train_head:
        head, info = fit_head(cfg, dm, subsets, run_dir, tag)
        outputs = head.predict_outputs(dm.x[test])
        block["test"] = evaluate_targets(head.targets, y_test, outputs, image_ids, sample_ids)
        block["training"] = info
        block["outputs"] = outputs  # for figures; not written to metrics.json
    return block


def split_info(cfg: DictConfig, dm: SEMDataModule, kind: str) -> dict:
    s = cfg.split
    note = "; ".join(dm.descriptor.notes) or None
    columns = {"image": cfg.data.image_column, "sample": cfg.data.sample_column,
               "slide": cfg.data.slide_column}
    return {"kind": kind, "leaky": kind == "patch", "group_column": columns.get(kind),
            "fractions": OmegaConf.to_container(s.fractions), "fold": s.fold if s.folds else None,
            "folds": s.folds, "seed": int(cfg.seed), "note": note}


def make_figures(dm: SEMDataModule, block: dict, fig_dir: Path) -> dict[str, Path]:
    test = dm.subset_mask("test", dm.subsets)
    y_test = dm.y[test].numpy()
    figures = {"loss": plot_loss_curves(block["training"]["history"], fig_dir / "loss.png")}
    for i, (target, output) in enumerate(zip(dm.descriptor.targets, block["outputs"], strict=True)):
        suffix = "" if len(dm.descriptor.targets) == 1 else f"_{target.name}"
        if target.kind == "classification":
            truth = y_test[:, i].astype(int)
            figures[f"roc{suffix}"] = plot_roc(truth, output, target.class_names,
                                               fig_dir / f"roc{suffix}.png")
            figures[f"confusion{suffix}"] = plot_confusion(
                truth, output.argmax(axis=1), target.class_names,
                fig_dir / f"confusion{suffix}.png")
        else:
            figures[f"parity{suffix}"] = plot_parity(y_test[:, i], output, target.name,
                                                     target.unit, fig_dir / f"parity{suffix}.png")
    first = dm.descriptor.targets[0]
    if first.kind == "classification":
        labels, names = dm.y[:, 0].numpy().astype(int), first.class_names
    else:
        values = dm.patches[first.name].to_numpy()
        names = [f"{v:g} {first.unit}".strip() for v in np.unique(values)]
        labels = np.searchsorted(np.unique(values), values)
    figures["pca"] = plot_pca(dm.x.numpy(), labels, names, fig_dir / "pca.png")
    return figures


def resolved_yaml(cfg: DictConfig) -> str:
    """The run's config with every interpolation resolved (what sinterlab-predict reads)."""
    plain = cfg.copy()
    with open_dict(plain):
        plain.pop("hydra", None)
    return OmegaConf.to_yaml(plain, resolve=True)


def run_experiment(cfg: DictConfig, run_dir: Path) -> dict:
    """Train and evaluate one configured experiment into ``run_dir``; returns the metrics."""
    run_dir = Path(run_dir)
    pl.seed_everything(int(cfg.seed), workers=True)
    write_text(run_dir / "config.yaml", resolved_yaml(cfg))
    dm = SEMDataModule(cfg)
    dm.setup("fit")
    kind = cfg.split.kind
    main = evaluate_split(cfg, dm, dm.subsets, run_dir, kind, train_head=True)
    contrast = None
    if cfg.evaluation.contrast.enabled:
        other = "sample" if kind == "patch" else "patch"
        other_subsets = dm.split(other)
        contrast = evaluate_split(cfg, dm, other_subsets, run_dir, other,
                                  bool(cfg.evaluation.contrast.train_head))
        contrast.pop("outputs", None)
    write_with(run_dir / "images.csv", lambda p: dm.image_table().to_csv(p, index=False))
    write_with(run_dir / "patches.csv", lambda p: dm.patch_table().to_csv(p, index=False))
    figures = make_figures(dm, main, run_dir / "figures")
    main.pop("outputs")
    metrics = {
        "experiment": cfg.experiment_name, "task": cfg.task, "seed": int(cfg.seed),
        "targets": [t.as_dict() for t in dm.descriptor.targets],
        "split": main["split"], "backbone": dm.backbone.describe(),
        "preprocess": dm.cache.settings,  # exactly what keyed the embeddings
        "data": {"descriptor": str(dm.descriptor.csv), "n_images": len(dm.descriptor.table),
                 "n_samples": int(dm.descriptor.table[SAMPLE].nunique()),
                 "n_patches": int(len(dm.x)), "counts": dm.counts(dm.subsets, "image"),
                 "patch_counts": dm.counts(dm.subsets, "patch"),
                 "sample_id_note": "; ".join(dm.descriptor.notes) or None},
        "cache": {k: v for k, v in dm.cache_stats.items()} | {"folder": str(dm.cache.folder)},
        "training": main["training"], "test": main["test"], "baseline": main["baseline"],
        "contrast": contrast,
        "paper": OmegaConf.to_container(cfg.evaluation.paper) if cfg.evaluation.paper else None,
    }
    write_json(run_dir / "metrics.json", metrics)
    write_report(run_dir, metrics, figures)
    return metrics
