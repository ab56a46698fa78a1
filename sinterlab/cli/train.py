"""``sinterlab-train``: train and evaluate one experiment (Hydra app; multirun for sweeps)."""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from sinterlab.cli import CONF_DIR, summary_lines
from sinterlab.errors import SinterlabError
from sinterlab.training import run_experiment


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")
def main(cfg: DictConfig) -> float | None:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        metrics = run_experiment(cfg, run_dir)
    except SinterlabError as err:
        print(f"sinterlab-train: error: {err}", file=sys.stderr)
        sys.exit(2)
    print("\n".join(summary_lines(metrics, run_dir)))
    return metrics["training"]["best_val_loss"]  # what hparams_search minimizes


if __name__ == "__main__":
    main()
