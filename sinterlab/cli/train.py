"""``sinterlab-train``: train and evaluate one experiment (Hydra app; multirun for sweeps).

Exit status: 0 done; 2 bad input or configuration (one line on screen, the same in the run's
``train.log`` and ``error.txt``); 74 a file could not be written (disk full, quota, file size
limit, permission: one line naming the file and the cause, recorded the same way where the disk
allows); 130 Ctrl-C (cached embeddings are kept, the same command resumes); 1 a bug (its
traceback). In a multirun a run stopped by bad input does not stop the sweep: it leaves
``error.txt``, and the sweep exits 2 at the end (:class:`FailedRunsCallback`); a failed write
stops the sweep (the next run would meet the same full disk).
"""

from __future__ import annotations

import logging
import sys
import traceback
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from sinterlab.atomic import quiet_thread_write_failures, writing
from sinterlab.cli import CONF_DIR, stopped, summary_lines
from sinterlab.config_schema import TRAIN, check_config
from sinterlab.console import route_library_logs
from sinterlab.errors import WRITE_FAILED, SinterlabError, WriteFailed
from sinterlab.runs import (
    ERROR,
    FolderTaken,
    RunInterrupted,
    claim,
    record_failure,
    sigint_raises_interrupted,
)
from sinterlab.study.training import run_experiment

log = logging.getLogger("sinterlab-train")
PROG = "sinterlab-train"


def _stop(run_dir: Path, message: str, code: int, own_folder: bool = True) -> float:
    """Say why the run stopped (screen, log, error.txt); exit unless other runs of a sweep
    are still to come."""
    print(f"{PROG}: {message}", file=sys.stderr)
    log.error(message, extra={"file_only": True})
    if own_folder and record_failure(run_dir, message) is None:
        print(f"warning: {run_dir} could not record why the run stopped either ({ERROR})",
              file=sys.stderr)
    if code == 2 and HydraConfig.get().mode == RunMode.MULTIRUN:
        return float("nan")  # the sweep goes on; an Optuna trial counts as failed
    sys.exit(code)


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")
def main(cfg: DictConfig) -> float | None:
    route_library_logs()
    quiet_thread_write_failures()
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        with sigint_raises_interrupted(), writing(run_dir):
            check_config(cfg, TRAIN)
            metrics = run_experiment(cfg, run_dir)
    except SinterlabError as err:
        return _stop(run_dir, f"error: {err}", 2, own_folder=not isinstance(err, FolderTaken))
    except WriteFailed as err:
        return _stop(run_dir, stopped(err), WRITE_FAILED)
    except RunInterrupted as err:
        return _stop(run_dir, err.describe(), 130)
    except Exception:
        record_failure(run_dir, "crashed (a bug; please report it with this file):\n"
                       + traceback.format_exc())
        log.exception("crashed")
        raise
    print("\n".join(summary_lines(metrics, run_dir)))
    # what hparams_search minimizes
    return metrics.training.best_val_loss if metrics.training else None


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


if __name__ == "__main__":
    main()
