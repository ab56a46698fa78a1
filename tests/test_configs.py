"""Every config group option composes; what can be built on a CPU is instantiated."""

from pathlib import Path

import pytest
from hydra.utils import instantiate

from sinterlab.cli import CONF_DIR
from sinterlab.features.backbone import build_backbone
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


@pytest.mark.parametrize("option", ["random_tiny", "efficientnet_lite0_offline"])
def test_offline_backbones_build(option, tmp_path):
    cfg = compose_train([f"backbone={option}"], tmp_path)
    backbone = build_backbone(cfg.backbone)
    assert backbone.embedding_dim > 0
    assert backbone.weights.transfer_learning == bool(cfg.backbone.pretrained)


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
