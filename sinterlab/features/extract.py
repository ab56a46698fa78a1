"""Embeddings for a list of images: from the cache, or extracted with ``Trainer.predict``.

Extraction streams one image at a time (its patches cut on the fly, then fed to the backbone in
chunks of ``features.batch_size``), so memory stays bounded whatever the dataset size, and each
image's entry is written as soon as it is done. Jobs sharing a cache claim each image before
extracting it, so none is extracted twice at once (``sinterlab-extract`` shards).
"""

from __future__ import annotations

import logging
import signal
import time
from dataclasses import dataclass, field

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import BasePredictionWriter, TQDMProgressBar
from omegaconf import OmegaConf
from torch.utils.data import DataLoader, Dataset

from sinterlab.console import on_terminal
from sinterlab.data.crop import CropBox
from sinterlab.data.images import image_warnings
from sinterlab.data.metadata import PROBLEM, read_metadata
from sinterlab.data.patches import (
    GridSampler,
    GridSpec,
    PatchSampler,
    PatchSpec,
    rotation_setting,
)
from sinterlab.data.preprocess import preprocess_image, read_and_locate, scaled_size
from sinterlab.errors import SinterlabError, WriteFailed
from sinterlab.features.backbone import Backbone
from sinterlab.features.cache import CacheEntry, EmbeddingCache, file_sha256
from sinterlab.features.representation import FINAL, Representation
from sinterlab.features.runtime import Runner, build_runner, resolve_runtime
from sinterlab.runs import RunInterrupted

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImageRef:
    """An image: its file, the SHA-256 of its bytes and the factor it is resampled by to the
    run's physical pixel size (1: none)."""

    path: str
    sha: str
    scale: float = 1.0

    @property
    def key(self) -> str:
        """The cache entry's name: the content hash, and the resampling factor when there is
        one (a pixel size from the descriptor is not in the file's bytes)."""
        return self.sha if self.scale == 1.0 else f"{self.sha}-x{self.scale:.9g}"


class ImagePatches(Dataset):
    """Item ``i``: every patch of image ``i`` with its parameters and crop box."""

    def __init__(self, images: list[ImageRef], preprocess_cfg, sampler: PatchSampler):
        self.images, self.cfg, self.sampler = images, preprocess_cfg, sampler

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict:
        ref = self.images[index]
        image, box = preprocess_image(ref.path, self.cfg, ref.scale)
        params = self.sampler.params(*image.shape, ref.key)
        return {"sha": ref.key, "patches": self.sampler.cut(image, params),
                "params": torch.from_numpy(params), "crop": torch.tensor(_box_array(box))}


def _box_array(box: CropBox) -> list[int]:
    return [box.top, box.bottom, box.left, box.right]


class FrozenFeatures(pl.LightningModule):
    """Wraps the frozen backbone's runner for ``Trainer.predict``; one batch is one image."""

    def __init__(self, runner: Runner, batch_size: int):
        super().__init__()
        self.runner, self.batch_size = runner, batch_size

    def predict_step(self, batch: dict, batch_idx: int) -> dict:
        chunks = batch["patches"].split(self.batch_size)
        embeddings = torch.cat([self.runner(chunk) for chunk in chunks])
        return batch | {"embeddings": embeddings.float().cpu(), "patches": None}


class CacheWriter(BasePredictionWriter):
    """Saves each image's entry as soon as its batch is done; counts patches per second."""

    def __init__(self, cache: EmbeddingCache):
        super().__init__(write_interval="batch")
        self.cache = cache
        self.patches = 0
        self.started = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch,
                           batch_idx, dataloader_idx=0):
        entry = CacheEntry(prediction["embeddings"].numpy(), prediction["params"].numpy(),
                           prediction["crop"].numpy())
        self.cache.save(prediction["sha"], entry)
        self.patches += len(entry.embeddings)
        bar = trainer.progress_bar_callback
        rate = self.patches / max(time.perf_counter() - self.started, 1e-9)
        if isinstance(bar, TQDMProgressBar) and bar.predict_progress_bar is not None:
            bar.predict_progress_bar.set_postfix(patches_per_s=f"{rate:.1f}")


