"""Filling the caches ahead of training (``sinterlab-extract``): one deterministic shard of a
descriptor's images, embedded (and measured) with exactly the settings a training run with the
same config uses, so that run then finds every image cached."""

from __future__ import annotations

import logging

import numpy as np
from hydra.utils import instantiate
from omegaconf import DictConfig

from sinterlab.console import stage
from sinterlab.data.descriptor import PATH
from sinterlab.data.metadata import PIXEL_SIZE
from sinterlab.errors import SinterlabError
from sinterlab.features.extract import embed_images
from sinterlab.measures.compute import image_measures
from sinterlab.study.datamodule import SEMDataModule
from sinterlab.study.fit import check_losses

log = logging.getLogger(__name__)


def shard_rows(count: int, shard: int, shards: int) -> np.ndarray:
    """The descriptor rows of ``shard``: every ``shards``-th row from row ``shard``."""
    return np.flatnonzero(np.arange(count) % int(shards) == int(shard))


def refuse_ddp(cfg: DictConfig) -> None:
    """Lightning's DDP re-executes the whole command in every rank, so a run would claim its
    folder, fit baselines and write reports once per rank: not supported; say what scales."""
    if "ddp" in str(cfg.features.strategy):
        raise SinterlabError(
            f"features.strategy={cfg.features.strategy} is not supported (every rank would run "
            "the whole command); spread extraction over GPUs or machines with sharded jobs: "
            "sinterlab-extract -m shard=0,1,2,3 shards=4 (hydra/launcher=slurm or "
            "submitit_local), then train")
    if "ddp" in str(cfg.trainer.get("strategy", "auto")):
        raise SinterlabError(
            f"trainer.strategy={cfg.trainer.strategy} is not supported: the stacked heads train "
            "in milliseconds per step on one device; run folds, seeds or experiments as "
            "separate jobs of a multirun instead (-m ... hydra/launcher=slurm)")


def extract_shard(cfg: DictConfig) -> dict:
    """Embed (and measure) the images of ``cfg.shard`` of ``cfg.shards``; the cache counts."""
    refuse_ddp(cfg)
    dm = SEMDataModule(cfg, checks=[lambda targets: check_losses(cfg, targets)])
    with stage("descriptor checks"):
        inputs = dm.check_inputs()
    descriptor = inputs.descriptor
    rows = shard_rows(len(descriptor.table), cfg.shard, cfg.shards)
    paths = descriptor.table[PATH].to_numpy()[rows]
    pixel_sizes = inputs.metadata[PIXEL_SIZE].to_numpy()[rows].tolist()
    with stage(f"embeddings of shard {cfg.shard} of {cfg.shards} ({len(rows)} images)"):
        embedded = embed_images(list(paths), cfg.preprocess, instantiate(cfg.backbone),
                                cfg.features, progress=bool(cfg.trainer.enable_progress_bar),
                                fix=f"remove its row from {descriptor.csv}",
                                pixel_sizes=pixel_sizes, fill_only=True)
    if cfg.measures.enabled:
        with stage("microstructure measures"):
            image_measures(embedded.refs, pixel_sizes, cfg.preprocess, cfg.measures)
    return dict(embedded.stats) | {"folder": str(embedded.cache.folder)}
