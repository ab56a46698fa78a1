"""Every kind of target end to end, with every optional product on (gallery, TensorBoard, HTML):
a finished run keeps its results whatever a figure or a label spelling does, and predict
serves it."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from omegaconf import open_dict

from sinterlab.evaluation.results import ClassGroups
from sinterlab.predict import predict
from sinterlab.study.training import run_experiment
from tests.conftest import predict_config

#: whole runs end to end: `make test-slow` (CI runs it after `make test`)
pytestmark = pytest.mark.slow

#: burst counts renamed as a lab might name compositions: spaces, non-ASCII, a slash
NAMES = {50: "Cu–Ni 50 µm", 150: "CuO/Cu ratio é", 250: "pure Cu 250"}


def named_descriptor(tiny_descriptor, tmp_path):
    table = pd.read_csv(tiny_descriptor)
    table["composition"] = table["burst_count"].map(NAMES)
    table["image"] = [str(tiny_descriptor.parent / p) for p in table["image"]]
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "named.csv"
    table.to_csv(path, index=False)
    return path


def predict_cfg(run_dir, images):
    return predict_config(run_dir, images=[str(p) for p in images], suffixes=[".tif"])


def all_stages_on(cfg):
    with open_dict(cfg):
        cfg.evaluation.gallery.enabled = True
        cfg.evaluation.tensorboard.figures = True
    return cfg


ORDER = "+data.order.composition=['Cu–Ni 50 µm','CuO/Cu ratio é','pure Cu 250']"


@pytest.mark.parametrize("target, task, data", [
    ("composition", "classification", "tiny_descriptor"),
    pytest.param("composition", "classification", "ordered", marks=pytest.mark.slow),
    pytest.param("burst_count", "classification", "tiny_descriptor", marks=pytest.mark.slow),
    pytest.param("burst_count", "regression", "tiny_descriptor", marks=pytest.mark.slow),
    ("[burst_count,duty_cycle]", "classification", "design_descriptor"),
], ids=["named", "ordered names", "numeric", "regression", "multi-target"])
def test_every_target_kind_completes_with_every_optional_stage_and_predict_serves_it(
        make_cfg, tmp_path, request, target, task, data):
    ordered = data == "ordered"
    source = request.getfixturevalue("tiny_descriptor" if ordered else data)
    descriptor = named_descriptor(source, tmp_path / "data")
    run_dir = tmp_path / "run"
    cfg = all_stages_on(make_cfg(f"data.descriptor={descriptor}", f"data.target={target}",
                                 f"task={task}", "protocol.folds=3", "protocol.seeds=[0]",
                                 *([ORDER] if ordered else [])))
    with open_dict(cfg):
        cfg.paths.output_dir = str(run_dir)
    metrics = run_experiment(cfg, run_dir)
    assert metrics.skipped == {}
    assert json.loads((run_dir / "metrics.json").read_text())["skipped"] == {}
    assert (run_dir / "report.html").is_file()
    assert metrics.gallery, "the gallery drew no map"
    assert all((run_dir / r.map).is_file() for r in metrics.gallery)
    assert metrics.tensorboard and str(run_dir) in metrics.tensorboard
    if ordered:  # errors counted in levels of the named grades
        assert metrics.first_target.error_unit == "levels"
        assert metrics.cv.cell("head", "image", "mae") is not None
    if target == "composition":
        assert {r.truth for r in metrics.gallery} <= set(NAMES.values())
        assert "Cu–Ni 50 µm" in (run_dir / "report.md").read_text()
    images = sorted((source.parent / "images").glob("*.tif"))[:2]
    table, _ = predict(predict_cfg(run_dir, images))
    assert (table["error"] == "").all() and len(table) == 2
    first = target.strip("[]").split(",")[0]
    if task == "classification":
        known = set(NAMES.values()) if first == "composition" else {
            "50", "100", "150", "200", "250"}
        assert set(table[first].astype(str)) <= known
    else:
        assert table[first].between(0, 400).all()


#: every optional product of a run, and where the run calls it
OPTIONAL = {"gallery": "sinterlab.study.record.write_gallery",
            "tensorboard": "sinterlab.study.record.log_run",
            "report.html": "sinterlab.study.record.write_html_report",
            "figure roc": "sinterlab.study.record.plot_roc"}


def test_failing_optional_stages_cost_nothing_computed(make_cfg, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise ValueError("could not convert string to float: 'Cu'")
    for where in OPTIONAL.values():
        monkeypatch.setattr(where, broken)
    cfg = all_stages_on(make_cfg("protocol.folds=3", "protocol.seeds=[0]"))
    metrics = run_experiment(cfg, tmp_path)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert sorted(saved["skipped"]) == sorted(OPTIONAL)
    assert all("could not convert" in reason for reason in saved["skipped"].values())
    assert saved["cv"]["pooled"]["head"]["image"]["accuracy"]["value"] is not None
    assert (tmp_path / "oof_predictions.csv").is_file()
    assert (tmp_path / metrics.training.checkpoint).is_file()
    assert (tmp_path / "figures" / "loss.png").is_file()  # the other figures are drawn
    assert not (tmp_path / "report.html").exists()
    report = (tmp_path / "report.md").read_text()
    assert "## Headline" in report
    for stage in OPTIONAL:
        assert f"{stage} skipped: ValueError" in report


def test_a_small_class_kept_on_request_is_warned_about_and_counted(make_cfg, tiny_descriptor,
                                                                 tmp_path):
    table = pd.read_csv(tiny_descriptor)
    table["image"] = [str(tiny_descriptor.parent / p) for p in table["image"]]
    lone = table["sample_id"] == table.loc[table["burst_count"] == 250, "sample_id"].iloc[0]
    table = table[(table["burst_count"] != 250) | lone]  # 250 BC: one sample left
    path = tmp_path / "small.csv"
    table.to_csv(path, index=False)
    cfg = make_cfg(f"data.descriptor={path}", "protocol.folds=3", "protocol.seeds=[0]",
                   "split.allow_small_classes=true")
    metrics = run_experiment(cfg, tmp_path / "run")
    assert metrics.data.small_classes == ["250"]
    assert metrics.data.class_groups["250"] == ClassGroups(groups=1, images=int(lone.sum()))
    report = (tmp_path / "run" / "report.md").read_text()
    headline = report.split("## ")[0]
    assert "class(es) 250 have too few samples" in headline
    assert "| 250 | 1 |" in report
