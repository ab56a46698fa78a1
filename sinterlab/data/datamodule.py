"""``SEMDataModule``: descriptor -> cached patch embeddings -> split -> in-memory batches.

``prepare_data`` validates the descriptor, then asks the embedding cache for every image and
extracts only the missing ones; ``setup`` loads the embeddings and makes the split; the
dataloaders serve whole batches of embeddings and labels from memory.
"""

from __future__ import annotations

import logging

import lightning.pytorch as pl
import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf

from sinterlab.data.descriptor import IMAGE, PATH, SAMPLE, SLIDE, Descriptor, load_descriptor
from sinterlab.data.patches import PARAM_COLUMNS
from sinterlab.data.splits import KINDS, SUBSETS, assign_subsets
from sinterlab.errors import SinterlabError
from sinterlab.features.backbone import Backbone, build_backbone
from sinterlab.features.extract import embed_images
from sinterlab.models.batches import TensorBatches

log = logging.getLogger(__name__)
CROP_COLUMNS = ("crop_top", "crop_bottom", "crop_left", "crop_right")
#: the per-patch column whose values form the groups of each split kind
GROUP_COLUMNS = {"patch": "patch_id", "image": IMAGE, "sample": SAMPLE, "slide": SLIDE}


class SEMDataModule(pl.LightningDataModule):
    def __init__(self, cfg: DictConfig, backbone: Backbone | None = None):
        super().__init__()
        self.cfg = cfg
        self.backbone = backbone
        self.descriptor: Descriptor | None = None
        self.cache_stats: dict = {}
        self.subsets: np.ndarray | None = None
        self.x: torch.Tensor | None = None

    # -- prepare: descriptor, backbone, cache -----------------------------------------------
    def prepare_data(self) -> None:
        if self.descriptor is not None:
            return
        cfg = self.cfg
        self.descriptor = load_descriptor(
            cfg.data.descriptor, OmegaConf.to_container(cfg.data.target)
            if OmegaConf.is_list(cfg.data.target) else cfg.data.target, cfg.task,
            OmegaConf.to_container(cfg.data.classes) if cfg.data.classes is not None else None,
            cfg.data.image_column, cfg.data.sample_column, cfg.data.slide_column,
            OmegaConf.to_container(cfg.data.units))
        if self.backbone is None:
            self.backbone = build_backbone(cfg.backbone)
        embedded = embed_images(self.descriptor.table[PATH], cfg.preprocess, self.backbone,
                                cfg.features, progress=bool(cfg.trainer.enable_progress_bar))
        self.spec, self.cache, self.refs = embedded.spec, embedded.cache, embedded.refs
        self.cache_stats = embedded.stats
        log.info("embeddings: %d images, %d from cache, %d extracted",
                 self.cache_stats["images"], self.cache_stats["from_cache"],
                 self.cache_stats["extracted"])

    # -- setup: embeddings, per-patch table, split -------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self.x is not None:
            return
        self.prepare_data()
        entries = [self.cache.load(ref.sha) for ref in self.refs]
        table = self.descriptor.table
        counts = np.array([len(e.embeddings) for e in entries])
        rows = np.repeat(np.arange(len(table)), counts)
        patches = pd.DataFrame({
            "patch_id": np.arange(len(rows)),
            "patch_index": np.concatenate([np.arange(c) for c in counts]),
            IMAGE: table[IMAGE].to_numpy()[rows], SAMPLE: table[SAMPLE].to_numpy()[rows]})
        if SLIDE in table.columns:
            patches[SLIDE] = table[SLIDE].to_numpy()[rows]
        for t in self.descriptor.targets:
            patches[t.name] = table[t.name].to_numpy()[rows]
        params = np.concatenate([e.params for e in entries])
        crops = np.stack([e.crop for e in entries])
        for j, name in enumerate(PARAM_COLUMNS):
            patches[name] = params[:, j]
        # patch boxes in source pixels: the micrograph starts at the crop's top-left corner
        patches["x0"] += crops[rows, 2]
        patches["y0"] += crops[rows, 0]
        self.images = table[[IMAGE, SAMPLE] + ([SLIDE] if SLIDE in table.columns else [])
                            + [t.name for t in self.descriptor.targets]].copy()
        for j, name in enumerate(CROP_COLUMNS):
            self.images[name] = crops[:, j]
        self.patches = patches
        self.x = torch.from_numpy(np.concatenate([e.embeddings for e in entries]))
        self.y = torch.from_numpy(self.descriptor.target_matrix()[rows]).float()
        self.subsets = self.split(self.cfg.split.kind)

    def split(self, kind: str) -> np.ndarray:
        """Subset name per patch for a split ``kind`` (patch/image/sample/slide)."""
        if kind not in KINDS:
            raise SinterlabError(f"split.kind={kind!r} is unknown; use one of {list(KINDS)}")
        column = GROUP_COLUMNS[kind]
        if column not in self.patches.columns:
            raise SinterlabError(f"{self.descriptor.csv}: split={kind} needs a "
                                 f"'{self.cfg.data.slide_column}' column; add it (or set "
                                 "data.slide_column) or use split=sample")
        s = self.cfg.split
        return assign_subsets(self.y[:, 0].numpy(), self.patches[column].to_numpy(),
                              dict(s.fractions), int(self.cfg.seed), s.folds, int(s.fold),
                              what=kind, min_groups_per_class=int(s.min_groups_per_class))

    def subset_mask(self, subset: str, subsets: np.ndarray | None = None) -> np.ndarray:
        return (self.subsets if subsets is None else subsets) == subset

    # -- dataloaders ------------------------------------------------------------------------
    def loader(self, subset: str, subsets: np.ndarray | None = None,
               shuffle: bool = False) -> TensorBatches:
        mask = torch.from_numpy(self.subset_mask(subset, subsets))
        return TensorBatches(self.x[mask], self.y[mask], int(self.cfg.model.batch_size),
                             shuffle=shuffle, seed=int(self.cfg.seed))

    def train_dataloader(self):
        return self.loader("train", shuffle=True)

    def val_dataloader(self):
        return self.loader("val")

    def test_dataloader(self):
        return self.loader("test")

    # -- records ----------------------------------------------------------------------------
    def image_table(self, subsets: np.ndarray | None = None) -> pd.DataFrame:
        """One row per image with its crop box and subset (images.csv); patch splits have none."""
        subsets = self.subsets if subsets is None else subsets
        images = self.images.copy()
        if self.cfg.split.kind != "patch":
            first = self.patches.groupby(IMAGE, sort=False).head(1).index
            images["subset"] = images[IMAGE].map(
                dict(zip(self.patches[IMAGE][first], subsets[first], strict=True)))
        return images

    def patch_table(self, subsets: np.ndarray | None = None) -> pd.DataFrame:
        patches = self.patches.copy()
        patches["subset"] = self.subsets if subsets is None else subsets
        return patches

    def counts(self, subsets: np.ndarray, unit: str) -> dict:
        """Images (unit='image') or patches per class per subset, for the report."""
        target = self.descriptor.targets[0]
        frame = pd.DataFrame({"subset": subsets, IMAGE: self.patches[IMAGE],
                              "label": self.patches[target.name].astype(str)})
        if unit == "image":
            frame = frame.drop_duplicates([IMAGE, "subset"])
        table = frame.groupby(["subset", "label"]).size()
        return {s: {str(k): int(v) for k, v in table[s].items()} for s in SUBSETS
                if s in table.index.get_level_values(0)}
