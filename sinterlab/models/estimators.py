"""Any scikit-learn estimator as a candidate: ``module._target_`` names it (a random forest, an
SVM, a logistic regression...), ``inputs`` says what it reads.

Each member (one per fold; the fit is deterministic given ``random_state``, set to the run's seed
where the estimator has one and the config leaves it null) is, per target, a pipeline fitted on
its fold's training and validation rows: the measures' missing values imputed with the fold's
medians (views with measures), every column standardised with the fold's rows, then a clone of
the estimator. A classifier without ``predict_proba`` (an SVM) gives the softmax of its decision
scores; the image calibration fitted on validation images makes probabilities of either.

Stored with skops (``skops.io``): no pickle; loading trusts skops' defaults and an explicit list
of exact class names (:data:`TRUSTED_TYPES`); anything else in the file is refused in one line,
never loaded.
"""

from __future__ import annotations

import inspect
import json
import time
import warnings
from pathlib import Path

import numpy as np
from scipy.special import softmax
from sklearn.base import BaseEstimator, clone, is_classifier, is_regressor
from sklearn.dummy import DummyClassifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.impute import SimpleImputer
from sklearn.metrics import _dist_metrics
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from sinterlab.atomic import write_with
from sinterlab.errors import SinterlabError
from sinterlab.models.candidate import (
    Candidate,
    FoldView,
    check_inputs,
    reads_measures,
    view_rows,
)
from sinterlab.models.saved import EnsembleMeta
from sinterlab.typed import from_json

#: the types a stored model may hold beyond skops' own trusted defaults (scikit-learn's
#: estimators and NumPy arrays): exact class names, each a data structure an estimator keeps
#: (trees, neighbour indexes and their metrics); never a function, never a whole package
TRUSTED_TYPES = frozenset((
    "numpy.dtype",
    "sklearn.tree._tree.Tree",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.neighbors._kd_tree.KDTree",
    "sklearn.neighbors._ball_tree.BallTree",
    *(f"{_dist_metrics.__name__}.{name}" for name in dir(_dist_metrics)
      if name.endswith(("Distance64", "Distance32"))
      and isinstance(getattr(_dist_metrics, name), type)),
))


class UntrustedModel(ValueError):
    """A stored model holds a type outside skops' defaults and :data:`TRUSTED_TYPES`."""


def kind_misfit(estimator: BaseEstimator, targets: list[dict]) -> str | None:
    """Why ``estimator`` cannot learn every target (None when it can): a classifier for
    classes, a regressor for values."""
    for target in targets:
        if target["kind"] == "classification" and not is_classifier(estimator):
            return f"is no classifier ({target['name']!r} has classes)"
        if target["kind"] == "regression" and not is_regressor(estimator):
            return f"is no regressor ({target['name']!r} is a value)"
    return None


def member_pipeline(estimator: BaseEstimator, inputs: str, seed: int) -> Pipeline:
    """[impute the measures] -> standardise -> a clone of ``estimator`` (seeded)."""
    estimator = clone(estimator)
    if estimator.get_params().get("random_state", 0) is None:
        estimator.set_params(random_state=seed)
    steps = [SimpleImputer(strategy="median", keep_empty_features=True)] if reads_measures(
        inputs) else []
    return make_pipeline(*steps, StandardScaler(), estimator)


