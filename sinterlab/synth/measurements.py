"""Measurements taken outside the microscope, from each sample's sintering state: the sheet
resistance of the film (four-point probe), for planning demos (``sinterlab-plan``).

Law (every constant from the preset, section ``measurements.sheet_resistance``):

    R_s = rho_bulk / t * ((1 - phi_c) / (phi - phi_c)) ** t_exp * (1 / (x/r)) ** neck_exp
          * (1 + (duty_cycle / damage_dc) ** damage_n)

* ``rho_bulk / t``: bulk copper resistivity (µΩ·cm) over the film thickness (nm times the
  sample's thickness factor) gives the sheet resistance of a dense film, in Ω/sq.
* **Percolation** (McLachlan's general effective-medium law near threshold): the solid
  fraction ``phi = 1 - porosity`` conducts above ``phi_c`` with exponent ``t_exp`` (~2 in 3-D).
* **Necks**: current squeezes through the sintering necks; the constriction resistance of a
  contact scales as 1 / neck radius (Holm), so ``(r / x) ** neck_exp``.
* **Over-heating**: a long duty cycle heats each burst more; above ``damage_dc`` the film
  oxidises and cracks, raising the resistance steeply. This gives the response an interior
  optimum in duty cycle, as seen in laser-sintered inks.

Measurement noise is log-normal (``noise_log_sd``), drawn per sample.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sinterlab.synth.microstructure import effective_energy, sinter_state


def sheet_resistance(porosity: float, neck_ratio: float, duty_cycle: float,
                     thickness: float, law: Any) -> float:
    """Noise-free sheet resistance (Ω/sq) of a film in this sintering state."""
    phi, phi_c = 1.0 - float(porosity), float(law.solid_threshold)
    percolation = ((1.0 - phi_c) / max(phi - phi_c, 1e-3)) ** float(law.percolation_exp)
    necks = (1.0 / max(float(neck_ratio), 1e-3)) ** float(law.neck_exp)
    damage = 1.0 + (float(duty_cycle) / float(law.damage_dc)) ** float(law.damage_n)
    dense = float(law.rho_bulk_uohm_cm) * 1e-8 / (float(law.thickness_nm) * 1e-9
                                                   * float(thickness))
    return dense * percolation * necks * damage


def sample_sheet_resistance(burst_count: float, duty_cycle: float, physics: Any, law: Any,
                            energy_factor: float = 1.0, size_factor: float = 1.0,
                            thickness: float = 1.0) -> float:
    """Noise-free sheet resistance of one sample from its process parameters and its
    nuisance factors (all 1: the typical sample)."""
    energy = effective_energy(burst_count, duty_cycle, energy_factor, physics)
    state = sinter_state(energy, float(physics.r0_nm) * size_factor, physics, thickness)
    return sheet_resistance(state.porosity, state.neck_ratio, duty_cycle, thickness, law)


def measured(value: float, rng: np.random.Generator, law: Any) -> float:
    """``value`` with log-normal measurement noise."""
    return float(value * np.exp(float(law.noise_log_sd) * rng.standard_normal()))
