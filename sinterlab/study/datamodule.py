"""``SEMDataModule``: descriptor -> cached patch embeddings -> folds -> in-memory batches.

``prepare_data`` (one process per node) checks the descriptor and the config (targets, splits,
physical scale) before any backbone time, then fills the on-disk embedding cache: it extracts
only the images the cache lacks, and keeps nothing on the module. ``setup`` (every process)
checks them again, reads the embeddings from the cache (extracting what is still missing, when
it runs alone) and assigns all state: descriptor, per-patch table and inputs, and the split's
folds (one train/val/test assignment per fold; holdout is one fold).

One module serves many assignments (the run's folds, the leak contrast's, model selection's
inner folds, the final refit on every group): :meth:`SEMDataModule.folds` gives the view of one,
a :class:`FoldsDataModule` that ``Trainer.fit`` takes as its datamodule; its loaders serve a
batch of every fold at once (one per ensemble group) from memory.
"""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass

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
from sinterlab.data.metadata import PIXEL_SIZE, check_pixel_sizes, image_metadata
from sinterlab.data.patches import PARAM_COLUMNS, SIDE, X0, Y0
from sinterlab.data.splits import KINDS, SUBSETS, assign_subsets, fold_assignments
from sinterlab.errors import SinterlabError
from sinterlab.evaluation.results import Cache, record_of
from sinterlab.features.backbone import Backbone
from sinterlab.features.extract import Embedded, ImageRef, embed_images
from sinterlab.features.representation import FINAL, Representation
from sinterlab.measures.compute import image_measures
from sinterlab.measures.trends import measure_columns
from sinterlab.models.batches import GroupBatches, GroupRows
from sinterlab.study.model_config import model_selection

log = logging.getLogger(__name__)
CROP_COLUMNS = ("crop_top", "crop_bottom", "crop_left", "crop_right")
#: the per-patch column whose values form the groups of each split kind
GROUP_COLUMNS = {"patch": "patch_id", "image": IMAGE, "sample": SAMPLE, "slide": SLIDE}
#: columns of the run's image and patch tables (images.csv, patches.csv) beside the
#: descriptor's: each image's resampling factor, the fold that tests a row, its holdout subset
SCALE, TEST_FOLD, SUBSET = "scale", "test_fold", "subset"
#: per class: groups of the run's split kind, and images (:func:`class_groups`)
GROUPS, IMAGES = "groups", "images"
#: a row's label as text (the first target's)
LABEL = "label"


@dataclass
class CheckedInputs:
    """What the descriptor and the config decide, before any backbone time."""

    descriptor: Descriptor
    #: ``data.extra_inputs``: raw values, one row per image (never cached: each fold's models
    #: standardise them with their own training rows)
    extra: np.ndarray
    #: instrument metadata, one row per image
    metadata: pd.DataFrame
    #: per split kind the run evaluates, its (folds, patches) assignment
    splits: dict[str, np.ndarray]
    #: classes kept with fewer groups than ``split.min_class_groups``
    small_classes: list[str]
    warnings: list[str]


