"""The walking skeleton: sinterlab-train end to end on tiny data writes the contracted outputs."""

import json

import pytest

from sinterlab.study.training import run_experiment

#: whole runs end to end: `make test-slow` (CI runs it after `make test`)
pytestmark = pytest.mark.slow


def test_train_writes_metrics_json_with_contract_keys(make_cfg, tmp_path):
    cfg = make_cfg()
    metrics = run_experiment(cfg, tmp_path)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    for key in ("accuracy", "f1_macro", "auroc"):
        assert key in saved["test"]["patch"]
    assert saved["backbone"]["weights"]["source"] == "random"
    assert saved["backbone"]["weights"]["transfer_learning"] is False
    assert saved["split"]["kind"] == "sample" and saved["split"]["leaky"] is False
    assert saved["contrast"]["split"]["kind"] == "patch" and saved["contrast"]["split"]["leaky"]
    assert (tmp_path / "report.md").stat().st_size > 0
    assert list((tmp_path / "figures").glob("*.png"))
    assert list((tmp_path / "checkpoints").glob("*.ckpt"))
    assert metrics["data"]["n_patches"] == 24 * cfg.preprocess.patches.per_image
