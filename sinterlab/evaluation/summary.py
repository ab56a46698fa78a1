"""Sweep summary: every ``metrics.json`` under a folder -> one table row per (experiment, data,
classes, split, protocol): the pooled out-of-fold headline metric of every model with its
interval (one run), or the mean ± sd of the runs' values (several runs, e.g. backbones or seeds
of a holdout sweep). Runs on other descriptors or class sets are never averaged together.
Failed runs (``error.txt``, no ``metrics.json``) and incomplete ones (killed or still running)
are listed with their reason, not averaged.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from sinterlab.atomic import write_text
from sinterlab.errors import SinterlabError
from sinterlab.evaluation.display import long_name
from sinterlab.evaluation.results import Interval, ProtocolBlock, RunMetrics, read_metrics
from sinterlab.runs import CLAIM, ERROR, failure, incomplete

#: the run's own model (the plain head, or the auto-selected one): the table's "head" column;
#: every other model a run scored (candidates of model=auto, baselines) gets its own column
PRIMARY = ("head", "auto")
#: runs that differ in any of these are never averaged together (``inputs``: the image alone or
#: with ``data.extra_inputs``, so a sweep data.extra_inputs=[],[duty_cycle] gives two rows)
GROUP_COLUMNS = ("experiment", "data", "classes", "inputs", "split_kind", "protocol")
#: an ordered target's errors, shown for the run's own model
ORDERED_COLUMNS = ("mae", "within_one")
#: columns of summary.csv the Markdown table reads back
LEAKY, LEVEL, METRIC, BEST_MODEL, P_VALUE, WALL_S, PRIMARY_MODEL = (
    "leaky", "level", "metric", "best_model", "p_value", "wall_s", "primary_model")
#: which block a row comes from: the run's own split, or its leak contrast
SOURCE, OWN, CONTRAST = "source", "run", "contrast"


def _classes(run: RunMetrics) -> str:
    """'burst_count: 50, 150, 250' (classification) or 'burst_count (regression)'."""
    return "; ".join(f"{t.name}: {', '.join(map(str, t.classes))}" if t.classes
                     else f"{t.name} ({t.kind})" for t in run.targets)


def _short(path: object) -> str:
    """The last two parts of a descriptor path, for the table (the CSV keeps it whole)."""
    return "/".join(Path(str(path)).parts[-2:]) if path else "—"


def failed_runs(root: Path) -> list[tuple[str, str]]:
    """(run folder relative to ``root``, reason) of every run without results: failed (the
    first line of its error.txt) or incomplete (claimed, then killed or still running)."""
    out = []
    marked = [*Path(root).rglob(ERROR), *Path(root).rglob(CLAIM)]
    for folder in sorted({path.parent for path in marked}):
        reason = failure(folder) or incomplete(folder)
        if reason:
            out.append((folder.relative_to(root).as_posix() or ".", reason))
    return out


def _block_row(path: Path, root: Path, run: RunMetrics, block: ProtocolBlock,
               ) -> dict[str, Any]:
    cv = block.cv
    level, metric = cv.verdict.level, cv.verdict.metric
    trained = block.selection or block.training
    row: dict[str, Any] = {
        "run": path.parent.relative_to(root).as_posix() or ".",
        "experiment": run.experiment, "data": run.data.descriptor, "classes": _classes(run),
        "inputs": " + ".join(["image", *run.inputs.extra]),
        "split_kind": block.split.kind, LEAKY: block.split.leaky,
        "protocol": f"{cv.protocol} ({cv.folds} folds)",
        "backbone": run.backbone.name, "weights_source": run.backbone.weights.source,
        LEVEL: level, METRIC: metric, BEST_MODEL: cv.verdict.best_model,
        P_VALUE: cv.permutation.p_value if cv.permutation else None,
        WALL_S: trained.wall_s if trained else None,
        PRIMARY_MODEL: cv.primary,
    }
    cells = {"primary": (cv.primary, metric)}
    cells |= {f"model:{model}": (model, metric) for model in cv.pooled if model not in PRIMARY}
    # an ordered target: the run's own model's errors in the parameter's units too
    cells |= {f"primary_{m}": (cv.primary, m) for m in ORDERED_COLUMNS}
    for column, (key, name) in cells.items():
        cell = (cv.cell(key, level, name) if key else None) or Interval(None)
        for part in ("value", "low", "high"):
            value = getattr(cell, part)
            row[f"{column}.{part}"] = math.nan if value is None else float(value)
    return row


def summarize_runs(root: Path) -> pd.DataFrame:
    """One row per evaluated split of each ``metrics.json`` under ``root``: the run's own split,
    and its leak contrast unless another run evaluated that split as its own. Files that cannot
    be read, or that are not cross-validated runs, are skipped with a warning."""
    root = Path(root)
    rows = []
    for path in sorted(root.rglob("metrics.json")):
        try:
            metrics = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            warnings.warn(f"skipping unreadable {path}: {exc}", stacklevel=2)
            continue
        if not isinstance(metrics, Mapping) or "cv" not in metrics:
            warnings.warn(f"skipping {path}: not a cross-validated sinterlab run", stacklevel=2)
            continue
        try:
            run = read_metrics(path)
        except SinterlabError as exc:
            warnings.warn(f"skipping {path}: {exc}", stacklevel=2)
            continue
        rows.append(_block_row(path, root, run, run) | {SOURCE: OWN})
        if run.contrast:
            rows.append(_block_row(path, root, run, run.contrast) | {SOURCE: CONTRAST})
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    # a split that some run evaluated as its own is not repeated from another run's contrast
    key = [*GROUP_COLUMNS, "backbone"]
    own = frame.loc[frame[SOURCE] == OWN, key].drop_duplicates()
    repeated = frame.merge(own, on=key, how="left", indicator=True)["_merge"] == "both"
    return frame[~(repeated.to_numpy() & (frame[SOURCE] == CONTRAST).to_numpy())]


def _cell(part: pd.DataFrame, model: str, digits: int) -> str:
    values = part[f"{model}.value"].dropna()
    if values.empty:
        return "—"
    if len(part) == 1:
        low, high = part[f"{model}.low"].iloc[0], part[f"{model}.high"].iloc[0]
        ci = "" if math.isnan(low) else f" [{low:.{digits}f}, {high:.{digits}f}]"
        return f"{values.iloc[0]:.{digits}f}{ci}"
    sd = values.std(ddof=1) if len(values) > 1 else math.nan
    return f"{values.mean():.{digits}f} ± {sd:.{digits}f} (mean ± sd of {len(values)})"


def _primary_label(part: pd.DataFrame) -> str:
    names = part[PRIMARY_MODEL].dropna().unique()
    return f" ({', '.join(names)})" if len(names) and set(names) != {"head"} else ""


def model_columns(frame: pd.DataFrame) -> list[str]:
    """Every model some run scored besides its own, in the order the runs list them."""
    return [c[len("model:"):-len(".value")] for c in frame.columns
            if c.startswith("model:") and c.endswith(".value")]


def summary_markdown(frame: pd.DataFrame, digits: int = 3) -> str:
    models = model_columns(frame)
    headers = ["experiment", "data", "classes", "inputs", "split", "protocol", "runs",
               "level metric", "head",
               *(long_name(m) for m in models),
               "best", "p (chance)", "head train s", "head MAE (ordered)",
               "head within one level"]
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    keys = list(GROUP_COLUMNS)
    for key, part in frame.groupby(keys, sort=True, dropna=False):
        experiment, data, classes, inputs, split, protocol = key
        best = part[BEST_MODEL].mode()
        cells = [str(experiment), _short(data), str(classes), str(inputs),
                 f"{split}{' (leaky)' if part[LEAKY].any() else ''}",
                 str(protocol), str(len(part)),
                 f"{part[LEVEL].iloc[0]} {part[METRIC].iloc[0]}",
                 _cell(part, "primary", digits) + _primary_label(part),
                 *(_cell(part, f"model:{m}", digits) for m in models),
                 best.iloc[0] if len(best) else "—",
                 "—" if part[P_VALUE].isna().all() else f"{part[P_VALUE].max():.4f}",
                 "—" if part[WALL_S].isna().all() else f"{part[WALL_S].sum():.0f}",
                 *(_cell(part, f"primary_{m}", digits) for m in ORDERED_COLUMNS)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _out_paths(root: Path, out_stem: Path | None) -> tuple[Path, Path]:
    stem = root / "summary" if out_stem is None else Path(out_stem)
    if stem.suffix.lower() in (".md", ".csv"):
        stem = stem.with_suffix("")
    return Path(f"{stem}.md"), Path(f"{stem}.csv")


def write_summary(root: Path, out_stem: Path | None = None, digits: int = 3) -> tuple[Path, Path]:
    """Write the summary table as Markdown and the per-run rows as CSV (default
    ``root/summary.md`` and ``root/summary.csv``). Raises ``FileNotFoundError`` when ``root`` is
    missing or holds no readable run."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"no such folder: {root}")
    frame, failed = summarize_runs(root), failed_runs(root)
    if frame.empty:
        found = sorted(root.rglob("metrics.json"))
        raise FileNotFoundError(
            (f"no readable metrics.json under {root} ({len(found)} found, each skipped with "
             "the reason above)" if found else f"no metrics.json found under {root}") + (
                f" ({len(failed)} failed run(s): {failed[0][0]}: {failed[0][1]})"
                if failed else ""))
    md_path, csv_path = _out_paths(root, out_stem)
    title = (f"# Sweep summary: {root}\n\nPooled out-of-fold metric per model; one run: value "
             "[95% interval resampling samples]; several runs: mean ± sd of their values.\n\n")
    skipped = "" if not failed else (
        f"\n## Failed or incomplete runs, not summarised ({len(failed)})\n\n"
        + "".join(f"- `{run}`: {reason}\n" for run, reason in failed))
    write_text(md_path, title + summary_markdown(frame, digits) + skipped)
    write_text(csv_path, frame.to_csv(index=False))
    return md_path, csv_path
