"""The goals of ``sinterlab-plan`` by name: each answers its question over the allowed grid (a
table, console lines, figures) and writes its own section of ``plan.md``. A new goal is one entry
of :data:`GOALS`; an unknown name is refused in one line."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from omegaconf import DictConfig

from sinterlab.errors import SinterlabError
from sinterlab.planning import figures
from sinterlab.planning.goals import (
    MEETS,
    PROBABILITY,
    RANK,
    REASON,
    Fitted,
    check_next,
    check_target,
    map_table,
    next_batch,
    target_table,
)
from sinterlab.planning.report import map_section, next_section, target_section
from sinterlab.planning.responses import Response
from sinterlab.planning.space import COST, Space


@dataclass(frozen=True)
class Answer:
    """A goal's result: the table (``plan.csv``), lines for the console, figures, and the
    acquisition that chose it (``next``)."""

    table: pd.DataFrame
    lines: list[str]
    figures: list[Path] = field(default_factory=list)
    acquisition: str = ""


@dataclass(frozen=True)
class Goal:
    """``answer(cfg, grid, space, fitted, level, out_dir)``, the lines of its ``plan.md``
    section, ``section(answer, cfg, space)``, and ``check(cfg, responses)``: its settings
    against the responses by name, before anything is fitted."""

    name: str
    answer: Callable[[DictConfig, pd.DataFrame, Space, dict[str, Fitted], float, Path], Answer]
    section: Callable[[Answer, DictConfig, Space], list[str]]
    check: Callable[[DictConfig, dict[str, Response]], object] = lambda cfg, responses: None


def _setting(row, space: Space) -> str:
    return " ".join(f"{name}={row[name]:g}" for name in space.names)


def answer_map(cfg: DictConfig, grid: pd.DataFrame, space: Space, fitted: dict[str, Fitted],
               level: float, out_dir: Path) -> Answer:
    """Each response's mean and interval at every allowed setting, with its curves and maps."""
    table = map_table(grid, space, fitted, level)
    held = figures.fixed_values(space, cfg.map.fixed)
    figs, lines = [], []
    for name, f in fitted.items():
        figs.append(figures.curve_figure(f, space, held, level, int(cfg.map.points),
                                         out_dir / "figures" / f"{name}_curves.png"))
        if len(space.parameters) >= 2:
            figs.append(figures.map_figure(f, space, held, level, int(cfg.map.points),
                                           out_dir / "figures" / f"{name}_map.png"))
    for name, f in fitted.items():
        best = table.loc[table[f"{name}_mean"].idxmin()]
        lines.append(f"lowest predicted {name}: {_setting(best, space)} -> "
                     f"{best[f'{name}_mean']:.3g} [{best[f'{name}_lower']:.3g}, "
                     f"{best[f'{name}_upper']:.3g}] {f.response.unit}".rstrip())
    return Answer(table, lines, figs)


def answer_target(cfg: DictConfig, grid: pd.DataFrame, space: Space,
                  fitted: dict[str, Fitted], level: float, out_dir: Path) -> Answer:
    """The settings meeting the target with the asked probability, cheapest first."""
    table = target_table(grid, space, fitted, cfg.target, level)
    t = cfg.target
    meets = table[table[MEETS]]
    lines = [f"target {t.response} {t.op} {t.value} with p >= {t.probability}: "
             f"{len(meets)} of {len(table)} settings"]
    for _, row in meets.head(int(t.rows)).iterrows():
        lines.append(f"  {_setting(row, space)} cost {row[COST]:g} {space.cost_unit}: "
                     f"P = {row[PROBABILITY]:.2f}")
    return Answer(table, lines)


def answer_next(cfg: DictConfig, grid: pd.DataFrame, space: Space, fitted: dict[str, Fitted],
                level: float, out_dir: Path) -> Answer:
    """The next batch of experiments, each with its reason."""
    table, acquisition = next_batch(grid, space, fitted, cfg.next, level)
    lines = [f"next {len(table)} experiments ({acquisition}):"]
    for _, row in table.iterrows():
        lines.append(f"  {int(row[RANK])}. {_setting(row, space)}: {row[REASON]}")
    return Answer(table, lines, acquisition=acquisition)


#: goal name -> how it is answered and reported
GOALS: dict[str, Goal] = {goal.name: goal for goal in (
    Goal("map", answer_map,
         lambda a, cfg, space: map_section(a.table, cfg, space)),
    Goal("target", answer_target,
         lambda a, cfg, space: target_section(a.table, cfg, space),
         lambda cfg, responses: check_target(cfg.target, responses)),
    Goal("next", answer_next,
         lambda a, cfg, space: next_section(a.table, cfg, space, a.acquisition),
         lambda cfg, responses: check_next(cfg.next, responses)),
)}


def goal_named(name: str) -> Goal:
    """The goal called ``name``; an unknown name is one line naming the known ones."""
    if name not in GOALS:
        raise SinterlabError(f"goal={name!r} is unknown; use one of {list(GOALS)}")
    return GOALS[name]
