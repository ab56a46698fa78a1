"""Prediction maps: which regions of a micrograph say what, and is the film uniform?

The cropped, equalized micrograph is tiled with unrotated patches of the run's size on a regular
grid (``stride`` pixels apart), embedded through the same cache-aware extraction as training (a
grid has its own cache key), and every patch goes through the run's head. Each pixel shows the
mean output of the patches covering it: the predicted class coloured with its confidence, or the
regressed value; beside it, the histogram of the patch predictions.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from sinterlab.data.metadata import read_metadata  # noqa: E402
from sinterlab.data.preprocess import preprocess_image  # noqa: E402
from sinterlab.errors import SinterlabError  # noqa: E402
from sinterlab.evaluation.figures import add_scale_bar, save_figure  # noqa: E402
from sinterlab.features.backbone import Backbone  # noqa: E402
from sinterlab.features.cache import CacheEntry  # noqa: E402
from sinterlab.features.extract import Embedded, ImageRef, embed_images  # noqa: E402
from sinterlab.predict import RunModel, ServedPart  # noqa: E402


@dataclass
class ImageMap:
    """One micrograph's grid: patch boxes (x0, y0, side, flip, angle in micrograph pixels), the
    head's output per patch (class probabilities or values) and their embeddings."""

    path: str
    micrograph: np.ndarray  # the cropped, equalized uint8 image the patches come from
    params: np.ndarray
    outputs: np.ndarray
    embeddings: np.ndarray
    #: nm per pixel of ``micrograph`` (None: unknown, no scale bar)
    pixel_nm: float | None = None

    def covered_mean(self) -> np.ndarray:
        """(H, W, C) or (H, W): per pixel, the mean output of the patches covering it (NaN
        where none does)."""
        values = self.outputs if self.outputs.ndim == 2 else self.outputs[:, None]
        height, width = self.micrograph.shape
        total = np.zeros((height, width, values.shape[1]))
        count = np.zeros((height, width, 1))
        for (x0, y0, side, _, _), value in zip(self.params, values, strict=True):
            x0, y0, side = int(x0), int(y0), int(side)
            total[y0:y0 + side, x0:x0 + side] += value
            count[y0:y0 + side, x0:x0 + side] += 1
        with np.errstate(invalid="ignore"):
            mean = total / count
        return mean if self.outputs.ndim == 2 else mean[..., 0]


def grid_embeddings(preprocess_cfg, backbone: Backbone, features_cfg, paths, stride: int,
                    progress: bool = False, skip_bad: bool = True) -> Embedded:
    """Every image's grid patches embedded (through the cache); unreadable ones left out."""
    return embed_images(paths, preprocess_cfg, backbone, features_cfg, progress=progress,
                        skip_bad=skip_bad, grid_stride=stride, fix="leave it out")


def image_map(parts: list[ServedPart], preprocess_cfg, ref: ImageRef,
              entry: CacheEntry, members: slice = slice(None)) -> ImageMap:
    """One image's map under the first target of ``parts`` (one model, or the members of a
    weighted ensemble that read patches, each with its weight and the part of the embedding it
    reads), each from its ``members`` (default all; a fold's seeds for an out-of-fold map)."""
    x = torch.from_numpy(entry.embeddings)
    output = sum(p.weight * p.head.predict_members(p.reads(x))[0][members].mean(axis=0)
                 for p in parts)
    micrograph, _ = preprocess_image(ref.path, preprocess_cfg, ref.scale)
    return ImageMap(ref.path, micrograph, entry.params, output, entry.embeddings,
                    shown_pixel_size(ref, preprocess_cfg))


def shown_pixel_size(ref: ImageRef, preprocess_cfg) -> float | None:
    """nm per pixel of the preprocessed micrograph: the run's physical scale when it resamples,
    else what the instrument recorded in the file (None when nothing did)."""
    target = (preprocess_cfg.get("scale") or {}).get("pixel_size_nm")
    if target is not None and target != "auto":
        return float(target)
    try:
        own = read_metadata(ref.path).get("pixel_size_nm")
    except SinterlabError:  # a sidecar that does not parse: the map goes without a bar
        return None
    return None if own is None else float(own) / ref.scale


