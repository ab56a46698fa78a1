"""``SEMDataModule``: descriptor -> cached patch embeddings -> folds -> in-memory batches.

``prepare_data`` validates the descriptor, then asks the embedding cache for every image and
extracts only the missing ones; ``setup`` loads the embeddings and assigns the protocol's folds
(one train/val/test assignment per fold; holdout is one fold); the dataloaders serve batches of
every fold at once (one per ensemble group) from memory.
"""

from __future__ import annotations

import logging
import time

import lightning.pytorch as pl
import numpy as np
import pandas as pd
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from sinterlab.data.descriptor import (
    IMAGE,
    PATH,
    ROW,
    SAMPLE,
    SLIDE,
    Descriptor,
    extra_input_matrix,
    load_descriptor,
    str_label,
)
from sinterlab.data.metadata import image_metadata
from sinterlab.data.patches import PARAM_COLUMNS
from sinterlab.data.splits import KINDS, SUBSETS, assign_subsets, fold_assignments
from sinterlab.errors import SinterlabError
from sinterlab.features.backbone import Backbone
from sinterlab.features.extract import embed_images
from sinterlab.models.batches import GroupBatches, GroupRows

log = logging.getLogger(__name__)
CROP_COLUMNS = ("crop_top", "crop_bottom", "crop_left", "crop_right")
#: the per-patch column whose values form the groups of each split kind
GROUP_COLUMNS = {"patch": "patch_id", "image": IMAGE, "sample": SAMPLE, "slide": SLIDE}


