"""Metrics at patch, image and sample level (torchmetrics.functional).

All returned dicts are JSON-ready: plain Python ``int``/``float``/``list`` and ``None`` where a
metric is undefined (e.g. AUROC when only one class is present in the truth).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torchmetrics.functional import (
    mean_absolute_error,
    mean_squared_error,
    r2_score,
    spearman_corrcoef,
)
from torchmetrics.functional.classification import (
    binary_auroc,
    multiclass_accuracy,
    multiclass_auroc,
    multiclass_cohen_kappa,
    multiclass_confusion_matrix,
    multiclass_f1_score,
)

from sinterlab.data.groups import group_means

#: the levels metrics are reported at, finest first
PATCH_LEVEL, IMAGE_LEVEL, SAMPLE_LEVEL = "patch", "image", "sample"
LEVELS = (PATCH_LEVEL, IMAGE_LEVEL, SAMPLE_LEVEL)


def _finite_or_none(value: Any) -> float | None:
    """Tensor/number -> float, or None when it is NaN/inf (undefined metric)."""
    v = float(value)
    return v if math.isfinite(v) else None


#: metrics of an ordered target besides the classification ones: mean absolute error in the
#: parameter's units from the predicted level and from the probability-weighted expected value,
#: share within one level, quadratic weighted kappa, Spearman rank correlation of the expected
#: value with the truth; (name, higher is better)
ORDINAL = (("mae", False), ("mae_expected", False), ("within_one", True), ("qwk", True),
           ("spearman", True))


def expected_value(probs: np.ndarray, values: np.ndarray) -> np.ndarray:
    """The probability-weighted level value, rounded so that equal values stay equal whatever
    the summation order (ranks and ties depend on it)."""
    return np.round(np.asarray(probs, dtype=np.float64) @ values, 10)


def ordinal_metrics(y: np.ndarray, probs: np.ndarray, values: Sequence[float]) -> dict:
    """Errors of an ordered target (class indices ``y``, probabilities ``probs``) in the units
    of ``values`` (one per class, ascending)."""
    values = np.asarray(values, dtype=np.float64)
    predicted = probs.argmax(axis=1)
    expected = expected_value(probs, values)
    truth = values[y]
    qwk = (multiclass_cohen_kappa(torch.as_tensor(predicted), torch.as_tensor(y),
                                  num_classes=len(values), weights="quadratic")
           if len(np.unique(np.concatenate([y, predicted]))) > 1 else float("nan"))
    spearman = (spearman_corrcoef(torch.as_tensor(expected), torch.as_tensor(truth))
                if len(y) > 1 and np.ptp(truth) > 0 and np.ptp(expected) > 0 else float("nan"))
    return {"mae": float(np.abs(values[predicted] - truth).mean()),
            "mae_expected": float(np.abs(expected - truth).mean()),
            "within_one": float((np.abs(predicted - y) <= 1).mean()),
            "qwk": _finite_or_none(qwk), "spearman": _finite_or_none(spearman)}


def classification_metrics(y_true: np.ndarray, probs: np.ndarray,
                           values: Sequence[float] | None = None) -> dict:
    """Accuracy, macro F1, AUROC (overall and one-vs-rest per class) and confusion matrix.

    ``probs`` is (N, C); the prediction is its argmax.  Binary (C == 2): ``auroc`` is the AUROC
    of the positive class (column 1).  Multiclass: macro one-vs-rest AUROC.  AUROC of a class
    that has no positives (or no negatives) in ``y_true`` is ``None``; the multiclass macro is
    then the mean over the classes where it is defined, and ``None`` if fewer than two classes
    are present.  Macro F1 averages over all C classes, a class absent from both truth and
    prediction counting as 0 -- equal to sklearn ``f1_score(average="macro",
    labels=list(range(C)))``.
    """
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2:
        raise ValueError(f"probs must be (N, C), got shape {probs.shape}")
    y = np.asarray(y_true).astype(np.int64).reshape(-1)
    n, num_classes = probs.shape
    if len(y) != n:
        raise ValueError(f"y_true has {len(y)} rows but probs has {n}")
    if n == 0:
        raise ValueError("classification_metrics needs at least one row")
    if y.min() < 0 or y.max() >= num_classes:
        raise ValueError(f"y_true values must lie in [0, {num_classes}), got {np.unique(y)}")

    p_t = torch.as_tensor(np.array(probs))  # a copy: the caller's array may be read-only
    y_t = torch.from_numpy(y)
    pred_t = p_t.argmax(dim=1)

    accuracy = multiclass_accuracy(pred_t, y_t, num_classes=num_classes, average="micro")
    # Per-class F1 (0 where undefined), then the plain mean over all C classes: torchmetrics'
    # own "macro" drops classes absent from truth and prediction, sklearn with labels=range(C)
    # counts them as 0.  We follow sklearn.
    f1_per_class = multiclass_f1_score(
        pred_t, y_t, num_classes=num_classes, average="none", zero_division=0
    )
    f1_macro = f1_per_class.mean()
    confusion = multiclass_confusion_matrix(pred_t, y_t, num_classes=num_classes)

    present = np.bincount(y, minlength=num_classes) > 0
    auroc_per_class: list[float | None] = []
    for c in range(num_classes):
        is_c = y == c
        if is_c.all() or not is_c.any():
            auroc_per_class.append(None)
        else:
            auroc_per_class.append(
                _finite_or_none(binary_auroc(p_t[:, c], torch.from_numpy(is_c.astype(np.int64))))
            )

    auroc: float | None
    if present.sum() < 2:
        auroc = None
    elif num_classes == 2:
        auroc = auroc_per_class[1]
    elif present.all():
        auroc = _finite_or_none(
            multiclass_auroc(p_t, y_t, num_classes=num_classes, average="macro")
        )
    else:
        defined = [a for a in auroc_per_class if a is not None]
        auroc = float(np.mean(defined)) if defined else None

    return {
        "accuracy": float(accuracy),
        "f1_macro": float(f1_macro),
        "auroc": auroc,
        "auroc_per_class": auroc_per_class,
        "confusion_matrix": confusion.to(torch.int64).tolist(),
        "n": int(n),
        **(ordinal_metrics(y, probs, values) if values is not None else {}),
    }


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict:
    """MAE, RMSE and R^2 in the parameter's units; R^2 is ``None`` when undefined (N < 2)."""
    t = torch.as_tensor(np.asarray(y_true, dtype=np.float64).reshape(-1))
    p = torch.as_tensor(np.asarray(y_pred, dtype=np.float64).reshape(-1))
    if t.shape != p.shape:
        raise ValueError(f"y_true has {t.numel()} values but y_pred has {p.numel()}")
    if t.numel() == 0:
        raise ValueError("regression_metrics needs at least one value")
    r2: float | None
    if t.numel() < 2:
        r2 = None
    else:
        r2 = _finite_or_none(r2_score(p, t))
    return {
        "mae": float(mean_absolute_error(p, t)),
        "rmse": math.sqrt(float(mean_squared_error(p, t))),
        "r2": r2,
        "n": int(t.numel()),
    }


