"""A run's TensorBoard entry holds its figures, hparams with metrics and the projector."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from sinterlab.study.training import run_experiment

#: whole runs end to end: `make test-slow` (CI runs it after `make test`)
pytestmark = pytest.mark.slow


def test_run_logs_figures_hparams_and_projector(make_cfg, tmp_path):
    cfg = make_cfg("protocol.folds=3", "protocol.seeds=[0]",
                   "evaluation.tensorboard.projector_patches=40")
    run_experiment(cfg, tmp_path)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    board = Path(metrics["tensorboard"])
    assert board.name.endswith("-run") and board.is_relative_to(tmp_path / "tensorboard")
    events = EventAccumulator(str(board), size_guidance={"images": 0}).Reload()
    images = events.Tags()["images"]
    assert {"figures/loss", "figures/roc", "figures/reliability", "figures/pca"} <= set(images)
    # the gallery: per class the out-of-fold image predicted most confidently right and the
    # one most confidently wrong (where the class has one), each with its map; the first four
    # maps also in TensorBoard
    gallery = metrics["gallery"]
    oof = pd.read_csv(tmp_path / "oof_predictions.csv")
    truth, predicted = (oof[f"burst_count_{c}"].astype(str) for c in ("true", "predicted"))
    expected = [(top.image, kind, top.burst_count_confidence)
                for label in ("50", "150", "250")
                for kind, right in (("right", True), ("wrong", False))
                for top in oof[(truth == label) & ((truth == predicted) == right)]
                .nlargest(1, "burst_count_confidence").itertuples()]
    assert [(r["image"], r["kind"]) for r in gallery] == [e[:2] for e in expected]
    assert [r["confidence"] for r in gallery] == pytest.approx([e[2] for e in expected])
    for r in gallery:
        assert (r["kind"] == "right") == (str(r["truth"]) == str(r["predicted"]))
        assert plt.imread(tmp_path / r["map"]).ndim == 3
    assert sorted(tag for tag in images if tag.startswith("maps/")) == sorted(
        f"maps/{Path(r['map']).stem}" for r in gallery[:4])
    report = (tmp_path / "report.md").read_text()
    assert "## Gallery" in report and gallery[0]["map"] in report
    assert events.PluginTagToContent("hparams")  # the HParams tab's session data
    assert "cv/head/image_accuracy" in events.Tags()["scalars"]
    config = (board / "projector_config.pbtxt").read_text()
    assert "patch_embeddings" in config and "sprite" in config
    [folder] = board.glob("*/patch_embeddings")
    metadata = (folder / "metadata.tsv").read_text().splitlines()
    assert metadata[0].split("\t") == ["label", "sample", "image", "subset"]
    assert len(metadata) == 41 and (folder / "sprite.png").stat().st_size > 0
    assert len((folder / "tensors.tsv").read_text().splitlines()) == 40
