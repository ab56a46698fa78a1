"""The MLP head: overfits separable data, recovers a linear target, trains two targets, repeats."""

import json

import lightning.pytorch as pl
import numpy as np
import torch

from sinterlab.models.batches import TensorBatches
from sinterlab.models.head import ProcessParameterHead
from sinterlab.training import run_experiment


def train(targets, x, y, epochs, dropout=0.0):
    pl.seed_everything(0)
    head = ProcessParameterHead(x.shape[1], targets, [32, 16, 8], dropout, True, "adam", 1e-2,
                                0.0)
    trainer = pl.Trainer(max_epochs=epochs, accelerator="cpu", logger=False,
                         enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, deterministic=True)
    trainer.fit(head, TensorBatches(x, y, 32, shuffle=True))
    return head


def test_overfits_a_separable_set():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(96, 12, generator=gen)
    y = (x[:, 0] + x[:, 1] > 0).float()[:, None]
    head = train([{"name": "c", "kind": "classification", "num_classes": 2}], x, y, 60)
    probs = head.predict_outputs(x)[0]
    assert (probs.argmax(axis=1) == y[:, 0].numpy()).mean() == 1.0


def test_regression_recovers_a_linear_target_in_its_units():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(256, 8, generator=gen)
    value = 150 + 40 * x[:, 0] - 25 * x[:, 3]  # burst-count-like scale
    spec = {"name": "burst_count", "kind": "regression", "mean": float(value.mean()),
            "std": float(value.std())}
    head = train([spec], x, value[:, None], 80)
    pred = head.predict_outputs(x)[0]
    r2 = 1 - np.sum((pred - value.numpy()) ** 2) / np.sum((value.numpy() - value.mean().item())
                                                          ** 2)
    assert r2 > 0.95
    assert abs(pred.mean() - 150) < 10  # reported in the parameter's units


def test_multi_target_trains_both_outputs():
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(192, 10, generator=gen)
    cls = (x[:, 0] > 0).float()
    dc = 50 + 20 * x[:, 1]
    targets = [{"name": "burst_count", "kind": "classification", "num_classes": 2},
               {"name": "duty_cycle", "kind": "regression", "mean": 50.0, "std": 20.0,
                "loss_weight": 0.5}]
    head = train(targets, x, torch.stack([cls, dc], dim=1), 60)
    probs, pred = head.predict_outputs(x)
    assert (probs.argmax(axis=1) == cls.numpy()).mean() > 0.95
    assert np.corrcoef(pred, dc.numpy())[0, 1] > 0.95
    assert head.history[0]["train_loss"] > head.history[-1]["train_loss"]


def _stable(metrics: dict) -> dict:
    """metrics.json without wall-clock figures and paths, which differ between runs."""
    metrics = json.loads(json.dumps(metrics, default=str))
    for block in (metrics, metrics.get("contrast") or {}):
        block.get("training", {}).pop("wall_s", None)
        block.get("training", {}).pop("s_per_epoch", None)
    metrics["cache"] = None
    return metrics


def test_same_seed_gives_identical_metrics(make_cfg, tmp_path):
    first = run_experiment(make_cfg("evaluation.contrast.enabled=false"), tmp_path / "a")
    second = run_experiment(make_cfg("evaluation.contrast.enabled=false"), tmp_path / "b")
    assert _stable(first)["test"] == _stable(second)["test"]
    assert _stable(first)["training"]["history"] == _stable(second)["training"]["history"]
