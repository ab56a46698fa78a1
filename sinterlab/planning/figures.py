"""Response-surface figures: a 1-D curve per parameter (the others held at fixed values) with
its interval band, and for two or more parameters a 2-D map of the mean and of the interval
width over the first two, with the measured samples on top."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from sinterlab.atomic import write_with  # noqa: E402
from sinterlab.planning.space import Space  # noqa: E402
from sinterlab.planning.surrogate import predict  # noqa: E402


def fixed_values(space: Space, fixed) -> dict[str, float]:
    """The value each parameter is held at on the other parameters' curves: ``map.fixed`` or
    its middle allowed level."""
    return {p.name: float(fixed[p.name]) if p.name in (fixed or {})
            else p.levels[len(p.levels) // 2] for p in space.parameters}


def _label(p) -> str:
    return f"{p.name} ({p.unit})" if p.unit else p.name


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    write_with(path, lambda tmp: fig.savefig(tmp, dpi=110, bbox_inches="tight"))
    plt.close(fig)
    return path


def curve_figure(fit, space: Space, held: dict[str, float], level: float, points: int,
                 path: Path) -> Path:
    """One panel per parameter: mean and ``level`` band (a new sample's value) along it."""
    response = fit.response
    fig, axes = plt.subplots(1, len(space.parameters), figsize=(4.2 * len(space.parameters), 3.4),
                             squeeze=False)
    for ax, p in zip(axes[0], space.parameters, strict=True):
        line = np.linspace(p.low, p.high, int(points))
        x = np.tile([held[q.name] for q in space.parameters], (len(line), 1))
        j = space.names.index(p.name)
        x[:, j] = line
        pred = predict(fit.model, x, level)
        ax.fill_between(line, response.inverse(pred.lower), response.inverse(pred.upper),
                        alpha=0.25, label=f"{level:.0%} interval")
        ax.plot(line, response.inverse(pred.mean), label="GP mean")
        others = [i for i in range(len(space.names)) if i != j]
        on_line = np.all(np.isclose(fit.x[:, others], x[0, others]), axis=1)
        ax.plot(fit.x[on_line, j], response.inverse(fit.y[on_line]), "o", color="k", ms=4,
                label="samples on this line")
        ax.plot(fit.x[~on_line, j], response.inverse(fit.y[~on_line]), ".", color="0.6",
                ms=4, label="other samples")
        if response.log:
            ax.set_yscale("log")
        ax.set_xlabel(_label(p))
        ax.set_ylabel(f"{response.name} ({response.unit})" if response.unit else response.name)
        rest = ", ".join(f"{q.name}={held[q.name]:g}" for q in space.parameters if q is not p)
        ax.set_title(rest, fontsize=9)
    axes[0][0].legend(fontsize=7)
    return _save(fig, path)


def map_figure(fit, space: Space, held: dict[str, float], level: float, points: int,
               path: Path) -> Path:
    """Mean and interval width over the first two parameters, samples as dots."""
    response = fit.response
    p, r = space.parameters[0], space.parameters[1]
    a, b = np.meshgrid(np.linspace(p.low, p.high, int(points)),
                       np.linspace(r.low, r.high, int(points)))
    x = np.tile([held[q.name] for q in space.parameters], (a.size, 1))
    x[:, 0], x[:, 1] = a.ravel(), b.ravel()
    pred = predict(fit.model, x, level)
    mean = response.inverse(pred.mean).reshape(a.shape)
    width = (response.inverse(pred.upper) - response.inverse(pred.lower)).reshape(a.shape)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    unit = f" ({response.unit})" if response.unit else ""
    for ax, values, title in ((axes[0], mean, f"{response.name} mean{unit}"),
                              (axes[1], width, f"{level:.0%} interval width{unit}")):
        mesh = ax.pcolormesh(a, b, values, shading="auto", cmap="viridis")
        fig.colorbar(mesh, ax=ax)
        ax.plot(fit.x[:, 0], fit.x[:, 1], "o", mfc="none", mec="w", ms=6)
        ax.set_xlabel(_label(p))
        ax.set_ylabel(_label(r))
        ax.set_title(title, fontsize=10)
    return _save(fig, path)
