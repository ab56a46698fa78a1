"""The candidate contract: every kind fits, predicts, saves and loads the same way; any
scikit-learn estimator is a candidate by its YAML alone, stored with skops (trusted types only);
the measures model and embeddings + measures are candidates model=auto can choose and
sinterlab-predict can serve."""

import json
import logging
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pandas as pd
import pydantic
import pytest
import skops.io as sio
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression
from sklearn.svm import SVC

from sinterlab.errors import SinterlabError
from sinterlab.explain.write import check_explainable
from sinterlab.manifest import KindName
from sinterlab.models.batches import GroupBatches
from sinterlab.models.calibration import ImageCalibration
from sinterlab.models.candidate import Candidate, FoldView, view_rows
from sinterlab.models.estimators import EstimatorEnsemble, UntrustedModel
from sinterlab.models.head import HeadEnsemble
from sinterlab.models.kinds import KINDS, candidate_class, load_candidate
from sinterlab.models.linear import LinearEnsemble, LinearModel
from sinterlab.predict import load_model, load_run_model, predict
from sinterlab.study.datamodule import SEMDataModule
from sinterlab.study.fit import check_losses, is_head
from sinterlab.study.selection import select_model
from sinterlab.study.training import run_experiment
from sinterlab.synth.generate import generate_dataset, load_preset
from tests.conftest import FAST, SHIPPED_CANDIDATES, compose_train, predict_config

TARGET = [{"name": "y", "kind": "classification", "classes": ["a", "b", "c"],
           "class_names": ["a", "b", "c"], "num_classes": 3}]
AUTO = ["model=auto", "protocol.folds=3", "protocol.seeds=[0]", "model.selection.inner_folds=2"]
SHIPPED = sorted(SHIPPED_CANDIDATES)


