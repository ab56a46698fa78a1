"""The measures of every image of a run, cached per image like the embeddings (keyed by the
image's content and scale, the preprocessing and the measures' own settings). One unit per run:
lengths in µm only when every image's pixel size is known."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import OmegaConf

from sinterlab.atomic import write_json
from sinterlab.data.metadata import one_unit
from sinterlab.data.preprocess import preprocess_image
from sinterlab.measures.microstructure import measure_mask, segment_pores

log = logging.getLogger(__name__)


def _settings_key(preprocess_cfg, measures_cfg) -> str:
    settings = {"preprocess": OmegaConf.to_container(preprocess_cfg, resolve=True),
                "segmentation": OmegaConf.to_container(measures_cfg.segmentation, resolve=True),
                "measures": list(measures_cfg.measures)}
    settings["preprocess"].pop("patches", None)  # patches do not change a whole-image measure
    settings["preprocess"].pop("checks", None)
    (settings["preprocess"].get("scale") or {}).pop("outlier_factor", None)  # a check only
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def one_image(path: str, preprocess_cfg, measures_cfg, scale: float,
              pixel_nm: float | None) -> tuple[dict, np.ndarray, np.ndarray]:
    """(measures, micrograph, pore mask) of one image at the run's preprocessing; lengths in µm
    when ``pixel_nm`` (the micrograph's pixel size after resampling) is known."""
    micrograph, _ = preprocess_image(path, preprocess_cfg, scale,
                                     bool(measures_cfg.segmentation.equalized))
    pores = segment_pores(micrograph, measures_cfg.segmentation)
    return measure_mask(pores, pixel_nm, set(measures_cfg.measures)), micrograph, pores


def image_measures(refs, pixel_sizes, preprocess_cfg, measures_cfg) -> tuple[pd.DataFrame,
                                                                           list[str]]:
    """One row per image ref (path, key, scale): its measures and their length unit, from the
    cache or computed; and a warning per image where segmentation found one phase only. Lengths
    are in µm when the run has a target scale or every image's pixel size is known, else in px
    for every image (one unit per run)."""
    folder = Path(measures_cfg.cache_dir) / _settings_key(preprocess_cfg, measures_cfg)
    target = (preprocess_cfg.get("scale") or {}).get("pixel_size_nm")
    pixels = [float(target)] * len(refs) if target is not None else one_unit(pixel_sizes)
    rows, warnings, computed = [], [], 0
    for ref, pixel in zip(refs, pixels, strict=True):
        entry = folder / f"{ref.key}-{pixel or 'px'}.json"
        try:
            values = json.loads(entry.read_text())
        except (OSError, ValueError):
            values = one_image(ref.path, preprocess_cfg, measures_cfg, ref.scale, pixel)[0]
            write_json(entry, values)
            computed += 1
        if values.get("porosity") in (0.0, 1.0):
            phase = "pores" if values["porosity"] == 1.0 else "solid"
            warnings.append(f"{ref.path}: segmentation found only {phase} (blank or saturated "
                            "image?); its measures are NaN")
        rows.append({"path": ref.path, **values, "length_unit": "µm" if pixel else "px"})
    log.info("microstructure measures: %d images, %d from cache", len(rows),
             len(rows) - computed)
    return pd.DataFrame(rows), warnings
