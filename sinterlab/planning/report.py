"""``plan.md`` (and ``plan.html``, rendered from it like the run report), ``plan.csv`` and the
figures of one ``sinterlab-plan`` run."""

from __future__ import annotations

import html
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from sinterlab.atomic import write_text
from sinterlab.evaluation.report import markdown_page
from sinterlab.planning.goals import MEETS, PROBABILITY, Fitted
from sinterlab.planning.space import COST, Space


def _four_significant(value) -> str:
    """A float to 4 significant digits; anything else as ``str``."""
    if isinstance(value, float | np.floating):
        return f"{value:.4g}"
    return str(value)


def table(frame: pd.DataFrame) -> list[str]:
    """A Markdown table of ``frame`` (numbers to 4 significant digits)."""
    head = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|" + "---|" * len(frame.columns)
    rows = ["| " + " | ".join(_four_significant(v) for v in row) + " |"
            for row in frame.itertuples(False)]
    return [head, rule, *rows, ""]


def space_lines(space: Space, grid: pd.DataFrame) -> list[str]:
    rows = pd.DataFrame([{"parameter": p.name, "unit": p.unit, "range": f"{p.low:g}-{p.high:g}",
                          "levels": ", ".join(f"{v:g}" for v in p.levels)}
                         for p in space.parameters])
    lines = ["## Design space", "", *table(rows)]
    lines.append(f"Constraints: {', '.join(f'`{c}`' for c in space.constraints) or 'none'}; "
                 f"cost: `{space.cost or 0}` {space.cost_unit}; {len(grid)} allowed settings.")
    return [*lines, ""]


def check_lines(fitted: dict[str, Fitted], samples: pd.DataFrame, space: Space) -> list[str]:
    """Leave-one-sample-out check of each surrogate: coverage, RMSE and the per-sample table."""
    level = next(iter(fitted.values())).loo.level
    rows = [{"response": name, "samples": f.loo.n,
             f"LOO coverage of the {level:.0%} interval": f"{f.loo.coverage:.0%}",
             f"RMSE ({f.response.unit or 'measured'})": f.rmse_measured,
             "RMSE (modelled scale)": f.loo.rmse,
             "scale": "log10" if f.response.log else "linear"} for name, f in fitted.items()]
    lines = ["## Surrogate check (leave one sample out)", "",
             "Each sample is predicted by a GP refitted without it; its measured mean should fall "
             f"inside the {level:.0%} interval about {level:.0%} of the time. Much lower coverage "
             "means the intervals below are too narrow; few samples make this check itself "
             "uncertain.", "", *table(pd.DataFrame(rows))]
    for name, f in fitted.items():
        have = samples[samples[name].notna()]
        per = have[space.names].assign(
            measured=f.response.inverse(f.y), predicted=f.response.inverse(f.loo.mean),
            lower=f.response.inverse(f.loo.lower), upper=f.response.inverse(f.loo.upper),
            inside=np.where(f.loo.inside, "yes", "NO"))
        lines += [f"### {name}: every sample, predicted without it", "",
                  *table(per.reset_index())]
    return lines


def map_section(result: pd.DataFrame, cfg, space: Space) -> list[str]:
    return ["## Response surface", "",
            f"`plan.csv` has every allowed setting with each response's mean and "
            f"{float(cfg.surrogate.interval):.0%} interval (a new sample's value).", ""]


def target_section(result: pd.DataFrame, cfg, space: Space) -> list[str]:
    t = cfg.target
    meets = result[result[MEETS]]
    lines = [f"## Target: {t.response} {t.op} {t.value} with probability >= "
             f"{float(t.probability):.0%}", ""]
    if len(meets):
        lines += [f"{len(meets)} of {len(result)} allowed settings meet it; cheapest "
                  f"({COST} in {space.cost_unit or 'units'}) first:", "",
                  *table(meets.drop(columns=MEETS).head(int(t.rows)))]
    else:
        lines += [f"No allowed setting meets it with probability >= "
                  f"{float(t.probability):.0%}; the most probable:", "",
                  *table(result.sort_values(PROBABILITY, ascending=False)
                         .drop(columns=MEETS).head(int(t.rows)))]
    return lines


def next_section(result: pd.DataFrame, cfg, space: Space, acquisition: str) -> list[str]:
    n = cfg.next
    aim = (f"{n.direction} {n.response}" if n.acquisition == "nei"
           else f"learn the map of {n.response}")
    return [f"## Next batch: {len(result)} experiments to {aim}", "",
            f"Chosen jointly by {acquisition} over the allowed settings"
            + (" not yet measured" if n.avoid_measured else "") + ".", "",
            *table(result)]


class PlanFiles(NamedTuple):
    """What :func:`write_plan` wrote."""

    markdown: Path
    html: Path
    csv: Path | None  # none without a result table


def write_plan(out_dir: Path, goal: str, cfg, space: Space, grid: pd.DataFrame,
               samples: pd.DataFrame, fitted: dict[str, Fitted], result: pd.DataFrame | None,
               figures: list[Path], section: list[str] = (), note: str = "") -> PlanFiles:
    """plan.md, plan.html and plan.csv (``result``) into ``out_dir``; ``section``: the goal's
    own lines of plan.md."""
    out_dir = Path(out_dir)
    lines = [f"# sinterlab-plan: goal={goal}", "",
             f"Descriptor: `{cfg.data.descriptor}`; {len(samples)} samples; responses: "
             + ", ".join(f"{name} (`{f.response.source}:{f.response.column}`)"
                         for name, f in fitted.items()) + ".", ""]
    if note:
        lines += [f"> {note}", ""]
    lines += space_lines(space, grid)
    if fitted:
        lines += check_lines(fitted, samples, space)
    lines += section
    for path in figures:
        lines += [f"![{path.stem}]({path.relative_to(out_dir)})", ""]
    text = "\n".join(lines)
    markdown = write_text(out_dir / "plan.md", text)
    page = write_text(out_dir / "plan.html", markdown_page(
        text, out_dir, "sinterlab-plan", f"<h6>{html.escape(str(out_dir))}</h6>"))
    csv = None if result is None else write_text(
        out_dir / "plan.csv", result.to_csv(index=False, lineterminator="\n"))
    return PlanFiles(markdown, page, csv)
