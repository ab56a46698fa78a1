"""Metrics equal scikit-learn's; aggregation arithmetic; baselines run end to end."""

from __future__ import annotations

import json
from functools import partial

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    mean_absolute_error,
    mean_squared_error,
    r2_score,
    roc_auc_score,
)

from sinterlab.data.groups import group_means
from sinterlab.evaluation.baselines import baseline_outputs, linear_pipeline, pca_pipeline
from sinterlab.evaluation.metrics import (
    classification_metrics,
    evaluate_levels,
    evaluate_targets,
    regression_metrics,
)

TOL = 1e-6  # torchmetrics computes in float32


def _random_case(num_classes: int, n: int = 300, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, num_classes, n)
    logits = rng.normal(size=(n, num_classes)) + 1.5 * np.eye(num_classes)[y]
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return y, probs


@pytest.mark.parametrize("num_classes", [2, 5])
def test_classification_metrics_equal_sklearn(num_classes):
    y, probs = _random_case(num_classes)
    pred = probs.argmax(axis=1)
    labels = list(range(num_classes))
    m = classification_metrics(y, probs)

    assert m["n"] == len(y)
    assert m["accuracy"] == pytest.approx(accuracy_score(y, pred), abs=TOL)
    assert m["f1_macro"] == pytest.approx(
        f1_score(y, pred, average="macro", labels=labels), abs=TOL
    )
    if num_classes == 2:
        expected_auroc = roc_auc_score(y, probs[:, 1])
    else:
        expected_auroc = roc_auc_score(y, probs, multi_class="ovr", average="macro")
    assert m["auroc"] == pytest.approx(expected_auroc, abs=TOL)
    for c in labels:
        assert m["auroc_per_class"][c] == pytest.approx(roc_auc_score(y == c, probs[:, c]), abs=TOL)
    assert m["confusion_matrix"] == confusion_matrix(y, pred, labels=labels).tolist()
    json.dumps(m)  # JSON-ready


def test_macro_f1_with_absent_classes_matches_sklearn_labels():
    # classes 3 and 4 appear neither in truth nor in prediction; class 2 only in prediction
    y = np.array([0, 0, 1, 1, 1, 0])
    pred = np.array([0, 1, 1, 1, 2, 0])
    probs = np.full((len(y), 5), 0.01)
    probs[np.arange(len(y)), pred] = 0.96
    m = classification_metrics(y, probs)
    with pytest.warns(Warning):
        expected = f1_score(y, pred, average="macro", labels=list(range(5)))
    assert m["f1_macro"] == pytest.approx(expected, abs=TOL)
    # the macro AUROC is over the classes present in the truth only
    assert m["auroc_per_class"][3] is None and m["auroc_per_class"][2] is None
    assert m["auroc"] == pytest.approx(np.mean(m["auroc_per_class"][:2]), abs=TOL)


def test_single_class_truth_gives_null_auroc():
    m = classification_metrics(np.array([1, 1, 1]), np.array([[0.2, 0.8], [0.6, 0.4], [0.1, 0.9]]))
    assert m["auroc"] is None
    assert m["auroc_per_class"] == [None, None]
    assert m["accuracy"] == pytest.approx(2 / 3, abs=TOL)
    assert json.loads(json.dumps(m))["auroc"] is None


def test_regression_metrics_equal_sklearn():
    rng = np.random.default_rng(1)
    t = rng.uniform(50, 250, 200)
    p = t + rng.normal(0, 20, 200)
    m = regression_metrics(t, p)
    assert m["mae"] == pytest.approx(mean_absolute_error(t, p), rel=1e-9)
    assert m["rmse"] == pytest.approx(np.sqrt(mean_squared_error(t, p)), rel=1e-9)
    assert m["r2"] == pytest.approx(r2_score(t, p), rel=1e-9)
    assert m["n"] == 200
    assert regression_metrics([3.0], [4.0])["r2"] is None


def test_group_means_first_appearance_order():
    values = np.array([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5], [0.2, 0.8]])
    names, means = group_means(values, ["b", "a", "b", "a"])
    assert names == ["b", "a"]
    np.testing.assert_allclose(means, [[0.75, 0.25], [0.1, 0.9]])


def test_evaluate_levels_classification_hand_made():
    # image A (truth 0): patch probs of class 1 = 0.9, 0.2, 0.2 -> mean 0.433 -> predicts 0
    # image B (truth 1): 0.4, 0.4, 0.9 -> mean 0.567 -> predicts 1
    # image C (truth 1): 0.1, 0.3, 0.2 -> mean 0.2 -> predicts 0
    p1 = np.array([0.9, 0.2, 0.2, 0.4, 0.4, 0.9, 0.1, 0.3, 0.2])
    probs = np.column_stack([1 - p1, p1])
    y = np.array([0, 0, 0, 1, 1, 1, 1, 1, 1])
    images = ["A"] * 3 + ["B"] * 3 + ["C"] * 3
    samples = ["s1"] * 6 + ["s2"] * 3
    with pytest.raises(ValueError, match="s1"):
        evaluate_levels("classification", y, probs, images, samples)

    samples = ["s1"] * 3 + ["s2"] * 6  # s2 = images B and C
    res = evaluate_levels("classification", y, probs, images, samples)
    assert res["patch"]["accuracy"] == pytest.approx(3 / 9, abs=TOL)  # A: 2, B: 1, C: 0 right
    assert res["image"]["n"] == 3
    assert res["image"]["accuracy"] == pytest.approx(2 / 3, abs=TOL)
    assert res["image"]["confusion_matrix"] == [[1, 0], [1, 1]]
    # image-level AUROC from the mean probabilities 0.433 (neg), 0.567, 0.2 (pos): 1 of 2 pairs
    assert res["image"]["auroc"] == pytest.approx(0.5, abs=TOL)
    # sample s1 mean 0.433 -> 0 (truth 0), s2 mean (0.4+0.4+0.9+0.1+0.3+0.2)/6 = 0.383 -> 0
    assert res["sample"]["accuracy"] == pytest.approx(0.5, abs=TOL)
    assert res["sample"]["n"] == 2


