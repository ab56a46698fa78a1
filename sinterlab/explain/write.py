"""Maps and Grad-CAM panels for a list of images, written to a folder: what
``sinterlab-explain`` and ``sinterlab-predict maps=true`` produce."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from sinterlab.atomic import write_with
from sinterlab.errors import SinterlabError
from sinterlab.explain.attribution import draw_cam
from sinterlab.explain.maps import draw_map, grid_maps, grid_table
from sinterlab.predict import RunModel

log = logging.getLogger(__name__)


def default_stride(preprocess_cfg) -> int:
    """Half the run's patch size: every pixel away from the edges is seen by four patches."""
    return max(1, int(preprocess_cfg.patches.size) // 2)


def check_explainable(model: RunModel) -> None:
    """Maps and Grad-CAM read the image's patches alone: a run whose model also reads extra
    inputs (``data.extra_inputs``) or the images' measures is refused, before any image is
    read."""
    if not model.patch_parts():
        raise SinterlabError(f"{model.run_dir}: maps and Grad-CAM read the image's patches "
                             "alone, and this run's model reads the images' measures (inputs="
                             f"{model.head.inputs}); predict without maps=true")
    left_out = [p.name for p in model.parts if p.head.reads_measures]
    if left_out:
        log.warning("maps show the weighted ensemble's members that read patches, weights "
                    "renormalised; left out (they read the images' measures): %s",
                    ", ".join(left_out))
    if model.extra_inputs:
        raise SinterlabError(f"{model.run_dir}: maps and Grad-CAM read the image alone, and this "
                             f"run's head also reads the extra inputs {model.extra_inputs}; "
                             "maps are not drawn for such runs (predict without maps=true, or "
                             "explain an image-only run)")


def explain_images(model: RunModel, paths, out_dir: Path, stride: int | None = None,
                   cam_patches: int = 4, progress: bool = True,
                   ) -> tuple[pd.DataFrame, list[Path], dict]:
    """For each image: ``<stem>_map.png`` (prediction map and patch histogram) and, unless
    ``cam_patches=0`` or the model has no gradients (a forest, an SVM), ``<stem>_cam.png``
    (Grad-CAM of its strongest patches); plus ``grid_predictions.csv``. Returns the grid
    table, the files and the images left out."""
    check_explainable(model)
    if cam_patches and not model.patch_parts(gradients=True):
        log.warning("Grad-CAM needs a model with gradients (a head or an affine model); %s "
                    "has none: maps only", model.model_name)
        cam_patches = 0
    elif cam_patches and len(model.patch_parts(gradients=True)) < len(model.patch_parts()):
        log.warning("Grad-CAM passes through the weighted ensemble's members with gradients "
                    "only (a head or an affine model), weights renormalised")
    out_dir = Path(out_dir)
    target = model.head.targets[0]
    maps, bad = grid_maps(model, paths, stride or default_stride(model.cfg.preprocess),
                          progress=progress)
    written = []
    for m in maps:
        stem = Path(m.path).stem
        written.append(draw_map(m, target, out_dir / f"{stem}_map.png"))
        if cam_patches:
            written.append(draw_cam(model, m, target, cam_patches, out_dir / f"{stem}_cam.png"))
    table = grid_table(maps, target) if maps else pd.DataFrame()
    csv = out_dir / "grid_predictions.csv"
    write_with(csv, lambda p: table.to_csv(p, index=False))
    return table, [*written, csv], bad
