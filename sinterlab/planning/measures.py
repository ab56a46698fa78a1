"""Image measures as responses: porosity and the other microstructure measures of every image
of the descriptor, computed (and cached) by :func:`sinterlab.measures.compute.image_measures`
with the preprocessing and measure settings a training run uses (``preprocess``, ``measures``
groups), in the shape of a run's ``measures.csv``: one row per image with its sample."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from sinterlab.data.descriptor import read_table
from sinterlab.data.metadata import PIXEL_SIZE, check_pixel_sizes, image_metadata
from sinterlab.errors import SinterlabError
from sinterlab.features.cache import file_sha256
from sinterlab.features.extract import ImageRef, scale_factors
from sinterlab.measures.compute import image_measures


def descriptor_measures(descriptor: str | Path, image_column: str, sample_column: str,
                        preprocess_cfg, measures_cfg) -> tuple[pd.DataFrame, list[str]]:
    """(image, sample and measures per descriptor row; warnings of one-phase images and of
    pixel sizes missing or far from the others')."""
    csv = Path(descriptor).expanduser().resolve()
    if str(preprocess_cfg.scale.pixel_size_nm) == "auto":
        raise SinterlabError("preprocess.scale.pixel_size_nm=auto is for training runs; give "
                             "sinterlab-plan a number of nanometres per pixel, or null")
    table = read_table(csv)
    if image_column not in table.columns:
        raise SinterlabError(f"{csv}: no column {image_column!r} (data.image_column) to measure "
                             "images from; set data.measures to a run's measures.csv instead")
    paths = [csv.parent / str(p) for p in table[image_column]]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise SinterlabError(f"{missing[0]}: image not found ({len(missing)} missing); fix "
                             f"{image_column!r} in {csv} (paths relative to its folder)")
    metadata = image_metadata([str(p) for p in paths], table, csv)
    checked = check_pixel_sizes(table[image_column], metadata, preprocess_cfg.scale, csv)
    pixel_sizes = metadata[PIXEL_SIZE].tolist()
    factors, _ = scale_factors([str(p) for p in paths], pixel_sizes, preprocess_cfg)
    refs = [ImageRef(str(p), file_sha256(p), f) for p, f in zip(paths, factors, strict=True)]
    frame, warnings = image_measures(refs, pixel_sizes, preprocess_cfg, measures_cfg)
    warnings = checked + warnings
    frame.insert(0, sample_column, table[sample_column].astype(str).to_numpy()
                 if sample_column in table.columns else table.index.astype(str))
    frame.insert(0, image_column, table[image_column].to_numpy())
    return frame, warnings