def test_evaluate_levels_raises_on_mixed_image_truth():
    probs = np.array([[0.5, 0.5], [0.5, 0.5]])
    with pytest.raises(ValueError, match="img7"):
        evaluate_levels("classification", np.array([0, 1]), probs, ["img7", "img7"], ["s", "s"])


def test_evaluate_levels_regression_mean():
    y = np.array([100.0, 100.0, 200.0, 200.0])
    pred = np.array([90.0, 130.0, 210.0, 170.0])
    res = evaluate_levels("regression", y, pred, ["a", "a", "b", "b"], ["s", "s", "t", "t"])
    assert res["patch"]["mae"] == pytest.approx(20.0)
    # image means 110 and 190 -> errors 10, 10
    assert res["image"]["mae"] == pytest.approx(10.0)
    assert res["sample"]["rmse"] == pytest.approx(10.0)


def test_evaluate_targets_single_and_multi():
    y_cls, probs = _random_case(2, n=40)
    rng = np.random.default_rng(2)
    duty = np.repeat(rng.uniform(0, 1, 5), 8)
    images = [f"i{k // 4}" for k in range(40)]
    samples = [f"s{k // 8}" for k in range(40)]
    y_cls = np.repeat(y_cls[::8], 8)  # one label per sample
    targets = [
        {"name": "burst_count", "kind": "classification", "classes": ["50", "100"]},
        {"name": "duty_cycle", "kind": "regression"},
    ]
    y_true = np.column_stack([y_cls.astype(float), duty])
    outputs = [probs, duty + 0.1]

    single = evaluate_targets(targets[:1], y_true[:, :1], outputs[:1], images, samples)
    assert set(single) == {"patch", "image", "sample"}
    assert single["patch"]["accuracy"] == pytest.approx(
        accuracy_score(y_cls, probs.argmax(1)), abs=TOL
    )

    multi = evaluate_targets(targets, y_true, outputs, images, samples)
    assert set(multi["image"]) == {"burst_count", "duty_cycle"}
    assert multi["image"]["duty_cycle"]["mae"] == pytest.approx(0.1)
    assert multi["patch"]["burst_count"] == single["patch"]


@pytest.mark.parametrize("kind", ["classification", "regression"])
def test_baseline_outputs(kind):
    rng = np.random.default_rng(3)
    n_img, per_img, dim = 12, 5, 8
    y_img = (np.arange(n_img) // 2) % 3  # the two images of a sample share a label
    x = rng.normal(size=(n_img * per_img, dim)) + np.repeat(y_img, per_img)[:, None]
    y = np.repeat(y_img, per_img).astype(float) * (1 if kind == "classification" else 50.0)
    train, test = slice(0, 30), slice(30, None)
    linear = {"C": 1.0, "max_iter": 200, "tol": 1e-4}
    factories = {"pca_logreg": partial(pca_pipeline, components=100, **linear),
                 "linear_probe": partial(linear_pipeline, **linear)}
    outputs, info = baseline_outputs(kind, x[train], y[train], x[test], factories, seed=0,
                                     num_classes=4 if kind == "classification" else None)
    assert set(outputs) == {"pca_logreg", "linear_probe"}
    assert info["pca_components"] == dim  # clipped to n_features
    assert info["pca_explained_variance"] == pytest.approx(1.0)
    for output in outputs.values():
        if kind == "classification":
            assert output.shape == (30, 4)  # a class unseen in training gets probability 0
            np.testing.assert_allclose(output.sum(axis=1), 1.0)
            assert (output.argmax(axis=1) == y[test]).mean() > 0.5
        else:
            assert output.shape == (30,)
            assert np.corrcoef(output, y[test])[0, 1] > 0.7


def test_ordinal_metrics_count_errors_in_the_parameters_units():
    from sinterlab.evaluation.metrics import ordinal_metrics
    y = np.array([0, 1, 2, 3, 4, 4, 3])
    probs = np.eye(5)[[0, 2, 2, 3, 3, 4, 1]] * 0.8 + 0.04  # predicted levels
    m = ordinal_metrics(y, probs, [50, 100, 150, 200, 250])
    # off by 0,1,0,0,1,0,2 levels = 0,50,0,0,50,0,100 BC
    assert m["mae"] == pytest.approx(200 / 7)
    assert m["within_one"] == pytest.approx(6 / 7)
    expected = probs @ np.array([50, 100, 150, 200, 250])
    truth = np.array([50, 100, 150, 200, 250])[y]
    assert m["mae_expected"] == pytest.approx(np.abs(expected - truth).mean())
    assert 0 < m["qwk"] < 1 and 0 < m["spearman"] < 1
    perfect = ordinal_metrics(y, np.eye(5)[y], [50, 100, 150, 200, 250])
    assert perfect["mae"] == 0 and perfect["qwk"] == pytest.approx(1.0)
