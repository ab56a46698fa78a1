"""Does the learning curve project what twice the samples give? (issue 36)

Trains `model=auto` with learning curves on the original data and on a data set of twice the
samples made by the same generator with a fresh seed (`sinterlab-synth preset=paper
design.sets=4 seed=1`), for each experiment, then tabulates the projection at 2x against the
real 2x run, and back-tests curve families on the 2x run's own curve (fitted on the points up to
today's size, scored at twice it).

    python experiments/learning_curve_validation.py ORIGINAL.csv DOUBLED.csv OUT \
        [--experiments five_class binary_100_250] [--cache2x DIR] [--no-back-test] [override ...]

--no-back-test runs the doubled data without its own learning curve (its cost: a curve retrains
the model on every subset), so only the projection is checked.

Runs whose metrics.json exists are reused. Extra arguments are Hydra overrides for every run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from sinterlab.evaluation.learning_curve import fit_power_laws

#: the candidates of model=auto here: the scikit-learn ones that served the paper preset's runs
#: (the heads add an hour per run on two cores and were never the final model there)
COMMON = ["backbone=efficientnet_lite0_offline", "model=auto",
          *(f"~model.candidates.{c}" for c in ("mlp", "linear", "mlp_small", "corn",
                                               "level_value", "sk_logreg")),
          "evaluation.contrast.enabled=false", "evaluation.gallery.enabled=false",
          "measures.enabled=false", "evaluation.learning_curve.enabled=true",
          "trainer.enable_progress_bar=false"]
#: the doubled run's curve also has points at the original run's sizes, for the back-test
DENSE = "evaluation.learning_curve.fractions.samples=[0.125,0.25,0.375,0.5,0.75,1.0]"
#: curve families back-tested: (name, exponent grid); log-linear and flat as references
FAMILIES = [("power law, exponent 0.1-2 (default)", np.linspace(0.1, 2.0, 39)),
            ("power law, exponent 0.5", np.array([0.5])),
            ("power law, exponent 1", np.array([1.0]))]


def train(descriptor: Path, experiment: str, out: Path, extra: list[str]) -> dict:
    if not (out / "metrics.json").is_file():
        command = [str(Path(sys.executable).parent / "sinterlab-train"),
                   f"experiment={experiment}", f"data.descriptor={descriptor}",
                   f"hydra.run.dir={out}", *COMMON, *extra]
        print(" ".join(command), flush=True)
        subprocess.run(command, check=True)
    return json.loads((out / "metrics.json").read_text())


def headline(metrics: dict) -> dict:
    return metrics["cv"]["pooled"][metrics["cv"]["primary"]]["image"]["accuracy"]


def back_test(points: list[dict], today: float, metric: str = "accuracy") -> dict:
    """Fit each family on the points up to ``today`` and predict the last (largest) point."""
    x = np.array([p["x"] for p in points])
    value = np.array([p[metric]["value"] for p in points])
    sd = np.array([(p[metric]["high"] - p[metric]["low"]) / 3.92 for p in points])
    fit = x <= today * 1.001
    out = {"measured": float(value[-1]), "at": float(x[-1])}
    loss = 1 - value
    for name, grid in FAMILIES:
        curve = fit_power_laws(x[fit], loss[fit][None], sd[fit], (0.0, 0.8), grid)
        out[name] = float(1 - curve(x[-1])[0, 0])
    slope, intercept = np.polyfit(np.log(x[fit]), value[fit], 1, w=1 / sd[fit])
    out["log-linear"] = float(intercept + slope * np.log(x[-1]))
    out["flat (today's point)"] = float(value[fit][-1])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("original", type=Path)
    parser.add_argument("doubled", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--experiments", nargs="+", default=["five_class", "binary_100_250"])
    parser.add_argument("--cache2x", type=Path, default=None,
                        help="embedding cache of the doubled data (default: the config's)")
    parser.add_argument("--no-back-test", action="store_true",
                        help="no learning curve on the doubled data (projection check only)")
    args, extra = parser.parse_known_args()
    rows, tests = [], []
    for experiment in args.experiments:
        once = train(args.original.resolve(), experiment, args.out / f"{experiment}_1x", extra)
        cache = [f"features.cache_dir={args.cache2x.resolve()}"] if args.cache2x else []
        own_curve = [DENSE] if not args.no_back_test else [
            "evaluation.learning_curve.enabled=false"]
        twice = train(args.doubled.resolve(), experiment, args.out / f"{experiment}_2x",
                      [*extra, *cache, *own_curve])
        lc = once["learning_curve"]["axes"]["samples"]
        projection = lc["projection"]["accuracy"][0]
        lc2 = None if args.no_back_test else twice["learning_curve"]["axes"]["samples"]
        same = twice["selection"]["final"]["point"] == once["selection"]["final"]["point"]
        inside = projection["run_low"] <= headline(twice)["value"] <= projection["run_high"]
        rows.append([experiment, once["learning_curve"]["model"], f"{lc['today']:.0f}",
                     f"{lc['points'][-1]['accuracy']['value']:.3f}",
                     f"{projection['value']:.3f} [{projection['low']:.3f}, "
                     f"{projection['high']:.3f}]",
                     f"[{projection['run_low']:.3f}, {projection['run_high']:.3f}]",
                     f"{headline(twice)['value']:.3f} [{headline(twice)['low']:.3f}, "
                     f"{headline(twice)['high']:.3f}]",
                     (f"{lc2['points'][-1]['accuracy']['value']:.3f}"
                      f" ({twice['learning_curve']['model']}"
                      f"{'' if same else ', another point'})") if lc2 else
                     twice["selection"]["final"]["point"] + ("" if same else " (another point)"),
                     "yes" if inside else "**no**"])
        if lc2:
            tests.append((experiment, back_test(lc2["points"], lc2["today"] / 2)))
    header = ["experiment", "served (1x)", "samples per class", "1x: served config",
              "projected at 2x", "a 2x run would measure", "2x run: auto (headline)",
              "2x run: its served config", "inside"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    names = [k for k in tests[0][1] if k not in ("measured", "at")] if tests else []
    if tests:
        lines += ["", "Back-test on the 2x run's own curve (fitted up to the original size, "
                  "scored at twice it):", "",
                  "| experiment | measured | " + " | ".join(names) + " |",
                  "|" + "---|" * (len(names) + 2)]
    lines += [f"| {e} | {t['measured']:.3f} | " + " | ".join(f"{t[n]:.3f}" for n in names)
              + " |" for e, t in tests]
    text = "\n".join(lines) + "\n"
    (args.out / "validation.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
