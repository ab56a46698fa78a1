"""A Gaussian-process surrogate per response (BoTorch ``SingleTaskGP``): inputs scaled to the
unit cube over the design space's ranges (``Normalize``), outputs standardized
(``Standardize``), hyperparameters by marginal likelihood (``fit_gpytorch_mll``); checked by
leave-one-sample-out prediction (coverage of its interval, RMSE)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch
from botorch.fit import fit_gpytorch_mll
from botorch.models import SingleTaskGP
from botorch.models.transforms import Normalize, Standardize
from gpytorch.mlls import ExactMarginalLogLikelihood
from scipy import stats

DTYPE = torch.double


def _tensor(values: np.ndarray) -> torch.Tensor:
    return torch.tensor(np.array(values, float), dtype=DTYPE)


def fit_gp(x: np.ndarray, y: np.ndarray, bounds: np.ndarray, seed: int) -> SingleTaskGP:
    """A GP on ``x`` (n x d, raw units) -> ``y`` (n, modelled scale)."""
    torch.manual_seed(int(seed))
    train_x, train_y = _tensor(x), _tensor(y).reshape(-1, 1)
    model = SingleTaskGP(train_x, train_y,
                         input_transform=Normalize(d=train_x.shape[-1], bounds=_tensor(bounds)),
                         outcome_transform=Standardize(m=1))
    with warnings.catch_warnings():  # optimizer restarts are logged, not news for the user
        warnings.simplefilter("ignore")
        fit_gpytorch_mll(ExactMarginalLogLikelihood(model.likelihood, model))
    return model


@dataclass(frozen=True)
class Prediction:
    """Posterior at some settings, on the modelled scale."""

    mean: np.ndarray
    sd: np.ndarray  # of a new sample's measurement (observation noise included) or of f
    z: float  # half-width of the interval in units of sd

    @property
    def lower(self) -> np.ndarray:
        return self.mean - self.z * self.sd

    @property
    def upper(self) -> np.ndarray:
        return self.mean + self.z * self.sd


def predict(model: SingleTaskGP, x: np.ndarray, level: float,
            observation_noise: bool = True) -> Prediction:
    """Mean and central ``level`` interval at ``x``; with ``observation_noise`` the interval is
    where a new sample's measured value falls, else where the true mean lies."""
    model.eval()
    with torch.no_grad():
        posterior = model.posterior(_tensor(x), observation_noise=observation_noise)
        mean = posterior.mean.squeeze(-1).numpy()
        sd = posterior.variance.clamp_min(0).sqrt().squeeze(-1).numpy()
    return Prediction(mean, sd, float(stats.norm.ppf(0.5 + level / 2)))


@dataclass(frozen=True)
class LeaveOneOut:
    """Each sample predicted by a GP refitted without it (modelled scale): the share inside the
    ``level`` interval, the RMSE of the mean, and the per-sample predictions."""

    n: int
    level: float
    coverage: float
    rmse: float
    mean: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    inside: np.ndarray


def leave_one_out(x: np.ndarray, y: np.ndarray, bounds: np.ndarray, level: float,
                  seed: int) -> LeaveOneOut:
    """Refit without each sample in turn and predict it: the share of held-out samples inside
    the ``level`` interval (with observation noise: it is a new measurement) and the RMSE of
    the mean, on the modelled scale; per-sample predictions for the table."""
    n = len(y)
    mean, lower, upper = np.empty(n), np.empty(n), np.empty(n)
    for i in range(n):
        keep = np.arange(n) != i
        model = fit_gp(x[keep], y[keep], bounds, seed)
        held = predict(model, x[i:i + 1], level)
        mean[i], lower[i], upper[i] = held.mean[0], held.lower[0], held.upper[0]
    inside = (y >= lower) & (y <= upper)
    return LeaveOneOut(n, level, float(inside.mean()), float(np.sqrt(np.mean((mean - y) ** 2))),
                       mean, lower, upper, inside)
