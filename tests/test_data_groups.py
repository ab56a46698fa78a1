"""The one implementation of "the mean of a group's rows": groups in order of first appearance,
any axis, the values' floating type kept; and no second implementation in the package."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

import sinterlab
from sinterlab.data.groups import Groups, group_means


def test_means_along_any_axis_equal_the_mean_of_each_groups_rows():
    rng = np.random.default_rng(0)
    ids = np.array(["b", "a", "c", "a", "b", "b"])
    values = rng.normal(size=(3, 6, 4)).astype(np.float32)  # members, rows, classes
    groups = Groups.of(ids)
    assert list(groups.names) == ["b", "a", "c"] and list(groups.counts) == [3, 2, 1]
    means = groups.means(values, axis=1)
    assert means.shape == (3, 3, 4) and means.dtype == np.float32
    for k, name in enumerate(groups.names):
        np.testing.assert_allclose(means[:, k], values[:, ids == name].mean(axis=1), rtol=1e-6)
    np.testing.assert_array_equal(groups.means(values, axis=1)[:, groups.index],
                                  means[:, groups.index])
    names, image = group_means(values[0].astype(int), ids)  # integers: float64 means
    assert names == ["b", "a", "c"] and image.dtype == np.float64
    with pytest.raises(ValueError, match="5 values but 6 group labels"):
        groups.means(values[0, :5])


def test_no_other_image_mean_implementation_in_the_package():
    """scatter/index adds, np.add.at and sparse indicators live in data/groups.py only."""
    pattern = re.compile(r"scatter_add_?\(|index_add_?\(|np\.add\.at\(|csr_matrix\(")
    root = Path(sinterlab.__file__).parent
    found = [str(p.relative_to(root)) for p in root.rglob("*.py")
             if p.name != "groups.py" and pattern.search(p.read_text(encoding="utf-8"))]
    assert found == []