def view(n_images=30, per_image=4, d=6, k=3, seed=0) -> FoldView:
    """Images of three classes: the class shifts the embeddings and the first measure; one
    measure is NaN for some images (segmentation found one phase)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n_images)
    x = rng.normal(size=(n_images * per_image, d)) + np.repeat(labels, per_image)[:, None]
    measures = rng.normal(size=(n_images, k))
    measures[:, 0] += 2 * labels
    measures[::7, 1] = np.nan
    images = np.repeat([f"i{i}" for i in range(n_images)], per_image)
    return FoldView(x.astype(np.float32), np.repeat(labels, per_image)[:, None].astype(float),
                    images, np.repeat(measures, per_image, axis=0),
                    [np.arange(0, 80), np.arange(40, 120)], TARGET, 0)


def test_every_kind_implements_the_whole_contract():
    for kind, cls in KINDS.items():
        assert issubclass(cls, Candidate) and cls.kind == kind
        assert not getattr(cls, "__abstractmethods__", None), kind


@pytest.mark.parametrize(("kind", "module", "inputs"), [
    ("affine", LinearModel(1.0, None, 300, 1e-4), "image_mean"),
    ("sklearn", LogisticRegression(C=1.0, max_iter=500), "measures"),
    ("sklearn", SVC(C=1.0), "image_mean+measures"),
    ("sklearn", LogisticRegression(C=1.0, max_iter=500), "patch+measures")])
def test_fit_save_load_predict_through_the_contract(kind, module, inputs, tmp_path):
    v = view()
    [ensemble], _ = KINDS[kind].fit_folds([module], [inputs], v)
    assert ensemble.members == 2 and ensemble.per_group == 1 and ensemble.inputs == inputs
    described = ensemble.describe()
    assert described["kind"] == kind and described["inputs"] == inputs
    probs = ensemble.predict_members(v.x, images=v.images, measures=v.measures)[0]
    assert probs.shape == (2, 120, 3) and np.allclose(probs.sum(axis=2), 1)
    if inputs != "patch+measures":  # an image view: one output per image
        assert np.allclose(probs[:, 0], probs[:, 3])
    path = ensemble.save(tmp_path / f"m{ensemble.suffix}")
    again = load_candidate(path, kind)
    np.testing.assert_allclose(again.predict_members(v.x, images=v.images,
                                                     measures=v.measures)[0], probs, atol=1e-6)
    accuracy = (probs.mean(axis=0).argmax(axis=1) == v.y[:, 0]).mean()
    assert accuracy > 0.6


def test_an_image_view_is_the_images_mean_embedding_beside_its_measures():
    v = view()
    design, index = view_rows("image_mean+measures", v.x, v.images, v.measures)
    assert design.shape == (30, 6 + 3) and (index == np.repeat(np.arange(30), 4)).all()
    np.testing.assert_allclose(design[1, :6], v.x[4:8].mean(axis=0), rtol=1e-6)
    np.testing.assert_array_equal(design[1, 6:], v.measures[4])
    measures_only, _ = view_rows("measures", v.x, v.images, v.measures)
    assert measures_only.shape == (30, 3)
    with pytest.raises(ValueError, match="reads the images' measures"):
        view_rows("measures", v.x, v.images, None)


def test_each_fold_standardises_and_imputes_with_its_own_rows_only():
    v = view()
    [ensemble], _ = EstimatorEnsemble.fit_folds([LogisticRegression()], ["measures"], v)
    first = ensemble.fitted[0][0]
    imputer, scaler = first.steps[0][1], first.steps[1][1]
    own = v.measures[v.rows[0]][::4]  # fold 0's images
    np.testing.assert_allclose(imputer.statistics_, np.nanmedian(own, axis=0))
    filled = np.where(np.isnan(own), imputer.statistics_, own)
    np.testing.assert_allclose(scaler.mean_, filled.mean(axis=0))


class Evil(BaseEstimator, ClassifierMixin):
    """A type from outside scikit-learn, NumPy and SciPy."""

    def fit(self, x, y):
        self.classes_ = np.unique(y)
        return self


def test_a_stored_model_holding_another_type_is_refused_before_loading(tmp_path):
    [ensemble], _ = EstimatorEnsemble.fit_folds([LogisticRegression()], ["measures"], view())
    ensemble.fitted[0][0] = Evil().fit(np.zeros((2, 1)), [0, 1])
    path = ensemble.save(tmp_path / "m.skops")
    evil = f"{Evil.__module__}.Evil"
    assert evil in sio.get_untrusted_types(file=path)
    with pytest.raises(UntrustedModel, match=evil):
        EstimatorEnsemble.load(path)
    with pytest.raises(SinterlabError) as err:
        load_model(path, "sklearn")
    assert "checkpoint refused" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(SinterlabError, match="kind 'pickle'"):
        load_candidate(path, "pickle")


def test_the_kind_follows_the_target_and_anything_else_is_one_line(tmp_path):
    def module(target):
        return OmegaConf.create({"_target_": target})
    assert candidate_class(module("sinterlab.models.head.HeadEnsemble")) is HeadEnsemble
    assert candidate_class(module("sinterlab.models.linear.LinearModel")) is LinearEnsemble
    assert candidate_class(module("sklearn.svm.SVC")) is EstimatorEnsemble
    with pytest.raises(SinterlabError, match="neither a LightningModule head nor a scikit-learn"):
        candidate_class(module("collections.OrderedDict"), "odd")
    for option in ("sk_forest", "sk_svm", "sk_measures", "sk_image_measures"):
        cfg = compose_train([f"model={option}"], tmp_path)
        assert candidate_class(cfg.model.module) is EstimatorEnsemble


def test_a_recorded_kind_is_a_name_looked_up_never_imported(tmp_path):
    """The manifest records a kind as a plain name; a name no registered kind has is refused
    in one line, and one that is not a name (a dotted path) never validates."""
    with pytest.raises(SinterlabError, match="kind 'evil', which this sinterlab does not know"):
        load_candidate(tmp_path / "final.skops", "evil")
    with pytest.raises(pydantic.ValidationError):
        pydantic.TypeAdapter(KindName).validate_python("os.system")
    assert set(KINDS) >= {"head", "affine", "sklearn"}


# -- a new kind: one class -------------------------------------------------------------------
class PriorModel(BaseEstimator):
    """A model of this test's own: each class's share of the training images (reads nothing
    else). A scikit-learn estimator, so the generic kind would take it too."""

    def __init__(self, smoothing: float = 1.0):
        self.smoothing = smoothing


@pytest.fixture
def prior_kind():
    """A new kind of candidate: one Candidate subclass, defined here and nothing else edited
    (it leaves the registry with the test)."""

    class PriorEnsemble(Candidate):
        """One member per group: per target, the class shares of the group's images."""

        kind = "test_prior"
        suffix = ".npz"
        precedence = 1  # one class: outranks the kind of every scikit-learn estimator

        @classmethod
        def builds(cls, target: type) -> bool:
            return target is PriorModel

        def __init__(self, targets: list[dict], priors: np.ndarray, inputs: str):
            self.targets, self.priors, self.inputs = targets, priors, inputs
            self.in_features = 0

        @classmethod
        def fit_folds(cls, modules: list[PriorModel], inputs: list[str], view: FoldView):
            """As :func:`sinterlab.study.fit.fit_models` calls every non-Lightning kind."""
            classes = view.targets[0]["num_classes"]
            out = []
            for module, read in zip(modules, inputs, strict=True):
                counts = np.stack([np.bincount(view.y[rows, 0].astype(int), minlength=classes)
                                   + module.smoothing for rows in view.rows])
                out.append(cls(view.targets, counts / counts.sum(axis=1, keepdims=True), read))
            return out, 0.0

        @property
        def members(self) -> int:
            return len(self.priors)

        @property
        def per_group(self) -> int:
            return 1

        def predict_members(self, x, batch_size=4096, calibrated=True, images=None,
                            measures=None):
            return [np.repeat(self.priors[:, None, :], len(x), axis=1)]

        def temperatures(self):
            return [[1.0] * self.members]

        def save(self, path: Path) -> Path:
            np.savez(path, priors=self.priors, targets=json.dumps(self.targets),
                     inputs=self.inputs)
            return path

        @classmethod
        def load(cls, path: Path):
            with np.load(path, allow_pickle=False) as saved:
                return cls(json.loads(str(saved["targets"])), saved["priors"],
                           str(saved["inputs"]))

        def describe(self) -> dict:
            return {"kind": self.kind, "inputs": self.inputs, "members": self.members,
                    "params": {}}

    yield PriorEnsemble
    KINDS.pop(PriorEnsemble.kind)


