"""Model selection by nested grouped cross-validation (``model=auto``)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from sinterlab.data.datamodule import SEMDataModule
from sinterlab.models.fit import fit_head, head_oof, image_calibrations, median_temperatures


def select_model(cfg: DictConfig, dm: SEMDataModule, assignment: np.ndarray, kind: str,
                 run_dir: Path) -> tuple[dict, list[np.ndarray], dict, dict[str, np.ndarray]]:
    """Nested grouped CV over ``cfg.model.candidates``.

    Per candidate: one ensemble over (outer x inner folds) x inner seeds, trained on the inner
    training groups of each outer fold's non-test groups and scored by its loss on the inner
    held-out groups (outer test rows are never read); and its plain CV ensemble over the outer
    folds. Outer fold f takes the out-of-fold predictions of the candidate with the lowest mean
    inner loss on f. The final model is the candidate with the lowest held-out loss of its plain
    CV on all data, refitted on every group for the median of its members' best epoch counts.
    Returns the selection record, the nested out-of-fold outputs (per target; calibrated, raw
    and served per image), the chosen
    candidate's CV training record and every candidate's out-of-fold output (first target).
    """
    started = time.perf_counter()
    sel = cfg.model.selection
    inner_seeds = [int(s) for s in sel.inner_seeds]
    inner = dm.inner_folds(assignment, kind, int(sel.inner_folds))
    folds, names = len(assignment), list(cfg.model.candidates)
    inner_scores, outputs, raw, served, infos = {}, {}, {}, {}, {}
    for name in names:
        model = cfg.model.candidates[name]
        head, _ = fit_head(cfg, dm, inner, run_dir, f"{kind}-inner-{name}", model=model,
                           seeds=inner_seeds)
        losses = head.evaluate_loss(dm.test_dataloader(inner)).numpy()  # group-major members
        inner_scores[name] = losses.reshape(folds, -1).mean(axis=1)
        head, infos[name] = fit_head(cfg, dm, assignment, run_dir, f"{kind}-{name}", model=model)
        outputs[name] = head_oof(head, dm, assignment)
        raw[name] = head_oof(head, dm, assignment, calibrated=False)
        served[name] = head_oof(head, dm, assignment, images=image_calibrations(infos[name]))
        infos[name]["held_out_loss"] = float(
            head.evaluate_loss(dm.test_dataloader(assignment)).mean())
    winners = [min(names, key=lambda n, f=f: inner_scores[n][f]) for f in range(folds)]
    test_fold = dm.test_fold(assignment)
    nested = [np.full_like(out, np.nan) for out in outputs[names[0]]]
    nested_raw = [np.full_like(out, np.nan) for out in outputs[names[0]]]
    nested_served = [np.full_like(out, np.nan) for out in outputs[names[0]]]
    for f, winner in enumerate(winners):
        rows = test_fold == f
        for target, (out, uncalibrated, image) in enumerate(zip(
                outputs[winner], raw[winner], served[winner], strict=True)):
            nested[target][rows] = out[rows]
            nested_raw[target][rows] = uncalibrated[rows]
            nested_served[target][rows] = image[rows]
    chosen = min(names, key=lambda n: infos[n]["held_out_loss"])
    best = [m["best_epoch"] for m in infos[chosen]["members"] if m["best_epoch"] is not None]
    epochs = int(np.median(best)) + 1 if best else int(cfg.trainer.max_epochs)
    everything = np.full((1, len(dm.x)), "train")
    _, final = fit_head(cfg, dm, everything, run_dir, "final", model=cfg.model.candidates[chosen],
                        max_epochs=epochs, temperatures=median_temperatures(infos[chosen]),
                        image_calibration=image_calibrations(infos[chosen]))
    record = {
        "candidates": names, "inner_folds": int(sel.inner_folds), "inner_seeds": inner_seeds,
        "inner_scores": {n: [float(v) for v in inner_scores[n]] for n in names},
        "winners": winners,
        "cv_held_out_loss": {n: infos[n]["held_out_loss"] for n in names},
        "final": {"model": chosen, "epochs": epochs, "members": final["n_members"],
                  "temperatures": median_temperatures(infos[chosen]),
                  "image_calibration": final["image_calibration"],
                  "checkpoint": final["checkpoint"], "wall_s": final["wall_s"]},
        "wall_s": round(time.perf_counter() - started, 2)}
    return (record, (nested, nested_raw, nested_served), infos[chosen],
            {n: outputs[n][0] for n in names})