def _leave_ctrl_c_to_the_main(worker_id: int) -> None:
    """Patch-cutting workers ignore Ctrl-C: the main process stops cleanly and ends them."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def extract_to_cache(images: list[ImageRef], cache: EmbeddingCache, runner: Runner,
                     sampler: PatchSampler, preprocess_cfg, features_cfg,
                     progress: bool = True, total: int | None = None,
                     wait_for_others: bool = True) -> dict:
    """Extract and cache every image of ``images`` not cached yet; returns throughput figures.
    ``total``: the images of the whole request (default ``images``), for the counts. An image
    another live process has claimed is left to it: waited for (``wait_for_others``), or
    counted in ``left_to_others``; a dead process's claims are taken over."""
    unique = len(set(images)) if total is None else total
    missing = [ref for ref in dict.fromkeys(images) if not cache.has(ref.key)]
    stats = {"images": unique, "extracted": 0, "from_cache": unique - len(missing),
             "patches_per_s": None, "left_to_others": 0}
    writer = None
    while missing:
        mine = [ref for ref in missing if cache.claim(ref.key)]
        others = [ref for ref in missing if ref not in mine]
        if mine:
            writer = _extract(mine, cache, runner, sampler, preprocess_cfg, features_cfg,
                              progress, stats, unique)
            stats["extracted"] += len(mine)
        if not others or not wait_for_others:
            stats["left_to_others"] = len(others)
            break
        log.info("%d images are being extracted by another job; waiting for them",
                 len(others))
        time.sleep(float(features_cfg.get("wait_poll_s", 2.0)))
        missing = [ref for ref in others if not cache.has(ref.key)]
    if writer is not None:
        stats["patches_per_s"] = writer.patches / max(writer.elapsed(), 1e-9)
    return stats


def _extract(mine: list[ImageRef], cache: EmbeddingCache, runner: Runner,
             sampler: PatchSampler, preprocess_cfg, features_cfg, progress: bool, stats: dict,
             unique: int) -> CacheWriter:
    """Extract the images this process claimed; on any stop, release the claims it did not
    fulfil so the next run (or another job) takes them."""
    log.info("extracting %d of %d images (runtime %s)", len(mine), stats["images"],
             cache.settings.get("runtime", "torch"))
    progress = progress and on_terminal()  # a log file or a pipe would keep every frame
    writer = CacheWriter(cache)
    on_cpu = cache.settings.get("runtime", "torch") != "torch"  # ONNX Runtime / OpenVINO
    trainer = pl.Trainer(accelerator="cpu" if on_cpu else features_cfg.accelerator,
                         devices=1 if on_cpu else features_cfg.devices,
                         strategy="auto" if on_cpu else features_cfg.strategy,
                         precision=features_cfg.precision, logger=False,
                         enable_checkpointing=False,
                         callbacks=[writer] + ([TQDMProgressBar()] if progress else []),
                         enable_progress_bar=progress, enable_model_summary=False)
    loader = DataLoader(ImagePatches(mine, preprocess_cfg, sampler), batch_size=None,
                        num_workers=features_cfg.num_workers,
                        persistent_workers=False, worker_init_fn=_leave_ctrl_c_to_the_main)
    model = FrozenFeatures(runner, features_cfg.batch_size)
    try:
        trainer.predict(model, loader, return_predictions=False)
    except RunInterrupted as err:
        done = sum(cache.has(ref.key) for ref in dict.fromkeys(mine))  # on disk
        err.cached = (stats["from_cache"] + stats["extracted"] + done, unique, cache.folder)
        raise
    finally:
        for ref in mine:
            if not cache.has(ref.key):
                cache.release(ref.key)
    return writer


def patch_spec(preprocess_cfg, backbone: Backbone, grid_stride: int | None = None,
               ) -> PatchSpec:
    """The run's random patches, or (``grid_stride``) a regular grid of unrotated patches of
    the same size, for maps."""
    p = preprocess_cfg.patches
    output = int(p.output_size or backbone.input_size)
    if grid_stride:
        return GridSpec(0, int(p.size), output, False, 0.0, 0, int(grid_stride))
    return PatchSpec(int(p.per_image), int(p.size), output, bool(p.hflip),
                     rotation_setting(p.rotation), int(p.seed))


