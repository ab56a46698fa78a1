"""What the study reads of a model config beyond its ``module``, in one place: the keys a user's
model YAML (``conf/model/<name>.yaml``, or a candidate under ``model.candidates``) may leave
out, each with its default here, and the two sections only ``model=auto`` has."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from omegaconf import DictConfig, OmegaConf


@dataclass(frozen=True)
class ModelOptions:
    """A model config's optional keys, typed; a key that is unset, null or empty takes the
    default below (as every reader of the config did before)."""

    #: what it reads (:data:`sinterlab.models.candidate.INPUTS`)
    inputs: str = "patch"
    #: its place in model=auto's one-standard-error rule (simpler first)
    complexity: int = 0
    #: searched by model=auto: dotted keys into the config -> the values tried
    grid: dict[str, list] = field(default_factory=dict)
    #: how model=auto searches past the grid, by the last part of a grid key (``C``)
    search: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: a head's batch shrinks where its members' training rows give fewer steps an epoch
    min_steps_per_epoch: int | None = None
    #: ... but not below this many rows
    min_batch_size: int = 1
    #: its own early stopping (``patience``); None: the protocol's
    early_stopping: DictConfig | None = None
    #: a head's loss (``module.loss``)
    loss: str = "cross_entropy"

    @classmethod
    def of(cls, model: DictConfig) -> ModelOptions:
        module = model.module if "module" in model else {}
        # every key at the top of the config, but the loss: inside its module
        given = {f.name: (module if f.name == "loss" else model).get(f.name)
                 for f in fields(cls)}
        given = {key: OmegaConf.to_container(value, resolve=True)
                 if OmegaConf.is_config(value) and key != "early_stopping" else value
                 for key, value in given.items() if value}
        return cls(**given)


def model_candidates(cfg: DictConfig) -> DictConfig | None:
    """``model.candidates`` (model=auto); None for a single model."""
    return cfg.model.get("candidates")


def model_selection(cfg: DictConfig) -> DictConfig | None:
    """``model.selection`` (model=auto); None for a single model."""
    return cfg.model.get("selection")
