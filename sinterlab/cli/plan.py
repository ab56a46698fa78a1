"""``sinterlab-plan``: which process parameters give the film I want, and which experiments to
run next. A Gaussian process per response over the design space (``conf/plan.yaml``), checked
by leave-one-sample-out prediction, answers one goal:

    sinterlab-plan data.descriptor=data/plan/descriptor.csv goal=map
    sinterlab-plan data.descriptor=... goal=target target.value=0.08 target.probability=0.9
    sinterlab-plan data.descriptor=... goal=next next.q=3 next.acquisition=nei

Writes ``plan.md``, ``plan.html``, ``plan.csv`` and ``figures/`` into the run folder.

Exit status: 0 done (also when there are too few samples to plan: it says so); 2 bad input;
74 a file could not be written (one line naming it and the cause).
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from sinterlab.cli import CONF_DIR, one_line_errors
from sinterlab.config_schema import PLAN, check_config
from sinterlab.errors import SinterlabError

#: harmless here: a deprecation inside BoTorch's imports, GPyTorch's jitter on replicated settings
QUIET = (r"`torch\.jit\.script` is deprecated", r"A not p\.d\., added jitter")

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=QUIET[0])
    from sinterlab.planning import figures
    from sinterlab.planning.goals import (
        TooFewSamples,
        fit_responses,
        map_table,
        next_batch,
        target_table,
    )
    from sinterlab.planning.measures import descriptor_measures
    from sinterlab.planning.report import write_plan
    from sinterlab.planning.responses import load_samples, responses_from_config
    from sinterlab.planning.space import space_from_config

PROG = "sinterlab-plan"
log = logging.getLogger(__name__)
GOALS = ("map", "target", "next")


def plan(cfg: DictConfig, out_dir: Path) -> list[str]:
    """Run ``cfg.goal`` and write its files into ``out_dir``; the lines to print."""
    check_config(cfg, PLAN)
    if OmegaConf.is_missing(cfg.data, "descriptor"):
        raise SinterlabError("data.descriptor is not set; give the descriptor CSV: "
                             "sinterlab-plan data.descriptor=PATH (make plan-demo makes one)")
    goal = str(cfg.goal)
    if goal not in GOALS:
        raise SinterlabError(f"goal={goal!r} is unknown; use one of {list(GOALS)}")
    space = space_from_config(cfg.space)
    responses = responses_from_config(cfg.responses)
    measures = cfg.data.get("measures")
    if measures == "compute" and any(r.source == "measures" for r in responses):
        measures, warnings_ = descriptor_measures(cfg.data.descriptor, str(cfg.data.image_column),
                                                  str(cfg.data.sample_column), cfg.preprocess,
                                                  cfg.measures)
        for warning in warnings_:
            log.warning(warning)
    samples = load_samples(cfg.data.descriptor, space.names, responses,
                           str(cfg.data.sample_column), measures)
    space.check_samples(samples, str(cfg.data.descriptor))
    grid = space.grid()
    level = float(cfg.surrogate.interval)
    try:
        fitted = fit_responses(samples, space, responses, level,
                               int(cfg.surrogate.min_samples), int(cfg.surrogate.seed))
    except TooFewSamples as few:
        paths = write_plan(out_dir, goal, cfg, space, grid, samples, {}, None, [], note=str(few))
        return [f"{PROG}: {few}", f"plan: {paths['plan.md']}"]
    lines = [f"samples: {len(samples)}; allowed settings: {len(grid)}"]
    for name, f in fitted.items():
        lines.append(f"{name}: leave-one-sample-out coverage of the {level:.0%} interval "
                     f"{f.loo['coverage']:.0%} over {f.loo['n']} samples, RMSE "
                     f"{f.loo['rmse_measured']:.3g} {f.response.unit}".rstrip())
    acquisition, figs = "", []
    if goal == "map":
        result = map_table(grid, space, fitted, level)
        held = figures.fixed_values(space, cfg.map.get("fixed"))
        for name, f in fitted.items():
            figs.append(figures.curve_figure(f, space, held, level, int(cfg.map.points),
                                             out_dir / "figures" / f"{name}_curves.png"))
            if len(space.parameters) >= 2:
                figs.append(figures.map_figure(f, space, held, level, int(cfg.map.points),
                                               out_dir / "figures" / f"{name}_map.png"))
        for name, f in fitted.items():
            best = result.loc[result[f"{name}_mean"].idxmin()]
            lines.append(f"lowest predicted {name}: {_setting(best, space)} -> "
                         f"{best[f'{name}_mean']:.3g} [{best[f'{name}_lower']:.3g}, "
                         f"{best[f'{name}_upper']:.3g}] {f.response.unit}".rstrip())
    elif goal == "target":
        result = target_table(grid, space, fitted, cfg.target, level)
        t = cfg.target
        meets = result[result["meets"]]
        lines.append(f"target {t.response} {t.op} {t.value} with p >= {t.probability}: "
                     f"{len(meets)} of {len(result)} settings")
        for _, row in meets.head(int(t.rows)).iterrows():
            lines.append(f"  {_setting(row, space)} cost {row['cost']:g} {space.cost_unit}: "
                         f"P = {row['probability']:.2f}")
    else:
        result, acquisition = next_batch(grid, space, fitted, cfg.next, level)
        lines.append(f"next {len(result)} experiments ({acquisition}):")
        for _, row in result.iterrows():
            lines.append(f"  {int(row['rank'])}. {_setting(row, space)}: {row['reason']}")
    paths = write_plan(out_dir, goal, cfg, space, grid, samples, fitted, result, figs,
                       acquisition)
    return [*lines, f"plan: {paths['plan.md']}", f"table: {paths['plan.csv']}"]


def _setting(row, space) -> str:
    return " ".join(f"{name}={row[name]:g}" for name in space.names)


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="plan")
def main(cfg: DictConfig) -> None:
    with one_line_errors(PROG), warnings.catch_warnings():
        for message in QUIET:
            warnings.filterwarnings("ignore", message=message)
        lines = plan(cfg, Path(HydraConfig.get().runtime.output_dir))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
