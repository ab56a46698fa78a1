"""data.extra_inputs: numeric descriptor columns beside the image embedding, standardised with
each fold's training rows only, compared with the image-only model on the same folds, and
needed again by predict."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.compose import ColumnTransformer
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from sinterlab.errors import SinterlabError
from sinterlab.evaluation.summary import summarize_runs
from sinterlab.models.linear import LinearModel, fit_linear
from sinterlab.predict import predict
from sinterlab.study.datamodule import SEMDataModule
from sinterlab.study.fit import input_scaling
from sinterlab.study.record import IMAGE_ONLY
from tests.conftest import EXTRA, FAST, compose_train, predict_config


def test_extra_input_beats_image_only_on_the_same_folds(marked_run):
    metrics = json.loads((marked_run / "metrics.json").read_text())
    assert metrics["inputs"]["extra"] == ["marker"] and metrics["inputs"]["image_only_compared"]
    pooled = metrics["cv"]["pooled"]
    with_marker = pooled["head"]["image"]["accuracy"]["value"]
    image_only = pooled[IMAGE_ONLY]["image"]["accuracy"]["value"]
    assert with_marker >= image_only + 0.1, (with_marker, image_only)  # measured: 0.425, 0.225
    # the same folds: the per-fold table scores both models on every fold
    assert all(IMAGE_ONLY in row["models"] and "head" in row["models"]
               for row in metrics["cv"]["per_fold"])
    report = (marked_run / "report.md").read_text()
    assert "extra inputs `marker`" in report and "image only (no extra inputs)" in report
    assert "gallery" in metrics["skipped"]  # maps read the image alone
    # a sweep summary never averages it with image-only runs: its inputs are a group column
    assert set(summarize_runs(marked_run)["inputs"]) == {"image + marker"}


def test_scaling_uses_each_folds_training_rows_only(marked, shared_cache, marked_run):
    cfg = compose_train([*FAST, f"data.descriptor={marked}", f"features.cache_dir={shared_cache}",
                         *EXTRA], marked_run / "again")
    dm = SEMDataModule(cfg)
    dm.setup()
    # the extra column is appended after loading: the cache holds the image embeddings alone
    assert dm.image_x.shape[1] == dm.backbone.embedding_dim == dm.x.shape[1] - 1
    assert dm.cache_stats.extracted == 0 and dm.cache_stats.from_cache == len(dm.images)
    train = dm.rows(dm.assignment, "train")
    fitted = input_scaling(dm, train)
    for rows, mean, std in zip(train, fitted["mean"], fitted["std"], strict=True):
        values = dm.x[rows, -1].double().numpy()
        assert mean == pytest.approx([values.mean()]) and std == pytest.approx([values.std()])
    # scramble one fold's test rows' marker: that fold's scaling does not change
    clean = dm.x.clone()
    for f, fold in enumerate(dm.assignment):
        test = torch.from_numpy(fold == "test")
        dm.x[test, -1] = torch.randn(int(test.sum())) * 100
        again = input_scaling(dm, train)
        assert (again["mean"][f], again["std"][f]) == (fitted["mean"][f], fitted["std"][f])
        dm.x = clean.clone()
    # the checkpoint keeps the run's per-fold scaling (predict applies the same)
    state = torch.load(marked_run / "checkpoints" / "sample-ensemble.ckpt",
                       weights_only=True)["state_dict"]
    assert state["input_mean"].squeeze(1).tolist() == pytest.approx(
        [m[0] for m in fitted["mean"]], rel=1e-5)


def test_predict_needs_the_extra_inputs(marked_run, marked, design_descriptor):
    cfg = predict_config(marked_run, descriptor=str(marked))
    table, _ = predict(cfg)
    assert len(table) == len(pd.read_csv(marked)) and (table["error"] == "").all()
    images = sorted((design_descriptor.parent / "images").glob("*.tif"))[:2]
    cfg.descriptor, cfg.images = None, [str(p) for p in images]
    with pytest.raises(SinterlabError, match=r"without their extra inputs \['marker'\].*"
                                             r"descriptor=CSV"):
        predict(cfg)


def test_linear_pca_keeps_the_extra_inputs_beside_its_components():
    """sk_pca_logreg with extra inputs: the stored map equals scikit-learn's standardise ->
    (PCA of the embedding | the extra columns) -> logistic regression."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 240)
    embedding = rng.normal(size=(240, 30)) * np.linspace(5, 1, 30)  # no class in it
    x = np.hstack([embedding, (y + rng.normal(0, 0.3, 240))[:, None] * 50])
    x = x.astype(np.float32).astype(np.float64)  # the values fit_linear reads
    targets = [{"name": "burst_count", "kind": "classification", "num_classes": 3}]
    [ensemble], _ = fit_linear([LinearModel(0.1, 4, 500, 1e-8)], ["patch"], targets,
                               x.astype(np.float32), y[:, None], np.arange(240).astype(str),
                               [np.arange(200)], 0, extra=1)
    pca = PCA(4, svd_solver="randomized", random_state=0)
    pipe = make_pipeline(StandardScaler(), ColumnTransformer(
        [("pca", pca, list(range(30))), ("extra", "passthrough", [30])]),
        LogisticRegression(C=0.1, max_iter=500, tol=1e-8))
    expected = pipe.fit(x[:200], y[:200]).predict_proba(x[200:])
    got = ensemble.predict_members(torch.from_numpy(x[200:].astype(np.float32)))[0][0]
    np.testing.assert_allclose(got, expected, atol=1e-4)
    assert (got.argmax(axis=1) == y[200:]).mean() > 0.8  # the extra column was not dropped
