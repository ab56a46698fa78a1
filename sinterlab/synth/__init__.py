"""Synthetic SEM micrographs of micro-laser-sintered copper-nanoparticle films (demo data)."""

from sinterlab.synth.generate import (
    DESCRIPTOR_COLUMNS,
    GENERATOR_VERSION,
    design_table,
    generate_dataset,
    load_preset,
    render_image,
)
from sinterlab.synth.microstructure import SinterState, effective_energy, sinter_state
from sinterlab.synth.render import render_info_bar

__all__ = [
    "DESCRIPTOR_COLUMNS",
    "GENERATOR_VERSION",
    "SinterState",
    "design_table",
    "effective_energy",
    "generate_dataset",
    "load_preset",
    "render_image",
    "render_info_bar",
    "sinter_state",
]
