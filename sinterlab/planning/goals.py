"""The three questions ``sinterlab-plan`` answers over the allowed grid of the design space:

* ``map``: each response's predicted mean and interval at every allowed setting;
* ``target``: the settings whose response meets a target with probability >= p, cheapest first;
* ``next``: a batch of q experiments chosen by a BoTorch acquisition over the allowed grid
  (``optimize_acqf_discrete``, so every proposal is an allowed level meeting the constraints):
  noisy expected improvement to optimise a response, integrated posterior variance to learn
  its map.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from botorch.acquisition import qLogNoisyExpectedImprovement
from botorch.acquisition.active_learning import qNegIntegratedPosteriorVariance
from botorch.acquisition.objective import LinearMCObjective
from botorch.optim import optimize_acqf_discrete
from botorch.sampling import SobolQMCNormalSampler
from scipy import stats

from sinterlab.errors import SinterlabError
from sinterlab.planning.responses import Response
from sinterlab.planning.space import COST, Space
from sinterlab.planning.surrogate import LeaveOneOut, fit_gp, leave_one_out, predict

ACQUISITIONS = {"nei": "noisy expected improvement (qLogNoisyExpectedImprovement)",
                "ipv": "integrated posterior variance (qNegIntegratedPosteriorVariance)"}
DIRECTIONS = ("minimize", "maximize")
OPERATORS = ("<=", ">=")
#: the columns ``target`` (probability, meets) and ``next`` (rank, reason) add to plan.csv
PROBABILITY, MEETS, RANK, REASON = "probability", "meets", "rank", "reason"


class TooFewSamples(Exception):
    """Not an error of the input: the data cannot support a plan yet."""


@dataclass
class Fitted:
    """One response's surrogate, the data it saw and its leave-one-sample-out check."""

    response: Response
    model: object
    x: np.ndarray
    y: np.ndarray  # modelled scale
    loo: LeaveOneOut

    @property
    def rmse_measured(self) -> float:
        """The leave-one-sample-out RMSE on the measured scale."""
        return float(np.sqrt(np.mean(
            (self.response.inverse(self.loo.mean) - self.response.inverse(self.y)) ** 2)))


def fit_responses(samples: pd.DataFrame, space: Space, responses: list[Response],
                  level: float, min_samples: int, seed: int) -> dict[str, Fitted]:
    """A checked GP per response on the samples where it was measured."""
    fitted = {}
    for response in responses:
        have = samples[response.name].notna().to_numpy()
        if have.sum() < int(min_samples):
            raise TooFewSamples(
                f"too few samples to plan: {response.name} is measured on {int(have.sum())} "
                f"sample(s), surrogate.min_samples={min_samples}; measure more samples (a grid "
                "over the design space) first")
        x = samples.loc[have, space.names].to_numpy(float)
        y = samples.loc[have, response.name].to_numpy(float)
        loo = leave_one_out(x, y, space.bounds, level, seed)
        fitted[response.name] = Fitted(response, fit_gp(x, y, space.bounds, seed), x, y, loo)
    return fitted


def map_table(grid: pd.DataFrame, space: Space, fitted: dict[str, Fitted],
              level: float) -> pd.DataFrame:
    """The grid with each response's mean and interval bounds (measured scale)."""
    out = grid.copy()
    x = grid[space.names].to_numpy(float)
    for name, fit in fitted.items():
        pred = predict(fit.model, x, level)
        out[f"{name}_mean"] = fit.response.inverse(pred.mean)
        out[f"{name}_lower"] = fit.response.inverse(pred.lower)
        out[f"{name}_upper"] = fit.response.inverse(pred.upper)
    return out


def _named(known: Mapping[str, Response], name: str, key: str) -> Response:
    if name not in known:
        raise SinterlabError(f"{key}={name!r} is not a response; use one of {list(known)} "
                             "(or add it under responses)")
    return known[name]


def check_target(cfg, responses: Mapping[str, Response]) -> Response:
    """``target``'s settings against the responses, before any fit: the response it names."""
    response = _named(responses, str(cfg.response), "target.response")
    op = str(cfg.op)
    if op not in OPERATORS:
        raise SinterlabError(f"target.op={op!r} is unknown; use one of {list(OPERATORS)}")
    if response.log and float(cfg.value) <= 0:
        raise SinterlabError(f"target.value={cfg.value} but {response.name} is modelled on a "
                             "log scale (log: true); give a positive target")
    return response


def check_next(cfg, responses: Mapping[str, Response]) -> Response:
    """``next``'s settings against the responses, before any fit: the response it names."""
    response = _named(responses, str(cfg.response), "next.response")
    acquisition = str(cfg.acquisition)
    if acquisition not in ACQUISITIONS:
        raise SinterlabError(f"next.acquisition={acquisition!r} is unknown; use one of "
                             f"{list(ACQUISITIONS)}")
    direction = str(cfg.direction)
    if direction not in DIRECTIONS:
        raise SinterlabError(f"next.direction={direction!r} is unknown; use one of "
                             f"{list(DIRECTIONS)}")
    return response


