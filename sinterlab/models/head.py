"""LightningModule of the MLP head: classification, regression, or several parameters at once.

A shared trunk feeds one linear output per target. Classification uses cross-entropy (optional
class weights); regression standardizes the target inside and reports in the parameter's units;
several targets sum their losses with per-target weights. A step costs a few milliseconds on a CPU,
so Lightning's per-step machinery would show: the head optimizes manually (no closure), and
losses are accumulated on the module and logged once per epoch.
"""

from __future__ import annotations

import lightning.pytorch as pl
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassAUROC, MulticlassF1Score
from torchmetrics.regression import MeanAbsoluteError, MeanSquaredError, R2Score

from sinterlab.models.mlp import mlp_trunk


def _metrics(target: dict) -> MetricCollection:
    if target["kind"] == "classification":
        c = target["num_classes"]
        return MetricCollection({"accuracy": MulticlassAccuracy(c, average="micro"),
                                 "f1_macro": MulticlassF1Score(c, average="macro"),
                                 "auroc": MulticlassAUROC(c, average="macro")})
    return MetricCollection({"mae": MeanAbsoluteError(), "rmse": MeanSquaredError(squared=False),
                             "r2": R2Score()})


class ProcessParameterHead(pl.LightningModule):
    """``targets``: dicts with name, kind, and num_classes | mean/std, loss_weight,
    class_weights (list or None)."""

    def __init__(self, in_features: int, targets: list[dict], hidden: list[int], dropout: float,
                 batch_norm: bool, optimizer: str, lr: float, weight_decay: float,
                 scheduler: dict | None = None, max_epochs: int = 1):
        super().__init__()
        self.save_hyperparameters()
        self.targets = targets
        self.trunk = mlp_trunk(in_features, hidden, dropout, batch_norm)
        width = hidden[-1] if hidden else in_features
        self.outputs = nn.ModuleList(
            nn.Linear(width, t["num_classes"] if t["kind"] == "classification" else 1)
            for t in targets)
        for i, t in enumerate(targets):
            weights = t.get("class_weights")
            self.register_buffer(f"class_weights_{i}",
                                 torch.tensor(weights, dtype=torch.float32) if weights else None)
        self.val_metrics = nn.ModuleList(_metrics(t).clone(prefix=f"val/{t['name']}/")
                                         for t in targets)
        self.test_metrics = nn.ModuleList(_metrics(t).clone(prefix=f"test/{t['name']}/")
                                          for t in targets)
        self.automatic_optimization = False
        self.history: list[dict] = []
        self._sums: dict[str, list] = {"train": [0.0, 0], "val": [0.0, 0]}

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = self.trunk(x)
        return [out(features) for out in self.outputs]

    def _loss(self, outputs: list[torch.Tensor], y: torch.Tensor) -> torch.Tensor:
        total = 0.0
        for i, (t, out) in enumerate(zip(self.targets, outputs, strict=True)):
            if t["kind"] == "classification":
                loss = F.cross_entropy(out, y[:, i].long(),
                                       weight=getattr(self, f"class_weights_{i}"))
            else:
                loss = F.mse_loss(out.squeeze(1), (y[:, i] - t["mean"]) / t["std"])
            total = total + t.get("loss_weight", 1.0) * loss
        return total

    def _accumulate(self, stage: str, loss: torch.Tensor, n: int) -> None:
        """Sum on the device; read back once per epoch (no host sync per step)."""
        self._sums[stage][0] = self._sums[stage][0] + loss.detach() * n
        self._sums[stage][1] += n

    def training_step(self, batch, batch_idx):
        x, y = batch
        optimizer = self.optimizers()  # the Lightning wrapper counts global steps
        loss = self._loss(self(x), y)
        optimizer.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        optimizer.step()
        self._accumulate("train", loss, len(x))
        return loss

    def _update_metrics(self, collections: nn.ModuleList, outputs, y) -> None:
        for i, (t, out, metrics) in enumerate(zip(self.targets, outputs, collections, strict=True)):
            if t["kind"] == "classification":
                metrics.update(out.softmax(dim=1), y[:, i].long())
            else:
                metrics.update(out.squeeze(1) * t["std"] + t["mean"], y[:, i])

    def validation_step(self, batch, batch_idx):
        x, y = batch
        outputs = self(x)
        self._accumulate("val", self._loss(outputs, y), len(x))
        self._update_metrics(self.val_metrics, outputs, y)

    def test_step(self, batch, batch_idx):
        x, y = batch
        outputs = self(x)
        self.log("test/loss", self._loss(outputs, y), on_epoch=True, batch_size=len(x))
        self._update_metrics(self.test_metrics, outputs, y)

    def _epoch_loss(self, stage: str) -> float:
        total, n = self._sums[stage]
        self._sums[stage] = [0.0, 0]
        return float(total) / max(n, 1)

    def on_train_epoch_end(self):
        loss = self._epoch_loss("train")
        self.log("train/loss", loss)
        # validation (when due) runs before this hook: complete its row rather than add one
        if self.history and self.history[-1]["epoch"] == self.current_epoch:
            self.history[-1]["train_loss"] = loss
        else:
            self.history.append({"epoch": self.current_epoch, "train_loss": loss})
        scheduler = self.lr_schedulers()
        if scheduler is not None and not isinstance(
                scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            scheduler.step()

    def on_validation_epoch_end(self):
        loss = self._epoch_loss("val")
        self.log("val/loss", loss)
        scheduler = self.lr_schedulers()
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau) and \
                not self.trainer.sanity_checking:
            scheduler.step(loss)
        for metrics in self.val_metrics:
            self.log_dict(_finite(metrics.compute()))
            metrics.reset()
        if not self.trainer.sanity_checking:
            self.history.append({"epoch": self.current_epoch, "val_loss": loss})

    def on_test_epoch_end(self):
        for metrics in self.test_metrics:
            self.log_dict(_finite(metrics.compute()))
            metrics.reset()

    @torch.inference_mode()
    def predict_outputs(self, x: torch.Tensor, batch_size: int = 4096) -> list[np.ndarray]:
        """Per target: class probabilities (n, C), or predictions (n,) in the parameter's units."""
        self.eval()
        chunks = [self(part.to(self.device)) for part in x.split(batch_size)]
        result = []
        for i, t in enumerate(self.targets):
            out = torch.cat([c[i] for c in chunks]).float().cpu()
            result.append(out.softmax(dim=1).numpy() if t["kind"] == "classification"
                          else (out.squeeze(1) * t["std"] + t["mean"]).numpy())
        return result

    def configure_optimizers(self):
        hp = self.hparams
        optimizers = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}
        if hp.optimizer not in optimizers:
            raise ValueError(f"model.optimizer={hp.optimizer!r}: use one of {list(optimizers)}")
        optimizer = optimizers[hp.optimizer](self.parameters(), lr=hp.lr,
                                             weight_decay=hp.weight_decay,
                                             fused=_fused_available(self.device))
        schedule = dict(hp.scheduler or {})
        name = schedule.get("name")
        if not name:
            return optimizer
        if name == "cosine":
            scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
                optimizer, T_max=hp.max_epochs, eta_min=schedule["min_lr"])
            return {"optimizer": optimizer, "lr_scheduler": scheduler}
        if name == "plateau":
            scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
                optimizer, factor=schedule["factor"], patience=schedule["patience"],
                min_lr=schedule["min_lr"])
            return {"optimizer": optimizer, "lr_scheduler": scheduler}
        raise ValueError(f"model.scheduler.name={name!r}: use null, cosine or plateau")
    # schedulers are stepped by the hooks above (manual optimization): once per epoch, and
    # plateau once per validation


def _fused_available(device: torch.device) -> bool:
    """Fused Adam is several times faster per step on CPU and GPU alike where it exists."""
    return device.type in ("cpu", "cuda")


def _finite(values: dict) -> dict:
    """Drop NaN metrics (AUROC of a one-class validation set) instead of logging them."""
    return {k: v for k, v in values.items() if torch.isfinite(v).all()}