class SEMDataModule(pl.LightningDataModule):
    """A study's patch embeddings, per-patch table and folds; :meth:`folds` gives the
    datamodule of one assignment."""

    def __init__(self, cfg: DictConfig, backbone: Backbone | None = None,
                 checks: list | None = None):
        """``checks``: callables given the targets after the descriptor's own checks and
        before extraction (e.g. whether the configured heads suit them)."""
        super().__init__()
        self.cfg = cfg
        self.checks = list(checks or [])
        self.backbone = backbone
        self.descriptor: Descriptor | None = None
        #: how the embeddings got there (None until set up)
        self.cache_stats: Cache | None = None
        #: what each patch's embedding is made of (``features.representation``), once set up
        self.representation: Representation = FINAL
        self.assignment: np.ndarray | None = None
        #: the models' input per patch: its image embedding, then ``extra_inputs`` (if any)
        self.x: torch.Tensor | None = None
        #: ``data.extra_inputs``: numeric descriptor columns appended to every patch's embedding
        extra = cfg.data.extra_inputs or []
        self.extra_inputs: list[str] = [extra] if isinstance(extra, str) else list(extra)
        with open_dict(cfg):  # a single name becomes a list in config.yaml too
            cfg.data.extra_inputs = self.extra_inputs
        #: the images' microstructure measures, one row per descriptor row (None: not computed)
        self.measures: pd.DataFrame | None = None
        self._row_measures: tuple[int, np.ndarray] | None = None
        self.warnings: list[str] = []
        self.small_classes: list[str] = []
        #: per split kind the run evaluates, its folds as planned from the descriptor
        self.planned: dict[str, np.ndarray] = {}

    # -- prepare: checks, then the on-disk cache ----------------------------------------------
    def prepare_data(self) -> None:
        """Check the inputs and fill the embedding cache. Under several processes only one per
        node runs this, so it assigns no state (``setup`` checks and reads everything again);
        the backbone it builds is kept only to spare ``setup`` building the same again."""
        inputs = self.check_inputs()
        embedded = self.embed(inputs, fill_only=True)
        for warning in embedded.warnings:  # images read to extract, once
            log.warning(warning)
        stats = cache_record(embedded)
        log.info("embedding cache: %d images, %d cached already, %d extracted",
                 stats.images, stats.from_cache, stats.extracted)

    def check_inputs(self) -> CheckedInputs:
        """Everything the descriptor and the config decide, before any backbone time: the
        validated descriptor, the caller's checks, every split's folds, the instrument metadata
        and the physical scale (written into the config)."""
        cfg = self.cfg
        descriptor = load_descriptor(
            cfg.data.descriptor, OmegaConf.to_container(cfg.data.target)
            if OmegaConf.is_list(cfg.data.target) else cfg.data.target, cfg.task,
            OmegaConf.to_container(cfg.data.classes) if cfg.data.classes is not None else None,
            cfg.data.image_column, cfg.data.sample_column, cfg.data.slide_column,
            OmegaConf.to_container(cfg.data.units),
            order=OmegaConf.to_container(cfg.data.order) if cfg.data.order else None)
        extra = extra_input_matrix(descriptor.table, descriptor.csv, self.extra_inputs,
                                   [t.name for t in descriptor.targets])
        small_classes, warnings = check_class_groups(cfg, descriptor)
        for check in self.checks:
            check(descriptor.targets)
        splits = plan_splits(cfg, descriptor)
        started = time.perf_counter()
        metadata = image_metadata(list(descriptor.table[PATH]), descriptor.table, descriptor.csv)
        log.info("instrument metadata of %d images read in %.1f ms per image",
                 len(metadata), 1000 * (time.perf_counter() - started) / max(len(metadata), 1))
        warnings += resolve_scale(cfg, descriptor, metadata)
        return CheckedInputs(descriptor, extra, metadata, splits, small_classes,
                             descriptor.warnings + warnings)

    def configured_backbone(self) -> Backbone:
        """The backbone given, or the configured one (built once for prepare_data and setup)."""
        if self.backbone is None:
            self.backbone = instantiate(self.cfg.backbone)
        return self.backbone

    def embed(self, inputs: CheckedInputs, fill_only: bool = False) -> Embedded:
        """Every image's cache entry, extracting the missing ones (``fill_only``: load none)."""
        cfg, descriptor = self.cfg, inputs.descriptor
        return embed_images(descriptor.table[PATH], cfg.preprocess, self.configured_backbone(),
                            cfg.features, progress=bool(cfg.trainer.enable_progress_bar),
                            fix=f"remove its row from {descriptor.csv}",
                            pixel_sizes=inputs.metadata[PIXEL_SIZE].tolist(),
                            fill_only=fill_only)

    # -- setup: every process assigns the state --------------------------------------------
    def setup(self, stage: str | None = None, inputs: CheckedInputs | None = None) -> None:
        """The checked inputs (``inputs``: as :meth:`check_inputs` gave them, else checked
        here), the embeddings read from the cache, the per-patch table and inputs, and the
        split's folds (``stage``: the same for every stage)."""
        if self.x is not None:
            return
        inputs = inputs or self.check_inputs()
        embedded = self.embed(inputs)
        self.descriptor, self.metadata, self.extra = (inputs.descriptor, inputs.metadata,
                                                      inputs.extra)
        self.planned, self.small_classes = inputs.splits, inputs.small_classes
        self.spec, self.cache, self.refs = embedded.spec, embedded.cache, embedded.refs
        self.representation = embedded.representation
        self.entries = embedded.entries
        self.cache_stats = cache_record(embedded)
        self.warnings = (inputs.warnings + embedded.warnings
                         + duplicate_images(self.descriptor, self.refs))
        for warning in self.warnings:
            log.warning(warning)
        log.info("embeddings: %d images, %d from cache, %d extracted",
                 self.cache_stats.images, self.cache_stats.from_cache,
                 self.cache_stats.extracted)
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
        for column in (X0, Y0, SIDE):
            patches[column] = patches[column] / scale
        patches[X0] += crops[rows, 2]
        patches[Y0] += crops[rows, 0]
        self.images = table[[IMAGE, SAMPLE] + ([SLIDE] if SLIDE in table.columns else [])
                            + [t.name for t in self.descriptor.targets]].copy()
        for j, name in enumerate(CROP_COLUMNS):
            self.images[name] = crops[:, j]
        self.images[SCALE] = [ref.scale for ref in self.refs]
        for name in self.metadata.columns:
            self.images[name] = self.metadata[name].to_numpy()
        self.patches = patches
        embeddings = torch.from_numpy(np.concatenate([e.embeddings for e in entries]))
        self.x = torch.cat([embeddings, torch.from_numpy(self.extra[rows]).to(embeddings.dtype)],
                           dim=1)
        self.y = torch.from_numpy(self.descriptor.target_matrix()[rows]).float()
        self.assignment = self.split(self.cfg.split.kind)

    @contextmanager
    def reading(self, view: str | None):
        """Within it, :attr:`x` holds the part of each patch's embedding a model reads under
        ``view`` (:meth:`Representation.view_columns`; a candidate's ``representation``), then
        ``extra_inputs``; None: all of it."""
        if view is None:
            yield self
            return
        full = self.x
        width = full.shape[1] - len(self.extra_inputs)
        columns = np.concatenate([self.representation.view_columns(view, self.backbone),
                                  np.arange(width, full.shape[1])])
        self.x = full[:, torch.from_numpy(columns)] if len(columns) < full.shape[1] else full
        try:
            yield self
        finally:
            self.x = full

    @property
    def image_x(self) -> torch.Tensor:
        """The image embeddings alone, without ``extra_inputs`` (the baselines, the
        permutation test and the PCA figure read the images only)."""
        return self.x[:, :self.x.shape[1] - len(self.extra_inputs)]

    def measure_images(self) -> list[str]:
        """The images' microstructure measures (from their cache, else measured), with the
        run's preprocessing; returns a warning per image segmentation found one phase in."""
        self.measures, warnings = image_measures(self.refs,
                                                 self.metadata[PIXEL_SIZE].tolist(),
                                                 self.cfg.preprocess, self.cfg.measures)
        return warnings

    def row_measures(self) -> np.ndarray | None:
        """(N, K): per patch row, its image's measures (columns: :meth:`measure_names`),
        measured on first use; None when the run measures nothing (``measures.enabled``)."""
        if self.measures is None and self.cfg.measures.enabled:
            for warning in self.measure_images():
                log.warning(warning)
        if self.measures is None:
            return None
        if self._row_measures is None or self._row_measures[0] != id(self.measures):
            position = pd.Series(np.arange(len(self.descriptor.table)),
                                 self.descriptor.table[IMAGE])
            values = self.measures[self.measure_names()].to_numpy(np.float64)
            self._row_measures = (id(self.measures),
                                  values[position[self.patches[IMAGE]].to_numpy()])
        return self._row_measures[1]

    def measure_names(self) -> list[str]:
        """The measures' columns, in the order models read them."""
        return measure_columns(self.measures)

    def class_groups(self) -> pd.DataFrame | None:
        """Per class of the first target: groups of the run's split kind and images."""
        return class_groups(self.cfg, self.descriptor)

    # -- folds -------------------------------------------------------------------------------
    def split(self, kind: str) -> np.ndarray:
        """(folds, patches) subset names for a split ``kind`` (patch/image/sample/slide) under
        the configured protocol: the planned assignment, or (a kind the run did not plan, or
        images that gave other patch counts) one assigned from the patch table."""
        planned = self.planned.get(kind)
        if planned is not None and planned.shape[1] == len(self.patches):
            return planned
        return fold_assignment(self.cfg, kind, self.y[:, 0].numpy(), self.patches,
                               self.descriptor.csv)

    def inner_folds(self, assignment: np.ndarray, kind: str, folds: int) -> np.ndarray:
        """(outer x inner folds, patches): grouped k-fold inside each outer fold's non-test
        groups, for model selection; the outer fold's test rows are '-' (never seen)."""
        return inner_assignment(self.cfg, assignment, kind, folds, self.y[:, 0].numpy(),
                                self.patches)

    def folds(self, assignment: np.ndarray | None = None,
              batch_size: int | None = None) -> FoldsDataModule:
        """The datamodule of one assignment's folds (default: the run's split), its training
        batches of ``batch_size`` rows per fold (default ``model.batch_size``)."""
        return FoldsDataModule(self, self.assignment if assignment is None else assignment,
                               batch_size)

    @staticmethod
    def rows(assignment: np.ndarray, subset: str) -> list[np.ndarray]:
        """Per fold, the patch rows of ``subset``."""
        return [np.flatnonzero(fold == subset) for fold in assignment]

    @staticmethod
    def test_fold(assignment: np.ndarray) -> np.ndarray:
        """Per patch, the fold that tests it (-1: none, e.g. holdout train rows)."""
        tested = assignment == "test"
        return np.where(tested.any(axis=0), tested.argmax(axis=0), -1)

    # -- dataloaders of the run's own split ---------------------------------------------------
    def train_dataloader(self) -> GroupBatches:
        return self.folds().train_dataloader()

    def val_dataloader(self) -> GroupRows:
        return self.folds().val_dataloader()

    def test_dataloader(self) -> GroupRows:
        return self.folds().test_dataloader()

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
            images[TEST_FOLD] = images[IMAGE].map(tested)
            if len(assignment) == 1:
                images[SUBSET] = images[IMAGE].map(dict(zip(
                    self.patches[IMAGE].to_numpy()[first], assignment[0][first], strict=True)))
        return images

    def patch_table(self, assignment: np.ndarray | None = None) -> pd.DataFrame:
        assignment = self.assignment if assignment is None else assignment
        patches = self.patches.copy()
        patches[TEST_FOLD] = self.test_fold(assignment)
        if len(assignment) == 1:
            patches[SUBSET] = assignment[0]
        return patches

    def counts(self, assignment: np.ndarray, unit: str) -> dict:
        """Images (unit='image') or patches per class per subset of fold 0, for the report."""
        target = self.descriptor.targets[0]
        frame = pd.DataFrame({SUBSET: assignment[0], IMAGE: self.patches[IMAGE],
                              "order": self.y[:, 0].numpy(),  # class index or value
                              LABEL: self.patches[target.name].astype(str)})
        if unit == "image":
            frame = frame.drop_duplicates([IMAGE, SUBSET])
        table = frame.groupby([SUBSET, "order", LABEL]).size().droplevel("order")
        return {s: {str(k): int(v) for k, v in table[s].items()} for s in SUBSETS
                if s in table.index.get_level_values(0)}


