"""Threads of the numerical libraries under scikit-learn, SciPy and NumPy (OpenBLAS and
scikit-learn's OpenMP runtime), set apart from PyTorch's own.

The scikit-learn steps of a run (baselines, scikit-learn candidates, calibration maps) solve
many small problems: a 9,600 x 64 logistic regression multiplies matrices too small to share
between threads, and when other processes hold the cores the threads wait on each other
(experiments/results.md, "Where a run's time goes"). ``library_threads`` caps those libraries
for the duration of a run; PyTorch's thread pool, which trains the heads, is left as it is.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from threadpoolctl import ThreadpoolController


@contextmanager
def library_threads(threads: int | None) -> Iterator[None]:
    """Cap OpenBLAS and scikit-learn's OpenMP at ``threads`` inside the block (None: leave
    the libraries' defaults); PyTorch's OpenMP runtime is not touched."""
    if threads is None:
        yield
        return
    controller = ThreadpoolController()
    chosen = [info["filepath"] for info in controller.info()
              if info["user_api"] == "blas"
              or (info["user_api"] == "openmp" and "/torch/" not in info["filepath"])]
    with controller.select(filepath=chosen).limit(limits=int(threads)):
        yield