def test_a_new_kind_is_one_candidate_class(prior_kind, tmp_path):
    assert KINDS["test_prior"] is prior_kind
    module = OmegaConf.create({"_target_": f"{__name__}.PriorModel", "smoothing": 0.5})
    assert candidate_class(module, "prior") is prior_kind  # not the scikit-learn kind
    assert candidate_class(OmegaConf.create({"_target_": "sklearn.svm.SVC"})) \
        is EstimatorEnsemble
    v = view()
    [ensemble], _ = candidate_class(module).fit_folds([instantiate(module)], ["image_mean"], v)
    probs = ensemble.predict_members(v.x, images=v.images)[0]
    assert probs.shape == (2, 120, 3) and np.allclose(probs.sum(axis=2), 1)
    path = ensemble.save(tmp_path / f"m{ensemble.suffix}")
    again = load_candidate(path, "test_prior")
    assert type(again) is prior_kind and again.describe()["kind"] == "test_prior"
    np.testing.assert_array_equal(again.predict_members(v.x)[0], probs)
    with pytest.raises(TypeError, match="'test_prior' is .*PriorEnsemble already"):
        type("Other", (prior_kind,), {"kind": "test_prior"})


def test_two_kinds_building_one_class_alike_are_one_line(prior_kind):
    rival = type("RivalPrior", (prior_kind,), {"kind": "test_rival"})
    try:
        with pytest.raises(SinterlabError, match=r"built by the kinds \['test_prior', "
                                                 r"'test_rival'\] alike") as err:
            candidate_class(OmegaConf.create({"_target_": f"{__name__}.PriorModel"}), "p")
        assert "\n" not in str(err.value)
    finally:
        KINDS.pop(rival.kind)