class FoldsDataModule(pl.LightningDataModule):
    """One fold assignment of a set-up :class:`SEMDataModule` (the run's folds, a contrast
    split's, model selection's inner folds, or every row as training): the datamodule
    ``Trainer.fit`` takes to train every fold's members at once. Its loaders read the parent's
    in-memory inputs: a batch of every fold's own rows per step."""

    def __init__(self, data: SEMDataModule, assignment: np.ndarray,
                 batch_size: int | None = None):
        super().__init__()
        if data.x is None:
            raise RuntimeError("SEMDataModule.folds() needs a set-up module: call setup() first")
        self.data, self.assignment = data, assignment
        #: rows per fold of a training batch (None: ``model.batch_size``, read when a head asks
        #: for training batches; a scikit-learn model has none)
        self.batch_size = batch_size

    @property
    def validates(self) -> bool:
        """Whether any fold has validation rows (the final refit on every group has none)."""
        return bool((self.assignment == "val").any())

    def rows(self, subset: str) -> list[np.ndarray]:
        """Per fold, the patch rows of ``subset``."""
        return self.data.rows(self.assignment, subset)

    def train_dataloader(self) -> GroupBatches:
        size = self.data.cfg.model.batch_size if self.batch_size is None else self.batch_size
        return GroupBatches(self.data.x, self.data.y, self.rows("train"), int(size),
                            seed=int(self.data.cfg.seed))

    def val_dataloader(self) -> GroupRows:
        return GroupRows(self.data.x, self.data.y, self.rows("val"))

    def test_dataloader(self) -> GroupRows:
        return GroupRows(self.data.x, self.data.y, self.rows("test"))


