"""Sweep summary: every ``metrics.json`` under a folder -> one table, mean ± sd per group."""

from __future__ import annotations

import json
import math
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from sinterlab.atomic import write_text

ID_COLUMNS = (
    "run",
    "experiment",
    "split_kind",
    "leaky",
    "seed",
    "fold",
    "backbone",
    "weights_source",
)
GROUP_COLUMNS = ("experiment", "split_kind")
FLATTEN_PREFIXES = ("test", "baseline", "contrast.test")
EXTRA_COLUMNS = ("training.wall_s", "cache.extracted")
# test.<level>[.<target>].<metric>
_MAIN_TEST = re.compile(
    r"^test\.(patch|image|sample)\.(?:[^.]+\.)?(accuracy|f1_macro|auroc|mae|r2)$"
)
_MAIN_BASELINE = re.compile(r"^baseline\.linear_probe\.patch\.(?:[^.]+\.)?(accuracy|mae)$")
_LEVEL_ORDER = {"patch": 0, "image": 1, "sample": 2}
_METRIC_ORDER = {"accuracy": 0, "f1_macro": 1, "auroc": 2, "mae": 3, "r2": 4}


def _get(d: Any, dotted: str) -> Any:
    for key in dotted.split("."):
        if not isinstance(d, Mapping):
            return None
        d = d.get(key)
    return d


def _numeric_leaves(d: Any, prefix: str) -> dict[str, float]:
    """Dotted name -> value for every number (or null) leaf; lists are skipped."""
    out: dict[str, float] = {}
    if isinstance(d, Mapping):
        for key, value in d.items():
            out.update(_numeric_leaves(value, f"{prefix}.{key}"))
    elif d is None:
        out[prefix] = math.nan
    elif isinstance(d, int | float) and not isinstance(d, bool):
        out[prefix] = float(d)
    return out


def _row(path: Path, root: Path, metrics: Mapping) -> dict[str, Any]:
    row: dict[str, Any] = {
        "run": path.parent.relative_to(root).as_posix() or ".",
        "experiment": metrics.get("experiment"),
        "split_kind": _get(metrics, "split.kind"),
        "leaky": _get(metrics, "split.leaky"),
        "seed": _get(metrics, "seed"),
        "fold": _get(metrics, "split.fold"),
        "backbone": _get(metrics, "backbone.name"),
        "weights_source": _get(metrics, "backbone.weights.source"),
    }
    for prefix in FLATTEN_PREFIXES:
        leaves = _numeric_leaves(_get(metrics, prefix), prefix)
        leaves.pop(prefix, None)  # the block itself being null
        row.update(leaves)
    for column in EXTRA_COLUMNS:
        value = _get(metrics, column)
        row[column] = float(value) if isinstance(value, int | float) else math.nan
    return row


def summarize_runs(root: Path) -> pd.DataFrame:
    """One row per ``metrics.json`` found (recursively) under ``root``.

    Identity columns (run folder, experiment, split kind, leaky, seed, fold, backbone, weights
    source), every numeric leaf under ``test``, ``baseline`` and ``contrast.test`` as dotted
    columns (lists such as the confusion matrix are skipped; null becomes NaN), plus
    ``training.wall_s`` and ``cache.extracted``.  Unreadable files are skipped with a warning.
    """
    root = Path(root)
    rows = []
    for path in sorted(root.rglob("metrics.json")):
        try:
            metrics = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            warnings.warn(f"skipping unreadable {path}: {exc}", stacklevel=2)
            continue
        if not isinstance(metrics, Mapping):
            warnings.warn(f"skipping {path}: not a JSON object", stacklevel=2)
            continue
        rows.append(_row(path, root, metrics))
    frame = pd.DataFrame(rows)
    for column in ID_COLUMNS:
        if column not in frame:
            frame[column] = pd.Series(dtype=object)
    return frame


def _main_columns(frame: pd.DataFrame) -> list[str]:
    def order(col: str) -> tuple:
        parts = col.split(".")  # test|baseline, [linear_probe,] level, [target,] metric
        if parts[0] == "baseline":
            parts = parts[:1] + parts[2:]
        target = ".".join(parts[2:-1])
        return (
            parts[0] == "baseline",
            target,
            _LEVEL_ORDER.get(parts[1], 9),
            _METRIC_ORDER.get(parts[-1], 9),
        )

    cols = [c for c in frame.columns if _MAIN_TEST.match(c) or _MAIN_BASELINE.match(c)]
    return sorted(cols, key=order)


def _group_stats(frame: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    metric_cols = _main_columns(frame)
    keys = list(GROUP_COLUMNS)
    grouped = frame.assign(**{k: frame[k].fillna("—").astype(str) for k in keys}).groupby(
        keys, sort=True, dropna=False
    )
    records = []
    for (experiment, split_kind), part in grouped:
        rec: dict[str, Any] = {
            "experiment": experiment,
            "split_kind": split_kind,
            "leaky": bool(part["leaky"].fillna(False).astype(bool).any()),
            "n_runs": len(part),
        }
        for col in metric_cols:
            values = part[col].dropna()
            rec[f"{col}_mean"] = values.mean() if len(values) else math.nan
            rec[f"{col}_sd"] = values.std(ddof=1) if len(values) > 1 else math.nan
            rec[f"{col}_n"] = len(values)
        records.append(rec)
    return pd.DataFrame(records), metric_cols


def _pm(mean: float, sd: float, n: int, digits: int) -> str:
    if n == 0 or mean != mean:
        return "—"
    if sd != sd:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {sd:.{digits}f}"


def summary_markdown(stats: pd.DataFrame, metric_cols: list[str], digits: int = 3) -> str:
    headers = ["experiment", "split", "n runs", *metric_cols]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    for _, rec in stats.iterrows():
        split = str(rec["split_kind"]) + (" (leaky)" if rec["leaky"] else "")
        cells = [str(rec["experiment"]), split, str(int(rec["n_runs"]))]
        cells += [
            _pm(rec[f"{c}_mean"], rec[f"{c}_sd"], int(rec[f"{c}_n"]), digits) for c in metric_cols
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _out_paths(root: Path, out_stem: Path | None) -> tuple[Path, Path]:
    if out_stem is None:
        stem = root / "summary"
    else:
        stem = Path(out_stem)
        if stem.suffix.lower() in (".md", ".csv"):
            stem = stem.with_suffix("")
    return Path(f"{stem}.md"), Path(f"{stem}.csv")


def write_summary(root: Path, out_stem: Path | None = None, digits: int = 3) -> tuple[Path, Path]:
    """Write mean ± sd (and n runs) per (experiment, split kind) as Markdown and CSV.

    Main metrics: ``test.<level>.{accuracy,f1_macro,auroc}`` (classification),
    ``test.<level>.{mae,r2}`` (regression), with a target name inserted for multi-target
    runs, and ``baseline.linear_probe.patch.{accuracy|mae}``.  Default output:
    ``root/summary.md`` and ``root/summary.csv``.  Raises ``FileNotFoundError`` when ``root``
    is missing or holds no ``metrics.json``.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"no such folder: {root}")
    frame = summarize_runs(root)
    if frame.empty:
        raise FileNotFoundError(f"no metrics.json found under {root}")
    stats, metric_cols = _group_stats(frame)
    md_path, csv_path = _out_paths(root, out_stem)
    title = f"# Sweep summary: {root}\n\nmean ± sd across seeds/folds per (experiment, split).\n\n"
    write_text(md_path, title + summary_markdown(stats, metric_cols, digits))
    write_text(csv_path, stats.to_csv(index=False))
    return md_path, csv_path