class SGDHead(HeadEnsemble):
    """A Lightning head of this test's own: the head's members, trained by plain SGD."""

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


def test_a_new_lightning_head_is_one_class_its_config_names(tmp_path):
    cfg = compose_train(["model=mlp", f"model.module._target_={__name__}.SGDHead",
                         "model.module.hidden=[8]", "model.module.batch_norm=false"], tmp_path)
    assert candidate_class(cfg.model.module, cfg.model.name) is HeadEnsemble
    assert is_head(cfg.model)  # trained by fit_head, as every head
    v = view()
    targets = [TARGET[0] | {"loss_weight": 1.0, "class_weights": None}]
    head = instantiate(cfg.model.module)(in_features=6, targets=targets, lr=0.1, max_epochs=2,
                                         groups=2, seeds=[0])  # as fit_head builds it
    assert type(head) is SGDHead
    pl.seed_everything(0, verbose=False)
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, max_epochs=2)
    x, y = torch.from_numpy(v.x), torch.from_numpy(v.y).float()
    trainer.fit(head, GroupBatches(x, y, v.rows, 32))
    assert isinstance(trainer.optimizers[0], torch.optim.SGD)
    probs = head.eval().predict_members(x)[0]
    assert probs.shape == (2, 120, 3) and np.allclose(probs.sum(axis=2), 1)
    path = head.save(tmp_path / f"m{head.suffix}")
    again = load_candidate(path, head.kind)
    assert head.kind == "head" and isinstance(again, HeadEnsemble)
    np.testing.assert_allclose(again.predict_members(x)[0], probs, atol=1e-6)


def test_auto_leaves_out_what_cannot_learn_the_target_or_has_no_measures(make_cfg):
    from sinterlab.data.descriptor import Target

    values = make_cfg(*AUTO, "+model@model.candidates.sk_forest=sk_forest",
                      "measures.enabled=false")
    check_losses(values, [Target("bc", "regression", ())])
    assert "sk_forest" not in values.model.candidates  # a classifier; the target is a value
    assert "sk_measures" not in values.model.candidates  # no measures in this run
    assert "sk_logreg" in values.model.candidates  # the affine model regresses too
    alone = make_cfg("model=sk_measures", "measures.enabled=false")
    with pytest.raises(SinterlabError, match="reads the images' measures"):
        check_losses(alone, [Target("bc", "classification", ("50", "150"))])


# -- whole runs ------------------------------------------------------------------------------
def write_yaml(folder: Path, name: str, text: str) -> None:
    (folder / "model").mkdir(parents=True, exist_ok=True)
    (folder / "model" / f"{name}.yaml").write_text(text)


@pytest.mark.slow
def test_a_forest_and_an_svm_from_yaml_alone_compete_and_the_winner_is_served(
        tiny_descriptor, shared_cache, tmp_path):
    """No Python: two YAML files in a config folder of the user's, composed in."""
    conf = tmp_path / "my_conf"
    write_yaml(conf, "my_forest", "name: my_forest\ninputs: image_mean\nmodule:\n"
               "  _target_: sklearn.ensemble.ExtraTreesClassifier\n  n_estimators: 50\n"
               "grid:\n  module.min_samples_leaf: [1, 2]\n")
    write_yaml(conf, "my_svm", "name: my_svm\ninputs: image_mean+measures\nmodule:\n"
               "  _target_: sklearn.svm.SVC\n  C: 1.0\ngrid:\n  module.C: [0.1, 1.0]\n")
    run_dir = tmp_path / "run"
    cfg = compose_train([*FAST, f"data.descriptor={tiny_descriptor}",
                         f"features.cache_dir={shared_cache}", *AUTO,
                         f"measures.cache_dir={tmp_path / 'measures'}",
                         f"hydra.searchpath=[file://{conf}]",
                         "+model@model.candidates.my_forest=my_forest",
                         "+model@model.candidates.my_svm=my_svm",
                         # one of them served alone (an ensemble's serving: test_ensemble.py)
                         "model.selection.ensemble.enabled=false",
                         *(f"~model.candidates.{name}" for name in SHIPPED)], run_dir)
    run_experiment(cfg, run_dir)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    selection = metrics["selection"]
    assert selection["candidates"] == ["my_forest", "my_svm"]
    assert {p["candidate"] for p in selection["points"].values()} == {"my_forest", "my_svm"}
    final = selection["final"]
    assert final["kind"] == "sklearn" and final["checkpoint"] == "checkpoints/final.skops"
    images = sorted((tiny_descriptor.parent / "images").glob("*.tif"))[:2]
    predict_cfg = predict_config(run_dir, images=[str(p) for p in images])
    model = load_run_model(predict_cfg)
    assert isinstance(model.head, EstimatorEnsemble)
    assert model.head.inputs == cfg.model.candidates[final["model"]].inputs
    table, _ = predict(predict_cfg, model)
    assert table["error"].eq("").all()
    assert table["model"].str.startswith(f"{final['point']}: mean of 1 refitted").all()
    # the final model's image calibration as recorded (its map, or the raw probabilities where
    # most CV folds' maps did not beat them held out)
    served = ImageCalibration.from_dict(final["image_calibration"][0]).describe()
    assert table["burst_count_calibration"].eq(served).all()


