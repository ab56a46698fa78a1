"""Classical baselines on the frozen embeddings (scikit-learn pipelines).

* ``pca_logreg``: StandardScaler -> PCA(k) -> LogisticRegression (Ridge for regression),
  the paper's "PCA first" baseline made into a classifier.
* ``linear_probe``: StandardScaler -> LogisticRegression (Ridge) on the full embeddings.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from sinterlab.evaluation.metrics import evaluate_levels


def _head(kind: str, max_iter: int, seed: int):
    if kind == "classification":
        return LogisticRegression(max_iter=max_iter, random_state=seed)
    if kind == "regression":
        return Ridge(max_iter=max_iter, random_state=seed)
    raise ValueError(f"kind must be 'classification' or 'regression', got {kind!r}")


def _full_probs(pipe: Pipeline, x: np.ndarray, num_classes: int) -> np.ndarray:
    """predict_proba mapped onto all ``num_classes`` columns (classes unseen in train -> 0)."""
    part = pipe.predict_proba(x)
    probs = np.zeros((len(x), num_classes), dtype=np.float64)
    probs[:, pipe.classes_.astype(np.int64)] = part
    return probs


def run_baselines(
    kind: str,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    image_ids_test: Sequence[str],
    sample_ids_test: Sequence[str],
    pca_components: int,
    max_iter: int,
    seed: int,
    num_classes: int | None = None,
) -> dict:
    """Fit both baselines on train, evaluate on test at patch/image/sample level.

    ``num_classes`` (classification only) fixes the number of probability columns; by default
    it is ``max(y_train, y_test) + 1``.  ``pca_components`` is clipped to
    ``min(k, n_features, n_train)``.
    """
    x_train = np.asarray(x_train, dtype=np.float64)
    x_test = np.asarray(x_test, dtype=np.float64)
    y_train = np.asarray(y_train).reshape(-1)
    y_test = np.asarray(y_test).reshape(-1)
    if x_train.ndim != 2 or x_test.ndim != 2:
        raise ValueError("x_train and x_test must be 2-D (n_patches, embedding_dim)")
    n_train, n_features = x_train.shape
    k = max(1, min(int(pca_components), n_features, n_train))

    pipes = {
        "pca_logreg": Pipeline(
            [
                ("scale", StandardScaler()),
                ("pca", PCA(n_components=k, random_state=seed)),
                ("head", _head(kind, max_iter, seed)),
            ]
        ),
        "linear_probe": Pipeline(
            [("scale", StandardScaler()), ("head", _head(kind, max_iter, seed))]
        ),
    }

    if kind == "classification":
        y_train = y_train.astype(np.int64)
        y_test = y_test.astype(np.int64)
        if num_classes is None:
            num_classes = int(max(y_train.max(), y_test.max())) + 1
    else:
        y_train = y_train.astype(np.float64)
        y_test = y_test.astype(np.float64)

    result: dict = {}
    for name, pipe in pipes.items():
        pipe.fit(x_train, y_train)
        if kind == "classification":
            output = _full_probs(pipe, x_test, num_classes)
        else:
            output = pipe.predict(x_test)
        result[name] = evaluate_levels(kind, y_test, output, image_ids_test, sample_ids_test)
    result["pca_explained_variance"] = float(
        pipes["pca_logreg"].named_steps["pca"].explained_variance_ratio_.sum()
    )
    result["pca_components"] = k
    return result
