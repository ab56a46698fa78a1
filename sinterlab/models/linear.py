"""Scikit-learn candidates: standardise -> [PCA] -> logistic regression (ridge for regression),
fitted per fold on patch embeddings or on image-mean embeddings (``inputs``).

Every step is affine, so a fitted member is stored as one affine map per target (logits or
value = x @ W.T + b on a patch embedding): serving, maps and Grad-CAM apply it to patches like a
head, and it saves as plain arrays (``.npz``, no pickle). An image-mean model's image output is
its map applied to the image's mean embedding, i.e. the mean of its patch logits.
"""

from __future__ import annotations

import json
import time
import warnings
from itertools import groupby
from pathlib import Path

import numpy as np
import torch
from scipy.linalg import block_diag
from sklearn.decomposition import PCA
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from sinterlab.atomic import write_with
from sinterlab.data.groups import Groups
from sinterlab.errors import SinterlabError
from sinterlab.models.candidate import Candidate, FoldView
from sinterlab.models.saved import EnsembleMeta
from sinterlab.typed import from_json

#: what an affine map can read: its inputs are the raw embedding (measures need imputing)
FEATURES = ("patch", "image_mean")


class LinearEnsemble(Candidate):
    """``groups`` members (one per fold; no seeds: the fit is deterministic), each an affine map
    per target: ``weights[t]`` (M, C, D), ``biases[t]`` (M, C); C = 1 for regression."""

    kind = "affine"
    suffix = ".npz"
    gradients = True
    #: outranks the scikit-learn kind (one class, not a family)
    precedence = 1

    @classmethod
    def builds(cls, target: type) -> bool:
        """:class:`LinearModel` itself: an affine scikit-learn model."""
        return target is LinearModel

    def __init__(self, targets: list[dict], weights: list[np.ndarray], biases: list[np.ndarray],
                 inputs: str, params: dict):
        if inputs not in FEATURES:
            raise ValueError(f"inputs={inputs!r}: an affine model reads one of "
                             f"{list(FEATURES)}")
        self.targets, self.inputs, self.params = targets, inputs, params
        self.weights = [np.asarray(w, dtype=np.float32) for w in weights]
        self.biases = [np.asarray(b, dtype=np.float32) for b in biases]
        self.in_features = self.weights[0].shape[2]

    @property
    def members(self) -> int:
        return self.weights[0].shape[0]

    groups = members

    @property
    def per_group(self) -> int:
        return 1

    def member_outputs(self, x: torch.Tensor, target: int = 0) -> torch.Tensor:
        """Differentiable (M, N, C) class probabilities (or (M, N, 1) values) of patch
        embeddings ``x`` (N, D), for Grad-CAM."""
        w = torch.from_numpy(self.weights[target]).to(x)
        out = torch.einsum("nd,mcd->mnc", x, w) + torch.from_numpy(self.biases[target]).to(x)[
            :, None]
        return out.softmax(dim=2) if self.targets[target]["kind"] == "classification" else out

    def predict_members(self, x, batch_size: int = 4096, calibrated: bool = True,
                        images: np.ndarray | None = None,
                        measures: np.ndarray | None = None) -> list[np.ndarray]:
        """Like :meth:`HeadEnsemble.predict_members`: ``x`` (G, N, D) or (N, D) -> per target
        (M, N, C) probabilities or (M, N) values. With ``images`` (N,) or (G, N) ids, an
        image-mean model gives every row its image's output; otherwise each patch its own
        (maps). There is no temperature: ``calibrated`` changes nothing; no measures are read."""
        x = torch.as_tensor(x).float().numpy()
        if x.ndim == 2:
            x = np.broadcast_to(x, (self.members, *x.shape))
            images = None if images is None else np.broadcast_to(images, x.shape[:2])
        result = []
        for t, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            logits = np.einsum("mnd,mcd->mnc", x, w, optimize=True) + b[:, None]
            if images is not None and self.inputs == "image_mean":
                for m in range(len(logits)):
                    groups = Groups.of(images[m])
                    logits[m] = groups.means(logits[m])[groups.index]
            if self.targets[t]["kind"] == "classification":
                logits -= logits.max(axis=2, keepdims=True)
                e = np.exp(logits)
                result.append(e / e.sum(axis=2, keepdims=True))
            else:
                result.append(logits[:, :, 0])
        return result

    def temperatures(self) -> list[list[float] | None]:
        return [[1.0] * self.members if t["kind"] == "classification" else None
                for t in self.targets]

    def describe(self) -> dict:
        return {"kind": self.kind, "inputs": self.inputs, "members": self.members,
                "params": self.params}

    @classmethod
    def fit_folds(cls, modules: list[LinearModel], inputs: list[str], view: FoldView,
                  ) -> tuple[list[LinearEnsemble], float]:
        """One ensemble per module (grid points of one candidate) on ``view``'s folds."""
        return fit_linear(modules, inputs, view.targets, view.x, view.y, view.images,
                          view.rows, view.seed, view.extra)

    # -- safe persistence: arrays and JSON, no pickle ------------------------------------------
    def save(self, path: Path) -> Path:
        meta = {"targets": self.targets, "inputs": self.inputs, "params": self.params}
        arrays = {f"weight_{t}": w for t, w in enumerate(self.weights)} | {
            f"bias_{t}": b for t, b in enumerate(self.biases)}
        return write_with(path, lambda tmp: np.savez(tmp, meta=np.array(json.dumps(meta)),
                                                     **arrays))

    @classmethod
    def load(cls, path: Path) -> LinearEnsemble:
        """The ensemble at ``path``: arrays without pickle, its metadata checked field by
        field (:class:`~sinterlab.models.saved.EnsembleMeta`)."""
        fix = "use checkpoints written by sinterlab-train, or train again"
        with np.load(Path(path), allow_pickle=False) as data:
            meta = from_json(EnsembleMeta, str(data["meta"]), path, fix)
            inputs = meta.inputs or meta.features
            if inputs is None:
                raise SinterlabError(f"{path}: field 'inputs' missing; {fix}")
            n = len(meta.targets)
            return cls(list(meta.targets), [data[f"weight_{t}"] for t in range(n)],
                       [data[f"bias_{t}"] for t in range(n)], inputs, dict(meta.params))


