"""Every config group option composes; what can be built on a CPU is instantiated."""

from pathlib import Path

import pytest
from hydra._internal.sources_registry import SourcesRegistry
from hydra.utils import get_class, instantiate
from omegaconf import OmegaConf

from sinterlab.cli import CONF_DIR
from sinterlab.features.backbone import TARGET, Backbone
from tests.conftest import compose_train

GROUPS = ["data", "preprocess", "backbone", "features", "model", "split", "protocol", "trainer",
          "logger", "evaluation", "paths", "debug", "hparams_search"]


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


@pytest.mark.parametrize(("group", "option"),
                         [(g, o) for g in GROUPS for o in options(g)])
def test_every_group_option_composes(group, option, tmp_path):
    cfg = compose_train([f"{group}={option}"], tmp_path)
    assert cfg.task in ("classification", "regression")
    if group == "trainer" and cfg.trainer.accelerator == "cpu":
        assert instantiate(cfg.trainer).max_epochs == cfg.trainer.max_epochs
    if group == "logger":
        for spec in cfg.logger.values():
            assert instantiate(spec, save_dir=str(tmp_path)).save_dir


@pytest.mark.parametrize("option", options("backbone"))
def test_every_backbone_names_the_factory(option, tmp_path):
    assert compose_train([f"backbone={option}"], tmp_path).backbone._target_ == TARGET


@pytest.mark.parametrize("option", ["random_tiny", "efficientnet_lite0_offline"])
def test_offline_backbones_instantiate(option, tmp_path):
    cfg = compose_train([f"backbone={option}"], tmp_path)
    backbone = instantiate(cfg.backbone)
    assert isinstance(backbone, Backbone) and backbone.embedding_dim > 0
    assert backbone.weights.transfer_learning == bool(cfg.backbone.pretrained)
    assert backbone.name == cfg.backbone.name
    assert backbone.channels_last == cfg.backbone.channels_last
    assert backbone.cam_layer == cfg.backbone.cam_layer


HEADS = [o for o in options("model") if o != "auto" and not o.startswith("sk_")]


@pytest.mark.parametrize("option", HEADS)
def test_every_head_config_builds_its_module_and_optimizer(option, tmp_path):
    module = compose_train([f"model={option}"], tmp_path).model.module
    head = instantiate(module)(in_features=8, targets=[{
        "name": "t", "kind": "classification", "loss_weight": 1.0, "num_classes": 3,
        "class_weights": None, "values": [50.0, 100.0, 150.0]}])
    assert head.hparams.optimizer == module.optimizer._target_  # a plain string in checkpoints
    optimizer = head.configure_optimizers()
    assert type(optimizer) is get_class(module.optimizer._target_)
    assert optimizer.defaults["lr"] == module.lr
    assert optimizer.defaults["weight_decay"] == module.weight_decay


def test_slurm_launcher_and_optuna_sweeper_compose(tmp_path):
    cfg = compose_train(["hydra/launcher=slurm", "hparams_search=optuna"], tmp_path)
    assert "submitit" in cfg.hydra.launcher._target_.lower()
    assert "optuna" in cfg.hydra.sweeper._target_.lower()
    assert set(cfg.hydra.sweeper.params) == {"model.module.hidden", "model.module.dropout",
                                             "model.module.weight_decay", "model.module.lr"}


def test_outputs_never_land_in_the_source_tree(tmp_path):
    cfg = compose_train([], tmp_path)
    assert "/logs/train/runs/" in cfg.hydra.run.dir
    assert "/logs/train/multiruns/" in cfg.hydra.sweep.dir
    assert Path(cfg.paths.cache_dir).name == "embeddings"


def test_the_suites_config_files_parsed_once_compose_what_hydra_composes(tmp_path, monkeypatch):
    """The suite parses each config file once (conftest's parse_config_files_once): with the
    files parsed again, as Hydra does, the composition is the same, Hydra's part included."""
    overrides = ["experiment=five_class", "model=auto", "hydra/launcher=slurm",
                 "hparams_search=optuna", "protocol.folds=4"]
    kept = OmegaConf.to_yaml(compose_train(overrides, tmp_path))
    for scheme in ("file", "pkg"):
        source = SourcesRegistry.instance().resolve(scheme)
        assert source.load_config.parsed  # in use in this process
        monkeypatch.setattr(source, "load_config", source.load_config.unparsed)
    assert OmegaConf.to_yaml(compose_train(overrides, tmp_path)) == kept