class SEMDataModule(pl.LightningDataModule):
    def __init__(self, cfg: DictConfig, backbone: Backbone | None = None,
                 checks: list | None = None):
        """``checks``: callables given the targets after the descriptor's own checks and
        before extraction (e.g. whether the configured heads suit them)."""
        super().__init__()
        self.cfg = cfg
        self.checks = list(checks or [])
        self.backbone = backbone
        self.descriptor: Descriptor | None = None
        self.cache_stats: dict = {}
        self.assignment: np.ndarray | None = None
        #: the models' input per patch: its image embedding, then ``extra_inputs`` (if any)
        self.x: torch.Tensor | None = None
        #: ``data.extra_inputs``: numeric descriptor columns appended to every patch's embedding
        extra = cfg.data.get("extra_inputs") or []
        self.extra_inputs: list[str] = [extra] if isinstance(extra, str) else list(extra)
        with open_dict(cfg):  # a single name becomes a list in config.yaml too
            cfg.data.extra_inputs = self.extra_inputs
        self.extra: np.ndarray | None = None
        self.warnings: list[str] = []
        self.small_classes: list[str] = []
        self._planned: dict[str, np.ndarray] = {}

    # -- prepare: descriptor, backbone, cache -----------------------------------------------
    def prepare_data(self) -> None:
        if self.descriptor is not None:
            return
        self.load()
        cfg = self.cfg
        if self.backbone is None:
            self.backbone = instantiate(cfg.backbone)
        embedded = embed_images(self.descriptor.table[PATH], cfg.preprocess, self.backbone,
                                cfg.features, progress=bool(cfg.trainer.enable_progress_bar),
                                fix=f"remove its row from {self.descriptor.csv}",
                                pixel_sizes=self.metadata["pixel_size_nm"].tolist())
        self.spec, self.cache, self.refs = embedded.spec, embedded.cache, embedded.refs
        self.entries = embedded.entries
        self.cache_stats = embedded.stats
        self.warnings += embedded.warnings + self.duplicate_images()
        for warning in self.warnings:
            log.warning(warning)
        log.info("embeddings: %d images, %d from cache, %d extracted",
                 self.cache_stats["images"], self.cache_stats["from_cache"],
                 self.cache_stats["extracted"])

    def load(self) -> None:
        """Everything the descriptor and the config decide, before any backbone time: the
        validated descriptor, the caller's checks, every split's folds, the instrument metadata
        and the physical scale."""
        cfg = self.cfg
        self.descriptor = load_descriptor(
            cfg.data.descriptor, OmegaConf.to_container(cfg.data.target)
            if OmegaConf.is_list(cfg.data.target) else cfg.data.target, cfg.task,
            OmegaConf.to_container(cfg.data.classes) if cfg.data.classes is not None else None,
            cfg.data.image_column, cfg.data.sample_column, cfg.data.slide_column,
            OmegaConf.to_container(cfg.data.units),
            order=OmegaConf.to_container(cfg.data.order) if cfg.data.get("order") else None)
        self.warnings += self.descriptor.warnings
        # raw values, one row per image; each fold's models standardise them with their own
        # training rows (never cached: the embedding cache holds the images alone)
        self.extra = extra_input_matrix(self.descriptor.table, self.descriptor.csv,
                                        self.extra_inputs,
                                        [t.name for t in self.descriptor.targets])
        self.warnings += self.check_class_groups()
        for check in self.checks:
            check(self.descriptor.targets)
        self.plan_splits()
        started = time.perf_counter()
        self.metadata = image_metadata(list(self.descriptor.table[PATH]), self.descriptor.table,
                                       self.descriptor.csv)
        log.info("instrument metadata of %d images read in %.1f ms per image",
                 len(self.metadata), 1000 * (time.perf_counter() - started)
                 / max(len(self.metadata), 1))
        self.resolve_scale()

    def resolve_scale(self) -> None:
        """``preprocess.scale.pixel_size_nm``: ``auto`` becomes the coarsest pixel size of the
        data (nothing is upsampled) and ``preprocess.patches.size_um`` a size in pixels, in the
        run's config itself (so config.yaml and predict read the numbers used). An image whose
        pixel size is unknown stops the run here, before the backbone."""
        scale, patches = self.cfg.preprocess.get("scale") or {}, self.cfg.preprocess.patches
        target = scale.get("pixel_size_nm")
        if target is None:
            if patches.get("size_um") is not None:
                raise SinterlabError("preprocess.patches.size_um needs a physical scale: set "
                                     "preprocess.scale.pixel_size_nm=auto (or a number)")
            return
        pixel = pd.to_numeric(self.metadata["pixel_size_nm"], errors="coerce")
        if pixel.isna().any():
            path = self.descriptor.table[PATH][pixel.isna()].iloc[0]
            more = int(pixel.isna().sum()) - 1
            raise SinterlabError(
                f"{path}: pixel size unknown (no instrument metadata in the file or a sidecar)"
                f"{f' ({more} more)' if more else ''}; give a pixel_size_nm column in "
                f"{self.descriptor.csv}, or set preprocess.scale.pixel_size_nm=null")
        if target == "auto":
            target = float(pixel.max())
        elif not isinstance(target, (int, float)) or not np.isfinite(target) or target <= 0:
            raise SinterlabError(f"preprocess.scale.pixel_size_nm={target!r}: use null, auto "
                                 "or a positive number of nanometres per pixel")
        with open_dict(self.cfg):
            self.cfg.preprocess.scale.pixel_size_nm = float(target)
            if patches.get("size_um") is not None:
                self.cfg.preprocess.patches.size = max(
                    1, round(float(patches.size_um) * 1000 / float(target)))
        log.info("physical scale: %.4g nm per pixel, patches of %d px (%.3g µm)", target,
                 int(patches.size), int(patches.size) * float(target) / 1000)

    def class_groups(self) -> pd.DataFrame | None:
        """Per class of the first target: groups of the run's split kind and images (None for
        regression and patch splits, where every class has plenty)."""
        target, kind = self.descriptor.targets[0], self.cfg.split.kind
        column = GROUP_COLUMNS.get(kind)
        table = self.descriptor.table
        if target.kind != "classification" or kind == "patch" or column not in table.columns:
            return None
        labels = table[target.name].map(str_label)
        counts = table.groupby(labels, sort=False).agg(groups=(column, "nunique"),
                                                      images=(IMAGE, "size"))
        return counts.reindex(list(target.classes))

    def check_class_groups(self) -> list[str]:
        """A class with fewer groups than ``split.min_class_groups`` cannot be tested by heads
        that saw it: refused, or with ``split.allow_small_classes`` kept with a warning."""
        counts = self.class_groups()
        need = int(self.cfg.split.min_class_groups)
        if counts is None or (counts["groups"] >= need).all():
            return []
        kind, small = self.cfg.split.kind, counts[counts["groups"] < need]
        listed = ", ".join(f"{c!r} ({n} {kind}{'s' if n != 1 else ''})"
                           for c, n in small["groups"].items())
        what = f"{self.descriptor.csv}: class(es) {listed} of {self.descriptor.targets[0].name!r}"
        if not bool(self.cfg.split.allow_small_classes):
            raise SinterlabError(
                f"{what} have fewer than split.min_class_groups={need} {kind}s, so their images "
                "could only be tested by heads that never saw the class; add samples, leave the "
                "class out (data.classes=[...]) or keep it knowingly with "
                "split.allow_small_classes=true")
        self.small_classes = list(small.index)
        return [f"{what} have fewer than {need} {kind}s: their images are tested by heads "
                "that never saw the class, and they count in every score "
                "(split.allow_small_classes=true)"]

    def duplicate_images(self) -> list[str]:
        """Byte-identical image files filed under different samples or labels: a leak that no
        grouped split can see (the same micrograph may be tested by heads trained on it)."""
        d = self.descriptor
        frame = pd.DataFrame({"sha": [ref.sha for ref in self.refs], IMAGE: d.table[IMAGE],
                              SAMPLE: d.table[SAMPLE],
                              "label": d.table[d.targets[0].name].astype(str)})
        out = []
        for _, same in frame.groupby("sha", sort=False):
            if len(same) > 1 and (same[SAMPLE].nunique() > 1 or same["label"].nunique() > 1):
                out.append(f"{d.csv}: images {same[IMAGE].tolist()} are byte-identical but "
                           f"filed under samples {sorted(set(same[SAMPLE]))} and labels "
                           f"{sorted(set(same['label']))}; a grouped split cannot keep them "
                           "apart (a leak): keep one row")
        return out

    # -- setup: embeddings, per-patch table, split -------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self.x is not None:
            return
        self.prepare_data()
        entries = self.entries
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
        # patch boxes in source pixels: the micrograph was resampled by each image's scale and
        # starts at the crop's top-left corner
        scale = np.array([ref.scale for ref in self.refs])[rows]
        for column in ("x0", "y0", "side"):
            patches[column] = patches[column] / scale
        patches["x0"] += crops[rows, 2]
        patches["y0"] += crops[rows, 0]
        self.images = table[[IMAGE, SAMPLE] + ([SLIDE] if SLIDE in table.columns else [])
                            + [t.name for t in self.descriptor.targets]].copy()
        for j, name in enumerate(CROP_COLUMNS):
            self.images[name] = crops[:, j]
        self.images["scale"] = [ref.scale for ref in self.refs]
        for name in self.metadata.columns:
            self.images[name] = self.metadata[name].to_numpy()
        self.patches = patches
        embeddings = torch.from_numpy(np.concatenate([e.embeddings for e in entries]))
        self.x = torch.cat([embeddings, torch.from_numpy(self.extra[rows]).to(embeddings.dtype)],
                           dim=1)
        self.y = torch.from_numpy(self.descriptor.target_matrix()[rows]).float()
        self.assignment = self.split(self.cfg.split.kind)

    @property
    def image_x(self) -> torch.Tensor:
        """The image embeddings alone, without ``extra_inputs`` (the baselines, the
        permutation test and the PCA figure read the images only)."""
        return self.x[:, :self.x.shape[1] - len(self.extra_inputs)]

    def split(self, kind: str) -> np.ndarray:
        """(folds, patches) subset names for a split ``kind`` (patch/image/sample/slide) under
        the configured protocol: k grouped folds (cv) or one train/val/test split (holdout)."""
        planned = self._planned.get(kind)
        if planned is not None and planned.shape[1] == len(self.patches):
            return planned
        return self._assign(kind, self.y[:, 0].numpy(), self.patches)

    def _assign(self, kind: str, labels: np.ndarray, rows: pd.DataFrame) -> np.ndarray:
        if kind not in KINDS:
            raise SinterlabError(f"split.kind={kind!r} is unknown; use one of {list(KINDS)}")
        column = GROUP_COLUMNS[kind]
        if column not in rows.columns:
            raise SinterlabError(f"{self.descriptor.csv}: split={kind} needs a "
                                 f"'{self.cfg.data.slide_column}' column; add it (or set "
                                 "data.slide_column) or use split=sample")
        s, p = self.cfg.split, self.cfg.protocol
        groups = rows[column].to_numpy()
        common = {"what": kind, "min_groups_per_class": int(s.min_groups_per_class)}
        if p.name == "cv":
            return fold_assignments(labels, groups, dict(s.fractions), int(p.split_seed),
                                    int(p.folds), **common)
        if p.name == "holdout":
            return assign_subsets(labels, groups, dict(s.fractions), int(p.split_seed),
                                  **common)[None]
        raise SinterlabError(f"protocol.name={p.name!r} is unknown; use protocol=cv or "
                             "protocol=holdout")

    def plan_splits(self) -> None:
        """Assign the folds of every split the run evaluates (and model selection's inner
        folds) from the descriptor alone, before any backbone time is spent: an unknown split
        kind, a missing or empty group column, or too few groups for the folds stops the run
        here. Every image gives ``preprocess.patches.per_image`` patches in row order, so these
        are the assignments ``setup`` uses."""
        cfg, table = self.cfg, self.descriptor.table
        kinds = [cfg.split.kind]
        if cfg.evaluation.contrast.enabled:
            kinds.append("sample" if cfg.split.kind == "patch" else "patch")
        if "slide" in kinds and SLIDE in table.columns and (table[SLIDE] == "").any():
            empty = table[ROW][table[SLIDE] == ""].tolist()
            raise SinterlabError(f"{self.descriptor.csv}:{','.join(map(str, empty[:5]))}: empty "
                                 f"'{cfg.data.slide_column}' cell; split=slide needs every "
                                 "image's slide (or use split=sample)")
        rows = np.repeat(np.arange(len(table)), int(cfg.preprocess.patches.per_image))
        frame = table.iloc[rows][[c for c in (IMAGE, SAMPLE, SLIDE) if c in table.columns]]
        frame = frame.reset_index(drop=True).assign(patch_id=np.arange(len(rows)))
        labels = self.descriptor.target_matrix()[rows, 0]
        for kind in kinds:
            self._planned[kind] = self._assign(kind, labels, frame)
        selection = cfg.model.get("selection")
        if selection is not None:
            self._inner(self._planned[kinds[0]], kinds[0], int(selection.inner_folds), labels,
                        frame)

    def inner_folds(self, assignment: np.ndarray, kind: str, folds: int) -> np.ndarray:
        """(outer x inner folds, patches): grouped k-fold inside each outer fold's non-test
        groups, for model selection; the outer fold's test rows are '-' (never seen)."""
        return self._inner(assignment, kind, folds, self.y[:, 0].numpy(), self.patches)

    def _inner(self, assignment: np.ndarray, kind: str, folds: int, labels: np.ndarray,
               rows: pd.DataFrame) -> np.ndarray:
        s, groups = self.cfg.split, rows[GROUP_COLUMNS[kind]].to_numpy()
        out = []
        for outer in assignment:
            inside = outer != "test"
            for inner in fold_assignments(labels[inside], groups[inside], dict(s.fractions),
                                          int(self.cfg.protocol.split_seed), folds, what=kind,
                                          min_groups_per_class=int(s.min_groups_per_class)):
                full = np.full(len(outer), "-", dtype=object)
                full[inside] = inner
                out.append(full.astype(str))
        return np.stack(out)

    @staticmethod
    def rows(assignment: np.ndarray, subset: str) -> list[np.ndarray]:
        """Per fold, the patch rows of ``subset``."""
        return [np.flatnonzero(fold == subset) for fold in assignment]

    @staticmethod
    def test_fold(assignment: np.ndarray) -> np.ndarray:
        """Per patch, the fold that tests it (-1: none, e.g. holdout train rows)."""
        tested = assignment == "test"
        return np.where(tested.any(axis=0), tested.argmax(axis=0), -1)

    # -- dataloaders: one batch of every fold per step ----------------------------------------
    def train_dataloader(self, assignment: np.ndarray | None = None) -> GroupBatches:
        assignment = self.assignment if assignment is None else assignment
        return GroupBatches(self.x, self.y, self.rows(assignment, "train"),
                            int(self.cfg.model.batch_size), seed=int(self.cfg.seed))

    def val_dataloader(self, assignment: np.ndarray | None = None) -> GroupRows:
        assignment = self.assignment if assignment is None else assignment
        return GroupRows(self.x, self.y, self.rows(assignment, "val"))

    def test_dataloader(self, assignment: np.ndarray | None = None) -> GroupRows:
        assignment = self.assignment if assignment is None else assignment
        return GroupRows(self.x, self.y, self.rows(assignment, "test"))

    # -- records ----------------------------------------------------------------------------
    def image_table(self, assignment: np.ndarray | None = None) -> pd.DataFrame:
        """One row per image with its crop box and the fold that tests it (images.csv); under
        holdout also its subset. Patch splits put an image's patches in several folds: none."""
        assignment = self.assignment if assignment is None else assignment
        images = self.images.copy()
        if self.cfg.split.kind != "patch":
            first = self.patches.groupby(IMAGE, sort=False).head(1).index.to_numpy()
            tested = dict(zip(self.patches[IMAGE].to_numpy()[first],
                              self.test_fold(assignment)[first], strict=True))
            images["test_fold"] = images[IMAGE].map(tested)
            if len(assignment) == 1:
                images["subset"] = images[IMAGE].map(dict(zip(
                    self.patches[IMAGE].to_numpy()[first], assignment[0][first], strict=True)))
        return images

    def patch_table(self, assignment: np.ndarray | None = None) -> pd.DataFrame:
        assignment = self.assignment if assignment is None else assignment
        patches = self.patches.copy()
        patches["test_fold"] = self.test_fold(assignment)
        if len(assignment) == 1:
            patches["subset"] = assignment[0]
        return patches

    def counts(self, assignment: np.ndarray, unit: str) -> dict:
        """Images (unit='image') or patches per class per subset of fold 0, for the report."""
        target = self.descriptor.targets[0]
        frame = pd.DataFrame({"subset": assignment[0], IMAGE: self.patches[IMAGE],
                              "order": self.y[:, 0].numpy(),  # class index or value
                              "label": self.patches[target.name].astype(str)})
        if unit == "image":
            frame = frame.drop_duplicates([IMAGE, "subset"])
        table = frame.groupby(["subset", "order", "label"]).size().droplevel("order")
        return {s: {str(k): int(v) for k, v in table[s].items()} for s in SUBSETS
                if s in table.index.get_level_values(0)}
