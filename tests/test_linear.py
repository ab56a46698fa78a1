"""Scikit-learn candidates: the stored affine map is the fitted pipeline, saved without pickle;
model=auto picks a strongly regularised one where it is best and a head where only a
non-linear boundary works; predict and explain serve it."""

import json

import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from sinterlab.data.descriptor import IMAGE, SAMPLE
from sinterlab.evaluation.metrics import first_rows
from sinterlab.explain.write import explain_images
from sinterlab.models import linear
from sinterlab.models.calibration import ImageCalibration, MapCheck, fit_image_calibration
from sinterlab.models.linear import LinearEnsemble, LinearModel, fit_linear
from sinterlab.predict import load_run_model, predict
from sinterlab.study.datamodule import SEMDataModule
from sinterlab.study.selection import select_model
from sinterlab.study.training import run_experiment
from sinterlab.synth.generate import generate_dataset, load_preset
from tests.conftest import FAST, compose_train, made_once, predict_config, refit_scale

#: the affine candidates and the heads (the other scikit-learn candidates: tests/test_candidates.py)
AUTO = ["model=auto", "protocol.folds=3", "protocol.seeds=[0]", "model.selection.inner_folds=2",
        *(f"~model.candidates.{n}" for n in ("sk_svm", "sk_measures"))]
HEADS = ("mlp", "linear", "mlp_small", "corn", "level_value", "mlp_image", "level_value_image")
TARGET = [{"name": "y", "kind": "classification", "classes": ["a", "b", "c"],
           "class_names": ["a", "b", "c"], "num_classes": 3}]


