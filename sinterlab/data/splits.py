"""Train/val/test splits that keep groups (image, sample, slide) whole; ``patch`` is the paper's.

Grouped splits allocate whole groups per stratum (the label, when every group carries one label),
so a sample's patches never sit in two subsets. ``folds=k`` switches to grouped k-fold with
scikit-learn's ``StratifiedGroupKFold``: fold ``i`` is the test set and validation groups are
drawn from the rest. The result is checked: a group found in two subsets is an error.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from sinterlab.errors import SinterlabError

log = logging.getLogger(__name__)
SUBSETS = ("train", "val", "test")
KINDS = ("patch", "image", "sample", "slide")


def _strata(labels: np.ndarray, groups: np.ndarray,
            min_groups: int) -> tuple[np.ndarray, np.ndarray]:
    """Unique groups and each one's stratum: its label when every group has a single label and
    every label has enough groups, otherwise one stratum for all."""
    table = pd.DataFrame({"group": groups, "label": labels}).groupby("group", sort=True)
    unique = np.asarray(table.size().index)
    group_label = table["label"].first().to_numpy()
    pure = bool((table["label"].nunique() == 1).all())
    if pure and pd.Series(group_label).value_counts().min() >= min_groups:
        return unique, group_label
    return unique, np.zeros(len(unique), dtype=np.int64)


def _allocate(strata: np.ndarray, fractions: dict, rng: np.random.Generator,
              what: str) -> np.ndarray:
    """Subset name per group, taking whole groups from each stratum at the given fractions."""
    out = np.empty(len(strata), dtype=object)
    for stratum in np.unique(strata):
        members = rng.permutation(np.flatnonzero(strata == stratum))
        n = len(members)
        counts = {s: (max(1, int(round(fractions[s] * n))) if fractions.get(s, 0) > 0 else 0)
                  for s in ("test", "val")}
        if n - counts["test"] - counts["val"] < 1:
            raise SinterlabError(
                f"too few {what} groups to split: {n} in stratum {stratum!r}, but train, val "
                f"and test each need one; add data, use a finer split (e.g. split=image) or "
                f"protocol.folds")
        out[members[:counts["test"]]] = "test"
        out[members[counts["test"]:counts["test"] + counts["val"]]] = "val"
        out[members[counts["test"] + counts["val"]:]] = "train"
    return out


def assign_subsets(labels: np.ndarray, groups: np.ndarray, fractions: dict, seed: int,
                   folds: int | None = None, fold: int = 0, what: str = "",
                   min_groups_per_class: int = 3) -> np.ndarray:
    """Subset ('train'/'val'/'test') per row; rows of one group always share a subset."""
    if folds:
        if not 0 <= fold < folds:
            raise SinterlabError(f"split.fold={fold} is outside 0..{folds - 1}")
        return fold_assignments(labels, groups, fractions, seed, folds, what,
                                min_groups_per_class)[fold]
    labels, groups = np.asarray(labels), np.asarray(groups).astype(str)
    unique, strata = _strata(labels, groups, min_groups_per_class)
    group_subset = _allocate(strata, fractions, np.random.default_rng(seed), what)
    subsets = group_subset[np.searchsorted(unique, groups)].astype(str)
    check_disjoint(groups, subsets)
    return subsets


def fold_assignments(labels: np.ndarray, groups: np.ndarray, fractions: dict, seed: int,
                     folds: int, what: str = "", min_groups_per_class: int = 3) -> np.ndarray:
    """(folds, rows) subset names of grouped k-fold cross-validation.

    Fold ``i`` tests on the i-th part of scikit-learn's ``StratifiedGroupKFold`` (stratified by
    label where every group has one label and every label at least ``folds`` groups); its
    validation groups
    are drawn, per stratum, from its own training groups at ``val / (train + val)`` of them.
    The assignment depends on the labels, the groups and ``seed`` only.
    """
    labels, groups = np.asarray(labels), np.asarray(groups).astype(str)
    unique, strata = _strata(labels, groups, min_groups_per_class)
    if len(unique) < folds:
        raise SinterlabError(f"too few {what} groups ({len(unique)}) for {folds} folds; lower "
                             "protocol.folds or use a finer split")
    kfold = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    # stratify the folds only where every stratum can give each fold a group
    fold_strata = strata
    if np.unique(strata, return_counts=True)[1].min() < folds:
        log.warning("%d folds are not stratified by label: some label has fewer than %d %s "
                    "groups", folds, folds, what or "")
        fold_strata = np.zeros_like(strata)
    position = np.searchsorted(unique, groups)
    share = fractions["val"] / (fractions["train"] + fractions["val"])
    rng = np.random.default_rng(seed)
    out = []
    for _, test_rows in kfold.split(np.zeros(len(unique)), fold_strata,
                                        np.arange(len(unique))):
        group_subset = np.empty(len(unique), dtype=object)
        group_subset[test_rows] = "test"
        rest = np.setdiff1d(np.arange(len(unique)), test_rows)
        group_subset[rest] = _allocate(strata[rest], {"val": share}, rng, what)
        subsets = group_subset[position].astype(str)
        check_disjoint(groups, subsets)
        out.append(subsets)
    return np.stack(out)


def check_disjoint(groups: np.ndarray, subsets: np.ndarray) -> None:
    """Raise if any group appears in more than one subset (a leak)."""
    seen: dict[str, str] = {}
    for group, subset in zip(groups, subsets, strict=True):
        if seen.setdefault(group, subset) != subset:
            raise SinterlabError(f"split leak: group {str(group)!r} is in both {seen[group]} "
                                 f"and {subset}; this is a bug, please report it")
