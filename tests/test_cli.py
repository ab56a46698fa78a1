"""The console scripts as users run them: sinterlab-train, sinterlab-predict, bad input."""

import json
from pathlib import Path

import pandas as pd
import pytest
from omegaconf import OmegaConf

from sinterlab.cli.train import summary_lines
from sinterlab.errors import SinterlabError
from sinterlab.predict import predict
from tests.conftest import predict_config, run


def test_a_run_writes_the_contracted_metrics_and_files(trained_run):
    """The walking skeleton: a run end to end on tiny data writes what its users read."""
    metrics = json.loads((trained_run / "metrics.json").read_text())
    assert {"accuracy", "f1_macro", "auroc"} <= set(metrics["test"]["patch"])
    assert metrics["cv"]["protocol"] == "cv" and metrics["cv"]["folds"] == 3
    weights = metrics["backbone"]["weights"]
    assert weights["source"] == "random" and weights["transfer_learning"] is False
    assert metrics["split"]["kind"] == "sample" and metrics["split"]["leaky"] is False
    contrast = metrics["contrast"]["split"]
    assert contrast["kind"] == "patch" and contrast["leaky"] is True
    per_image = OmegaConf.load(trained_run / "config.yaml").preprocess.patches.per_image
    assert metrics["data"]["n_patches"] == 24 * per_image
    for name in ("report.md", "report.html", "images.csv", "patches.csv", "config.yaml",
                 "oof_predictions.csv", "oof_patches.csv", "oof_samples.csv"):
        assert (trained_run / name).stat().st_size > 0
    assert list((trained_run / "figures").glob("*.png"))
    assert list((trained_run / "checkpoints").glob("*.ckpt"))
    assert list((trained_run / "tensorboard").rglob("events.out.tfevents.*"))


@pytest.mark.slow
def test_predict_cli_gives_one_row_per_image(trained_run, tiny_descriptor, tmp_path):
    images = sorted((tiny_descriptor.parent / "images").glob("*.tif"))[:4]
    out = tmp_path / "predictions.csv"
    done = run("sinterlab-predict", f"run={trained_run}",
               f"images=[{','.join(str(p) for p in images)}]", f"out={out}",
               f"hydra.run.dir={tmp_path / 'hydra'}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    table = pd.read_csv(out)
    assert table["image"].tolist() == [str(p) for p in images]
    assert set(table["burst_count"].astype(str)) <= {"50", "150", "250"}
    assert table["burst_count_agreement"].between(0, 1).all()


def test_predict_from_a_folder_and_a_descriptor(trained_run, tiny_descriptor):
    by_folder = predict(predict_config(trained_run,
                                       images=str(tiny_descriptor.parent / "images")))
    by_csv = predict(predict_config(trained_run, descriptor=str(tiny_descriptor)))
    assert len(by_folder[0]) == len(by_csv[0]) == 24
    assert sorted(by_folder[0]["image"]) == sorted(by_csv[0]["image"])


def test_predict_refuses_other_features(trained_run, tiny_descriptor):
    base = predict_config(trained_run, descriptor=str(tiny_descriptor))
    cfg = OmegaConf.merge(base, {"preprocess": {"equalize": {"method": "clahe"}}})
    with pytest.raises(SinterlabError, match="preprocess differs"):
        predict(cfg)
    cfg = OmegaConf.merge(base, {"run": str(trained_run), "descriptor": str(tiny_descriptor),
                                 "backbone": {"name": "test_resnet"}})
    with pytest.raises(SinterlabError, match="backbone differs"):
        predict(cfg)


@pytest.mark.slow
def test_bad_descriptor_is_one_clear_line(tmp_path):
    done = run("sinterlab-train", f"data.descriptor={tmp_path / 'missing.csv'}",
               f"hydra.run.dir={tmp_path}", "backbone=random_tiny", cwd=tmp_path)
    assert done.returncode == 2
    error = [line for line in done.stderr.splitlines() if "error" in line]
    assert len(error) == 1 and "missing.csv" in error[0] and "data.descriptor" in error[0]


def test_summary_lines_give_every_model_with_its_interval(trained_run):
    metrics = json.loads((trained_run / "metrics.json").read_text())
    lines = summary_lines(metrics, Path("run"))
    head = metrics["cv"]["pooled"]["head"]["image"]["accuracy"]
    assert any(line.startswith("3-fold CV by sample") and "head" in line
               and f"{head['value']:.3f} [{head['low']:.3f}, {head['high']:.3f}]" in line
               for line in lines)
    assert any("3-fold CV by patch (LEAKY)" in line and "linear probe" in line for line in lines)
    assert any("NOT transfer learning" in line for line in lines)