# -- checks and split planning, from the descriptor alone --------------------------------------
def class_groups(cfg: DictConfig, descriptor: Descriptor) -> pd.DataFrame | None:
    """Per class of the first target: groups of the run's split kind and images (None for
    regression and patch splits, where every class has plenty)."""
    target, kind = descriptor.targets[0], cfg.split.kind
    column = GROUP_COLUMNS.get(kind)
    table = descriptor.table
    if target.kind != "classification" or kind == "patch" or column not in table.columns:
        return None
    labels = table[target.name].map(str_label)
    counts = table.groupby(labels, sort=False).agg(**{GROUPS: (column, "nunique"),
                                                      IMAGES: (IMAGE, "size")})
    return counts.reindex(list(target.classes))


def check_class_groups(cfg: DictConfig, descriptor: Descriptor) -> tuple[list[str], list[str]]:
    """A class with fewer groups than ``split.min_class_groups`` cannot be tested by heads
    that saw it: refused, or with ``split.allow_small_classes`` kept with a warning. Returns
    the classes kept so and the warnings."""
    counts = class_groups(cfg, descriptor)
    need = int(cfg.split.min_class_groups)
    if counts is None or (counts[GROUPS] >= need).all():
        return [], []
    kind, small = cfg.split.kind, counts[counts[GROUPS] < need]
    listed = ", ".join(f"{c!r} ({n} {kind}{'s' if n != 1 else ''})"
                       for c, n in small[GROUPS].items())
    what = f"{descriptor.csv}: class(es) {listed} of {descriptor.targets[0].name!r}"
    if not bool(cfg.split.allow_small_classes):
        raise SinterlabError(
            f"{what} have fewer than split.min_class_groups={need} {kind}s, so their images "
            "could only be tested by heads that never saw the class; add samples, leave the "
            "class out (data.classes=[...]) or keep it knowingly with "
            "split.allow_small_classes=true")
    return list(small.index), [
        f"{what} have fewer than {need} {kind}s: their images are tested by heads that never "
        "saw the class, and they count in every score (split.allow_small_classes=true)"]


