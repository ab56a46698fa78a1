"""Hydra callbacks of ``sinterlab-train`` and ``sinterlab-extract`` (``conf/hydra/default.yaml``):
claim a run's folder before Hydra writes into it, name a sweep's failed runs at its end. Kept
apart from the commands so that Hydra, building them, imports no training code."""

from __future__ import annotations

import sys
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from sinterlab.cli import stopped
from sinterlab.errors import WRITE_FAILED, WriteFailed
from sinterlab.runs import ERROR, FolderTaken, claim

PROG = "sinterlab-train"


class ClaimRunFolder(Callback):
    """Claim a single run's folder before Hydra writes its ``.hydra/`` record and opens
    ``train.log`` there, so a refused folder (another run's) gets nothing written into it.
    A multirun's job folders are new ones under the sweep folder, claimed by the run itself."""

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        if config.get("task_name") != "train":  # sinterlab-extract keeps no run record
            return
        run_dir = Path(str(OmegaConf.select(config, "hydra.run.dir"))).absolute()
        try:
            note = claim(run_dir)
        except FolderTaken as err:
            print(f"{PROG}: error: {err}", file=sys.stderr)
            sys.exit(2)
        except WriteFailed as err:
            print(f"{PROG}: {stopped(err)}", file=sys.stderr)
            sys.exit(WRITE_FAILED)
        if note:
            print(f"{PROG}: {note}", file=sys.stderr)


class FailedRunsCallback(Callback):
    """At the end of a multirun, name the runs that failed and exit 2 if any did."""

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        sweep = Path(config.hydra.sweep.dir)
        failed = sorted(sweep.glob(f"**/{ERROR}"))
        if failed:
            print(f"{PROG}: {len(failed)} run(s) of the sweep failed; their reasons: "
                  f"{', '.join(str(p) for p in failed)}", file=sys.stderr)
            sys.exit(2)
