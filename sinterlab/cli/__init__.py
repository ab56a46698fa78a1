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
from sinterlab.evaluation.display import (
    interval,
    reported_model,
    selection_warning,
    short_name,
)
from sinterlab.runs import RunInterrupted, sigint_raises_interrupted

#: the Hydra config folder at the repository root
CONF_DIR = Path(__file__).resolve().parents[2] / "conf"

# `${cwd:}` in conf/paths: the folder a command started in, usable before Hydra's own config
# exists (hydra.sweep.dir is resolved before `${hydra:runtime.cwd}` is available)
OmegaConf.register_new_resolver("cwd", os.getcwd, replace=True)
#: a missing number in the console's summary lines (the report writes "—")
NA = "n/a"


def summary_lines(metrics: dict, run_dir: Path) -> list[str]:
    """The key numbers of a finished run, as printed at the end of ``sinterlab-train``: the
    pooled out-of-fold main metric per model with its interval, for each split evaluated."""
    weights = metrics["backbone"]["weights"]
    lines = [f"run: {run_dir}", f"report: {run_dir / 'report.md'}",
             f"backbone: {metrics['backbone']['name']} weights={weights['source']} "
             f"({weights['identity']})" + ("" if weights["transfer_learning"]
                                           else "  [random init: NOT transfer learning]"),
             f"embeddings: {metrics['cache']['images']} images, "
             f"{metrics['cache']['from_cache']} from cache, "
             f"{metrics['cache']['extracted']} extracted "
             f"(runtime {metrics['cache'].get('runtime', 'torch')})"]
    for block in [metrics] + ([metrics["contrast"]] if metrics.get("contrast") else []):
        cv, split = block["cv"], block["split"]
        verdict = cv["verdict"]
        label = (f"{cv['folds']}-fold CV" if cv["protocol"] == "cv" else "holdout") + \
            f" by {split['kind']}" + (" (LEAKY)" if split["leaky"] else "")
        for name, levels in cv["pooled"].items():
            cell = levels[verdict["level"]][verdict["metric"]]
            lines.append(f"{label:<26} {short_name(name):<13} "
                         f"{verdict['level']} {verdict['metric']} {interval(cell, missing=NA)}")
        first = (metrics.get("targets") or [{}])[0]
        primary = reported_model(cv)
        ordered = cv["pooled"].get(primary, {}).get(verdict["level"], {})
        if first.get("ordered") and "mae" in ordered:
            lines.append(f"{label:<26} {short_name(primary):<13} "
                         f"{verdict['level']} MAE {interval(ordered['mae'], missing=NA)} "
                         f"{first.get('error_unit', '')}, within one level "
                         f"{interval(ordered['within_one'], missing=NA)}")
        perm = cv.get("permutation", {})
        if "p_value" in perm:
            tested = (f"proxy: ridge on image means, accuracy {perm['observed_accuracy']:.3f}; "
                      f"not the served {perm['proxy_for']}" if perm.get("proxy_for")
                      else "the served model refitted per permutation"
                      if perm.get("tests_served_model") else perm["model"])
            lines.append(f"{label:<26} p-value against chance {perm['p_value']:.4f} ({tested})")
    data = console_line(metrics)
    if data:
        lines.append(data)
    best = metrics["cv"]["verdict"]
    if "best_baseline" in best and not best["head_beats_by_more_than_interval"]:
        primary = {"head": "MLP head", "auto": "auto-selected model"}[best["primary"]]
        lines.append(f"note: the {primary} does not beat the "
                     f"{short_name(best['best_baseline'])} by more than its interval width")
    agree = best.get("selection") or {}
    for check in (agree.get(role) for role in ("nested", "final")):
        if check and check["disagrees"]:
            lines.append("note: " + selection_warning(check, agree["level"], agree["metric"]))
    warning = (metrics["cv"].get("instrument") or {}).get("warning")
    if warning:
        lines.append(f"warning: {warning}")
    for name, reason in (metrics.get("skipped") or {}).items():
        lines.append(f"warning: {name} skipped ({reason}); the results above are complete")
    small = (metrics.get("data") or {}).get("small_classes")
    if small:
        lines.append(f"warning: class(es) {', '.join(map(str, small))} have too few groups "
                     "for the split; their images were tested by heads that never saw them")
    final = (metrics.get("selection") or {}).get("final")
    if final:
        epochs = f" for {final['epochs']} epochs" if final.get("epochs") else ""
        lines.append(f"final model: {final.get('point', final['model'])} refitted on all groups"
                     f"{epochs} ({final['checkpoint']}); winners per outer fold: "
                     f"{', '.join(metrics['selection']['winners'])}")
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