class EstimatorEnsemble(Candidate):
    """One member per fold: per target a fitted pipeline (:func:`member_pipeline`)."""

    kind = "sklearn"
    suffix = ".skops"

    @classmethod
    def builds(cls, target: type) -> bool:
        """Any scikit-learn estimator."""
        return issubclass(target, BaseEstimator)

    def __init__(self, targets: list[dict], fitted: list[list[Pipeline]], inputs: str,
                 params: dict, estimator: str, in_features: int):
        self.targets, self.fitted = targets, fitted
        self.inputs, self.params, self.estimator = inputs, params, estimator
        #: width of the patch rows it reads (embedding and extra inputs)
        self.in_features = in_features

    @property
    def members(self) -> int:
        return len(self.fitted)

    @property
    def per_group(self) -> int:
        return 1

    def predict_members(self, x, batch_size: int = 4096, calibrated: bool = True,
                        images: np.ndarray | None = None,
                        measures: np.ndarray | None = None) -> list[np.ndarray]:
        """See :meth:`Candidate.predict_members`; no temperatures (``calibrated`` changes
        nothing). An image view gives every row its image's output."""
        x = np.asarray(x, dtype=np.float32)
        M = self.members
        every = x.ndim == 2 and (images is None or np.ndim(images) == 1) and (
            measures is None or np.ndim(measures) == 2)
        if every:
            x = np.broadcast_to(x, (M, *x.shape))
            images = None if images is None else np.broadcast_to(images, x.shape[:2])
            measures = None if measures is None else np.broadcast_to(
                measures, (M, *np.shape(measures)))
        result = [[] for _ in self.targets]
        shared = None
        for m, pipes in enumerate(self.fitted):
            if shared is None or not every:  # rows every member reads: their design once
                shared = view_rows(self.inputs, x[m], None if images is None else images[m],
                                   None if measures is None else measures[m])
            design, index = shared
            for t, (target, pipe) in enumerate(zip(self.targets, pipes, strict=True)):
                result[t].append(_outputs(pipe, target, design)[index])
        return [np.stack(out) for out in result]

    def temperatures(self) -> list[list[float] | None]:
        return [[1.0] * self.members if t["kind"] == "classification" else None
                for t in self.targets]

    def describe(self) -> dict:
        return {"kind": self.kind, "inputs": self.inputs, "members": self.members,
                "estimator": self.estimator, "params": self.params}

    @classmethod
    def fit_folds(cls, modules: list[BaseEstimator], inputs: list[str], view: FoldView,
                  ) -> tuple[list[EstimatorEnsemble], float]:
        """One ensemble per estimator (grid points of one candidate) on ``view``'s folds."""
        started = time.perf_counter()
        fitted = [[] for _ in modules]
        for estimator, read in zip(modules, inputs, strict=True):
            check_inputs(read, type(estimator).__name__)
            reason = kind_misfit(estimator, view.targets)
            if reason:
                raise ValueError(f"{type(estimator).__name__} {reason}")
        for rows in view.rows:
            designs = {}
            for i, (estimator, read) in enumerate(zip(modules, inputs, strict=True)):
                if read not in designs:
                    design, index = view_rows(read, view.x[rows], view.images[rows],
                                              None if view.measures is None
                                              else view.measures[rows])
                    first = np.unique(index, return_index=True)[1]
                    designs[read] = (design, view.y[rows][first])
                design, y = designs[read]
                fitted[i].append([_fit(estimator, read, target, design, y[:, t], view.seed)
                                  for t, target in enumerate(view.targets)])
        ensembles = [cls(view.targets, members, read, _params(estimator),
                         f"{type(estimator).__module__}.{type(estimator).__qualname__}",
                         view.x.shape[1])
                     for estimator, members, read in zip(modules, fitted, inputs, strict=True)]
        return ensembles, time.perf_counter() - started

    # -- persistence: skops, trusted types only ----------------------------------------------
    def save(self, path: Path) -> Path:
        import skops.io as sio  # ~0.9 s to load (it pulls pytest): only when saving or loading

        meta = {"targets": self.targets, "inputs": self.inputs, "params": self.params,
                "estimator": self.estimator, "in_features": self.in_features}
        state = {"meta": json.dumps(meta), "members": self.fitted}
        return write_with(Path(path), lambda tmp: sio.dump(state, tmp))

    @classmethod
    def load(cls, path: Path) -> EstimatorEnsemble:
        """The ensemble at ``path``; a type outside skops' defaults and :data:`TRUSTED_TYPES`
        (exact names) is refused (:class:`UntrustedModel`) before anything is built, and the
        metadata is checked field by field (:class:`~sinterlab.models.saved.EnsembleMeta`)."""
        import skops.io as sio

        untrusted = sio.get_untrusted_types(file=path)
        foreign = sorted(set(untrusted) - TRUSTED_TYPES)
        if foreign:
            raise UntrustedModel(f"it holds types outside those sinterlab trusts: "
                                 f"{', '.join(foreign[:3])}")
        state = sio.load(path, trusted=list(untrusted))
        fix = "use checkpoints written by sinterlab-train, or train again"
        if not isinstance(state, dict) or not isinstance(state.get("meta"), str):
            raise SinterlabError(f"{path}: no metadata; {fix}")
        meta = from_json(EnsembleMeta, state["meta"], path, fix)
        members = state.get("members")
        if not (isinstance(members, list) and all(
                isinstance(m, list) and all(isinstance(p, Pipeline) for p in m)
                for m in members)):
            raise SinterlabError(f"{path}: its members are not scikit-learn pipelines; {fix}")
        if meta.estimator is None or meta.in_features is None or meta.inputs is None:
            raise SinterlabError(f"{path}: field 'estimator', 'inputs' or 'in_features' "
                                 f"missing; {fix}")
        return cls(list(meta.targets), members, meta.inputs, dict(meta.params),
                   meta.estimator, meta.in_features)


def _params(estimator: BaseEstimator) -> dict:
    """The estimator's settings that differ from its class's defaults, where plain values (for
    the record and the report)."""
    defaults = inspect.signature(type(estimator)).parameters
    return {k: v for k, v in estimator.get_params(deep=False).items()
            if (v is None or isinstance(v, bool | int | float | str))
            and (k not in defaults or defaults[k].default != v)}


def _fit(estimator: BaseEstimator, inputs: str, target: dict, design: np.ndarray,
         y: np.ndarray, seed: int) -> Pipeline:
    """One target's pipeline on one fold; a classifier whose fold holds one class only
    predicts it (a prior)."""
    pipe = member_pipeline(estimator, inputs, seed)
    if target["kind"] == "classification":
        y = y.astype(np.int64)
        if len(np.unique(y)) < 2:
            pipe = Pipeline([*pipe.steps[:-1], ("prior", DummyClassifier(strategy="prior"))])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return pipe.fit(design, y)


def _outputs(pipe: Pipeline, target: dict, design: np.ndarray) -> np.ndarray:
    """(n, C) probabilities over every class of the target (a class the fold lacked gets 0),
    or (n,) values."""
    if target["kind"] != "classification":
        return pipe.predict(design).astype(np.float64)
    if hasattr(pipe, "predict_proba"):
        probs = pipe.predict_proba(design)
    else:
        scores = pipe.decision_function(design)
        scores = np.stack([np.zeros_like(scores), scores], axis=1) if scores.ndim == 1 \
            else scores
        probs = softmax(scores, axis=1)
    out = np.zeros((len(design), int(target["num_classes"])))
    out[:, np.asarray(pipe.classes_).astype(int)] = probs
    return out
