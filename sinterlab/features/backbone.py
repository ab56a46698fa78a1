"""The frozen feature extractor (paper, Figure 4): a timm model without its classifier."""

from __future__ import annotations

from dataclasses import dataclass

import timm
from torch import nn

from sinterlab.features.weights import WeightsInfo, create_with_weights


@dataclass
class Backbone:
    model: nn.Module  # eval mode, no gradients, classifier removed
    name: str
    weights: WeightsInfo
    mean: tuple[float, ...]
    std: tuple[float, ...]
    input_size: int
    embedding_dim: int
    channels_last: bool = False  # the faster memory format for eager torch (backbone config)

    def describe(self) -> dict:
        return {"name": self.name, "embedding_dim": self.embedding_dim,
                "input_size": self.input_size, "mean": list(self.mean), "std": list(self.std),
                "weights": self.weights.as_dict()}


def build_backbone(cfg, keep_classifier: bool = False) -> Backbone:
    """Create ``cfg.name`` with the configured weights, frozen, in eval mode."""
    model, weights = create_with_weights(cfg.name, bool(cfg.pretrained),
                                         cfg.get("checkpoint_path"), cfg.get("package"))
    if not keep_classifier:
        model.reset_classifier(0)
    model.eval().requires_grad_(False)
    data = timm.data.resolve_model_data_config(model)
    return Backbone(model, cfg.name, weights, tuple(data["mean"]), tuple(data["std"]),
                    int(data["input_size"][-1]), int(model.num_features),
                    bool(cfg.get("channels_last", False)))
