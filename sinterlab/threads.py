"""Threads of the numerical libraries under scikit-learn, SciPy and NumPy (OpenBLAS and
scikit-learn's OpenMP runtime), set apart from PyTorch's own.

The scikit-learn steps of a run (baselines, scikit-learn candidates, calibration maps) solve
many small problems: a 9,600 x 64 logistic regression multiplies matrices too small to share
between threads, and when other processes hold the cores the threads wait on each other
(experiments/results.md, "Where a run's time goes"). ``library_threads`` caps those libraries
for the duration of a run; PyTorch's thread pool, which trains the heads, is left as it is,
except inside :func:`small_torch`: the small PyTorch solves of the evaluation (image
calibration maps of a few hundred images, the calibration error of each bootstrap draw) run
on as many threads as the libraries (one by default). They are too small to share, and on a
2-core machine with other work on it one of their evaluations took 24 ms on PyTorch's two
threads against 0.05 ms on one (experiments/results.md, issue 34).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from threadpoolctl import ThreadpoolController

#: the cap of the run in progress (None: no cap, or no run)
_LIMIT: list[int | None] = [None]


@contextmanager
def library_threads(threads: int | None) -> Iterator[None]:
    """Cap OpenBLAS and scikit-learn's OpenMP at ``threads`` inside the block (None: leave
    the libraries' defaults), and PyTorch's small solves (:func:`small_torch`) with them;
    PyTorch's OpenMP runtime is otherwise not touched."""
    if threads is None:
        yield
        return
    controller = ThreadpoolController()
    chosen = [info["filepath"] for info in controller.info()
              if info["user_api"] == "blas"
              or (info["user_api"] == "openmp" and "/torch/" not in info["filepath"])]
    previous = _LIMIT[0]
    _LIMIT[0] = int(threads)
    try:
        with controller.select(filepath=chosen).limit(limits=int(threads)):
            yield
    finally:
        _LIMIT[0] = previous


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """PyTorch's intra-op threads at most ``threads`` inside the block (None: as they are)."""
    before = torch.get_num_threads()
    if threads is None or threads >= before:
        yield
        return
    torch.set_num_threads(int(threads))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def small_torch(function: Callable) -> Callable:
    """Run ``function`` (a small PyTorch solve) on the threads of the libraries'
    cap of the run in progress (:func:`library_threads`); outside a capped run, unchanged."""
    @functools.wraps(function)
    def capped(*args, **kwargs):
        with torch_threads(_LIMIT[0]):
            return function(*args, **kwargs)
    return capped
