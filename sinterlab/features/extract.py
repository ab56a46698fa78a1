"""Embeddings for a list of images: from the cache, or extracted with ``Trainer.predict``.

Extraction streams one image at a time (its patches cut on the fly, then fed to the backbone in
chunks of ``features.batch_size``), so memory stays bounded whatever the dataset size, and each
image's entry is written as soon as it is done. Going through Lightning means
``features.devices`` / ``features.strategy=ddp`` spread the images over several GPUs.
"""

from __future__ import annotations

import logging
import signal
import time
from dataclasses import dataclass

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import BasePredictionWriter, TQDMProgressBar
from omegaconf import OmegaConf
from torch.utils.data import DataLoader, Dataset

from sinterlab.data.crop import CropBox
from sinterlab.data.patches import (
    GridSampler,
    GridSpec,
    PatchSampler,
    PatchSpec,
    rotation_setting,
)
from sinterlab.data.preprocess import preprocess_image, read_and_locate
from sinterlab.errors import SinterlabError
from sinterlab.features.backbone import Backbone
from sinterlab.features.cache import CacheEntry, EmbeddingCache, file_sha256
from sinterlab.features.runtime import Runner, build_runner, resolve_runtime
from sinterlab.runs import RunInterrupted

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImageRef:
    path: str
    sha: str


class ImagePatches(Dataset):
    """Item ``i``: every patch of image ``i`` with its parameters and crop box."""

    def __init__(self, images: list[ImageRef], preprocess_cfg, sampler: PatchSampler):
        self.images, self.cfg, self.sampler = images, preprocess_cfg, sampler

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict:
        ref = self.images[index]
        image, box = preprocess_image(ref.path, self.cfg)
        params = self.sampler.params(*image.shape, ref.sha)
        return {"sha": ref.sha, "patches": self.sampler.cut(image, params),
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
                     progress: bool = True, total: int | None = None) -> dict:
    """Extract and cache every image of ``images`` not cached yet; returns throughput figures.
    ``total``: the images of the whole request (default ``images``), for the counts."""
    unique = len(set(images)) if total is None else total
    missing = [ref for ref in dict.fromkeys(images) if not cache.has(ref.sha)]
    stats = {"images": unique, "extracted": len(missing),
             "from_cache": unique - len(missing), "patches_per_s": None}
    if not missing:
        return stats
    log.info("extracting %d of %d images (runtime %s)", len(missing), stats["images"],
             cache.settings.get("runtime", "torch"))
    writer = CacheWriter(cache)
    on_cpu = cache.settings.get("runtime", "torch") != "torch"  # ONNX Runtime / OpenVINO
    trainer = pl.Trainer(accelerator="cpu" if on_cpu else features_cfg.accelerator,
                         devices=1 if on_cpu else features_cfg.devices,
                         strategy="auto" if on_cpu else features_cfg.strategy,
                         precision=features_cfg.precision, logger=False,
                         enable_checkpointing=False,
                         callbacks=[writer] + ([TQDMProgressBar()] if progress else []),
                         enable_progress_bar=progress, enable_model_summary=False)
    loader = DataLoader(ImagePatches(missing, preprocess_cfg, sampler), batch_size=None,
                        num_workers=features_cfg.num_workers,
                        persistent_workers=False, worker_init_fn=_leave_ctrl_c_to_the_main)
    started = time.perf_counter()
    model = FrozenFeatures(runner, features_cfg.batch_size)
    try:
        trainer.predict(model, loader, return_predictions=False)
    except RunInterrupted as err:
        done = sum(cache.has(ref.sha) for ref in missing)  # on disk, whatever the writer saw
        err.cached = (stats["from_cache"] + done, unique, cache.folder)
        raise
    stats["patches_per_s"] = writer.patches / (time.perf_counter() - started)
    return stats


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
                   runtime: str = "torch") -> dict:
    """Everything besides the image and the weights that changes a patch's embedding: the
    runtime and (for torch) the memory format move the last bits of the floats, so they count
    too (torch's entries keep the keys they had before runtimes existed)."""
    settings = OmegaConf.to_container(preprocess_cfg, resolve=True)
    settings["patches"] = spec.__dict__ | {"mean": list(backbone.mean),
                                           "std": list(backbone.std)}
    if runtime == "torch":
        settings["channels_last"] = bool(backbone.channels_last)
    else:
        settings["runtime"] = runtime
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


def image_problem(ref: ImageRef, preprocess_cfg, sampler: PatchSampler) -> str | None:
    """Why ``ref`` cannot give patches (unreadable, too small after the crop), or None."""
    try:
        _, box = read_and_locate(ref.path, preprocess_cfg)
        sampler.params(box.height, box.width, ref.sha)
    except SinterlabError as err:
        return str(err).removeprefix(f"{ref.path}: ")
    return None


def embed_images(paths, preprocess_cfg, backbone: Backbone, features_cfg,
                 progress: bool = True, fix: str = "remove it", skip_bad: bool = False,
                 grid_stride: int | None = None) -> Embedded:
    """Every image of ``paths`` with its cache entry for these settings and weights.

    Before any extraction: damaged cache entries are set aside, every image still to extract is
    read and checked against the patch size, and the cache folder must be writable. A bad image
    is an error naming it (and ``fix``), or with ``skip_bad`` is left out and named in ``bad``.
    ``grid_stride``: patches on a regular grid (maps) instead of the run's random ones.
    """
    spec = patch_spec(preprocess_cfg, backbone, grid_stride)
    requested = str(features_cfg.get("runtime", "torch"))
    runtime = resolve_runtime(requested, str(features_cfg.accelerator))
    sampler = (GridSampler if grid_stride else PatchSampler)(spec, backbone.mean, backbone.std)
    refs = [ImageRef(str(p), file_sha256(p)) for p in paths]
    while True:
        cache = EmbeddingCache(features_cfg.cache_dir, backbone.name, backbone.weights.sha256,
                               cache_settings(preprocess_cfg, spec, backbone, runtime))
        entries = {ref.sha: cache.load_or_set_aside(ref.sha, ref.path) for ref in refs}
        bad = {}
        for ref in dict.fromkeys(refs):
            if entries[ref.sha] is None and (
                    problem := image_problem(ref, preprocess_cfg, sampler)):
                bad[ref.path] = problem
        if bad and not skip_bad:
            (first, reason), others = next(iter(bad.items())), list(bad)[1:]
            more = f" ({len(others)} more: {', '.join(others[:3])})" if others else ""
            raise SinterlabError(f"{first}: {reason}; or {fix}{more}")
        good = [ref for ref in refs if ref.path not in bad]
        missing = [ref for ref in good if entries[ref.sha] is None]
        if not missing:
            runner = None
            break
        cache.check_writable()
        try:
            runner = build_runner(runtime, backbone, cache.folder.parent, spec.output_size)
            break
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
                             progress=progress, total=len({ref.sha for ref in good}))
    stats["runtime"] = runtime
    loaded = [entries[ref.sha] or cache.load(ref.sha) for ref in good]
    return Embedded(spec, cache, good, loaded, stats, bad)
