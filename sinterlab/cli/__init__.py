"""Console scripts: sinterlab-train, -predict, -synth, -report."""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from pathlib import Path

from omegaconf import OmegaConf

from sinterlab.atomic import quiet_thread_write_failures, writing
from sinterlab.console import route_library_logs
from sinterlab.errors import WRITE_FAILED, SinterlabError, WriteFailed
from sinterlab.evaluation.data_report import console_line
from sinterlab.evaluation.display import interval, selection_warning, short_name
from sinterlab.evaluation.results import RunMetrics, as_run
from sinterlab.runs import RunInterrupted, sigint_raises_interrupted

#: the Hydra config folder at the repository root
CONF_DIR = Path(__file__).resolve().parents[2] / "conf"

# `${cwd:}` in conf/paths: the folder a command started in, usable before Hydra's own config
# exists (hydra.sweep.dir is resolved before `${hydra:runtime.cwd}` is available)
OmegaConf.register_new_resolver("cwd", os.getcwd, replace=True)
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


#: a failed write whose library named no file (sinterlab's own writes always name theirs)
UNNAMED = "a file the library writing it did not name"


def stopped(err: WriteFailed) -> str:
    """The line a command stopped by a failed write ends with."""
    return f"stopped: {err}, then run the same command again"


@contextmanager
def one_line_errors(prog: str):
    """Bad input: its one line on screen, exit 2; a failed write (disk full): the file and the
    cause, exit 74; Ctrl-C: what is cached, exit 130."""
    route_library_logs()
    quiet_thread_write_failures()
    try:
        with sigint_raises_interrupted(), writing(UNNAMED):
            yield
    except SinterlabError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        sys.exit(2)
    except WriteFailed as err:
        print(f"{prog}: {stopped(err)}", file=sys.stderr)
        sys.exit(WRITE_FAILED)
    except RunInterrupted as err:
        print(f"{prog}: {err.describe()}", file=sys.stderr)
        sys.exit(130)
