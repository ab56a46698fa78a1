"""LightningModule of the MLP head: every member of a run (folds x seeds) trained as one.

A holdout run is the one-member case; cross-validation stacks ``groups`` (folds) x ``seeds``
members (:class:`~sinterlab.models.stacked.StackedMLP`). Each member has its own training rows
(its fold's), initialisation (its seed), dropout masks, batch-norm statistics and Adam state
(Adam is element-wise, so one optimizer over stacked tensors equals one per member), its own
best weights by its own validation loss, and its own early stopping: a member whose
validation loss has not improved for ``patience`` validations stops (its loss is masked out of
the step and its best weights are frozen); the run ends when every member has stopped.

Targets: classification (cross-entropy, optional class weights per member; or, for the first
target when it is ordered, ``loss="corn"``: coral-pytorch's CORN loss on C-1 conditional
"above level k" logits, turned into per-level probabilities), regression
(standardised with the member's training mean/std, reported in the parameter's units), or
several at once (weighted loss sum). Extra inputs (``data.extra_inputs``: numeric descriptor
columns after the embedding) are standardised inside the module with each group's (fold's)
training mean/std (a group's seeds share its rows, so per group), kept as buffers: the
checkpoint takes raw values, as predict gives them, and a fold's test rows never touch its
scaling. A step costs milliseconds on a CPU, so the module optimizes manually and accumulates
losses on the device, read once per epoch.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Mapping
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
import torch.nn.functional as F
from hydra.utils import get_class

from sinterlab.atomic import write_with
from sinterlab.data.groups import Groups
from sinterlab.errors import SinterlabError
from sinterlab.models.allocator import reuse_freed_memory
from sinterlab.models.candidate import Candidate
from sinterlab.models.mlp import MemberMLP
from sinterlab.models.stacked import StackedMLP
from sinterlab.typed import from_data

#: losses of the first (classification) target: cross-entropy over the classes; CORN over
#: ordered levels; or level_value: the squared error of one output against the standardised
#: value of the true level (regression on an ordered target's values)
LOSSES = ("cross_entropy", "corn", "level_value")
#: short optimizer names that a checkpoint's hyperparameters may hold instead of a class path
OPTIMIZER_NAMES = {"adam": "torch.optim.Adam", "adamw": "torch.optim.AdamW"}


def optimizer_path(optimizer: str | Mapping) -> str:
    """The dotted class path of ``module.optimizer``: its ``_target_`` (the optimizer is built
    with the module's ``lr`` and ``weight_decay``), or that of a short name (adam | adamw)."""
    if isinstance(optimizer, Mapping):
        if set(optimizer) - {"_target_", "_partial_"}:
            raise ValueError(f"model.module.optimizer: only _target_ and _partial_, got "
                             f"{sorted(optimizer)}; lr and weight_decay are model.module.lr "
                             "and model.module.weight_decay")
        optimizer = optimizer["_target_"]
    return OPTIMIZER_NAMES.get(str(optimizer), str(optimizer))


def optimizer_class(path: str) -> type[torch.optim.Optimizer]:
    """The torch optimizer class at ``path``; anything else is a one-line error naming it."""
    try:
        cls = get_class(path)
    except Exception:  # hydra raises ImportError, ValueError or its own errors
        cls = None
    if not (isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer)):
        raise ValueError(f"model.module.optimizer._target_={path!r} is not an optimizer "
                         "class; name one such as torch.optim.Adam or torch.optim.AdamW")
    return cls


def corn_level_probabilities(logits: torch.Tensor) -> torch.Tensor:
    """CORN's C-1 conditional logits (P(y > k | y > k-1)) -> C level probabilities: the
    cumulative product gives P(y > k) (non-increasing), whose steps are P(y = k)."""
    above = torch.cumprod(torch.sigmoid(logits), dim=-1)
    ones = torch.ones_like(above[..., :1])
    zeros = torch.zeros_like(above[..., :1])
    return torch.cat([ones, above], dim=-1) - torch.cat([above, zeros], dim=-1)