def resolve_scale(cfg: DictConfig, descriptor: Descriptor, metadata: pd.DataFrame) -> list[str]:
    """``preprocess.scale.pixel_size_nm``: ``auto`` becomes the coarsest pixel size of the
    data (nothing is upsampled) and ``preprocess.patches.size_um`` a size in pixels, in the
    run's config itself (so config.yaml and predict read the numbers used; resolving again gives
    the same). An image whose pixel size is unknown, unusable or far from the others' stops the
    run here, before the backbone; without a target scale those are warnings (returned)."""
    scale, patches = cfg.preprocess.scale, cfg.preprocess.patches
    target = scale.pixel_size_nm
    if target is None and patches.size_um is not None:
        raise SinterlabError("preprocess.patches.size_um needs a physical scale: set "
                             "preprocess.scale.pixel_size_nm=auto (or a number)")
    if target not in (None, "auto") and (isinstance(target, bool) or not isinstance(
            target, (int, float)) or not np.isfinite(target) or target <= 0):
        raise SinterlabError(f"preprocess.scale.pixel_size_nm={target!r}: use null, auto "
                             "or a positive number of nanometres per pixel")
    warnings = check_pixel_sizes(descriptor.table[IMAGE], metadata, scale, descriptor.csv)
    if target is None:
        return warnings
    if target == "auto":
        target = float(pd.to_numeric(metadata[PIXEL_SIZE]).max())
    with open_dict(cfg):
        cfg.preprocess.scale.pixel_size_nm = float(target)
        if patches.size_um is not None:
            cfg.preprocess.patches.size = max(1, round(float(patches.size_um) * 1000
                                                       / float(target)))
    log.info("physical scale: %.4g nm per pixel, patches of %d px (%.3g µm)", target,
             int(patches.size), int(patches.size) * float(target) / 1000)
    return warnings


def cache_record(embedded: Embedded) -> Cache:
    """How a list of images' embeddings got there: images, from the cache, extracted (the
    ``cache`` block of metrics.json)."""
    return record_of(Cache, dict(embedded.stats) | {"folder": str(embedded.cache.folder)})


