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

PROG = "sinterlab-plan"
log = logging.getLogger(__name__)


def plan(cfg: DictConfig, out_dir: Path) -> list[str]:
    """Run ``cfg.goal`` and write its files into ``out_dir``; the lines to print. Planning
    (BoTorch, torch) is imported after the checks, not with the command: ``--help`` and a bad
    option need none of it."""
    check_config(cfg, PLAN)
    if OmegaConf.is_missing(cfg.data, "descriptor"):
        raise SinterlabError("data.descriptor is not set; give the descriptor CSV: "
                             "sinterlab-plan data.descriptor=PATH (make plan-demo makes one)")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=QUIET[0])
        from sinterlab.planning.answers import goal_named
        from sinterlab.planning.goals import TooFewSamples, fit_responses
        from sinterlab.planning.measures import descriptor_measures
        from sinterlab.planning.report import write_plan
        from sinterlab.planning.responses import load_samples, responses_from_config
        from sinterlab.planning.space import space_from_config

    goal = goal_named(str(cfg.goal))
    space = space_from_config(cfg.space)
    responses = responses_from_config(cfg.responses)
    goal.check(cfg, {response.name: response for response in responses})
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
        paths = write_plan(out_dir, goal.name, cfg, space, grid, samples, {}, None, [],
                           note=str(few))
        return [f"{PROG}: {few}", f"plan: {paths.markdown}"]
    lines = [f"samples: {len(samples)}; allowed settings: {len(grid)}"]
    for name, f in fitted.items():
        lines.append(f"{name}: leave-one-sample-out coverage of the {level:.0%} interval "
                     f"{f.loo.coverage:.0%} over {f.loo.n} samples, RMSE "
                     f"{f.rmse_measured:.3g} {f.response.unit}".rstrip())
    answer = goal.answer(cfg, grid, space, fitted, level, out_dir)
    paths = write_plan(out_dir, goal.name, cfg, space, grid, samples, fitted, answer.table,
                       answer.figures, goal.section(answer, cfg, space))
    return [*lines, *answer.lines, f"plan: {paths.markdown}", f"table: {paths.csv}"]


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="plan")
def main(cfg: DictConfig) -> None:
    with one_line_errors(PROG), warnings.catch_warnings():
        for message in QUIET:
            warnings.filterwarnings("ignore", message=message)
        lines = plan(cfg, Path(HydraConfig.get().runtime.output_dir))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