def blobs(n=300, d=12, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = rng.normal(size=(n, d)) * rng.uniform(0.5, 5, d) + y[:, None] * 0.7 + 3
    return x.astype(np.float32), y


@pytest.mark.parametrize("pca", [None, 4])
def test_stored_map_equals_the_sklearn_pipeline_and_saves_without_pickle(pca, tmp_path):
    x, y = blobs()
    [ensemble], _ = fit_linear([LinearModel(0.1, pca, 500, 1e-8)], ["patch"], TARGET, x,
                               y[:, None], np.arange(len(x)).astype(str), [np.arange(200)], 0)
    steps = [StandardScaler()] + ([PCA(pca, random_state=0)] if pca else [])
    pipe = make_pipeline(*steps, LogisticRegression(C=0.1, max_iter=500, tol=1e-8))
    x64 = x.astype(np.float64)
    expected = pipe.fit(x64[:200], y[:200]).predict_proba(x64[200:])
    got = ensemble.predict_members(torch.from_numpy(x[200:]))[0][0]
    np.testing.assert_allclose(got, expected, atol=1e-4)
    path = ensemble.save(tmp_path / "m.npz")
    with np.load(path, allow_pickle=False) as data:  # plain arrays and a JSON string
        assert json.loads(str(data["meta"]))["params"] == {"C": 0.1, "pca": pca}
    again = LinearEnsemble.load(path).predict_members(torch.from_numpy(x[200:]))[0]
    np.testing.assert_allclose(again[0], got, atol=1e-6)
    torch_out = ensemble.member_outputs(torch.from_numpy(x[200:]))[0]
    np.testing.assert_allclose(torch_out.numpy(), got, atol=1e-4)


@pytest.mark.parametrize("pca", [None, 4])
def test_grid_fitted_along_the_c_path_equals_each_point_fitted_from_scratch(pca):
    """Points that differ only in C are fitted weakest-regularised last, each lbfgs run warm
    from the previous C's solution: at a tight tolerance every point's map is the one a cold
    fit of that point alone gives, in the order the points were passed."""
    x, y = blobs(d=16)
    folds = [np.arange(200), np.arange(100, 300)]
    images = np.arange(len(x)).astype(str)
    grid = [1.0, 1e-3, 0.1, 1e-2]  # not in C order
    path, _ = fit_linear([LinearModel(c, pca, 2000, 1e-10) for c in grid], ["patch"] * len(grid),
                         TARGET, x, y[:, None], images, folds, 0)
    for c, warm in zip(grid, path, strict=True):
        [cold], _ = fit_linear([LinearModel(c, pca, 2000, 1e-10)], ["patch"], TARGET, x,
                               y[:, None], images, folds, 0)
        assert warm.params == {"C": c, "pca": pca}
        np.testing.assert_allclose(warm.weights[0], cold.weights[0], atol=2e-4)
        np.testing.assert_allclose(warm.biases[0], cold.biases[0], atol=2e-4)


@pytest.mark.parametrize("pca", [None, 4])
def test_float32_fits_give_the_float64_maps(pca, monkeypatch):
    """``module.dtype=float32`` (half the memory each lbfgs step reads) fits the same map as
    float64 where both reach their optimum; an unknown dtype is refused."""
    solved = []

    class Recorded(linear.LogisticRegression):
        def fit(self, X, y):
            solved.append(X.dtype.name)
            return super().fit(X, y)

    monkeypatch.setattr(linear, "LogisticRegression", Recorded)
    x, y = blobs(d=16)
    folds, images = [np.arange(200), np.arange(100, 300)], np.arange(len(x)).astype(str)
    fitted = {dtype: fit_linear([LinearModel(c, pca, 2000, 1e-6, dtype) for c in (1e-2, 1.0)],
                                ["patch"] * 2, TARGET, x, y[:, None], images, folds, 0)[0]
              for dtype in ("float32", "float64")}
    for single, double in zip(fitted["float32"], fitted["float64"], strict=True):
        np.testing.assert_allclose(single.weights[0], double.weights[0], atol=2e-3)
        got, expected = (e.predict_members(torch.from_numpy(x))[0] for e in (single, double))
        np.testing.assert_allclose(got, expected, atol=1e-3)
    assert solved == ["float32"] * 4 + ["float64"] * 4  # 2 folds x 2 C each
    with pytest.raises(ValueError, match="dtype"):
        LinearModel(0.1, None, 100, 1e-3, "float16")


def test_image_mean_model_gives_each_image_its_mean_embeddings_output():
    x, y = blobs(n=120)
    images = np.repeat(np.arange(30), 4).astype(str)
    y = np.repeat(y[::4], 4)
    [ensemble], _ = fit_linear([LinearModel(1.0, None, 500, 1e-8)], ["image_mean"], TARGET, x,
                               y[:, None], images, [np.arange(120)], 0)
    image_out = ensemble.predict_members(x, images=images)[0][0]
    means = x.reshape(30, 4, -1).mean(axis=1)
    np.testing.assert_allclose(image_out[::4], ensemble.predict_members(means)[0][0],
                               atol=1e-5)
    assert np.allclose(image_out[0], image_out[3])  # one image, one output
    patch_out = ensemble.predict_members(x)[0][0]  # maps: each patch its own
    assert not np.allclose(patch_out[0], patch_out[3])


@pytest.fixture(scope="module")
def wide_descriptor(tmp_path_factory):
    """36 samples of one image each (3 burst counts x 4 slides x 3 sets): enough groups for an
    inner CV to tell models apart."""
    cfg = load_preset("tiny", design__slides=4, design__sets=3, design__images_per_sample=1)
    return made_once(tmp_path_factory, "wide_data", lambda folder: generate_dataset(cfg, folder))


@pytest.fixture
def wide_dm(wide_descriptor, shared_cache, tmp_path):
    """``wide_dm(*overrides)``: config and data module of a model=auto run on the wide data."""

    def make(*overrides):
        cfg = compose_train([*FAST, f"data.descriptor={wide_descriptor}",
                             f"features.cache_dir={shared_cache}", *AUTO,
                             "preprocess.patches.per_image=8", *overrides], tmp_path)
        dm = SEMDataModule(cfg)
        dm.setup()
        return cfg, dm

    return make


def inject(dm, features: np.ndarray) -> None:
    dm.x = torch.from_numpy(features.astype(np.float32))


def sample_offsets(dm, rng, d, scale):
    """Per sample and per image random offsets: patches of one sample are not independent."""
    out = np.zeros((len(dm.x), d))
    for column, s in ((SAMPLE, scale), (IMAGE, scale / 2)):
        codes, index = np.unique(dm.patches[column].to_numpy().astype(str),
                                 return_inverse=True)
        out += rng.normal(size=(len(codes), d))[index] * s
    return out


def noisy_linear(dm, rng, labels, d=500, signal=2.5):
    """Each class shifted in 3 dims of its own, 500 noisy dims, large sample offsets: few groups,
    many dimensions, a linear boundary that scikit-learn's default C=1 overfits."""
    means = np.zeros((3, d))
    for c in range(3):
        means[c, 3 * c:3 * c + 3] = signal
    return means[labels] + rng.normal(size=(len(labels), d)) + sample_offsets(dm, rng, d, 1.5)


@pytest.mark.slow
def test_auto_picks_a_linear_model_whose_served_loss_is_near_the_best(wide_dm,
                                                                               tmp_path):
    # the written grid alone: the served losses below are compared along it
    cfg, dm = wide_dm("~model.candidates.mlp", "~model.candidates.linear",
                      "~model.candidates.sk_pca_logreg", "model.selection.max_extensions=0")
    labels = dm.y[:, 0].numpy().astype(int)
    rng = np.random.default_rng(0)
    inject(dm, noisy_linear(dm, rng, labels))
    record, nested, _, rows = select_model(cfg, dm, dm.assignment, "sample", tmp_path)
    assert record.final.model.startswith("sk_logreg")
    assert set(record.winners) <= {"sk_logreg", "sk_logreg_image"}
    # the best C on fresh samples from the same distribution
    _, fresh = wide_dm()
    inject(fresh, noisy_linear(fresh, np.random.default_rng(1), labels))
    grid = cfg.model.candidates[record.final.model].grid["module.C"]
    inputs = cfg.model.candidates[record.final.model].inputs
    fitted, _ = fit_linear([LinearModel(c, None, 300, 1e-3) for c in grid], [inputs] * len(grid),
                           [t.as_dict() | {"num_classes": 3} for t in dm.descriptor.targets],
                           dm.x.numpy(), dm.y.numpy(),
                           dm.patches[IMAGE].to_numpy().astype(str), [np.arange(len(dm.x))],
                           0)
    # scored as predict serves them: each C's image temperature fitted on a third draw
    _, calib = wide_dm()
    inject(calib, noisy_linear(calib, np.random.default_rng(2), labels))
    calibration = cfg.evaluation.calibration
    images = fresh.patches[IMAGE].to_numpy().astype(str)
    calib_images = calib.patches[IMAGE].to_numpy().astype(str)
    losses = []
    for m in fitted:
        raw = m.predict_members(calib.x, images=calib_images, calibrated=False)[0]
        fitted_map = fit_image_calibration(raw, labels, calib_images, [np.arange(len(labels))],
                                           [np.zeros(len(labels), bool)], calibration.pooling,
                                           calibration.calibrator,
                                           check=MapCheck.from_config(calibration),
                                           units=calib.patches[SAMPLE].to_numpy())
        names, served = fitted_map.apply(
            m.predict_members(fresh.x, images=images, calibrated=False)[0], images)
        truth = labels[first_rows(images)]
        assert list(names) == list(images[first_rows(images)])
        losses.append(log_loss(truth, served[0], labels=[0, 1, 2]))
    chosen = record.final.params["module.C"]
    # served (calibrated) probabilities make the grid flat (measured: fresh log-loss 0.943 at
    # C=1e-4 to 0.924 at C=1; the raw ones punished strong regularisation's timid
    # probabilities); the chosen C is within 0.015 (1.4 % of chance's log 3) of the best
    assert losses[grid.index(chosen)] <= min(losses) + 0.015, (chosen, grid, losses)
    assert min(losses) < np.log(3) - 0.1  # the fresh images are predicted at all


@pytest.mark.slow
def test_sklearn_final_model_is_served_by_predict_and_explain(make_cfg, tiny_descriptor,
                                                             tmp_path):
    run_dir = tmp_path / "run"
    # every candidate's own row: each is trained on the outer folds
    overrides = [*AUTO, "model.selection.outer_fits=all",
                 "model.selection.ensemble.enabled=false",  # one scikit-learn model served
                 *(f"~model.candidates.{h}" for h in HEADS)]
    run_experiment(make_cfg(*overrides), run_dir)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    final = metrics["selection"]["final"]
    assert final["model"].startswith("sk_") and final["checkpoint"].endswith(".npz")
    assert {"auto", "sk_logreg", "sk_pca_logreg", "sk_logreg_image"} <= set(
        metrics["cv"]["pooled"])
    assert "Final model (used by `sinterlab-predict`): **sk_" in (run_dir / "report.md").read_text()

    images = sorted((tiny_descriptor.parent / "images").glob("*.tif"))[:2]
    cfg = predict_config(run_dir, images=[str(p) for p in images])
    model = load_run_model(cfg)
    assert isinstance(model.head, LinearEnsemble)
    table, _ = predict(cfg, model)
    assert table["model"].str.startswith(f"{final['point']}: mean of 1 refitted").all()
    assert table["error"].eq("").all()
    # served calibrated per image like a head: each fold's map fitted on the other folds'
    # out-of-fold images, the final model the median of its candidate's fold maps
    # (each fold's map kept only where it beat the raw probabilities held out)
    served = ImageCalibration.from_dict(final["image_calibration"][0]).describe()
    assert table["burst_count_calibration"].eq(served).all()
    members = metrics["training"]["image_calibration"][0]
    assert metrics["calibration"]["served"] == ImageCalibration.from_dict(members).describe()
    assert final["image_calibration"][0]["scale"] == [refit_scale(members)]
    assert len(members["scale"]) == len(members["kept"]) == 3  # one map per fold
    grid, written, bad = explain_images(model, images[:1], tmp_path / "maps", cam_patches=2,
                                        progress=False)
    assert not bad and len(grid) > 1 and {p.suffix for p in written} == {".png", ".csv"}


def xor(dm, rng, labels, d=8):
    """Class 0 in quadrants 1 and 3, class 1 in 2 and 4, class 2 at the origin of dims 0-1;
    no linear boundary separates them."""
    sign = rng.choice([-1.0, 1.0], size=len(labels))
    centres = np.stack([2 * sign, 2 * sign * np.where(labels == 0, 1.0, -1.0)], axis=1)
    centres[labels == 2] = 0.0
    x = rng.normal(size=(len(labels), d)) * 0.4
    x[:, :2] += centres
    return x


@pytest.mark.slow
def test_auto_still_picks_a_head_where_the_boundary_is_not_linear(wide_dm, tmp_path):
    cfg, dm = wide_dm("trainer.max_epochs=20", "model.selection.outer_fits=all",
                      "~model.candidates.linear",
                      "~model.candidates.mlp_small", "~model.candidates.sk_pca_logreg")
    inject(dm, xor(dm, np.random.default_rng(0), dm.y[:, 0].numpy().astype(int)))
    record, *_ = select_model(cfg, dm, dm.assignment, "sample", tmp_path)
    assert record.winners == ["mlp"] * 3
    assert record.final.model == "mlp"
    assert record.cv_scores["mlp"] < min(record.cv_scores["sk_logreg"],
                                            record.cv_scores["sk_logreg_image"])


@pytest.mark.slow
@pytest.mark.parametrize("experiment", ["regression", "multi_target"])
def test_sklearn_candidates_regress_every_target_and_predict_serves_them(
        experiment, make_cfg, design_descriptor, tmp_path):
    run_dir = tmp_path / "run"
    cfg = make_cfg(f"experiment={experiment}", f"data.descriptor={design_descriptor}", *AUTO,
                   *(f"~model.candidates.{h}" for h in HEADS))
    run_experiment(cfg, run_dir)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["selection"]["score"] == "mse"
    assert metrics["selection"]["final"]["checkpoint"].endswith(".npz")
    images = sorted((design_descriptor.parent / "images").glob("*.tif"))[:2]
    predict_cfg = predict_config(run_dir, images=[str(p) for p in images])
    table, _ = predict(predict_cfg)
    for target in metrics["targets"]:
        assert np.isfinite(table[target["name"]]).all()