@pytest.fixture(scope="module")
def new_images(tmp_path_factory) -> Path:
    """Micrographs no run has seen (another seed of the generator)."""
    return generate_dataset(load_preset("tiny", seed=7, design__slides=1, design__sets=1),
                            tmp_path_factory.mktemp("new_images"))


@pytest.mark.slow
def test_the_measures_model_is_served_on_new_images(make_cfg, new_images, tmp_path, caplog):
    run_dir, cache = tmp_path / "run", tmp_path / "measures"
    run_experiment(make_cfg("model=sk_measures", f"measures.cache_dir={cache}"), run_dir)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["training"]["kind"] == "sklearn"
    assert metrics["training"]["inputs"] == "measures"
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["kind"] == "sklearn"
    assert manifest["measures"]["names"] == metrics["measures"]["measures"]
    cached = set(cache.rglob("*.json"))
    images = sorted((new_images.parent / "images").glob("*.tif"))
    cfg = predict_config(run_dir, images=[str(p) for p in images])
    table, _ = predict(cfg)
    assert table["error"].eq("").all() and len(table) == len(images)
    assert table["burst_count"].isin(["50", "150", "250"]).all()
    added = set(cache.rglob("*.json")) - cached
    assert len(added) == len(images)  # measured with the run's settings, into its cache
    with caplog.at_level(logging.INFO, logger="sinterlab.measures.compute"):
        again, _ = predict(cfg)  # the second time from the cache
    assert f"{len(images)} images, {len(images)} from cache" in caplog.text
    pd.testing.assert_frame_equal(table, again)
    with pytest.raises(SinterlabError, match="reads the images' measures"):
        check_explainable(load_run_model(cfg))


@pytest.mark.slow
def test_auto_chooses_the_measures_model_where_the_embeddings_say_nothing(make_cfg, tmp_path):
    # the single candidates (the ensemble of the measures model and noise may edge it out)
    cfg = make_cfg(*AUTO, "model.selection.outer_fits=all",
                   "model.selection.ensemble.enabled=false",
                   *(f"~model.candidates.{name}" for name in SHIPPED
                     if name not in ("sk_logreg_image", "sk_measures", "sk_image_measures")))
    dm = SEMDataModule(cfg)
    dm.setup()
    dm.x = torch.randn(dm.x.shape, generator=torch.Generator().manual_seed(0))  # noise only
    record, *_ = select_model(cfg, dm, dm.assignment, "sample", tmp_path)
    assert record.final.model == "sk_measures" and record.final.kind == "sklearn"
    assert record.final.inputs == "measures"
    assert set(record.winners) <= {"sk_measures", "sk_image_measures"}
    assert record.cv_scores["sk_measures"] < record.cv_scores["sk_logreg_image"]
