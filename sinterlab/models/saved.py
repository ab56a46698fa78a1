"""What a saved model's file says about itself, as typed records read before anything is built.

A checkpoint from a run folder is data: its tensors are read without pickle, and the names and
numbers beside them (a head's hyper-parameters, an affine model's or a scikit-learn model's
metadata) are checked field by field here (strict types, unknown fields refused by name), so a
model is only ever constructed from values of the types its class takes. An optimizer is named
from a closed table (torch's own optimizers), never imported by the name a file gives.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pydantic
import torch
from typing_extensions import TypedDict

from sinterlab.manifest import TargetRecord
from sinterlab.models.head import LOSSES, POOLINGS
from sinterlab.typed import STRICT

#: the optimizers a saved head may name: torch's own (``torch.optim.<Class>``)
OPTIMIZER_CLASSES = tuple(
    f"torch.optim.{name}" for name in sorted(dir(torch.optim))
    if isinstance(getattr(torch.optim, name), type)
    and issubclass(getattr(torch.optim, name), torch.optim.Optimizer)
    and getattr(torch.optim, name) is not torch.optim.Optimizer)
#: a number as saved (an integer stays one)
Number = int | float


@pydantic.with_config(STRICT)
class ModelTarget(TargetRecord, total=False):
    """A target as a model saves it: the run's record of it plus what the model learnt it with
    (per member: class weights, or the training mean and std)."""

    loss_weight: Number
    num_classes: int
    class_weights: list[list[Number]] | None
    mean: list[Number]
    std: list[Number]


@pydantic.with_config(STRICT)
class HeadInputs(TypedDict):
    """The extra input columns a head reads, and per group their training mean and std."""

    names: list[str]
    mean: list[list[Number]]
    std: list[list[Number]]


@pydantic.with_config(STRICT)
class Schedule(TypedDict, total=False):
    name: Literal["cosine", "plateau"] | None
    factor: Number
    patience: int
    min_lr: Number


@dataclass(frozen=True)
class HeadParams:
    """A head checkpoint's ``hyper_parameters``: exactly the arguments
    :class:`~sinterlab.models.head.HeadEnsemble` takes."""

    __pydantic_config__ = STRICT
    in_features: int
    targets: list[ModelTarget]
    hidden: list[int]
    dropout: Number
    batch_norm: bool
    optimizer: Literal[OPTIMIZER_CLASSES]  # type: ignore[valid-type]
    lr: Number
    weight_decay: Number
    scheduler: Schedule | None = None
    max_epochs: int = 1
    groups: int = 1
    seeds: tuple[int, ...] = (0,)
    patience: int | None = None
    min_delta: Number = 0.0
    loss: Literal[LOSSES] = "cross_entropy"  # type: ignore[valid-type]
    inputs: HeadInputs | None = None
    pooling: Literal[POOLINGS] = "patch"  # type: ignore[valid-type]


@dataclass(frozen=True)
class EnsembleMeta:
    """The metadata an affine or scikit-learn ensemble saves beside its arrays."""

    __pydantic_config__ = STRICT
    targets: list[ModelTarget]
    params: dict[str, Number | str | bool | None]
    inputs: str | None = None
    #: what ``inputs`` was called in older affine models
    features: str | None = None
    estimator: str | None = None
    in_features: int | None = None