def stacked_corn_loss(logits: torch.Tensor, labels: torch.Tensor,
                      keep: torch.Tensor) -> torch.Tensor:
    """coral-pytorch's ``corn_loss`` of every member at once: ``logits`` (M, B, C-1), ``labels``
    (M, B), ``keep`` (M, B) the rows each member reads. Task k reads the rows with a label
    above k-1 and asks whether it is above k; a member's loss is its summed binary
    cross-entropy over every task's rows divided by their count (0 without rows)."""
    tasks = torch.arange(logits.shape[2], device=logits.device)
    rows = (labels[..., None] > tasks - 1) & keep[..., None]  # (M, B, C-1)
    above = (labels[..., None] > tasks).to(logits.dtype)
    log_p = F.logsigmoid(logits)
    loss = -(log_p * above + (log_p - logits) * (1 - above))
    return (loss * rows).sum(dim=(1, 2)) / rows.sum(dim=(1, 2)).clamp_min(1)


#: what a head's rows are: patches, or one mean row per image (a bag head)
POOLINGS = ("patch", "image_mean")


def image_means(x: torch.Tensor, images: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """``x`` (G, N, D) with ``images`` (G, N) ids -> (G, K, D) each group's mean row per image,
    images in order of first appearance (K: the most images of a group, zero rows after a
    group's own) and (G, N) each row's index among its group's images."""
    G, N, D = x.shape
    values = x.detach().cpu().numpy()
    groups = [Groups.of(row) for row in images]
    K = max((len(g.names) for g in groups), default=0) if N else 0
    means = np.zeros((G, K, D), dtype=values.dtype)
    for g, (rows, group) in enumerate(zip(values, groups, strict=True)):
        means[g, :len(group.names)] = group.means(rows)
    index = np.stack([g.index for g in groups]).astype(np.int64) if G else np.zeros((0, N))
    return (torch.from_numpy(means).to(x.device),
            torch.from_numpy(index).to(x.device))


class HeadEnsemble(pl.LightningModule, Candidate):
    """``targets``: dicts with name, kind, loss_weight, and per member (lists of length M):
    ``num_classes`` + ``class_weights`` (or None) for classification, ``mean``/``std`` for
    regression. ``seeds``: the seeds of each group; members are ordered group-major. A
    :class:`~sinterlab.models.candidate.Candidate` on patch embeddings, trained by Lightning."""

    kind = "head"
    suffix = ".ckpt"
    gradients = True
    inputs = "patch"

    @classmethod
    def builds(cls, target: type) -> bool:
        """Any LightningModule: a head, trained by Lightning."""
        return issubclass(target, pl.LightningModule)

    def __init__(self, in_features: int, targets: list[dict], hidden: list[int], dropout: float,
                 batch_norm: bool, optimizer: str | Mapping, lr: float, weight_decay: float,
                 scheduler: dict | None = None, max_epochs: int = 1, groups: int = 1,
                 seeds: tuple[int, ...] = (0,), patience: int | None = None,
                 min_delta: float = 0.0, loss: str = "cross_entropy",
                 inputs: dict | None = None, pooling: str = "patch"):
        """``optimizer``: a torch optimizer class as a dotted path or a ``_target_`` mapping,
        built with ``lr`` and ``weight_decay``. ``inputs``: the extra input columns at the end
        of ``x`` (``names``) and, per group, their training ``mean`` and ``std`` (lists of G
        lists); None: the embedding alone. ``pooling``: what a row is, ``patch`` (each patch
        on its own) or ``image_mean`` (a bag head: trained on one mean row per image, and
        given the rows of an image, it reads their mean)."""
        # checkpoints keep plain values only (predict loads them with weights_only=True):
        # save_hyperparameters records the class path, not the mapping
        optimizer = optimizer_path(optimizer)
        optimizer_class(optimizer)
        super().__init__()
        self.save_hyperparameters()
        self.targets = targets
        if pooling not in POOLINGS:
            raise ValueError(f"model.inputs={pooling!r}: a head reads one of {list(POOLINGS)}")
        #: what it reads (the candidate contract's ``inputs``)
        self.inputs = pooling
        if loss not in LOSSES:
            raise ValueError(f"model.module.loss={loss!r}: use one of {list(LOSSES)}")
        #: the first target is trained as ordinal levels (CORN): C-1 outputs
        self.corn = loss == "corn"
        #: the first target is trained as a regression on its levels' values: one output
        self.level_value = loss == "level_value"
        out_sizes = [1 if self.level_value and i == 0 else
                     t["num_classes"] - (self.corn and i == 0) if t["kind"] == "classification"
                     else 1 for i, t in enumerate(targets)]
        members = []
        for _ in range(groups):
            for seed in seeds:
                torch.manual_seed(int(seed))
                members.append(MemberMLP(in_features, list(hidden), dropout, batch_norm,
                                         out_sizes))
        self.stack = StackedMLP(members, groups, dropout)
        M = self.stack.members
        for i, t in enumerate(targets):
            if t["kind"] == "classification":
                weights = t.get("class_weights")
                self.register_buffer(f"class_weights_{i}", None if weights is None else
                                     torch.tensor(weights, dtype=torch.float32).view(M, -1))
                # temperature scaling per member, fitted on its validation rows after training
                self.register_buffer(f"temperature_{i}", torch.ones(M))
            else:
                self.register_buffer(f"mean_{i}", torch.tensor(t["mean"], dtype=torch.float32))
                self.register_buffer(f"std_{i}", torch.tensor(t["std"], dtype=torch.float32))
        if self.level_value:  # the levels' values, standardised over the levels
            values = torch.tensor(targets[0]["values"], dtype=torch.float32)
            self.register_buffer("levels", (values - values.mean()) / values.std())
        inputs = inputs or {"names": [], "mean": [[]] * groups, "std": [[]] * groups}
        self.extra_inputs = list(inputs["names"])
        self.register_buffer("input_mean", torch.tensor(inputs["mean"], dtype=torch.float32)
                             .view(groups, len(self.extra_inputs)))
        self.register_buffer("input_std", torch.tensor(inputs["std"], dtype=torch.float32)
                             .view(groups, len(self.extra_inputs)))
        self.register_buffer("stopped", torch.zeros(M, dtype=torch.bool))
        self.register_buffer("best_loss", torch.full((M,), float("inf")))
        self.register_buffer("best_epoch", torch.full((M,), -1, dtype=torch.long))
        self.register_buffer("stop_epoch", torch.full((M,), -1, dtype=torch.long))
        self.register_buffer("waited", torch.zeros(M, dtype=torch.long))
        self.automatic_optimization = False
        self.history: list[dict] = []
        self._best: dict[str, torch.Tensor] | None = None
        self._sums = {"train": [torch.zeros(M), torch.zeros(M)],
                      "val": [torch.zeros(M), torch.zeros(M)]}

    @property
    def members(self) -> int:
        return self.stack.members

    @property
    def per_group(self) -> int:
        """Members per group (fold): its seeds."""
        return self.stack.per_group

    @property
    def in_features(self) -> int:
        return int(self.hparams.in_features)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``x`` (G, B, D): the embedding, then the raw extra inputs, standardised here with
        each group's own training mean/std."""
        E = len(self.extra_inputs)
        if E:
            extra = (x[..., -E:] - self.input_mean[:, None]) / self.input_std[:, None]
            x = torch.cat([x[..., :-E], extra.to(x.dtype)], dim=-1)
        return self.stack(x)

    # -- loss ------------------------------------------------------------------------------
    def _member_losses(self, outputs: list[torch.Tensor], y: torch.Tensor,
                       weight: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-member weighted loss sums (M,) and weight sums (M,); ``y`` (G, B, T)."""
        S = self.stack.per_group
        y = y.repeat_interleave(S, dim=0)  # (M, B, T): a group's rows for each of its seeds
        w = torch.ones(y.shape[:2], device=y.device) if weight is None else \
            weight.repeat_interleave(S, dim=0)
        total, norm = 0.0, None
        for i, (t, out) in enumerate(zip(self.targets, outputs, strict=True)):
            if self.level_value and i == 0:
                labels = y[:, :, i].long()
                row = (out.squeeze(2) - self.levels[labels]) ** 2
                s, n = (row * w).sum(1), w.sum(1)
                total = total + t.get("loss_weight", 1.0) * s / n.clamp_min(1e-12)
                norm = n if norm is None else norm
                continue
            if self.corn and i == 0:
                labels, keep = y[:, :, i].long(), w > 0
                row_loss = stacked_corn_loss(out, labels, keep)  # every member at once
                n = keep.sum(1).float()
                total = total + t.get("loss_weight", 1.0) * row_loss
                norm = n if norm is None else norm
                continue
            if t["kind"] == "classification":
                labels = y[:, :, i].long()
                row = F.cross_entropy(out.flatten(0, 1), labels.flatten(),
                                      reduction="none").view_as(labels)
                class_weights = getattr(self, f"class_weights_{i}")
                rw = w if class_weights is None else w * class_weights.gather(1, labels)
            else:
                mean, std = getattr(self, f"mean_{i}")[:, None], getattr(self, f"std_{i}")[:, None]
                row = (out.squeeze(2) - (y[:, :, i] - mean) / std) ** 2
                rw = w
            s, n = (row * rw).sum(1), rw.sum(1)
            total = total + t.get("loss_weight", 1.0) * s / n.clamp_min(1e-12)
            norm = n if norm is None else norm
        return total, norm

    def training_step(self, batch, batch_idx):
        x, y = batch
        optimizer = self.optimizers()  # the Lightning wrapper counts global steps
        losses, _ = self._member_losses(self(x), y)
        active = (~self.stopped).float()
        optimizer.zero_grad(set_to_none=True)
        # members share no parameters: the sum gives each member its own gradient
        self.manual_backward((losses * active).sum())
        optimizer.step()
        self._accumulate("train", losses.detach(), torch.ones_like(losses))

    def validation_step(self, batch, batch_idx):
        x, y, w = batch
        sums, n = self._member_losses(self(x), y, w)
        self._accumulate("val", sums * n, n)

    def _accumulate(self, stage: str, sums: torch.Tensor, n: torch.Tensor) -> None:
        """Sum on the device; read back once per epoch (no host sync per step)."""
        acc = self._sums[stage]
        acc[0] = acc[0].to(sums.device) + sums
        acc[1] = acc[1].to(sums.device) + n

    def _epoch_losses(self, stage: str) -> torch.Tensor:
        total, n = self._sums[stage]
        self._sums[stage] = [torch.zeros_like(total), torch.zeros_like(n)]
        return (total / n.clamp_min(1e-12)).detach().cpu()

    # -- epochs, early stopping, best weights ------------------------------------------------
    def on_fit_start(self):
        if self.device.type == "cpu":
            reuse_freed_memory()

    def on_train_epoch_end(self):
        losses = self._epoch_losses("train")
        self.log("train/loss", float(losses.mean()))
        # validation (when due) runs before this hook: complete its row rather than add one
        if self.history and self.history[-1]["epoch"] == self.current_epoch:
            self.history[-1]["train_loss"] = losses.tolist()
        else:
            self.history.append({"epoch": self.current_epoch, "train_loss": losses.tolist()})
        scheduler = self.lr_schedulers()
        if scheduler is not None and not isinstance(
                scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            scheduler.step()

    def on_validation_epoch_end(self):
        losses = self._epoch_losses("val")
        if self.trainer.sanity_checking:
            return
        active = ~self.stopped.cpu()
        self.log("val/loss", float(losses[active].mean()) if active.any() else float("nan"))
        self.history.append({"epoch": self.current_epoch, "val_loss": losses.tolist()})
        improved = active & (losses < self.best_loss.cpu() - self.hparams.min_delta)
        if self._best is None:
            self._best = self.stack.snapshot()
        self.stack.copy_members(self._best, improved.nonzero().flatten().tolist(),
                                into_self=False)
        self.best_loss[improved] = losses[improved].to(self.best_loss)
        self.best_epoch[improved] = self.current_epoch
        self.waited[improved] = 0
        self.waited[active & ~improved] += 1
        if self.hparams.patience:
            newly = active & (self.waited.cpu() >= self.hparams.patience)
            self.stopped[newly] = True
            self.stop_epoch[newly] = self.current_epoch
            if bool(self.stopped.all()):
                self.trainer.should_stop = True
        scheduler = self.lr_schedulers()
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau) and active.any():
            scheduler.step(float(losses[active].mean()))  # one learning rate for all members

    def on_train_end(self):
        """Every member ends with its best weights (those of its lowest validation loss)."""
        if self._best is not None:
            self.stack.copy_members(self._best, list(range(self.members)), into_self=True)
        still = self.stop_epoch < 0
        self.stop_epoch[still] = self.current_epoch

    def member_summary(self) -> list[dict]:
        """Per member: group, seed, best epoch and loss, epoch it stopped."""
        seeds = list(self.hparams.seeds)
        rows = []
        for m in range(self.members):
            g, s = divmod(m, len(seeds))
            best = float(self.best_loss[m])
            rows.append({"member": m, "fold": g, "seed": int(seeds[s]),
                         "best_epoch": int(self.best_epoch[m]) if best < float("inf") else None,
                         "best_val_loss": best if best < float("inf") else None,
                         "stopped_epoch": int(self.stop_epoch[m]),
                         "early_stopped": bool(self.stopped[m])})
        return rows

    # -- prediction --------------------------------------------------------------------------
    @torch.inference_mode()
    def evaluate_loss(self, rows) -> torch.Tensor:
        """Each member's loss on its own group's rows of ``rows`` (a ``GroupRows``): (M,)."""
        self.eval()
        sums, n = torch.zeros(self.members), torch.zeros(self.members)
        for x, y, w in rows:
            loss, count = self._member_losses(self(x.to(self.device)), y.to(self.device),
                                              w.to(self.device))
            sums += (loss * count).cpu()
            n += count.cpu()
        return sums / n.clamp_min(1e-12)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """A checkpoint without temperatures loads with temperature 1 (uncalibrated), and one
        without the extra inputs' statistics with none (no extra inputs)."""
        state = checkpoint["state_dict"]
        for name in ("input_mean", "input_std"):  # absent: the head reads no extra inputs
            state.setdefault(name, torch.zeros(self.stack.groups, 0))
        for i, t in enumerate(self.targets):
            if t["kind"] == "classification":
                state.setdefault(f"temperature_{i}", torch.ones(self.members))

    @torch.inference_mode()
    def logits(self, x: torch.Tensor, batch_size: int = 4096,
               images: np.ndarray | None = None) -> list[torch.Tensor]:
        """``x`` (G, N, D) or (N, D) (every group reads the same rows) -> per target the raw
        member outputs (M, N, C). A bag head (``pooling=image_mean``) given ``images`` ((N,)
        or (G, N) ids) reads each image's mean row and gives it to every row of the image."""
        self.eval()
        if x.dim() == 2:
            x = x.unsqueeze(0).expand(self.stack.groups, *x.shape)
        index = None
        if images is not None and self.inputs == "image_mean":
            x, index = image_means(x, np.broadcast_to(np.asarray(images), x.shape[:2]))
        chunks = [self.class_scores(self(part.to(self.device)))
                  for part in x.split(batch_size, dim=1)]
        out = [torch.cat([c[i] for c in chunks], dim=1).float() for i in range(len(chunks[0]))]
        if index is None:
            return out
        rows = index.to(self.device).repeat_interleave(self.stack.per_group, dim=0)  # (M, N)
        return [o.gather(1, rows[..., None].expand(*rows.shape, o.shape[2])) for o in out]

    def class_scores(self, outputs: list[torch.Tensor]) -> list[torch.Tensor]:
        """The outputs the probabilities come from: as trained, except a level_value head's
        predicted value v, which becomes the scores -(v - level)^2 / 2 of the standardised
        levels, so that softmax(scores / T) is a Gaussian of variance T around v over the
        levels, T fitted on the member's validation rows like any temperature."""
        if not self.level_value:
            return outputs
        return [-0.5 * (outputs[0] - self.levels) ** 2, *outputs[1:]]

    def temperatures(self) -> list[list[float] | None]:
        """Per target, each member's temperature (None for regression)."""
        return [getattr(self, f"temperature_{i}").tolist() if t["kind"] == "classification"
                else None for i, t in enumerate(self.targets)]

    def member_outputs(self, x: torch.Tensor, target: int = 0) -> torch.Tensor:
        """Differentiable (M, N, C) temperature-scaled class probabilities (or (M, N, 1)
        standardised values) of patch embeddings ``x`` (N, D), for Grad-CAM."""
        out = self.class_scores(self(x.unsqueeze(0).expand(self.stack.groups, *x.shape)))[target]
        if self.targets[target]["kind"] == "classification":
            return (out / getattr(self, f"temperature_{target}")[:, None, None]).softmax(dim=2)
        return out

    @torch.inference_mode()
    def predict_members(self, x: torch.Tensor, batch_size: int = 4096,
                        calibrated: bool = True, images: np.ndarray | None = None,
                        measures: np.ndarray | None = None) -> list[np.ndarray]:
        """``x`` (G, N, D) or (N, D) (every group reads the same rows) -> per target
        (M, N, C) class probabilities (temperature-scaled unless ``calibrated=False``) or
        (M, N) predictions in the parameter's units. A patch head reads each patch on its own;
        a bag head reads the mean of each image's rows (``images``: which image each row
        belongs to). ``measures`` change nothing."""
        result = []
        for i, (t, out) in enumerate(zip(self.targets, self.logits(x, batch_size, images),
                                         strict=True)):
            if t["kind"] == "classification":
                if calibrated:
                    out = out / getattr(self, f"temperature_{i}")[:, None, None]
                probs = corn_level_probabilities(out) if self.corn and i == 0 else \
                    out.softmax(dim=2)
                result.append(probs.cpu().numpy())
            else:
                mean, std = getattr(self, f"mean_{i}")[:, None], getattr(self, f"std_{i}")[:, None]
                result.append((out.squeeze(2) * std + mean).cpu().numpy())
        return result

    # -- the candidate contract: persistence and description --------------------------------
    def save(self, path: Path) -> Path:
        """A Lightning checkpoint of the weights and hyper-parameters (tensors and plain values:
        :meth:`load` reads it with ``weights_only=True``)."""
        checkpoint = {"pytorch-lightning_version": pl.__version__,
                      "state_dict": self.state_dict(),
                      "hparams_name": "kwargs", "hyper_parameters": dict(self.hparams)}
        def save(tmp: Path) -> None:
            # through a Python file: its failed write is an OSError write_with names (torch's
            # own writer of a path reports only "iostream error", e.g. under ulimit -f)
            with open(tmp, "wb") as file:
                torch.save(checkpoint, file)

        return write_with(Path(path), save)

    @classmethod
    def load(cls, path: Path) -> HeadEnsemble:
        """The head saved at ``path``: tensors read without pickle, the hyper-parameters checked
        field by field (:class:`~sinterlab.models.saved.HeadParams`) before the module is
        built, then its weights loaded strictly."""
        from sinterlab.models.saved import HeadParams

        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        fix = "use checkpoints written by sinterlab-train, or train again"
        if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"),
                                                              dict):
            raise SinterlabError(f"{path}: no state_dict of tensors; {fix}")
        params = from_data(HeadParams, checkpoint.get("hyper_parameters"), path, fix)
        head = cls(**{f.name: getattr(params, f.name) for f in dataclasses.fields(params)})
        head.on_load_checkpoint(checkpoint)
        head.load_state_dict(checkpoint["state_dict"], strict=True)
        return head.eval()

    def describe(self) -> dict:
        hp = self.hparams
        return {"kind": self.kind, "inputs": self.inputs, "members": self.members,
                "params": {"hidden": list(hp.hidden), "dropout": hp.dropout,
                           "weight_decay": hp.weight_decay, "lr": hp.lr, "loss": hp.loss}}

    def configure_optimizers(self):
        hp = self.hparams
        cls = optimizer_class(hp.optimizer)
        # fused Adam is several times faster per step on CPU and GPU alike
        fused = ({"fused": self.device.type in ("cpu", "cuda")}
                 if "fused" in inspect.signature(cls).parameters else {})
        optimizer = cls(self.parameters(), lr=hp.lr, weight_decay=hp.weight_decay, **fused)
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
        raise ValueError(f"model.module.scheduler.name={name!r}: use null, cosine or plateau")
    # schedulers are stepped by the hooks above (manual optimization): once per epoch, and
    # plateau once per validation on the mean loss of the active members
