"""Physics of the synthetic µ-SLS film: from laser exposure to a surface height map.

Model (deliberately simple, every constant comes from the preset yaml, section ``physics``):

* **Film.** A dried, spin-coated film of copper nanoparticles: a packed random pile of
  spheres whose radii are log-normal (median ``r0``, log-sd ``radius_log_sd``). Spheres sit
  at random depths inside a top layer ``layer_depth * r`` thick; the visible surface is the
  upper envelope of their sphere caps.
* **Driving energy.** Each laser burst deposits roughly the same energy, a higher duty cycle
  puts more of it in per burst:  ``E = energy_factor * burst_count * (duty_cycle / dc_ref)**alpha``
  (``energy_factor`` carries the per-slide / set / sample scatter, see ``generate.py``).
* **Neck growth** (Kuczynski-type sintering laws, x/r ~ t^(1/n) with n = 5 for grain-boundary
  and n = 7 for surface diffusion): ``x/r = min(cap, (E / E0) ** (1 / n))``.
* **Coarsening** (Ostwald-type grain growth): ``r^m - r0^m = K * r0^m * E``, i.e.
  ``r = r0 * (1 + K * E) ** (1 / m)``: fewer, larger grains at high exposure.
* **Densification**: porosity relaxes from the green value ``p0`` towards ``p_inf``:
  ``p = p_inf + (p0 - p_inf) * exp(-E / E_d)``; thinner films (per-sample ``thickness``) show
  more pores (``p * thickness ** -thickness_exp``).

Geometry of the rendered state: particles of the coarsened size are stamped as sphere caps
(vectorised by radius bins), necks are formed by a grey-level morphological closing of the
height map with a disc of radius ``neck_closing * (x/r)**neck_gamma * r`` (the saddle between
two caps fills faster than linearly as x/r -> 1) followed by a light smoothing,
and the pore level is the ``p``-quantile of the height map (the deepest valleys are pores).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import cv2
import numpy as np


@dataclass(frozen=True)
class SinterState:
    """Sintering state of one imaged area."""

    energy: float  # effective energy, in units of bursts at the reference duty cycle
    neck_ratio: float  # x / r
    mean_radius_nm: float  # median particle (grain) radius after coarsening
    porosity: float  # area fraction of pores seen from the top

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def effective_energy(
    burst_count: float, duty_cycle: float, energy_factor: float, physics: Any
) -> float:
    """E = energy_factor * burst_count * (duty_cycle / dc_ref) ** alpha."""
    f_dc = (float(duty_cycle) / float(physics.dc_ref)) ** float(physics.dc_alpha)
    return float(energy_factor) * float(burst_count) * f_dc


def sinter_state(energy: float, r0_nm: float, physics: Any, thickness: float = 1.0) -> SinterState:
    """Neck ratio, coarsened radius and porosity after an effective energy ``energy``."""
    e = max(float(energy), 0.0)
    neck = min(
        float(physics.neck_cap), (e / float(physics.neck_E0)) ** (1.0 / float(physics.neck_n))
    )
    m = float(physics.coarsen_m)
    radius = float(r0_nm) * (1.0 + float(physics.coarsen_K) * e) ** (1.0 / m)
    p0, p_inf = float(physics.porosity_0), float(physics.porosity_inf)
    por = p_inf + (p0 - p_inf) * np.exp(-e / float(physics.densify_E))
    por *= max(float(thickness), 1e-3) ** (-float(physics.thickness_exp))
    por = float(np.clip(por, 0.005, 0.6))
    return SinterState(energy=e, neck_ratio=float(neck), mean_radius_nm=radius, porosity=por)


def _disc(radius: int) -> np.ndarray:
    k = 2 * int(radius) + 1
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))


def particle_pile(
    rng: np.random.Generator,
    shape: tuple[int, int],
    median_radius_px: float,
    radius_log_sd: float,
    coverage: float,
    layer_depth: float,
    n_bins: int = 12,
) -> np.ndarray:
    """Height map (float32, pixel units) of a random pile of sphere caps.

    ``coverage`` = sum of particle cross-sections / image area (a top layer of a packed film
    needs ~2-3). Radii are binned in log space (``n_bins`` bins, one cap sprite per bin) and
    all particles of a bin are stamped at once with ``np.maximum.at`` (no per-particle loop).
    """
    h, w = shape
    r_med = max(float(median_radius_px), 1.0)
    mean_area = np.pi * r_med**2 * np.exp(2.0 * radius_log_sd**2)
    r_max = r_med * np.exp(3.0 * radius_log_sd)
    margin = int(np.ceil(r_max)) + 1
    # particles may sit up to r_max outside the field of view; canvas adds one more margin
    ch, cw = h + 2 * margin, w + 2 * margin
    n = int(rng.poisson(coverage * ch * cw / mean_area))
    log_r = np.clip(rng.normal(0.0, radius_log_sd, n), -3.0 * radius_log_sd, 3.0 * radius_log_sd)
    cy = rng.integers(0, ch, n)
    cx = rng.integers(0, cw, n)
    depth = rng.uniform(0.0, layer_depth, n)  # centre depth, in units of the own radius

    m2 = 2 * margin
    hp, wp = ch + m2, cw + m2
    height = np.full(hp * wp, -(layer_depth + 1.0) * r_max, dtype=np.float32)
    edges = np.linspace(-3.0 * radius_log_sd, 3.0 * radius_log_sd + 1e-9, n_bins + 1)
    which = np.clip(np.searchsorted(edges, log_r, side="right") - 1, 0, n_bins - 1)
    for b in range(n_bins):
        sel = np.flatnonzero(which == b)
        if sel.size == 0:
            continue
        rb = r_med * float(np.exp(0.5 * (edges[b] + edges[b + 1])))
        R = int(np.ceil(rb))
        oy, ox = np.mgrid[-R : R + 1, -R : R + 1]
        cap2 = rb * rb - (oy * oy + ox * ox)
        inside = cap2 > 0
        sprite = np.sqrt(cap2[inside]).astype(np.float32)
        offs = (oy[inside] * wp + ox[inside]).astype(np.int64)
        centre = (cy[sel] + margin) * wp + (cx[sel] + margin)
        idx = (centre[:, None] + offs[None, :]).ravel()
        vals = (sprite[None, :] - (depth[sel] * rb).astype(np.float32)[:, None]).ravel()
        np.maximum.at(height, idx, vals)
    height = height.reshape(hp, wp)
    return height[m2 : m2 + h, m2 : m2 + w].copy()


def sintered_surface(
    rng: np.random.Generator,
    shape: tuple[int, int],
    state: SinterState,
    pixel_nm: float,
    physics: Any,
) -> tuple[np.ndarray, np.ndarray]:
    """Height map after necking/coarsening and a soft pore mask (0..1) for ``state``.

    Returns ``(height, pore)`` as float32 arrays of ``shape``.
    """
    r_px = state.mean_radius_nm / float(pixel_nm)
    height = particle_pile(
        rng,
        shape,
        r_px,
        float(physics.radius_log_sd),
        float(physics.coverage),
        float(physics.layer_depth),
    )
    # necks: grey closing fills the saddles between touching caps, more with larger x/r
    fill = state.neck_ratio ** float(physics.neck_gamma) * r_px
    rc = int(round(float(physics.neck_closing) * fill))
    if rc >= 1:
        height = cv2.morphologyEx(height, cv2.MORPH_CLOSE, _disc(rc))
    sig = float(physics.neck_smooth) * fill
    if sig > 0.3:
        height = cv2.GaussianBlur(height, (0, 0), sig)
    # pores: the deepest part of the surface; densification lowers their fraction
    level = float(np.quantile(height[::2, ::2], state.porosity))
    soft = max(float(physics.pore_softness) * r_px, 0.5)
    pore = np.clip((level - height) / soft + 0.5, 0.0, 1.0).astype(np.float32)
    # pores: the view into them is cut off a little below the rim (shallow pore floor)
    height = np.maximum(height, level - 2.0 * soft).astype(np.float32)
    return height, pore
