"""Does the microscope give the answer away? The imaging settings alone (pixel size,
magnification, voltage, working distance, detector, dwell time, date, instrument) as a model on
the same folds, with a permutation p-value: when they predict the parameter better than chance,
imaging and process are confounded and every model's score is suspect."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.tree import DecisionTreeClassifier

from sinterlab.data.metadata import ACQUIRED, DETECTOR, FIELDS, INSTRUMENT, NUMERIC
from sinterlab.evaluation.statistics import permutation_test


def instrument_features(metadata: pd.DataFrame) -> tuple[np.ndarray, list[str]]:
    """Numeric settings (missing ones: the median), the acquisition day, and one-hot detector
    and instrument; only settings that vary between images."""
    columns: dict[str, np.ndarray] = {}
    for field in NUMERIC:
        values = pd.to_numeric(metadata[field], errors="coerce")
        if values.nunique() > 1:
            columns[field] = values.fillna(values.median()).to_numpy(float)
    days = pd.to_datetime(metadata[ACQUIRED], errors="coerce")
    if days.nunique() > 1:
        numbers = (days - days.min()).dt.days
        columns[ACQUIRED] = numbers.fillna(numbers.median()).to_numpy(float)
    for field in (DETECTOR, INSTRUMENT):
        text = metadata[field].astype(str)
        if text.nunique() > 1:
            for value in sorted(text.unique()):
                columns[f"{field}={value}"] = (text == value).to_numpy(float)
    if not columns:
        return np.zeros((len(metadata), 0)), []
    return np.column_stack(list(columns.values())), list(columns)


def settings_by_class(metadata: pd.DataFrame, labels: pd.Series) -> dict[str, dict[str, str]]:
    """Per class, the values each recorded setting takes (at most four shown)."""
    out = {}
    for label, part in metadata.groupby(labels.astype(str).to_numpy(), sort=False):
        row = {}
        for field in FIELDS[:-1]:
            values = part[field].dropna().unique()
            if len(values):
                shown = sorted(f"{v:.4g}" if isinstance(v, float) else str(v) for v in values)
                row[field] = ", ".join(shown[:4]) + (f" (+{len(shown) - 4})" if len(shown) > 4
                                                     else "")
        out[str(label)] = row
    return out


def instrument_check(metadata: pd.DataFrame, labels: np.ndarray, groups: np.ndarray,
                     image_fold: np.ndarray, n: int, seed: int, depth: int,
                     threshold: float, target: str) -> dict:
    """The imaging settings alone as a shallow decision tree on the run's folds (images), its
    permutation p-value, and a plain warning when it beats chance at ``threshold``."""
    x, names = instrument_features(metadata)
    if not names:
        return {"skipped": "no imaging setting varies between images (or none is recorded)"}
    # settings take a few discrete values whose relation to the label need not be monotone
    result = permutation_test(x, labels, groups, image_fold, n, seed, 0.0,
                              make_model=lambda: DecisionTreeClassifier(max_depth=depth,
                                                                        random_state=seed))
    result |= {"model": f"decision tree (depth {depth}) on the imaging settings alone",
               "features": names}
    if result["p_value"] < threshold:
        result["warning"] = (
            f"the imaging settings alone predict {target}: out-of-fold image accuracy "
            f"{result['observed_accuracy']:.3f} (p = {result['p_value']:.4f} against chance, "
            f"from {', '.join(names)}); imaging and process are confounded, so every model's "
            "score may come from the microscope rather than the microstructure")
    return result
