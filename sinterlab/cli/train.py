"""``sinterlab-train``: train and evaluate one experiment (Hydra app; multirun for sweeps).

Exit status: 0 done; 2 bad input or configuration (one line on screen, the same in the run's
``train.log`` and ``error.txt``); 74 a file could not be written (disk full, quota, file size
limit, permission: one line naming the file and the cause, recorded the same way where the disk
allows); 130 Ctrl-C (cached embeddings are kept, the same command resumes); 1 a bug (its
traceback). In a multirun a run stopped by bad input does not stop the sweep: it leaves
``error.txt``, and the sweep exits 2 at the end (``sinterlab.cli.callbacks``); a failed write
stops the sweep (the next run would meet the same full disk).
"""

from __future__ import annotations

import logging
import sys
import traceback
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from sinterlab.atomic import quiet_thread_write_failures, writing
from sinterlab.cli import CONF_DIR, stopped
from sinterlab.config_schema import TRAIN, check_config
from sinterlab.console import route_library_logs
from sinterlab.errors import WRITE_FAILED, SinterlabError, WriteFailed
from sinterlab.evaluation.data_report import console_line
from sinterlab.evaluation.display import interval, selection_warning, short_name
from sinterlab.evaluation.results import RunMetrics, as_run
from sinterlab.runs import (
    ERROR,
    FolderTaken,
    RunInterrupted,
    record_failure,
    sigint_raises_interrupted,
)

log = logging.getLogger("sinterlab-train")
PROG = "sinterlab-train"
#: a missing number in the console's summary lines (the report writes "—")
NA = "n/a"


def summary_lines(metrics: RunMetrics | dict, run_dir: Path) -> list[str]:
    """The key numbers of a finished run, as printed at the end of ``sinterlab-train``: the
    pooled out-of-fold main metric per model with its interval, for each split evaluated."""
    m = as_run(metrics)
    weights, cache, first = m.backbone.weights, m.cache, m.first_target
    lines = [f"run: {run_dir}", f"report: {run_dir / 'report.md'}",
             f"backbone: {m.backbone.name} weights={weights.source} ({weights.identity})"
             + ("" if weights.transfer_learning else "  [random init: NOT transfer learning]"),
             f"embeddings: {cache.images} images, {cache.from_cache} from cache, "
             f"{cache.extracted} extracted (runtime {cache.runtime})"]
    for block in [m] + ([m.contrast] if m.contrast else []):
        cv, split, verdict = block.cv, block.split, block.cv.verdict
        level, metric = verdict.level, verdict.metric
        label = (f"{cv.folds}-fold CV" if cv.protocol == "cv" else "holdout") + \
            f" by {split.kind}" + (" (LEAKY)" if split.leaky else "")
        for name in cv.pooled:
            lines.append(f"{label:<26} {short_name(name):<13} "
                         f"{level} {metric} {interval(cv.cell(name, level, metric), missing=NA)}")
        primary = block.reported
        if first.ordered and cv.cell(primary, level, "mae"):
            lines.append(f"{label:<26} {short_name(primary):<13} "
                         f"{level} MAE {interval(cv.cell(primary, level, 'mae'), missing=NA)} "
                         f"{first.error_unit}, within one level "
                         f"{interval(cv.cell(primary, level, 'within_one'), missing=NA)}")
        perm = cv.permutation
        if perm and perm.p_value is not None:
            tested = (f"proxy: ridge on image means, accuracy {perm.observed_accuracy:.3f}; "
                      f"not the served {perm.proxy_for}" if perm.proxy_for
                      else "the served model refitted per permutation"
                      if perm.tests_served_model else perm.model)
            lines.append(f"{label:<26} p-value against chance {perm.p_value:.4f} ({tested})")
    data = console_line(m.learning_curve, m.variance_components)
    if data:
        lines.append(data)
    best = m.cv.verdict
    if best.best_baseline and not best.primary_beats_by_more_than_interval:
        primary = {"head": "MLP head", "auto": "auto-selected model"}[best.primary]
        lines.append(f"note: the {primary} does not beat the "
                     f"{short_name(best.best_baseline)} by more than its interval width")
    agree = best.selection
    for _, check in (agree.checks() if agree else []):
        if check.disagrees:
            lines.append("note: " + selection_warning(check, agree.level, agree.metric))
    if m.cv.instrument and m.cv.instrument.warning:
        lines.append(f"warning: {m.cv.instrument.warning}")
    for name, reason in m.skipped.items():
        lines.append(f"warning: {name} skipped ({reason}); the results above are complete")
    if m.data.small_classes:
        lines.append(f"warning: class(es) {', '.join(map(str, m.data.small_classes))} have too "
                     "few groups for the split; their images were tested by heads that never "
                     "saw them")
    if m.selection:
        final = m.selection.final
        epochs = f" for {final.epochs} epochs" if final.epochs else ""
        lines.append(f"final model: {final.point} refitted on all groups{epochs} "
                     f"({final.checkpoint}); winners per outer fold: "
                     f"{', '.join(m.selection.winners)}")
    return lines


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
            # the training stack (torch, Lightning, timm, scikit-learn: seconds) is imported
            # once the configuration is known good: --help and a mistyped override answer at once
            from sinterlab.study.training import run_experiment
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


if __name__ == "__main__":
    main()