def target_table(grid: pd.DataFrame, space: Space, fitted: dict[str, Fitted], cfg,
                 level: float) -> pd.DataFrame:
    """Every allowed setting with the probability that its response meets the target (a new
    sample's measurement, observation noise included); those meeting it with probability >=
    ``cfg.probability`` first, cheapest first."""
    fit = fitted[check_target(cfg, {name: f.response for name, f in fitted.items()}).name]
    op = str(cfg.op)
    threshold = float(fit.response.forward(np.array([float(cfg.value)]))[0])
    pred = predict(fit.model, grid[space.names].to_numpy(float), level)
    below = stats.norm.cdf((threshold - pred.mean) / np.maximum(pred.sd, 1e-12))
    out = map_table(grid, space, {fit.response.name: fit}, level)
    out[PROBABILITY] = below if op == "<=" else 1.0 - below
    out[MEETS] = out[PROBABILITY] >= float(cfg.probability)
    return out.sort_values([MEETS, COST, PROBABILITY], ascending=[False, True, False],
                           kind="stable").reset_index(drop=True)


def next_batch(grid: pd.DataFrame, space: Space, fitted: dict[str, Fitted], cfg,
               level: float) -> tuple[pd.DataFrame, str]:
    """``cfg.q`` settings to run next, each with the reason; and the acquisition's name."""
    fit = fitted[check_next(cfg, {name: f.response for name, f in fitted.items()}).name]
    acquisition, direction = str(cfg.acquisition), str(cfg.direction)
    q = int(cfg.q)
    choices = torch.tensor(grid[space.names].to_numpy(float), dtype=torch.double)
    avoid = (torch.as_tensor(fit.x, dtype=torch.double) if cfg.avoid_measured else None)
    available = len(choices) - (0 if avoid is None else len(
        grid.merge(pd.DataFrame(fit.x, columns=space.names).drop_duplicates(), how="inner")))
    if q < 1 or q > available:
        raise SinterlabError(f"next.q={q}: choose 1 <= q <= {available} (the allowed settings"
                             + (" not yet measured)" if avoid is not None else ")"))
    torch.manual_seed(int(cfg.seed))
    sign = -1.0 if direction == "minimize" else 1.0
    if acquisition == "nei":
        acq = qLogNoisyExpectedImprovement(
            fit.model, X_baseline=torch.as_tensor(fit.x, dtype=torch.double),
            sampler=SobolQMCNormalSampler(sample_shape=torch.Size([int(cfg.mc_samples)]),
                                          seed=int(cfg.seed)),
            objective=LinearMCObjective(torch.tensor([sign], dtype=torch.double)))
    else:
        acq = qNegIntegratedPosteriorVariance(fit.model, mc_points=choices)
    with torch.no_grad():
        chosen, _ = optimize_acqf_discrete(acq, q=q, choices=choices, unique=True, X_avoid=avoid)
    picked = pd.DataFrame(chosen.numpy(), columns=space.names)
    picked = picked.merge(grid, on=space.names, how="left")
    out = map_table(picked, space, {fit.response.name: fit}, level)
    out[REASON] = _reasons(out, chosen.numpy(), fit, choices, acquisition, sign, level)
    out.insert(0, RANK, np.arange(1, len(out) + 1))
    return out, ACQUISITIONS[acquisition]


def _reasons(picked: pd.DataFrame, x: np.ndarray, fit: Fitted, choices: torch.Tensor,
             acquisition: str, sign: float, level: float) -> list[str]:
    """Why each proposal: for NEI its chance to beat the best measured sample; for IPV how
    much measuring it alone shrinks the map's average posterior variance."""
    name, unit = fit.response.name, f" {fit.response.unit}".rstrip()
    shown = [f"predicted {name} {picked[f'{name}_mean'].iloc[i]:.3g} "
             f"[{picked[f'{name}_lower'].iloc[i]:.3g}, {picked[f'{name}_upper'].iloc[i]:.3g}]"
             f"{unit}" for i in range(len(x))]
    if acquisition == "nei":
        latent = predict(fit.model, x, level, observation_noise=False)
        best = float(fit.y.min() if sign < 0 else fit.y.max())
        better = stats.norm.cdf(sign * (latent.mean - best) / np.maximum(latent.sd, 1e-12))
        word = "below" if sign < 0 else "above"
        return [f"{shown[i]}; {better[i]:.0%} chance its mean is {word} the best measured "
                f"({float(fit.response.inverse(np.array(best))):.3g}{unit})"
                for i in range(len(x))]
    now = float((predict(fit.model, choices.numpy(), level, observation_noise=False).sd ** 2)
                .mean())
    ipv = qNegIntegratedPosteriorVariance(fit.model, mc_points=choices)
    with torch.no_grad():
        after = -ipv(torch.as_tensor(x, dtype=torch.double).unsqueeze(1)).numpy()
    return [f"{shown[i]}; measuring it alone cuts the map's mean posterior variance by "
            f"{1 - after[i] / now:.0%}" for i in range(len(x))]
