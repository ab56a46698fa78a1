"""The baselines of conf/evaluation/default.yaml equal the scikit-learn pipelines they stand for,
each fold fitted from scratch, and a baseline added in YAML is reported under its name."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import open_dict
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from sinterlab.evaluation.baselines import BASELINES, baseline_outputs
from sinterlab.study.training import baselines_oof
from tests.conftest import compose_train

FOLDS = 3


def problem(kind: str):
    """A tiny random problem in 3 folds; the last fold's training rows miss class 3."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 90)
    x = rng.normal(size=(len(y), 24)) + 0.3 * y[:, None]
    folds = np.arange(len(y)) % FOLDS
    fits = [(folds != f) & ((y != 3) | (f < FOLDS - 1)) for f in range(FOLDS)]
    return x, y * (1.0 if kind == "classification" else 50.0), fits, [folds == f for f in
                                                                      range(FOLDS)]


def explicit_pipelines(kind: str, e, seed: int, k: int) -> dict[str, Pipeline]:
    """The baselines spelled out, new ones."""
    heads = {name: (LogisticRegression(C=e.baseline_C, tol=e.baseline_tol,
                                       max_iter=e.baseline_max_iter, random_state=seed)
                    if kind == "classification" else
                    Ridge(alpha=1 / e.baseline_C, max_iter=e.baseline_max_iter,
                          random_state=seed))
             for name in BASELINES}
    return {"pca_logreg": Pipeline([("scale", StandardScaler()),
                                    ("pca", PCA(k, svd_solver="randomized", random_state=seed)),
                                    ("head", heads["pca_logreg"])]),
            "linear_probe": Pipeline([("scale", StandardScaler()),
                                      ("head", heads["linear_probe"])])}


@pytest.mark.parametrize("kind", ["classification", "regression"])
def test_configured_baselines_equal_the_explicit_pipelines_fold_by_fold(kind, tmp_path):
    """Every fold is fitted from scratch: a fold started from the previous fold's solution
    (fitted on this fold's test rows) would keep some of it where lbfgs stops at its
    tolerance."""
    cfg = compose_train(["evaluation.baseline_dtype=float64"], tmp_path)
    e, seed = cfg.evaluation, int(cfg.seed)
    factories = {name: instantiate(spec) for name, spec in e.baselines.items()}
    assert tuple(factories) == BASELINES
    x, y, fits, tests = problem(kind)
    for f, (fit, test) in enumerate(zip(fits, tests, strict=True)):
        outputs, info = baseline_outputs(kind, x[fit], y[fit], x[test], factories, seed,
                                         4 if kind == "classification" else None)
        assert info["pca_components"] == e.pca_components
        for name, pipe in explicit_pipelines(kind, e, seed, e.pca_components).items():
            labels = y[fit].astype(np.int64 if kind == "classification" else np.float64)
            pipe.fit(x[fit], labels)
            if kind == "classification":
                expected = np.zeros((test.sum(), 4))
                expected[:, pipe.classes_] = pipe.predict_proba(x[test])
            else:
                expected = pipe.predict(x[test])
            np.testing.assert_array_equal(outputs[name], expected, err_msg=f"{name} fold {f}")


def test_a_fold_of_the_run_baselines_does_not_depend_on_the_other_folds(tmp_path):
    """baselines_oof: a fold's outputs are those of that fold fitted alone, whatever the folds
    before it (no warm start across folds)."""
    cfg = compose_train([], tmp_path)
    x, y, fits, tests = problem("classification")
    target = SimpleNamespace(kind="classification", classes=list("abcd"))
    dm = SimpleNamespace(descriptor=SimpleNamespace(targets=[target]), x=torch.from_numpy(x),
                         image_x=torch.from_numpy(x), y=torch.from_numpy(y[:, None]))
    assignment = np.array([np.where(t, "test", np.where(fit, "train", "-"))
                           for fit, t in zip(fits, tests, strict=True)])
    together, _ = baselines_oof(cfg, dm, assignment)
    alone, _ = baselines_oof(cfg, dm, assignment[1:])
    tested = tests[1] | tests[2]
    for name in BASELINES:
        np.testing.assert_array_equal(together[name][tested], alone[name][tested])


def test_a_baseline_added_in_yaml_is_fitted_under_its_name(tmp_path):
    cfg = compose_train([], tmp_path)
    with open_dict(cfg):
        cfg.evaluation.baselines.probe_c1 = dict(cfg.evaluation.baselines.linear_probe, C=1.0)
    factories = {name: instantiate(spec) for name, spec in cfg.evaluation.baselines.items()}
    x, y, fits, tests = problem("classification")
    outputs, _ = baseline_outputs("classification", x[fits[0]], y[fits[0]], x[tests[0]],
                                  factories, 0, 4)
    assert set(outputs) == {*BASELINES, "probe_c1"}
    assert not np.array_equal(outputs["probe_c1"], outputs["linear_probe"])


@pytest.mark.parametrize("kind", ["classification", "regression"])
def test_float32_baselines_give_the_float64_outputs(kind, tmp_path):
    """``evaluation.baseline_dtype=float32`` (the run's setting) solves the same problems as
    float64: at a tight tolerance their outputs agree; an unknown dtype is refused."""
    cfg = compose_train(["evaluation.baseline_tol=1e-7"], tmp_path)
    assert cfg.evaluation.baseline_dtype == "float32"
    factories = {name: instantiate(spec) for name, spec in cfg.evaluation.baselines.items()}
    x, y, fits, tests = problem(kind)
    classes = 4 if kind == "classification" else None
    single, double = (baseline_outputs(kind, x[fits[0]], y[fits[0]], x[tests[0]], factories, 0,
                                       classes, dtype=dtype)[0]
                      for dtype in ("float32", "float64"))
    for name in BASELINES:
        np.testing.assert_allclose(single[name], double[name], atol=2e-3)
    with pytest.raises(ValueError, match="dtype"):
        baseline_outputs(kind, x[fits[0]], y[fits[0]], x[tests[0]], factories, 0, classes,
                         dtype="float16")
