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
    #: the layer Grad-CAM reads (sinterlab-explain); None: the last block of its family
    cam_layer: str | None = None

    def describe(self) -> dict:
        return {"name": self.name, "embedding_dim": self.embedding_dim,
                "input_size": self.input_size, "mean": list(self.mean), "std": list(self.std),
                "weights": self.weights.as_dict()}


def build_backbone(name: str, pretrained: bool, checkpoint_path: str | None = None,
                   package: str | None = None, channels_last: bool = False,
                   cam_layer: str | None = None, keep_classifier: bool = False) -> Backbone:
    """Create ``name`` with the configured weights, frozen, in eval mode (the ``_target_`` of
    conf/backbone/*.yaml)."""
    model, weights = create_with_weights(name, bool(pretrained), checkpoint_path, package)
    if not keep_classifier:
        model.reset_classifier(0)
    model.eval().requires_grad_(False)
    data = timm.data.resolve_model_data_config(model)
    return Backbone(model, name, weights, tuple(data["mean"]), tuple(data["std"]),
                    int(data["input_size"][-1]), int(model.num_features), bool(channels_last),
                    cam_layer)


#: the factory a backbone config names (a run's config.yaml may name no other)
TARGET = f"{build_backbone.__module__}.{build_backbone.__name__}"

