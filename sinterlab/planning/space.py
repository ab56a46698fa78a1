"""The design space: each process parameter's range and allowed levels, the constraints a
setting must meet and its cost (exposure time), all from ``conf/plan.yaml`` (``space``).

Constraints and the cost are expressions over the parameter columns
(``"burst_count * duty_cycle <= 15000"``, ``"burst_count * 0.02"``), parsed and computed by
:mod:`sinterlab.planning.expressions`: arithmetic and comparisons of the parameters only, never
evaluated as code.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from sinterlab.errors import SinterlabError
from sinterlab.planning.expressions import evaluate

COST = "cost"


@dataclass(frozen=True)
class Parameter:
    name: str
    low: float
    high: float
    levels: tuple[float, ...]
    unit: str = ""


@dataclass(frozen=True)
class Space:
    parameters: tuple[Parameter, ...]
    constraints: tuple[str, ...] = ()
    cost: str = ""
    cost_unit: str = ""

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.parameters]

    @property
    def bounds(self) -> np.ndarray:
        """2 x d: the lower and upper end of each parameter's range."""
        return np.array([[p.low for p in self.parameters], [p.high for p in self.parameters]])

    def allowed(self, frame: pd.DataFrame) -> np.ndarray:
        """Which rows of ``frame`` (parameter columns) meet every constraint."""
        ok = np.ones(len(frame), bool)
        for i, expression in enumerate(self.constraints):
            result = evaluate(expression, frame[self.names], f"space.constraints[{i}]")
            if result.dtype != bool:
                raise SinterlabError(f"space.constraints[{i}]={expression!r} is not a "
                                     "comparison; write e.g. 'burst_count <= 200'")
            ok &= result
        return ok

    def costs(self, frame: pd.DataFrame) -> np.ndarray:
        if not self.cost:
            return np.zeros(len(frame))
        cost = evaluate(self.cost, frame[self.names], "space.cost.expression")
        if cost.dtype == bool or not np.isfinite(cost).all():
            raise SinterlabError(f"space.cost.expression={self.cost!r} is not a finite number "
                                 "at every setting; write e.g. 'burst_count * 0.02'")
        if (cost < 0).any():
            where = frame[self.names].iloc[int(np.argmin(cost))].to_dict()
            raise SinterlabError(f"space.cost.expression={self.cost!r} is negative "
                                 f"({float(cost.min()):g} at {where}); a cost is a time or an "
                                 "amount: write one that is >= 0 at every setting")
        return cost.astype(float)

    def grid(self) -> pd.DataFrame:
        """Every allowed setting: the product of the levels, constraints applied, with its
        cost; empty constraints-wise is a one-line error."""
        frame = pd.DataFrame(list(itertools.product(*[p.levels for p in self.parameters])),
                             columns=self.names)
        frame = frame[self.allowed(frame)].reset_index(drop=True)
        if frame.empty:
            raise SinterlabError(f"space.constraints {list(self.constraints)} exclude every "
                                 "setting; relax them")
        frame[COST] = self.costs(frame)
        return frame

    def check_samples(self, samples: pd.DataFrame, source: str) -> None:
        """Every measured sample lies inside each parameter's range."""
        for p in self.parameters:
            values = samples[p.name].to_numpy(float)
            outside = (values < p.low) | (values > p.high)
            if outside.any():
                which = samples.index[outside][0]
                raise SinterlabError(
                    f"{source}: sample {which!r} has {p.name}={values[outside][0]:g}, outside "
                    f"space.parameters.{p.name} [{p.low:g}, {p.high:g}]; widen the range in "
                    "conf/plan.yaml or leave the sample out")


def space_from_config(cfg) -> Space:
    """``space`` of ``conf/plan.yaml`` as a :class:`Space`."""
    parameters = []
    limit = int(cfg.max_settings)
    if not cfg.parameters:
        raise SinterlabError("space.parameters is empty; name at least one process parameter "
                             "with its low, high and step (or levels)")
    for name, entry in cfg.parameters.items():
        key = f"space.parameters.{name}"
        if entry.get("levels"):
            levels = sorted(float(v) for v in entry.levels)
            low = float(entry.get("low", levels[0]))
            high = float(entry.get("high", levels[-1]))
        else:
            missing = [k for k in ("low", "high", "step") if entry.get(k) is None]
            if missing:
                raise SinterlabError(f"{key} needs {missing} (or a list of levels)")
            low, high, step = float(entry.low), float(entry.high), float(entry.step)
            if step <= 0 or high < low:
                raise SinterlabError(f"{key}: need low <= high and step > 0 (got low={low:g}, "
                                     f"high={high:g}, step={step:g})")
            count = math.floor((high - low) / step + 0.5) + 1
            if count > limit:
                raise SinterlabError(f"{key}: step={step:g} gives {count:,} levels in "
                                     f"[{low:g}, {high:g}], more than space.max_settings="
                                     f"{limit:,}; use a coarser step")
            levels = list(np.round(np.arange(low, high + step / 2, step), 10))
        if levels[0] < low or levels[-1] > high:
            raise SinterlabError(f"{key}: levels {levels} lie outside [{low:g}, {high:g}]")
        parameters.append(Parameter(str(name), low, high, tuple(float(v) for v in levels),
                                    str(entry.get("unit") or "")))
    settings = math.prod(len(p.levels) for p in parameters)
    if settings > limit:
        raise SinterlabError(
            f"space.parameters: {' x '.join(str(len(p.levels)) for p in parameters)} = "
            f"{settings:,} settings, more than space.max_settings={limit:,}; use coarser steps "
            "or fewer levels (or raise space.max_settings)")
    return Space(tuple(parameters), tuple(str(c) for c in (cfg.constraints or [])),
                 str(cfg.cost.expression or ""), str(cfg.cost.unit or ""))
