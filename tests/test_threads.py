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


def test_small_torch_solves_take_the_library_cap_inside_a_run_only(monkeypatch):
    from sinterlab.models import calibration
    from sinterlab.threads import small_torch

    seen = []
    probe = small_torch(lambda: seen.append(torch.get_num_threads()))
    torch_before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        probe()
        with library_threads(1):
            probe()
            assert torch.get_num_threads() == 2  # the heads keep PyTorch's pool
        with library_threads(None):
            probe()
        assert seen == [2, 1, 2]
        assert torch.get_num_threads() == 2
        # the image calibration maps are such solves
        rng = np.random.default_rng(0)
        probs = rng.dirichlet(np.ones(3), size=(1, 60))
        labels, images = rng.integers(0, 3, 60), np.arange(60) // 3
        rows, hidden = [np.arange(60)], [np.zeros(60, bool)]
        # every map kept (min_gain -inf), so the served map is fitted too
        check = calibration.MapCheck(folds=3, score="log_loss", ordered_score="rps",
                                     min_gain=-np.inf, standard_errors=0.0)
        free = calibration.fit_image_calibration(probs, labels, images, rows, hidden,
                                                 "mean_log_probability", "vector", check=check)
        with library_threads(1):
            capped = calibration.fit_image_calibration(probs, labels, images, rows, hidden,
                                                       "mean_log_probability", "vector",
                                                       check=check)
        np.testing.assert_array_equal(free.scale, capped.scale)
        np.testing.assert_array_equal(free.bias, capped.bias)
        np.testing.assert_array_equal(free.loss_map, capped.loss_map)
        fit_map, threads = calibration._fit_map, []
        monkeypatch.setattr(calibration, "_fit_map", lambda *a: threads.append(
            torch.get_num_threads()) or fit_map(*a))
        with library_threads(1):
            calibration.fit_image_calibration(probs, labels, images, rows, hidden,
                                              "mean_log_probability", "vector", check=check)
        assert threads == [1] * 4  # the three held-out checks and the served map
    finally:
        torch.set_num_threads(torch_before)
