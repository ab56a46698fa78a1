"""Which image pooling and calibrator: every choice, measured on a finished run's CV ensembles.

``python experiments/image_calibration.py RUN_DIR [CHECKPOINT ...]`` reloads the run's data
(embeddings from its cache) and each CV checkpoint (default: every ``<split>-*ensemble.ckpt``
but the inner ones), fits sinterlab's cross-fitted image calibration for every pooling x
calibrator (the heads are not retrained: calibration comes after training) and prints, per
choice, the out-of-fold ECE per image and per sample with 95% intervals that resample samples,
and image accuracy: as served (each fold's map kept only where it beats the raw probabilities
on held-out samples, ``evaluation.calibration.check`` of conf/) and with every map kept.
Beside them: the raw mean of patch probabilities and the mean of temperature-scaled patch
probabilities (what predict served before image calibration).
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import OmegaConf

from sinterlab.cli import CONF_DIR
from sinterlab.data.descriptor import IMAGE, SAMPLE
from sinterlab.evaluation.reliability import expected_calibration_error
from sinterlab.evaluation.statistics import LevelTables
from sinterlab.models.calibration import CALIBRATORS, POOLINGS, MapCheck, head_image_calibration
from sinterlab.models.head import HeadEnsemble
from sinterlab.study.datamodule import SEMDataModule


def main(run: Path, patterns: list[str]) -> None:
    cfg = OmegaConf.load(run / "config.yaml")
    dm = SEMDataModule(cfg)
    dm.setup("fit")
    y = dm.y[:, 0].numpy().astype(int)
    images = dm.patches[IMAGE].to_numpy().astype(str)
    samples = dm.patches[SAMPLE].to_numpy().astype(str)
    val, test = dm.rows(dm.assignment, "val"), dm.rows(dm.assignment, "test")
    tested = np.concatenate(test)
    b, bins = cfg.evaluation.bootstrap, int(cfg.evaluation.calibration.bins)
    # a run from before the check has none in its config: this code's default
    served_check = MapCheck.from_config(OmegaConf.merge(
        OmegaConf.load(CONF_DIR / "evaluation" / "default.yaml").calibration,
        cfg.evaluation.calibration))
    patterns = patterns or [f"{cfg.split.kind}-*ensemble.ckpt"]
    checkpoints = [c for p in patterns for c in sorted((run / "checkpoints").glob(p))
                   if "-inner-" not in c.name]

    def row(name: str, served: np.ndarray) -> str:
        tables = LevelTables("classification", y[tested], served[tested], images[tested],
                             samples[tested], samples[tested])
        draws = tables.draws(int(b.n), int(b.seed))
        cells = []
        for level in ("image", "sample"):
            truth, probs, _ = tables.levels[level]
            values = [expected_calibration_error(probs[d[level]], truth[d[level]], bins)
                      for d in draws]
            low, high = np.quantile(values, [0.025, 0.975])
            cells.append(f"{expected_calibration_error(probs, truth, bins):.3f} "
                         f"[{low:.3f}, {high:.3f}]")
        accuracy = (tables.levels["image"][1].argmax(1) == tables.levels["image"][0]).mean()
        return f"| {name} | {' | '.join(cells)} | {accuracy:.3f} |"

    for checkpoint in checkpoints:
        head = HeadEnsemble.load_from_checkpoint(checkpoint, map_location="cpu")
        seeds = head.stack.per_group
        raw = head.predict_members(dm.x, calibrated=False)[0]
        scaled = head.predict_members(dm.x)[0]
        print(f"\n{run.name}/{checkpoint.name}: {raw.shape[0]} members, validation images per "
              f"fold {[len(np.unique(images[r])) for r in val]}\n")
        print("| image probability | image ECE | sample ECE | image accuracy |\n|---|---|---|---|")
        for name, members in (("mean of raw patch probabilities", raw),
                              ("mean of temperature-scaled patch probabilities", scaled)):
            served = np.full((len(y), raw.shape[2]), np.nan)
            for g, rows in enumerate(test):
                served[rows] = members[g * seeds:(g + 1) * seeds][:, rows].mean(0)
            print(row(name, served))
        for pooling in POOLINGS:
            for calibrator in CALIBRATORS:
                for checked, check in (("", served_check),
                                       (", every map kept", replace(
                                           served_check, min_gain=-np.inf,
                                           standard_errors=0.0))):
                    [calibration] = head_image_calibration(head, dm.x, dm.y, images, val, test,
                                                           pooling, calibrator, check=check,
                                                           units=samples)
                    served = np.full((len(y), raw.shape[2]), np.nan)
                    for g, rows in enumerate(test):
                        own = slice(g * seeds, (g + 1) * seeds)
                        probs = calibration.apply(raw[own][:, rows], images[rows], own)[1]
                        served[rows] = probs.mean(0)[pd.factorize(images[rows])[0]]
                    kept = f" (maps kept: {int(calibration.kept.sum())} of " \
                           f"{len(calibration.kept)})" if not checked else ""
                    print(row(f"{pooling}, {calibrator}{checked}{kept}", served))


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2:])