def grid_maps(model: RunModel, paths, stride: int, members: slice = slice(None),
              progress: bool = False, skip_bad: bool = True) -> tuple[list[ImageMap], dict]:
    """The maps of ``paths`` under the run's first target; unreadable images are left out and
    returned with their reason."""
    embedded = grid_embeddings(model.cfg.preprocess, model.backbone, model.features, paths,
                               stride, progress, skip_bad)
    maps = [image_map(model.patch_parts(), model.cfg.preprocess, ref, entry, members)
            for ref, entry in zip(embedded.refs, embedded.entries, strict=True)]
    return maps, embedded.bad


def grid_table(maps: list[ImageMap], target: dict) -> pd.DataFrame:
    """One row per grid patch: image, box, prediction and confidence (or value), and every
    class probability."""
    frames = []
    for m in maps:
        frame = pd.DataFrame({"image": m.path, "x0": m.params[:, 0].astype(int),
                              "y0": m.params[:, 1].astype(int),
                              "size": m.params[:, 2].astype(int)})
        name = target["name"]
        if target["kind"] == "classification":
            classes = np.asarray(target["classes"])
            frame[name] = classes[m.outputs.argmax(axis=1)]
            frame[f"{name}_confidence"] = m.outputs.max(axis=1).round(4)
            for c, label in enumerate(classes):
                frame[f"p_{label}"] = m.outputs[:, c].round(4)
        else:
            frame[name] = m.outputs.round(4)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def summary(m: ImageMap, target: dict) -> str:
    """'200 BC (0.81), 74% of 35 patches agree' or '187.3 BC (patch sd 12.1)'."""
    if target["kind"] == "classification":
        mean = m.outputs.mean(axis=0)
        choice = int(mean.argmax())
        agree = float(np.mean(m.outputs.argmax(axis=1) == choice))
        return (f"{target['class_names'][choice]} ({mean[choice]:.2f}), {agree:.0%} of "
                f"{len(m.outputs)} patches agree")
    unit = f" {target.get('unit', '')}".rstrip()
    return f"{m.outputs.mean():.4g}{unit} (patch sd {m.outputs.std():.3g})"


def draw_map(m: ImageMap, target: dict, path, dpi: int = 110) -> Path:
    """The micrograph with the per-pixel prediction over it, and the patch histogram."""
    fig, (ax, hist) = plt.subplots(1, 2, figsize=(11.5, 4.6), dpi=dpi,
                                   gridspec_kw={"width_ratios": [2.3, 1]})
    ax.imshow(m.micrograph, cmap="gray", vmin=0, vmax=255)
    mean = m.covered_mean()
    if target["kind"] == "classification":
        names = target["class_names"]
        colors = plt.cm.tab10(np.arange(len(names)) % 10)
        chosen = np.nan_to_num(mean, nan=0).argmax(axis=2)
        floor = 1 / len(names)
        strength = np.clip((np.nan_to_num(mean.max(axis=2), nan=floor) - floor) / (1 - floor),
                           0, 1)
        overlay = colors[chosen].copy()
        overlay[..., 3] = 0.15 + 0.5 * strength
        overlay[np.isnan(mean[..., 0]), 3] = 0
        ax.imshow(overlay)
        ax.legend(handles=[Patch(color=colors[c], label=n) for c, n in enumerate(names)],
                  loc="upper right", fontsize=7, title="colour: class; opacity: confidence",
                  title_fontsize=7)
        votes = np.bincount(m.outputs.argmax(axis=1), minlength=len(names))
        hist.bar(range(len(names)), votes, color=colors)
        hist.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=8)
        hist.set_ylabel("patches predicting it")
    else:
        shown = ax.imshow(mean, cmap="viridis", alpha=0.55)
        fig.colorbar(shown, ax=ax, fraction=0.035, label=target["name"])
        hist.hist(m.outputs, bins=min(20, max(5, len(m.outputs) // 3)), color="tab:green")
        hist.set_xlabel(f"{target['name']} per patch")
        hist.set_ylabel("patches")
    ax.set_axis_off()
    add_scale_bar(ax, m.pixel_nm)
    ax.set_title(f"{Path(m.path).name}: {summary(m, target)}", fontsize=9)
    hist.set_title("is the film uniform?", fontsize=9)
    return save_figure(fig, path, dpi)