def first_rows(groups: Sequence[str]) -> np.ndarray:
    """Index of each group's first row, groups in order of first appearance (the order of
    :func:`~sinterlab.data.groups.group_means`)."""
    _, index = np.unique(np.asarray(groups).astype(str), return_index=True)
    return np.sort(index)


def _group_truth(y_true: np.ndarray, groups: Sequence[str], level: str) -> np.ndarray:
    """The single true label of each group (order of first appearance); raise if mixed."""
    truth = pd.Series(np.asarray(y_true).reshape(-1))
    out = []
    for name, part in truth.groupby(pd.Series([str(g) for g in groups]), sort=False):
        labels = part.unique()
        if len(labels) != 1:
            raise ValueError(
                f"{level} {name!r} has patches with different true labels: "
                f"{sorted(labels.tolist())}"
            )
        out.append(labels[0])
    return np.asarray(out)


def evaluate_levels(
    kind: str,
    y_true: np.ndarray,
    output: np.ndarray,
    image_ids: Sequence[str],
    sample_ids: Sequence[str],
    values: Sequence[float] | None = None,
) -> dict:
    """Metrics at patch level and for the mean patch output per image and per sample.

    ``kind="classification"``: ``output`` is probabilities (N, C), ``y_true`` class indices;
    ``values`` (an ordered target's level values) adds :func:`ordinal_metrics`.
    ``kind="regression"``: ``output`` is predictions (N,) in the parameter's units.
    """
    y_true = np.asarray(y_true).reshape(-1)
    output = np.asarray(output, dtype=np.float64)
    if kind == "classification":
        y_true = _as_class_indices(y_true)
        def metric_fn(y, probs):
            return classification_metrics(y, probs, values)
    elif kind == "regression":
        y_true = y_true.astype(np.float64)
        output = output.reshape(-1)
        metric_fn = regression_metrics
    else:
        raise ValueError(f"kind must be 'classification' or 'regression', got {kind!r}")
    if not len(y_true) == len(output) == len(image_ids) == len(sample_ids):
        raise ValueError(
            f"length mismatch: y_true {len(y_true)}, output {len(output)}, "
            f"image_ids {len(image_ids)}, sample_ids {len(sample_ids)}"
        )

    result = {"patch": metric_fn(y_true, output)}
    for level, groups in (("image", image_ids), ("sample", sample_ids)):
        truth = _group_truth(y_true, groups, level)
        _, mean_out = group_means(output, groups)
        result[level] = metric_fn(truth, mean_out)
    return result


def _as_class_indices(column: np.ndarray) -> np.ndarray:
    column = np.asarray(column)
    as_int = np.rint(column.astype(np.float64)).astype(np.int64)
    if not np.array_equal(as_int, column.astype(np.float64)):
        raise ValueError("classification targets must hold integer class indices")
    return as_int


def evaluate_targets(
    targets: list[dict],
    y_true: np.ndarray,
    outputs: list[np.ndarray],
    image_ids: Sequence[str],
    sample_ids: Sequence[str],
) -> dict:
    """``evaluate_levels`` for each target.

    One target: ``{"patch": {...}, "image": {...}, "sample": {...}}``.  Several targets:
    ``{"patch": {name: {...}, ...}, "image": {...}, "sample": {...}}``.
    """
    y_true = np.asarray(y_true)
    if y_true.ndim == 1:
        y_true = y_true.reshape(-1, 1)
    if len(targets) != y_true.shape[1] or len(targets) != len(outputs):
        raise ValueError(
            f"{len(targets)} targets, {y_true.shape[1]} y_true columns, {len(outputs)} outputs"
        )
    per_target = {
        t["name"]: evaluate_levels(t["kind"], y_true[:, i], outputs[i], image_ids, sample_ids,
                                   t.get("values") if t.get("ordered") else None)
        for i, t in enumerate(targets)
    }
    if len(targets) == 1:
        return next(iter(per_target.values()))
    return {level: {name: res[level] for name, res in per_target.items()} for level in LEVELS}
