"""Every file in conf/experiment runs end to end in fast mode on tiny data."""

import json

import pytest

from sinterlab.cli import CONF_DIR
from sinterlab.study.training import run_experiment

#: whole runs end to end: `make test-slow` (CI runs it after `make test`)
pytestmark = pytest.mark.slow

EXPERIMENTS = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_runs_in_fast_mode(experiment, make_cfg, design_descriptor, tmp_path):
    cfg = make_cfg(f"experiment={experiment}", "backbone=random_tiny",
                   f"data.descriptor={design_descriptor}", "preprocess.patches.size=48",
                   "preprocess.patches.per_image=3")
    metrics = run_experiment(cfg, tmp_path)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["experiment"] == experiment
    patch = saved["test"]["patch"]
    if cfg.task == "classification":
        assert {"accuracy", "f1_macro", "auroc"} <= set(patch)
        classes = cfg.data.classes
        assert classes is None or len(saved["targets"][0]["classes"]) == len(classes)
    elif len(saved["targets"]) == 1:
        assert {"mae", "r2"} <= set(patch)
    else:
        assert set(patch) == {t["name"] for t in saved["targets"]}
    assert "not transfer learning" in (tmp_path / "report.md").read_text()
    assert metrics.contrast.split.leaky != metrics.split.leaky
    if experiment == "five_class":  # an ordered target: errors in BC beside the accuracy
        head = saved["cv"]["pooled"]["head"]["image"]
        assert head["mae"]["low"] <= head["mae"]["value"] <= head["mae"]["high"]
        assert head["within_one"]["value"] >= head["accuracy"]["value"]
        assert head["mae"]["value"] <= 200  # at most the spread of 50..250 BC
        report = (tmp_path / "report.md").read_text()
        assert "In burst_count terms: mean absolute error" in report
        assert "within one level (±50 BC)" in report and "## Ordered target: errors in BC" in report
        assert (tmp_path / "figures" / "expected_by_level.png").is_file()
