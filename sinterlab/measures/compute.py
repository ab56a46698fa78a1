"""The measures of every image of a run, cached per image like the embeddings (keyed by the
image's content and scale, the preprocessing and the measures' own settings). One unit per run:
lengths in µm only when every image's pixel size is known. An entry that cannot be read, or
holds other measures or values than an entry can, is moved to ``corrupt/`` with a warning and
measured again."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import OmegaConf

from sinterlab.atomic import write_json
from sinterlab.data.metadata import one_unit
from sinterlab.data.preprocess import preprocess_image
from sinterlab.measures.microstructure import measure_mask, measure_names, one_phase, segment_pores

log = logging.getLogger(__name__)
#: what an entry holds beside the measures; its version enters the key (entries of version 1
#: gave a blank image porosity 0 and had no ``one_phase``)
ENTRY_VERSION = 2


def _settings_key(preprocess_cfg, measures_cfg) -> str:
    settings = {"preprocess": OmegaConf.to_container(preprocess_cfg, resolve=True),
                "segmentation": OmegaConf.to_container(measures_cfg.segmentation, resolve=True),
                "measures": list(measures_cfg.measures)}
    settings["preprocess"].pop("patches", None)  # patches do not change a whole-image measure
    settings["preprocess"].pop("checks", None)
    (settings["preprocess"].get("scale") or {}).pop("outlier_factor", None)  # a check only
    settings["entry_version"] = ENTRY_VERSION
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def one_image(path: str, preprocess_cfg, measures_cfg, scale: float,
              pixel_nm: float | None) -> tuple[dict, np.ndarray, np.ndarray]:
    """(measures, micrograph, pore mask) of one image at the run's preprocessing; lengths in µm
    when ``pixel_nm`` (the micrograph's pixel size after resampling) is known."""
    micrograph, _ = preprocess_image(path, preprocess_cfg, scale,
                                     bool(measures_cfg.segmentation.equalized))
    pores = segment_pores(micrograph, measures_cfg.segmentation)
    return measure_mask(pores, pixel_nm, set(measures_cfg.measures)), micrograph, pores


def entry_problem(values, names: list[str]) -> str | None:
    """What is wrong with a cached entry's ``values`` for the measures ``names``, or None."""
    if not isinstance(values, dict):
        return f"a {type(values).__name__}, not measures"
    if set(values) != {*names, "one_phase"}:
        return f"measures {sorted(values)}, expected {sorted(names)} and one_phase"
    if values["one_phase"] not in (None, "pores", "solid"):
        return f"one_phase {values['one_phase']!r}"
    for name in names:
        value = values[name]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or \
                math.isinf(value):
            return f"{name} {value!r} is not a finite number or NaN"
    return None


def _cached(entry: Path, image: str, names: list[str]) -> dict | None:
    """The entry's values, None when absent; one that cannot be read or is wrong is moved to
    ``corrupt/`` with a warning (None: measure ``image`` again)."""
    try:
        text = entry.read_text()
    except FileNotFoundError:
        return None
    except OSError as err:
        problem = f"unreadable: {err.strerror}"
    else:
        try:
            values = json.loads(text)
            problem = entry_problem(values, names)
        except ValueError as err:
            problem = f"unreadable: {type(err).__name__}: {err}"
        if problem is None:
            return values
    aside = entry.parent / "corrupt" / f"{entry.stem}.{datetime.now():%Y%m%d-%H%M%S-%f}.json"
    aside.parent.mkdir(exist_ok=True)
    os.replace(entry, aside)
    log.warning("%s: wrong measures cache entry (%s) moved to %s; measuring %s again", entry,
                problem, aside, image)
    return None


def image_measures(refs, pixel_sizes, preprocess_cfg, measures_cfg) -> tuple[pd.DataFrame,
                                                                           list[str]]:
    """One row per image ref (path, key, scale): its measures and their length unit, from the
    cache or computed; and a warning per image where segmentation found one phase only (its
    measures NaN). Lengths are in µm when the run has a target scale or every image's pixel
    size is known, else in px for every image (one unit per run)."""
    folder = Path(measures_cfg.cache_dir) / _settings_key(preprocess_cfg, measures_cfg)
    names = measure_names(set(measures_cfg.measures))
    target = (preprocess_cfg.get("scale") or {}).get("pixel_size_nm")
    pixels = [float(target)] * len(refs) if target is not None else one_unit(pixel_sizes)
    rows, warnings, computed = [], [], 0
    for ref, pixel in zip(refs, pixels, strict=True):
        entry = folder / f"{ref.key}-{pixel or 'px'}.json"
        values = _cached(entry, ref.path, names)
        if values is None:
            measured, _, pores = one_image(ref.path, preprocess_cfg, measures_cfg, ref.scale,
                                           pixel)
            values = measured | {"one_phase": one_phase(pores)}
            write_json(entry, values)
            computed += 1
        if values["one_phase"]:
            warnings.append(f"{ref.path}: segmentation found only {values['one_phase']} (blank "
                            "or saturated image?); its measures are NaN")
        rows.append({"path": ref.path, **values, "length_unit": "µm" if pixel else "px"})
    log.info("microstructure measures: %d images, %d from cache", len(rows),
             len(rows) - computed)
    return pd.DataFrame(rows), warnings