def cache_settings(preprocess_cfg, spec: PatchSpec, backbone: Backbone,
                   runtime: str = "torch", representation: Representation = FINAL) -> dict:
    """Everything besides the image and the weights that changes a patch's embedding: the
    representation (stages and statistics), the runtime and (for torch) the memory format move
    the last bits of the floats, so they count too (the final embedding under torch keeps the
    key it had before representations and runtimes existed)."""
    settings = OmegaConf.to_container(preprocess_cfg, resolve=True)
    settings.pop("checks", None)  # warnings about images, not part of the embeddings
    if (settings.get("scale") or {}).get("pixel_size_nm") is None:
        settings.pop("scale", None)  # pixels as read: the keys runs had before scales
    else:
        settings["scale"].pop("outlier_factor", None)  # a check of the inputs, not a setting
    settings["patches"] = spec.__dict__ | {"mean": list(backbone.mean),
                                           "std": list(backbone.std)}
    if runtime == "torch":
        settings["channels_last"] = bool(backbone.channels_last)
    else:
        settings["runtime"] = runtime
    if not representation.is_final:
        settings["representation"] = representation.key(backbone)
    return settings


@dataclass
class Embedded:
    """A list of images' embeddings: the cache, entry keys and entries, how they got there,
    and the images left out (``skip_bad``) with the reason."""

    spec: PatchSpec
    cache: EmbeddingCache
    refs: list[ImageRef]
    entries: list[CacheEntry]
    stats: dict
    bad: dict[str, str]
    #: images used but suspect (blank, saturated, multi-page), checked when read to extract
    warnings: list[str] = field(default_factory=list)
    #: what each patch's embedding is made of (``features.representation``)
    representation: Representation = FINAL


def image_problem(ref: ImageRef, preprocess_cfg, sampler: PatchSampler,
                  warnings: list[str]) -> str | None:
    """Why ``ref`` cannot give patches (unreadable, too small after the crop), or None; what
    makes it suspect is appended to ``warnings``."""
    try:
        image, box = read_and_locate(ref.path, preprocess_cfg)
        sampler.params(*scaled_size(box.height, box.width, ref.scale), ref.key)
    except SinterlabError as err:
        return str(err).removeprefix(f"{ref.path}: ")
    warnings += image_warnings(ref.path, box.apply(image), preprocess_cfg.get("checks"))
    return None


def scale_factors(paths, pixel_sizes, preprocess_cfg, problems=None,
                  ) -> tuple[list[float], dict[str, str]]:
    """Per image, its pixel size / the run's (``preprocess.scale.pixel_size_nm``; 1 when that
    is null), and the images whose pixel size is needed but unknown, with what is wrong and the
    fix. ``pixel_sizes``: known ones (e.g. with descriptor columns), with ``problems`` saying
    why one is unknown; None reads the files."""
    target = (preprocess_cfg.get("scale") or {}).get("pixel_size_nm")
    if target is None:
        return [1.0] * len(paths), {}
    if pixel_sizes is None:  # what each file (or its sidecar) says
        metadata = [read_metadata(p) for p in paths]
        pixel_sizes = [m["pixel_size_nm"] for m in metadata]
        problems = [m[PROBLEM] for m in metadata]
    problems = list(problems) if problems is not None else [None] * len(paths)
    factors, unknown = [], {}
    for path, pixel, problem in zip(paths, pixel_sizes, problems, strict=True):
        if pixel is None or not np.isfinite(float(pixel)) or float(pixel) <= 0:
            unknown[str(path)] = (f"{problem or 'pixel size unknown'}; give a pixel_size_nm "
                                  "column in the descriptor (it overrides the file), or set "
                                  "preprocess.scale.pixel_size_nm=null")
            factors.append(1.0)
        else:
            factors.append(float(pixel) / float(target))
    return factors, unknown


