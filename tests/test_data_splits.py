"""Grouped splits and grouped k-fold on a table shaped like the paper's design."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sinterlab.data.splits import SUBSETS, assign_subsets, check_disjoint
from sinterlab.errors import SinterlabError

FRACTIONS = {"train": 0.8, "val": 0.1, "test": 0.1}
CLASSES, SLIDES, SETS, IMAGES, PATCHES = (50, 100, 150, 200, 250), 3, 2, 10, 4
KINDS = ("patch", "image", "sample", "slide")


def design() -> pd.DataFrame:
    """5 classes x 3 slides x 2 sets x 10 images x 4 patches = 1200 patch rows."""
    rows = []
    for bc in CLASSES:
        for slide in range(1, SLIDES + 1):
            for set_ in range(1, SETS + 1):
                sample = f"s{slide}-set{set_}-bc{bc}"
                for i in range(IMAGES):
                    for _ in range(PATCHES):
                        rows.append({"label": CLASSES.index(bc), "slide": f"s{slide}",
                                     "sample": sample, "image": f"{sample}-img{i:02d}"})
    table = pd.DataFrame(rows)
    table["patch"] = np.arange(len(table)).astype(str)
    return table


TABLE = design()


def split(kind: str, seed: int = 0, **kwargs) -> np.ndarray:
    return assign_subsets(TABLE["label"].to_numpy(), TABLE[kind].to_numpy(), FRACTIONS, seed,
                          what=kind, **kwargs)


def assert_grouped(groups: pd.Series, subsets: np.ndarray) -> None:
    """Checked directly: every group has exactly one subset, and all subsets are used."""
    per_group = pd.Series(subsets).groupby(groups.to_numpy()).nunique()
    assert per_group.max() == 1, per_group[per_group > 1].index[:5].tolist()
    for subset in SUBSETS:
        assert (subsets == subset).any(), f"{subset} is empty"
    assert set(np.unique(subsets)) == set(SUBSETS)


def test_design_shape():
    assert len(TABLE) == 1200
    assert TABLE["sample"].nunique() == 30 and TABLE["image"].nunique() == 300


@pytest.mark.parametrize("kind", KINDS)
def test_grouped_split(kind):
    subsets = split(kind)
    assert subsets.shape == (len(TABLE),)
    assert_grouped(TABLE[kind], subsets)
    share = {s: float(np.mean(subsets == s)) for s in SUBSETS}
    if kind in ("patch", "image"):  # many groups per class: the fractions are met closely
        for s in SUBSETS:
            assert abs(share[s] - FRACTIONS[s]) < 0.02, share
    elif kind == "sample":  # 6 samples per class: 1 test, 1 val, 4 train
        assert share["train"] == pytest.approx(4 / 6) and share["test"] == pytest.approx(1 / 6)
    else:  # three slides: one each
        assert all(v == pytest.approx(1 / 3) for v in share.values())
    assert share["train"] >= max(share["val"], share["test"])


@pytest.mark.parametrize("kind", ["patch", "image", "sample"])
def test_grouped_split_is_stratified_by_label(kind):
    subsets = split(kind)
    for subset in SUBSETS:
        labels = TABLE["label"][subsets == subset]
        assert labels.nunique() == len(CLASSES)
        assert labels.value_counts().nunique() == 1  # the same number of rows per class


@pytest.mark.parametrize("kind", KINDS)
def test_deterministic_for_a_seed_and_different_for_another(kind):
    first = split(kind, seed=0)
    np.testing.assert_array_equal(first, split(kind, seed=0))
    others = [split(kind, seed=s) for s in range(1, 6)]
    assert any(not np.array_equal(first, other) for other in others)


@pytest.mark.parametrize("kind", KINDS)
def test_kfold(kind):
    folds = 3
    test_count = np.zeros(len(TABLE), int)
    for fold in range(folds):
        subsets = split(kind, folds=folds, fold=fold)
        assert_grouped(TABLE[kind], subsets)
        test_count += subsets == "test"
        assert abs(np.mean(subsets == "test") - 1 / folds) < 0.1
        np.testing.assert_array_equal(subsets, split(kind, folds=folds, fold=fold))
    np.testing.assert_array_equal(test_count, 1)  # every row is tested in exactly one fold
    if kind != "slide":  # three slides in three folds: only the order can change with the seed
        assert any(not np.array_equal(split(kind, folds=folds, fold=0),
                                      split(kind, seed=s, folds=folds, fold=0))
                   for s in range(1, 6))


def test_kfold_bad_fold_and_too_many_folds():
    with pytest.raises(SinterlabError, match="split.fold=3"):
        split("sample", folds=3, fold=3)
    with pytest.raises(SinterlabError, match="too few slide groups"):
        split("slide", folds=4, fold=0)


def test_too_few_groups_for_the_fractions():
    labels = np.array([0, 0, 1, 1])
    groups = np.array(["a", "a", "b", "b"])
    with pytest.raises(SinterlabError, match="too few sample groups to split") as info:
        assign_subsets(labels, groups, FRACTIONS, 0, what="sample")
    message = str(info.value)
    assert "\n" not in message and "split=image" in message


def test_check_disjoint():
    check_disjoint(np.array(["a", "a", "b"]), np.array(["train", "train", "test"]))
    with pytest.raises(SinterlabError, match="split leak: group 'a'"):
        check_disjoint(np.array(["a", "b", "a"]), np.array(["train", "test", "val"]))
