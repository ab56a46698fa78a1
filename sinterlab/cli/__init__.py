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
            if not source:
                continue
            patch, image = source["patch"], source["image"]
            if "accuracy" in patch:
                lines.append(f"{label:<22} {name:<13} patch acc {_fmt(patch['accuracy'])} "
                             f"F1 {_fmt(patch['f1_macro'])} AUROC {_fmt(patch['auroc'])} | "
                             f"image acc {_fmt(image['accuracy'])}")
            elif "mae" in patch:
                lines.append(f"{label:<22} {name:<13} patch MAE {_fmt(patch['mae'])} "
                             f"R2 {_fmt(patch['r2'])} | image MAE {_fmt(image['mae'])}")
    return lines