def embed_images(paths, preprocess_cfg, backbone: Backbone, features_cfg,
                 progress: bool = True, fix: str = "remove it", skip_bad: bool = False,
                 grid_stride: int | None = None, pixel_sizes=None,
                 fill_only: bool = False, pixel_problems=None) -> Embedded:
    """Every image of ``paths`` with its cache entry for these settings and weights, each
    patch embedded as ``features_cfg`` says (``representation``, ``stages``, ``statistics``).

    Before any extraction: damaged cache entries are set aside, every image still to extract is
    read and checked against the patch size, and the cache folder must be writable. A bad image
    is an error naming it (and ``fix``), or with ``skip_bad`` is left out and named in ``bad``.
    ``grid_stride``: patches on a regular grid (maps) instead of the run's random ones.
    ``fill_only``: fill the cache and load nothing; images other live jobs extract are theirs.
    ``pixel_sizes``, ``pixel_problems``: see :func:`scale_factors`.
    """
    spec = patch_spec(preprocess_cfg, backbone, grid_stride)
    representation = Representation.from_config(features_cfg)
    width = representation.width(backbone)  # before any work: stages the backbone lacks
    requested = str(features_cfg.get("runtime", "torch"))
    runtime = resolve_runtime(requested, str(features_cfg.accelerator))
    sampler = (GridSampler if grid_stride else PatchSampler)(spec, backbone.mean, backbone.std)
    factors, unknown = scale_factors(paths, pixel_sizes, preprocess_cfg, pixel_problems)
    if unknown and not skip_bad:
        first = next(iter(unknown))
        more = f" ({len(unknown) - 1} more)" if len(unknown) > 1 else ""
        raise SinterlabError(f"{first}: {unknown[first]}{more}")
    refs = [ImageRef(str(p), file_sha256(p), f) for p, f in zip(paths, factors, strict=True)
            if str(p) not in unknown]
    while True:
        cache = EmbeddingCache(features_cfg.cache_dir, backbone.name, backbone.weights.sha256,
                               cache_settings(preprocess_cfg, spec, backbone, runtime,
                                              representation), width)
        entries = {ref.key: cache.load_or_set_aside(ref.key, ref.path) for ref in refs}
        bad, warnings = dict(unknown), []
        for ref in dict.fromkeys(refs):
            if entries[ref.key] is None and (
                    problem := image_problem(ref, preprocess_cfg, sampler, warnings)):
                bad[ref.path] = problem
        if bad and not skip_bad:
            (first, reason), others = next(iter(bad.items())), list(bad)[1:]
            more = f" ({len(others)} more: {', '.join(others[:3])})" if others else ""
            raise SinterlabError(f"{first}: {reason}; or {fix}{more}")
        good = [ref for ref in refs if ref.path not in bad]
        missing = [ref for ref in good if entries[ref.key] is None]
        if not missing:
            runner = None
            break
        cache.check_writable()
        try:
            runner = build_runner(runtime, backbone, cache.folder.parent, spec.output_size,
                                  representation)
            break
        except WriteFailed:  # the export could not be saved: no fault of the runtime
            raise
        except Exception as err:  # an export the runtime cannot take: torch always can
            if requested != "auto" or runtime == "torch":
                raise SinterlabError(
                    f"{backbone.name}: cannot run under features.runtime={runtime} "
                    f"({type(err).__name__}: {' '.join(str(err).split())[:160]}); use "
                    "features.runtime=torch") from err
            log.warning("%s: %s export failed (%s); extracting with torch instead",
                        backbone.name, runtime, err)
            runtime = "torch"
    stats = extract_to_cache(missing, cache, runner, sampler, preprocess_cfg, features_cfg,
                             progress=progress, total=len({ref.key for ref in good}),
                             wait_for_others=not fill_only)
    stats["runtime"] = runtime
    if fill_only:  # sinterlab-extract: the entries stay in the cache for the training run
        return Embedded(spec, cache, good, [], stats, bad, warnings, representation)
    loaded = [entries[ref.key] or cache.load(ref.key) for ref in good]
    return Embedded(spec, cache, good, loaded, stats, bad, warnings, representation)
