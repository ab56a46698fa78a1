"""library_threads caps the scikit-learn/SciPy libraries inside a run and leaves PyTorch alone."""

import numpy as np
import torch
from threadpoolctl import threadpool_info

from sinterlab.threads import library_threads


def blas_threads() -> set[int]:
    return {info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas"}


def test_blas_is_capped_inside_and_restored_after_while_torch_keeps_its_threads():
    np.ones((4, 4)) @ np.ones((4, 4))  # OpenBLAS loaded
    before, torch_before = blas_threads(), torch.get_num_threads()
    torch.set_num_threads(2)
    with library_threads(1):
        assert blas_threads() == {1}
        assert torch.get_num_threads() == 2
    assert blas_threads() == before
    torch.set_num_threads(torch_before)


def test_null_leaves_the_libraries_as_they_are():
    before = blas_threads()
    with library_threads(None):
        assert blas_threads() == before
