"""Classical baselines on the frozen embeddings (scikit-learn pipelines).

* ``pca_logreg``: StandardScaler -> PCA(k) -> LogisticRegression (Ridge for regression),
  the paper's "PCA first" baseline made into a classifier.
* ``linear_probe``: StandardScaler -> LogisticRegression (Ridge) on the full embeddings.

They are fitted per fold on the same rows as the head (its training and validation rows: they
need no validation set) and scored on the same test rows, at a fixed ``C``
(``evaluation.baseline_C``; ridge: alpha = 1 / C). Passing the previous fold's ``estimators``
starts each fold's solver from that fold's solution (warm start): the folds share most of their
rows, so lbfgs needs a fraction of the iterations.
"""

from __future__ import annotations

import numpy as np
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

#: the baselines' names, as they appear in metrics.json and reports
BASELINES = ("pca_logreg", "linear_probe")


def _head(kind: str, max_iter: int, seed: int, C: float, tol: float):
    if kind == "classification":
        return LogisticRegression(C=C, tol=tol, max_iter=max_iter, random_state=seed,
                                  warm_start=True)
    if kind == "regression":
        return Ridge(alpha=1.0 / C, max_iter=max_iter, random_state=seed)
    raise ValueError(f"kind must be 'classification' or 'regression', got {kind!r}")


def _full_probs(pipe: Pipeline, x: np.ndarray, num_classes: int) -> np.ndarray:
    """predict_proba mapped onto all ``num_classes`` columns (classes unseen in train -> 0)."""
    part = pipe.predict_proba(x)
    probs = np.zeros((len(x), num_classes), dtype=np.float64)
    probs[:, pipe.classes_.astype(np.int64)] = part
    return probs


def baseline_outputs(
    kind: str,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    pca_components: int,
    max_iter: int,
    seed: int,
    num_classes: int | None = None,
    C: float = 1.0,
    tol: float = 1e-4,
    estimators: dict | None = None,
) -> tuple[dict[str, np.ndarray], dict]:
    """Fit both baselines on the training rows; their outputs on ``x_test``.

    Outputs: class probabilities (n, ``num_classes``) or predictions (n,). Also returns the PCA
    facts (components, explained variance) and, under ``estimators``, the fitted linear models
    (pass them to the next fold to warm-start it). ``pca_components`` is clipped to
    ``min(k, n_features, n_train)``.
    """
    x_train = np.asarray(x_train, dtype=np.float64)
    x_test = np.asarray(x_test, dtype=np.float64)
    y_train = np.asarray(y_train).reshape(-1)
    if x_train.ndim != 2 or x_test.ndim != 2:
        raise ValueError("x_train and x_test must be 2-D (n_patches, embedding_dim)")
    n_train, n_features = x_train.shape
    k = max(1, min(int(pca_components), n_features, n_train))
    estimators = dict(estimators or {})
    for name in BASELINES:
        previous = estimators.get(name)
        # a warm start needs the previous fold's classes; a fold missing one starts afresh
        if previous is None or (hasattr(previous, "classes_") and not np.array_equal(
                previous.classes_, np.unique(y_train))):
            estimators[name] = _head(kind, max_iter, seed, C, tol)
    pipes = {
        "pca_logreg": Pipeline([("scale", StandardScaler()),
                                ("pca", PCA(n_components=k, svd_solver="randomized",
                                            random_state=seed)),
                                ("head", estimators["pca_logreg"])]),
        "linear_probe": Pipeline([("scale", StandardScaler()),
                                  ("head", estimators["linear_probe"])]),
    }
    if kind == "classification":
        y_train = y_train.astype(np.int64)
        num_classes = int(y_train.max()) + 1 if num_classes is None else num_classes
    else:
        y_train = y_train.astype(np.float64)
    outputs = {}
    for name, pipe in pipes.items():
        pipe.fit(x_train, y_train)
        outputs[name] = (_full_probs(pipe, x_test, num_classes) if kind == "classification"
                         else pipe.predict(x_test))
    info = {"pca_components": k, "pca_explained_variance": float(
        pipes["pca_logreg"].named_steps["pca"].explained_variance_ratio_.sum()),
        "estimators": estimators}
    return outputs, info