def _affine(scaler: StandardScaler, pca: PCA | None, coef: np.ndarray, intercept: np.ndarray,
            extra: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """standardise -> [PCA] -> linear, composed into one map on the raw input. With ``extra``
    input columns last (``data.extra_inputs``), PCA reduced the embedding only and the extra
    columns passed beside its components, standardised."""
    mean = scaler.mean_ / scaler.scale_
    if pca is not None:
        components = block_diag(pca.components_, np.eye(extra))
        coef = coef @ components
        mean = mean + np.r_[pca.mean_, np.zeros(extra)]
    w = coef / scaler.scale_[None, :]
    return w, intercept - coef @ mean


def _full_classes(coef: np.ndarray, intercept: np.ndarray, seen: np.ndarray,
                  num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Logistic coefficients on every class: binary -> two logits (0, a); a class absent from
    the fold's training rows gets probability 0."""
    if len(seen) == 2 and coef.shape[0] == 1:
        coef, intercept = np.vstack([np.zeros_like(coef), coef]), np.r_[0.0, intercept]
    w = np.zeros((num_classes, coef.shape[1]))
    b = np.full(num_classes, -1e4)
    w[seen], b[seen] = coef, intercept
    return w, b


#: the arithmetic a fit may run in: the embeddings are float32; float64 doubles the memory
#: each lbfgs step reads (experiments/results.md, issue 34)
DTYPES = ("float32", "float64")


def solver_dtype(dtype: str) -> np.dtype:
    """The NumPy dtype of a configured ``dtype`` (float32 | float64)."""
    if str(dtype) not in DTYPES:
        raise ValueError(f"dtype={dtype!r}: use one of {list(DTYPES)}")
    return np.dtype(str(dtype))


class LinearModel:
    """The ``module`` of an affine scikit-learn candidate config: how to fit it. ``C`` is the
    inverse regularisation strength (ridge: alpha = 1 / C), ``pca`` the number of components
    (null: no PCA step), ``dtype`` the precision its standardising, PCA and solver compute in;
    what it reads is the candidate's ``inputs``."""

    def __init__(self, C: float, pca: int | None, max_iter: int, tol: float,
                 dtype: str = "float64"):
        self.C, self.pca = float(C), pca
        self.max_iter, self.tol = int(max_iter), float(tol)
        self.dtype = solver_dtype(dtype)

    def image_classifier(self, seed: int):
        """The same steps as one scikit-learn pipeline on image-mean embeddings, for refitting
        per label permutation (a permutation test of this very model)."""
        steps = [StandardScaler()]
        if self.pca:
            steps.append(PCA(n_components=int(self.pca), svd_solver="randomized",
                             random_state=seed))
        steps.append(LogisticRegression(C=self.C, max_iter=self.max_iter, tol=self.tol,
                                        random_state=seed))
        return make_pipeline(*steps)


def fit_linear(models: list[LinearModel], inputs: list[str], targets: list[dict], x: np.ndarray,
               y: np.ndarray, images: np.ndarray, train_rows: list[np.ndarray], seed: int,
               extra: int = 0) -> tuple[list[LinearEnsemble], float]:
    """One ensemble per model of ``models`` (grid points of one candidate), each reading its
    ``inputs`` (patch or image_mean), with a member per fold of ``train_rows``. Points that
    differ only in C share the scaling and PCA of a fold and are fitted from the weakest to the
    strongest C, each starting from the last (warm start); each computes in its ``dtype``.
    ``extra``: the last columns of ``x`` are extra inputs (``data.extra_inputs``), standardised
    with the fold's rows like the embedding but kept out of the PCA (a few columns among
    hundreds of embedding dimensions would be dropped by it).
    Returns the ensembles (in the order of ``models``) and the wall time."""
    started = time.perf_counter()
    weights = {i: [[] for _ in targets] for i in range(len(models))}
    biases = {i: [[] for _ in targets] for i in range(len(models))}
    for read in inputs:
        if read not in FEATURES:
            raise ValueError(f"inputs={read!r}: an affine model reads one of {list(FEATURES)}; "
                             "a model of the measures is a scikit-learn estimator by _target_")
    order = sorted(range(len(models)), key=lambda i: (inputs[i], models[i].pca or 0,
                                                      models[i].dtype.name, models[i].C))
    for rows in train_rows:
        for (features, k, dtype), same in groupby(order, key=lambda i: (
                inputs[i], models[i].pca, models[i].dtype)):
            same = list(same)
            xf, yf = x[rows].astype(dtype), y[rows]
            if features == "image_mean":
                groups = Groups.of(images[rows])
                xf = groups.means(xf)
                yf = yf[np.unique(groups.index, return_index=True)[1]]
            scaler = StandardScaler().fit(xf)
            z = scaler.transform(xf)
            pca = None
            if k:
                image = z[:, :z.shape[1] - extra]
                pca = PCA(n_components=max(1, min(int(k), *image.shape)),
                          svd_solver="randomized", random_state=seed)
                z = np.hstack([pca.fit_transform(image), z[:, image.shape[1]:]])
            for t, target in enumerate(targets):
                estimator = None
                for i in same:  # C ascending: each fit starts from the previous solution
                    m = models[i]
                    if target["kind"] == "classification":
                        labels = yf[:, t].astype(np.int64)
                        if estimator is None:
                            estimator = LogisticRegression(max_iter=m.max_iter, tol=m.tol,
                                                           warm_start=True, random_state=seed)
                        estimator.set_params(C=m.C)
                        with warnings.catch_warnings():
                            warnings.simplefilter("ignore", ConvergenceWarning)
                            estimator.fit(z, labels)
                        coef, intercept = _full_classes(estimator.coef_, estimator.intercept_,
                                                        estimator.classes_,
                                                        int(target["num_classes"]))
                    else:
                        estimator = Ridge(alpha=1.0 / m.C).fit(z, yf[:, t])
                        coef, intercept = estimator.coef_[None], np.r_[estimator.intercept_]
                    w, b = _affine(scaler, pca, coef, intercept, extra)
                    weights[i][t].append(w)
                    biases[i][t].append(b)
    ensembles = [LinearEnsemble(targets, [np.stack(w) for w in weights[i]],
                                [np.stack(b) for b in biases[i]], inputs[i],
                                {"C": models[i].C, "pca": models[i].pca})
                 for i in range(len(models))]
    return ensembles, time.perf_counter() - started
