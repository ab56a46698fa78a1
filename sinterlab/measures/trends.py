"""Which measures move with the process parameter: per-sample means against the parameter,
Spearman's rho with a sample-bootstrap interval and a permutation p-value (the parameter
permuted between samples), and a measures-only model on the run's folds."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import spearmanr
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from sinterlab.data.descriptor import str_label

#: columns of a measures table that are not measures
INFO = ("path", "length_unit", "one_phase", "image", "sample_id")


def measure_columns(table: pd.DataFrame) -> list[str]:
    return [c for c in table.columns if c not in INFO and pd.api.types.is_numeric_dtype(table[c])]


def _rho(x: np.ndarray, y: np.ndarray) -> float:
    keep = np.isfinite(x) & np.isfinite(y)
    if keep.sum() < 3 or np.ptp(x[keep]) == 0 or np.ptp(y[keep]) == 0:
        return float("nan")
    return float(spearmanr(x[keep], y[keep])[0])


def trends(per_sample: pd.DataFrame, names: list[str], level: np.ndarray, n: int, seed: int,
           confidence: float) -> list[dict]:
    """Per measure: Spearman's rho of the per-sample means with the parameter's level, its
    bootstrap interval over samples, and the permutation p-value; strongest first."""
    rng = np.random.default_rng(seed)
    draws = [rng.integers(0, len(level), len(level)) for _ in range(n)]
    orders = [rng.permutation(len(level)) for _ in range(n)]
    alpha = (1 - confidence) / 2
    out = []
    for name in names:
        x = per_sample[name].to_numpy(float)
        rho = _rho(x, level)
        boot = np.array([_rho(x[d], level[d]) for d in draws])
        boot = boot[np.isfinite(boot)]
        permuted = np.array([_rho(x, level[o]) for o in orders])
        p = (float((1 + np.sum(np.abs(permuted) >= abs(rho))) / (1 + n))
             if np.isfinite(rho) else None)
        out.append({"measure": name, "rho": None if np.isnan(rho) else rho,
                    "low": float(np.quantile(boot, alpha)) if len(boot) else None,
                    "high": float(np.quantile(boot, 1 - alpha)) if len(boot) else None,
                    "p_value": p})
    return sorted(out, key=lambda r: -abs(r["rho"] or 0))


def measures_oof(features: np.ndarray, y: np.ndarray, image_fold: np.ndarray, kind: str,
                 num_classes: int | None, c: float) -> np.ndarray:
    """Out-of-fold image outputs of a standardised logistic (ridge for regression) model on the
    measures, each fold fitted on its other images (missing measures: the fold's medians)."""
    out = np.full((len(y), num_classes) if num_classes else (len(y),), np.nan)
    for f in range(int(image_fold.max()) + 1):
        test, fit = image_fold == f, image_fold != f
        model = make_pipeline(SimpleImputer(strategy="median", keep_empty_features=True),
                              StandardScaler(),
                              LogisticRegression(C=c, max_iter=1000) if num_classes
                              else Ridge(alpha=1.0 / c))
        if num_classes:
            classes = np.unique(y[fit]).astype(int)
            if len(classes) < 2:
                out[test] = np.eye(num_classes)[classes[0]]
                continue
            model.fit(features[fit], y[fit].astype(int))
            out[np.ix_(test, classes)] = model.predict_proba(features[test])
            out[test] = np.nan_to_num(out[test])
        else:
            model.fit(features[fit], y[fit])
            out[test] = model.predict(features[test])
    return out


def summarise(measures: pd.DataFrame, table: pd.DataFrame, target, n: int, seed: int,
              confidence: float) -> tuple[pd.DataFrame, dict]:
    """measures.csv (one row per image with its sample and parameter) and the record of the
    trends against the first target (per-sample means; ordered or numeric targets only)."""
    names = measure_columns(measures)
    frame = pd.concat([table[["image", "sample_id", target.name]].reset_index(drop=True),
                       measures.drop(columns=["path"]).reset_index(drop=True)], axis=1)
    per_sample = frame.groupby("sample_id", sort=False).agg(
        {target.name: "first", **dict.fromkeys(names, "mean")})
    units = measures["length_unit"].unique() if len(measures) else [None]
    if len(units) > 1:  # image_measures gives one unit per run: a mixed table is a bug
        raise ValueError(f"measures in several units {sorted(units)}: not comparable")
    record = {"unit": units[0],
              "measures": names, "n_samples": len(per_sample),
              "per_sample": per_sample.reset_index().to_dict(orient="records")}
    if target.kind == "regression":
        level = per_sample[target.name].to_numpy(float)
    elif target.ordered:
        values = dict(zip(target.classes, target.values, strict=True))
        level = per_sample[target.name].map(lambda v: values[str_label(v)]).to_numpy(float)
    else:
        record["trends_skipped"] = f"{target.name!r} is not ordered: no trend to measure"
        return frame, record
    record["trends"] = trends(per_sample, names, level, n, seed, confidence)
    return frame, record

