"""Classical baselines on the frozen embeddings: scikit-learn pipelines built by the factories
that ``evaluation.baselines`` names (conf/evaluation/default.yaml; add one there to report it).

* ``pca_logreg`` (``pca_pipeline``): StandardScaler -> PCA(k) -> LogisticRegression (Ridge for
  regression), the paper's "PCA first" baseline made into a classifier.
* ``linear_probe`` (``linear_pipeline``): StandardScaler -> LogisticRegression (Ridge) on the
  full embeddings.

They are fitted per fold on the same rows as the head (its training and validation rows: they
need no validation set) and scored on the same test rows, at a fixed ``C``
(``evaluation.baseline_C``; ridge: alpha = 1 / C). Every fold's solver starts afresh: lbfgs
stops at its tolerance, away from the optimum, so a fold started from the previous fold's
solution (fitted on this fold's test rows) kept some of it. On five_class (paper preset) that
warm start bought 5 % of the sample split's baseline time and 20 % of the patch split's, and
moved the linear probe's nested image accuracy from 0.463 (cold) to 0.497 (issue 34).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from sinterlab.models.linear import solver_dtype

#: the baselines of conf/evaluation/default.yaml, as they appear in metrics.json and reports
BASELINES = ("pca_logreg", "linear_probe")
#: the PCA step's name in a baseline pipeline, whose facts the baselines report
PCA_STEP = "pca"

#: what ``evaluation.baselines`` entries instantiate to: called per fold with the task kind,
#: the run's seed and the training rows' shape (rows, features), it returns a pipeline
PipelineFactory = Callable[..., Pipeline]


def linear_head(kind: str, seed: int, C: float, max_iter: int, tol: float):
    """Logistic regression for classification, ridge (alpha = 1 / C) for regression."""
    C, max_iter, tol = float(C), int(max_iter), float(tol)
    if kind == "classification":
        return LogisticRegression(C=C, tol=tol, max_iter=max_iter, random_state=seed)
    if kind == "regression":
        return Ridge(alpha=1.0 / C, max_iter=max_iter, random_state=seed)
    raise ValueError(f"kind must be 'classification' or 'regression', got {kind!r}")


def linear_pipeline(kind: str, seed: int, shape: tuple[int, int], C: float, max_iter: int,
                    tol: float) -> Pipeline:
    """StandardScaler -> the linear head, on the full embeddings."""
    return Pipeline([("scale", StandardScaler()),
                     ("head", linear_head(kind, seed, C, max_iter, tol))])


def pca_pipeline(kind: str, seed: int, shape: tuple[int, int], components: int, C: float,
                 max_iter: int, tol: float) -> Pipeline:
    """StandardScaler -> PCA -> the linear head; ``components`` is clipped to
    ``min(k, n_train, n_features)``."""
    k = max(1, min(int(components), *shape))
    return Pipeline([("scale", StandardScaler()),
                     (PCA_STEP, PCA(n_components=k, svd_solver="randomized", random_state=seed)),
                     ("head", linear_head(kind, seed, C, max_iter, tol))])


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
    factories: Mapping[str, PipelineFactory],
    seed: int,
    num_classes: int | None = None,
    dtype: str = "float64",
) -> tuple[dict[str, np.ndarray], dict]:
    """Fit every baseline of ``factories`` (name -> pipeline factory) on the training rows;
    their outputs on ``x_test``.

    Outputs: class probabilities (n, ``num_classes``) or predictions (n,). Also returns the PCA
    facts of the first pipeline with a ``pca`` step (components, explained variance). Each
    pipeline is new (no warm start: see the module). ``dtype`` (float32 | float64): what the
    pipelines compute in.
    """
    dtype = solver_dtype(dtype)
    x_train = np.asarray(x_train, dtype=dtype)
    x_test = np.asarray(x_test, dtype=dtype)
    y_train = np.asarray(y_train).reshape(-1)
    if x_train.ndim != 2 or x_test.ndim != 2:
        raise ValueError("x_train and x_test must be 2-D (n_patches, embedding_dim)")
    pipes = {name: factory(kind=kind, seed=seed, shape=x_train.shape)
             for name, factory in factories.items()}
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
    info = {}
    pca = next((p.named_steps[PCA_STEP] for p in pipes.values() if PCA_STEP in p.named_steps),
               None)
    if pca is not None:
        info = {"pca_components": int(pca.n_components_),
                "pca_explained_variance": float(pca.explained_variance_ratio_.sum())}
    return outputs, info
