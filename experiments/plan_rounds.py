"""Simulated rounds of ``sinterlab-plan goal=next`` against the synthetic physics: does batch
noisy expected improvement reach the lowest sheet resistance faster than a grid design of the
same size?

The oracle is the generator's own law (``sinterlab/synth/measurements.py``, preset ``plan``):
each new sample draws its nuisance factors (energy, size, thickness; the preset's slide, set
and sample scatter combined) and the probe's log-normal noise, so no images are needed. The
known optimum is the allowed setting (``conf/plan.yaml`` space) with the lowest noise-free
sheet resistance of a typical sample.

Each design's recommendation is the measured setting with the lowest GP posterior mean (the
usual choice under noise); its distance to the optimum is the excess of its noise-free sheet
resistance over the optimum's (%), and the distance in the unit-scaled parameter space.

    python experiments/plan_rounds.py            # 3 rounds of q=3 after 6 samples, 10 seeds
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import OmegaConf

from sinterlab.cli.plan import QUIET  # harmless warnings of BoTorch's import and of GPyTorch

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=QUIET[0])
    from sinterlab.planning.goals import Fitted, next_batch
    from sinterlab.planning.responses import Response
    from sinterlab.planning.space import Space, space_from_config
    from sinterlab.planning.surrogate import fit_gp, predict
    from sinterlab.synth.generate import load_preset
    from sinterlab.synth.measurements import measured, sample_sheet_resistance

ROOT = Path(__file__).resolve().parents[1]
RESPONSE = Response("sheet_resistance", "descriptor", "sheet_resistance_ohm_sq", "Ω/sq", True)


class Oracle:
    """New samples from the generator's physics: nuisance scatter and probe noise."""

    def __init__(self, preset: str = "plan", dotlist: list[str] | None = None) -> None:
        cfg = load_preset(preset, dotlist)
        self.physics, self.law, nz = cfg.physics, cfg.measurements.sheet_resistance, cfg.nuisance
        self.sd = {k: float(np.sqrt(sum(float(level[k]) ** 2 for level in
                                        (nz.slide_sd, nz.set_sd, nz.sample_sd))))
                   for k in ("energy", "size", "thickness")}

    def true(self, x: np.ndarray) -> np.ndarray:
        """Noise-free sheet resistance of a typical sample at each setting (rows of x)."""
        return np.array([sample_sheet_resistance(bc, dc, self.physics, self.law) for bc, dc in x])

    def measure(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        out = []
        for bc, dc in x:
            f = {k: float(np.exp(sd * rng.standard_normal())) for k, sd in self.sd.items()}
            value = sample_sheet_resistance(bc, dc, self.physics, self.law, f["energy"],
                                            f["size"], f["thickness"])
            out.append(measured(value, rng, self.law))
        return np.array(out)


def grid_design(space: Space, counts: list[int]) -> np.ndarray:
    """``counts[i]`` allowed levels of parameter i, evenly spread (ends included), crossed."""
    axes = [np.array(p.levels)[np.round(np.linspace(0, len(p.levels) - 1, n)).astype(int)]
            for p, n in zip(space.parameters, counts, strict=True)]
    return np.array(np.meshgrid(*axes, indexing="ij")).reshape(len(axes), -1).T


def recommend(space: Space, x: np.ndarray, y: np.ndarray, seed: int) -> np.ndarray:
    """The measured setting with the lowest GP posterior mean."""
    model = fit_gp(x, RESPONSE.forward(y), space.bounds, seed)
    unique = np.unique(x, axis=0)
    return unique[int(np.argmin(predict(model, unique, 0.9, False).mean))]


def distance(space: Space, oracle: Oracle, chosen: np.ndarray, best: np.ndarray,
             best_value: float) -> tuple[float, float]:
    """(excess sheet resistance over the optimum in %, distance in unit-scaled parameters)."""
    excess = 100.0 * (float(oracle.true(chosen[None])[0]) / best_value - 1.0)
    lo, hi = space.bounds
    return excess, float(np.linalg.norm((chosen - best) / (hi - lo)))


def run_rounds(space: Space, oracle: Oracle, start: np.ndarray, rounds: int, q: int,
               next_cfg, seed: int) -> list[dict]:
    """Measure ``start``, then ``rounds`` batches of ``q`` by NEI; the distance after each."""
    rng = np.random.default_rng(seed)
    grid = space.grid()
    allowed = grid[space.names].to_numpy(float)
    truth = oracle.true(allowed)
    best, best_value = allowed[int(np.argmin(truth))], float(truth.min())
    x, y = start.astype(float), oracle.measure(start, rng)
    history = []
    for r in range(rounds + 1):
        chosen = recommend(space, x, y, seed)
        excess, dist = distance(space, oracle, chosen, best, best_value)
        history.append({"round": r, "samples": len(x), "recommended": tuple(chosen),
                        "excess_pct": excess, "distance": dist})
        if r == rounds:
            break
        model = fit_gp(x, RESPONSE.forward(y), space.bounds, seed)
        fit = Fitted(RESPONSE, model, x, RESPONSE.forward(y), {})
        cfg = OmegaConf.merge(next_cfg, {"q": q, "seed": seed + r, "acquisition": "nei",
                                         "direction": "minimize"})
        batch, _ = next_batch(grid, space, {RESPONSE.name: fit}, cfg, 0.9)
        new = batch[space.names].to_numpy(float)
        x, y = np.vstack([x, new]), np.concatenate([y, oracle.measure(new, rng)])
    return history


def run_grid(space: Space, oracle: Oracle, design: np.ndarray, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    allowed = space.grid()[space.names].to_numpy(float)
    truth = oracle.true(allowed)
    best, best_value = allowed[int(np.argmin(truth))], float(truth.min())
    chosen = recommend(space, design, oracle.measure(design, rng), seed)
    excess, dist = distance(space, oracle, chosen, best, best_value)
    return {"samples": len(design), "recommended": tuple(chosen), "excess_pct": excess,
            "distance": dist}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--q", type=int, default=3)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override of the plan preset's physics, e.g. "
                        "measurements.sheet_resistance.damage_dc=60")
    args = parser.parse_args(argv)
    for message in QUIET:
        warnings.filterwarnings("ignore", message=message)
    cfg = OmegaConf.load(ROOT / "conf" / "plan.yaml")
    space, oracle = space_from_config(cfg.space), Oracle(dotlist=args.set)
    start = grid_design(space, [3, 2])  # 6 samples
    total = len(start) + args.rounds * args.q
    grid = grid_design(space, [5, 3]) if total == 15 else None
    allowed = space.grid()[space.names].to_numpy(float)
    truth = oracle.true(allowed)
    optimum = tuple(float(v) for v in allowed[int(np.argmin(truth))])
    print(f"optimum: {optimum} -> {truth.min():.4f} Ω/sq "
          f"(typical sample, noise-free); start {len(start)} samples, {args.rounds} rounds of "
          f"q={args.q}; grid design {None if grid is None else len(grid)} samples")
    started = time.perf_counter()
    rows = []
    for seed in range(args.seeds):
        for h in run_rounds(space, oracle, start, args.rounds, args.q, cfg.next, seed):
            rows.append({"seed": seed, "design": f"NEI round {h['round']}", **h})
        if grid is not None:
            rows.append({"seed": seed, "design": "grid", "round": args.rounds,
                         **run_grid(space, oracle, grid, seed)})
    frame = pd.DataFrame(rows)
    summary = frame.groupby("design", sort=False).agg(
        samples=("samples", "first"), excess_pct_mean=("excess_pct", "mean"),
        excess_pct_median=("excess_pct", "median"), distance_mean=("distance", "mean"),
        at_optimum=("excess_pct", lambda v: f"{int((v < 1e-9).sum())}/{len(v)}"))
    print(summary.to_string(float_format=lambda v: f"{v:.2f}"))
    last = frame[frame["design"].isin([f"NEI round {args.rounds}", "grid"])]
    print("excess (%) per seed:")
    print(last.pivot(index="design", columns="seed", values="excess_pct")
          .to_string(float_format=lambda v: f"{v:.0f}"))
    print(f"{args.seeds} seeds in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    sys.exit(main())
