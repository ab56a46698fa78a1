"""The tables of `experiments/results.md` from a folder of finished runs (a sweep or single runs):
per run, every model's pooled out-of-fold image accuracy (and, for ordered targets, the mean
absolute error and within-one-level accuracy of the run's own model), the winner of each outer
fold of model=auto and the final model, how far the served image probabilities can be trusted
(image ECE raw -> served, the conformal sets' coverage), and the stage times.

    .venv/bin/python experiments/sweep_tables.py FOLDER [FOLDER ...]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from sinterlab.evaluation.display import interval, long_name, reported_model


def bounded(value: float, bounds: list | None) -> str:
    """'0.050 [0.020, 0.080]' from a value and its [low, high] (or None)."""
    low, high = bounds or (None, None)
    return interval({"value": value, "low": low, "high": high})


def runs(folders: list[str]) -> list[tuple[str, dict]]:
    found = []
    for folder in folders:
        for path in sorted(Path(folder).rglob("metrics.json")):
            found.append((path.parent.name, json.loads(path.read_text())))
    return found


def tables(found: list[tuple[str, dict]]) -> str:
    out = []
    models = list(dict.fromkeys(m for _, metrics in found for m in metrics["cv"]["pooled"]))
    out += ["Pooled out-of-fold image accuracy [95% interval over samples]:", "",
            "| run | " + " | ".join(long_name(m) for m in models) + " |",
            "|---|" + "---|" * len(models)]
    for name, metrics in found:
        pooled = metrics["cv"]["pooled"]
        cells = (interval((pooled.get(m) or {}).get("image", {}).get("accuracy")) for m in models)
        out.append(f"| {metrics['experiment']} ({name}) | " + " | ".join(cells) + " |")
    out += ["", "| run | primary | MAE (units) | within one level | p (chance) | winners per "
            "outer fold | final model | selection s |", "|---|---|---|---|---|---|---|---|"]
    for name, metrics in found:
        cv, sel = metrics["cv"], metrics.get("selection") or {}
        reported = reported_model(cv)
        image = cv["pooled"][reported]["image"]
        out.append(f"| {metrics['experiment']} ({name}) | {reported} | "
                   f"{interval(image.get('mae'), 1)} | {interval(image.get('within_one'))} | "
                   f"{(cv.get('permutation') or {}).get('p_value', float('nan')):.3f} | "
                   f"{', '.join(sel.get('winners', [])) or '—'} | "
                   f"{(sel.get('final') or {}).get('point', '—')} | {sel.get('wall_s', '—')} |")
    out += ["", "| run | served | image ECE raw | image ECE served | sample ECE raw -> served | "
            "sets: coverage (mean size) at | images whose served class differs |",
            "|---|---|---|---|---|---|---|"]
    for name, metrics in found:
        cal = metrics.get("calibration") or {}
        if "image" not in cal:
            continue
        image, sample, sets = cal["image"], cal["sample"], cal.get("sets") or {}
        coverage = ("—" if sets.get("coverage") is None else
                    f"{sets['coverage']:.3f} ({sets['mean_size']:.2f}) at "
                    f"{sets['confidence']:.0%}")
        out.append(f"| {metrics['experiment']} ({name}) | {cal.get('served')} | "
                   f"{bounded(image['ece_raw'], image.get('ece_raw_interval'))} | "
                   f"{bounded(image['ece_calibrated'], image.get('ece_calibrated_interval'))} |"
                   f" {sample['ece_raw']:.3f} -> {sample['ece_calibrated']:.3f} | {coverage} | "
                   f"{cal.get('images_class_changed')} of {image['n']} |")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    print(tables(runs(sys.argv[1:])))