def duplicate_images(descriptor: Descriptor, refs: list[ImageRef]) -> list[str]:
    """Byte-identical image files filed under different samples or labels: a leak that no
    grouped split can see (the same micrograph may be tested by heads trained on it)."""
    table = descriptor.table
    frame = pd.DataFrame({"sha": [ref.sha for ref in refs], IMAGE: table[IMAGE],
                          SAMPLE: table[SAMPLE],
                          LABEL: table[descriptor.targets[0].name].astype(str)})
    out = []
    for _, same in frame.groupby("sha", sort=False):
        if len(same) > 1 and (same[SAMPLE].nunique() > 1 or same[LABEL].nunique() > 1):
            out.append(f"{descriptor.csv}: images {same[IMAGE].tolist()} are byte-identical but "
                       f"filed under samples {sorted(set(same[SAMPLE]))} and labels "
                       f"{sorted(set(same[LABEL]))}; a grouped split cannot keep them "
                       "apart (a leak): keep one row")
    return out


def fold_assignment(cfg: DictConfig, kind: str, labels: np.ndarray, rows: pd.DataFrame,
                    csv) -> np.ndarray:
    """(folds, rows) subset names of split ``kind`` under the configured protocol: k grouped
    folds (cv) or one train/val/test split (holdout); ``rows`` holds the group columns."""
    if kind not in KINDS:
        raise SinterlabError(f"split.kind={kind!r} is unknown; use one of {list(KINDS)}")
    column = GROUP_COLUMNS[kind]
    if column not in rows.columns:
        raise SinterlabError(f"{csv}: split={kind} needs a '{cfg.data.slide_column}' column; "
                             "add it (or set data.slide_column) or use split=sample")
    s, p = cfg.split, cfg.protocol
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


def inner_assignment(cfg: DictConfig, assignment: np.ndarray, kind: str, folds: int,
                     labels: np.ndarray, rows: pd.DataFrame) -> np.ndarray:
    """(outer x inner folds, rows): grouped k-fold inside each outer fold's non-test groups;
    the outer fold's test rows are '-'."""
    s, groups = cfg.split, rows[GROUP_COLUMNS[kind]].to_numpy()
    out = []
    for outer in assignment:
        inside = outer != "test"
        for inner in fold_assignments(labels[inside], groups[inside], dict(s.fractions),
                                      int(cfg.protocol.split_seed), folds, what=kind,
                                      min_groups_per_class=int(s.min_groups_per_class)):
            full = np.full(len(outer), "-", dtype=object)
            full[inside] = inner
            out.append(full.astype(str))
    return np.stack(out)


def plan_splits(cfg: DictConfig, descriptor: Descriptor) -> dict[str, np.ndarray]:
    """The folds of every split the run evaluates, from the descriptor alone, before any
    backbone time is spent: an unknown split kind, a missing or empty group column, or too few
    groups for the folds (or for model selection's inner folds) stops the run here. Every image
    gives ``preprocess.patches.per_image`` patches in row order, so these are the assignments
    ``setup`` uses."""
    table = descriptor.table
    kinds = [cfg.split.kind]
    if cfg.evaluation.contrast.enabled:
        kinds.append("sample" if cfg.split.kind == "patch" else "patch")
    if "slide" in kinds and SLIDE in table.columns and (table[SLIDE] == "").any():
        empty = table[ROW][table[SLIDE] == ""].tolist()
        raise SinterlabError(f"{descriptor.csv}:{','.join(map(str, empty[:5]))}: empty "
                             f"'{cfg.data.slide_column}' cell; split=slide needs every "
                             "image's slide (or use split=sample)")
    rows = np.repeat(np.arange(len(table)), int(cfg.preprocess.patches.per_image))
    frame = table.iloc[rows][[c for c in (IMAGE, SAMPLE, SLIDE) if c in table.columns]]
    frame = frame.reset_index(drop=True).assign(patch_id=np.arange(len(rows)))
    labels = descriptor.target_matrix()[rows, 0]
    planned = {kind: fold_assignment(cfg, kind, labels, frame, descriptor.csv)
               for kind in kinds}
    selection = model_selection(cfg)
    if selection is not None:  # checked here; selection assigns them from the patch table
        inner_assignment(cfg, planned[kinds[0]], kinds[0], int(selection.inner_folds), labels,
                         frame)
    return planned
