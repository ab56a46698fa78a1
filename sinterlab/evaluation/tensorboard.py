"""A finished run in TensorBoard (``make tensorboard``): its figures, its hyper-parameters with
the cross-validated metrics (HParams tab, so a multirun can be sorted there), and its patch
embeddings in the Embedding Projector with patch thumbnails (sprite) and metadata (label,
sample, image, the fold that tests it). Written through the run's configured Lightning
``TensorBoardLogger``, as version ``<version>-run`` beside the heads' training curves.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib.image as mpimg
import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from sinterlab.atomic import writing
from sinterlab.data.descriptor import IMAGE, SAMPLE
from sinterlab.data.patches import PatchSampler
from sinterlab.data.preprocess import preprocess_image
from sinterlab.evaluation.results import RunMetrics

#: the run's DataModule (sinterlab.study.datamodule.SEMDataModule), handed down by the study
#: layer; typed loosely so that this layer never imports the one above it
DataModule = Any

#: config keys shown in the HParams tab (dotted paths into the run's config)
HPARAMS = ("experiment_name", "task", "data.target", "data.classes", "backbone.name",
           "features.runtime", "preprocess.patches.per_image", "preprocess.patches.size",
           "preprocess.equalize.method", "split.kind", "protocol.name", "protocol.folds",
           "protocol.seeds", "model.name", "model.batch_size", "trainer.max_epochs", "seed")


def _tensorboard_logger(cfg: DictConfig):
    for spec in (cfg.get("logger") or {}).values():
        if str(spec.get("_target_", "")).endswith("TensorBoardLogger"):
            return instantiate(spec, version=f"{spec.version}-run")
    return None


def hparams(cfg: DictConfig) -> dict:
    out = {}
    for key in HPARAMS:
        value = OmegaConf.select(cfg, key)
        out[key] = str(OmegaConf.to_container(value) if OmegaConf.is_config(value) else value)
    for key, value in OmegaConf.to_container(cfg.model.get("module", {}), resolve=True).items():
        if not key.startswith("_"):
            out[f"model.module.{key}"] = str(value)
    return out


def hparam_metrics(run: RunMetrics) -> dict[str, float]:
    """The pooled out-of-fold headline metric of every model, the p-value, the ECE."""
    cv = run.cv
    level, metric = cv.verdict.level, cv.verdict.metric
    out = {}
    for model in cv.pooled:
        cell = cv.cell(model, level, metric)
        if cell and cell.value is not None:
            out[f"cv/{model}/{level}_{metric}"] = float(cell.value)
    if cv.permutation and cv.permutation.p_value is not None:
        out["cv/p_value"] = float(cv.permutation.p_value)
    image = run.calibration.image if run.calibration else None
    if image:
        out["calibration/ece_raw"] = float(image.ece_raw)
        out["calibration/ece_calibrated"] = float(image.ece_calibrated)
    return out


def thumbnails(dm: DataModule, rows: np.ndarray, size: int) -> torch.Tensor:
    """(len(rows), 3, size, size) images in [0, 1] of the patches at ``rows``, cut again from
    their micrographs with their recorded boxes, flips and angles."""
    spec = dm.spec.__class__(**(dm.spec.__dict__ | {"output_size": size}))
    sampler = PatchSampler(spec, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    image_of = np.repeat(np.arange(len(dm.entries)), [len(e.params) for e in dm.entries])
    index_in = dm.patches["patch_index"].to_numpy()
    out = torch.zeros(len(rows), 3, size, size)
    for i in np.unique(image_of[rows]):
        picked = np.flatnonzero(image_of[rows] == i)
        micrograph, _ = preprocess_image(dm.refs[i].path, dm.cfg.preprocess, dm.refs[i].scale)
        out[picked] = sampler.cut(micrograph, dm.entries[i].params[index_in[rows[picked]]])
    return out


def log_run(cfg: DictConfig, dm: DataModule, metrics: RunMetrics, figures: dict[str, Path],
            test_fold: np.ndarray, maps: list[Path] = ()) -> Path | None:
    """Write the run's TensorBoard entry (``maps``: a few prediction maps, shown as images
    too); returns its folder (None without a TensorBoard logger)."""
    logger = _tensorboard_logger(cfg)
    if logger is None:
        return None
    with writing(logger.log_dir):  # TensorBoard writes its files as it goes
        _write_run(cfg, dm, metrics, figures, test_fold, maps, logger)
    return Path(logger.log_dir)


def _write_run(cfg: DictConfig, dm: DataModule, metrics: RunMetrics, figures: dict[str, Path],
               test_fold: np.ndarray, maps: list[Path], logger) -> None:
    tb = cfg.evaluation.tensorboard
    writer = logger.experiment
    if tb.figures:
        for name, path in figures.items():
            writer.add_image(f"figures/{name}", mpimg.imread(path)[..., :3], 0,
                             dataformats="HWC")
        for path in maps:
            writer.add_image(f"maps/{Path(path).stem}", mpimg.imread(path)[..., :3], 0,
                             dataformats="HWC")
    if tb.hparams:
        logger.log_hyperparams(hparams(cfg), hparam_metrics(metrics))
    n = min(int(tb.projector_patches), len(dm.x))
    if n > 0:
        rows = np.sort(np.random.default_rng(0).choice(len(dm.x), n, replace=False))
        target = dm.descriptor.targets[0]
        labels = dm.patches[target.name].to_numpy()[rows]
        metadata = [[f"{label} {target.unit}".strip(), sample, Path(image).name,
                     f"test fold {fold}" if fold >= 0 else "not tested"]
                    for label, sample, image, fold in zip(
                        labels, dm.patches[SAMPLE].to_numpy()[rows],
                        dm.patches[IMAGE].to_numpy()[rows], test_fold[rows], strict=True)]
        writer.add_embedding(dm.image_x[rows], metadata=metadata,
                             metadata_header=["label", "sample", "image", "subset"],
                             label_img=thumbnails(dm, rows, int(tb.thumbnail)),
                             tag="patch_embeddings")
    writer.flush()
    logger.finalize("success")
