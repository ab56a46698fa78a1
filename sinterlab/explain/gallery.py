"""The report's gallery: for each class, the out-of-fold images predicted most confidently right
and most confidently wrong (regression: the smallest and largest errors), each with its map.

A map in the gallery comes from the members that never saw its image: the seeds of the fold
that tested it (under ``model=auto``, of the candidate that won that fold), so it shows what
the out-of-fold prediction saw. Images of a fold won by a model of the images' measures get no
map: it reads no patch.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from sinterlab.data.descriptor import IMAGE, PATH, str_label
from sinterlab.evaluation.results import ProtocolBlock
from sinterlab.explain.maps import draw_map, grid_embeddings, image_map
from sinterlab.explain.write import default_stride
from sinterlab.predict import ServedPart, load_model

#: the run's DataModule (sinterlab.study.datamodule.SEMDataModule), handed down by the study
#: layer; typed loosely so that this layer never imports the one above it
DataModule = Any


def served(cfg: DictConfig, dm, block: ProtocolBlock, checkpoint: str, head) -> ServedPart:
    """The model of ``checkpoint`` with the part of the run's patch embedding it reads (its
    candidate's ``representation`` under model.selection.representations; else all)."""
    points = block.selection.points.values() if block.selection else []
    candidate = next((p.candidate for p in points if p.checkpoint == checkpoint), None)
    view = (cfg.model.get("candidates") or {}).get(candidate, {}).get("representation") \
        if candidate else None
    return ServedPart(1.0, head, None, "", None if view is None else
                      dm.representation.view_columns(view, dm.backbone),
                      dm.representation.width(dm.backbone))


def pick(images: pd.DataFrame, target: dict, per_kind: int) -> pd.DataFrame:
    """Rows of the out-of-fold image table to show, with a ``kind`` column."""
    name = target["name"]
    picked = []
    if target["kind"] == "classification":
        truth = images[f"{name}_true"].map(str_label)
        right = truth == images[f"{name}_predicted"].astype(str)
        for label in target["classes"]:
            mine = images[truth == label].assign(truth_text=label)
            for kind, rows in (("right", mine[right[mine.index]]),
                               ("wrong", mine[~right[mine.index]])):
                top = rows.nlargest(per_kind, f"{name}_confidence")
                picked.append(top.assign(kind=kind))
    else:
        error = (images[f"{name}_predicted"] - images[f"{name}_true"]).abs()
        framed = images.assign(error=error)
        picked += [framed.nsmallest(per_kind, "error").assign(kind="closest"),
                   framed.nlargest(per_kind, "error").assign(kind="farthest")]
    return pd.concat(picked).reset_index(drop=True) if picked else images.iloc[:0]


def write_gallery(cfg: DictConfig, dm: DataModule, block: ProtocolBlock, images: pd.DataFrame,
                  run_dir: Path) -> list[dict]:
    """Maps of the picked images in ``figures/gallery`` by the members that tested them (the
    block's reported model, or model=auto's winner of each outer fold); returns one record per
    map. An image whose model reads microstructure measures gets no map (a map shows what
    patches say) and is not embedded."""
    g = cfg.evaluation.gallery
    target = dm.descriptor.targets[0].as_dict()
    chosen = pick(images, target, int(g.per_kind))
    if chosen.empty or not block.training:
        return []
    paths = dict(zip(dm.descriptor.table[IMAGE], dm.descriptor.table[PATH], strict=True))
    winners = block.selection.fold_checkpoints if block.selection else None
    kinds = {block.training.checkpoint: block.training.kind} | {
        p.checkpoint: p.kind for p in (block.selection.points.values() if block.selection
                                       else []) if p.checkpoint}
    of_fold = {fold: winners[fold] if winners else block.training.checkpoint
               for fold in chosen["fold"].astype(int).unique()}
    heads = {checkpoint: served(cfg, dm, block, checkpoint, load_model(
        run_dir / checkpoint, kinds[checkpoint])) for checkpoint in set(of_fold.values())}
    chosen = chosen[[not heads[of_fold[int(f)]].head.reads_measures for f in chosen["fold"]]]
    if chosen.empty:
        return []
    features = OmegaConf.merge(cfg.features, {"runtime": dm.cache_stats.runtime})
    stride = int(g.stride or default_stride(cfg.preprocess))
    embedded = grid_embeddings(cfg.preprocess, dm.backbone, features,
                               list(dict.fromkeys(paths[i] for i in chosen[IMAGE])), stride)
    grids = {ref.path: (ref, entry) for ref, entry in zip(embedded.refs, embedded.entries,
                                                           strict=True)}
    records = []
    for row in chosen.itertuples(index=False):
        fold = int(row.fold)
        checkpoint = of_fold[fold]
        seeds = heads[checkpoint].head.per_group
        m = image_map([heads[checkpoint]], cfg.preprocess, *grids[paths[getattr(row, IMAGE)]],
                      members=slice(fold * seeds, (fold + 1) * seeds))
        label = getattr(row, "truth_text", None) or f"{getattr(row, 'error', 0):.3g}"
        name = re.sub(r"[^\w.-]+", "_", f"{label}_{row.kind}_{Path(m.path).stem}")
        out = run_dir / "figures" / "gallery" / f"{name}.png"
        draw_map(m, target, out)
        records.append({"image": getattr(row, IMAGE), "kind": row.kind, "fold": fold,
                        "truth": getattr(row, f"{target['name']}_true"),
                        "predicted": getattr(row, f"{target['name']}_predicted"),
                        "confidence": getattr(row, f"{target['name']}_confidence", np.nan),
                        "checkpoint": checkpoint, "map": str(out.relative_to(run_dir))})
    return records
