"""Console scripts: sinterlab-train, -predict, -synth, -report."""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import OmegaConf

#: the Hydra config folder at the repository root
CONF_DIR = Path(__file__).resolve().parents[2] / "conf"

# `${cwd:}` in conf/paths: the folder a command started in, usable before Hydra's own config
# exists (hydra.sweep.dir is resolved before `${hydra:runtime.cwd}` is available)
OmegaConf.register_new_resolver("cwd", os.getcwd, replace=True)


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def summary_lines(metrics: dict, run_dir: Path) -> list[str]:
    """The key numbers of a finished run, as printed at the end of ``sinterlab-train``."""
    weights = metrics["backbone"]["weights"]
    lines = [f"run: {run_dir}", f"report: {run_dir / 'report.md'}",
             f"backbone: {metrics['backbone']['name']} weights={weights['source']} "
             f"({weights['identity']})" + ("" if weights["transfer_learning"]
                                           else "  [random init: NOT transfer learning]"),
             f"embeddings: {metrics['cache']['images']} images, "
             f"{metrics['cache']['from_cache']} from cache, "
             f"{metrics['cache']['extracted']} extracted"]
    blocks = [metrics] + ([metrics["contrast"]] if metrics.get("contrast") else [])
    for block in blocks:
        split = block["split"]
        label = f"split={split['kind']}" + (" (LEAKY)" if split["leaky"] else "")
        for name, source in (("head", block.get("test")),
                             ("linear probe", (block.get("baseline") or {}).get("linear_probe"))):
            if source:
                lines += [f"{label:<22} {name:<13} {line}" for line in _level_lines(source)]
    return lines


def _level_lines(levels: dict) -> list[str]:
    """One line per target: patch- and image-level main metrics."""
    patch, image = levels["patch"], levels["image"]
    if "accuracy" in patch:
        return [f"patch acc {_fmt(patch['accuracy'])} F1 {_fmt(patch['f1_macro'])} "
                f"AUROC {_fmt(patch['auroc'])} | image acc {_fmt(image['accuracy'])}"]
    if "mae" in patch:
        return [f"patch MAE {_fmt(patch['mae'])} R2 {_fmt(patch['r2'])} | "
                f"image MAE {_fmt(image['mae'])}"]
    return [f"{target}: {line}" for target in patch
            for line in _level_lines({"patch": patch[target], "image": image[target]})]
