"""What one patch's embedding is made of (``features.representation``): the backbone's final
pooled embedding, texture statistics of its stages' feature maps, or both, from one forward pass.

``final`` is the timm model without its classifier (global pool of the last stage, the paper's
features). ``stages`` pools each chosen stage's feature map (``features.stages``: indices into
the model's ``feature_info``, as timm's ``forward_intermediates`` takes them) into per-channel
statistics over its positions (``features.statistics``: mean, std, max). ``both`` is the final
embedding followed by the stage statistics. The vector's order is fixed and documented by
:meth:`Representation.columns`: [final embedding (``both``)] then, stage by stage in ascending
index, each statistic in the configured order, each over the stage's channels.

The network computing it (:meth:`Representation.network`) is an ``nn.Module`` from patches to
the vector, so every runtime runs it as it runs the final embedding: eager torch calls it, ONNX
Runtime and OpenVINO run its ONNX export (the statistics are operators of the graph). ``final``
is the timm model itself, unchanged, so its cache entries and exports keep their keys.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from sinterlab.errors import SinterlabError
from sinterlab.features.backbone import Backbone
from sinterlab.manifest import REPRESENTATIONS

KINDS = REPRESENTATIONS
#: the ``features`` keys that say what the embedding is
REPRESENTATION_KEYS = ("representation", "stages", "statistics")
#: ``features.stages`` for every stage of the backbone
ALL_STAGES = "all"
#: a variance below this is taken as this before its square root: the same std to 1e-6, and
#: a constant channel (a dead ReLU6) gets a finite gradient for Grad-CAM
MIN_VARIANCE = 1e-12


def _std(maps: torch.Tensor) -> torch.Tensor:
    centred = maps - maps.mean(dim=(2, 3), keepdim=True)
    return centred.square().mean(dim=(2, 3)).clamp_min(MIN_VARIANCE).sqrt()


#: per-channel statistics of an (N, C, H, W) feature map over its H x W positions -> (N, C)
STATISTICS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "mean": lambda maps: maps.mean(dim=(2, 3)),
    "std": _std,  # the population standard deviation
    "max": lambda maps: maps.amax(dim=(2, 3)),
}


class StageStatistics(nn.Module):
    """Patches (N, 3, H, W) -> [final pooled embedding (``with_final``), then per stage of
    ``indices`` (ascending) each statistic of ``statistics``] (N, width), one forward pass of
    the timm model through its ``forward_intermediates``."""

    def __init__(self, model: nn.Module, indices: tuple[int, ...], statistics: tuple[str, ...],
                 with_final: bool):
        super().__init__()
        self.model, self.indices = model, list(indices)
        self.statistics, self.with_final = tuple(statistics), with_final

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.with_final:
            last, maps = self.model.forward_intermediates(x, indices=self.indices)
            parts = [self.model.forward_head(last)]
        else:  # the stages after the last chosen one are not run
            maps, parts = self.model.forward_intermediates(
                x, indices=self.indices, intermediates_only=True, stop_early=True), []
        for stage in maps:
            parts += [STATISTICS[name](stage) for name in self.statistics]
        return torch.cat(parts, dim=1)


@dataclass(frozen=True)
class Representation:
    """``features.representation``, ``features.stages`` and ``features.statistics``."""

    kind: str = "final"
    #: indices into the backbone's stages (negative: from the end); None: all
    stages: tuple[int, ...] | None = None
    statistics: tuple[str, ...] = ("mean", "std")

    def __post_init__(self):
        if self.kind not in KINDS:
            raise SinterlabError(f"features.representation={self.kind}: not allowed; use one of "
                                 f"{', '.join(KINDS)}")
        unknown = [s for s in self.statistics if s not in STATISTICS]
        if unknown or not self.statistics or len(set(self.statistics)) < len(self.statistics):
            raise SinterlabError(f"features.statistics={list(self.statistics)}: "
                                 f"{'unknown ' + unknown[0] if unknown else 'empty or repeated'}"
                                 f"; use a list of distinct names of {list(STATISTICS)}")

    @classmethod
    def from_config(cls, features_cfg) -> Representation:
        """The representation ``features_cfg`` names (a config without the keys: ``final``)."""
        get = features_cfg.get if features_cfg is not None else {}.get
        stages = get("stages", ALL_STAGES)
        statistics = get("statistics", None)
        return cls(str(get("representation", None) or "final"),
                   None if stages in (None, ALL_STAGES) else tuple(int(i) for i in stages),
                   tuple(str(s) for s in statistics) if statistics is not None
                   else cls.statistics)

    @property
    def is_final(self) -> bool:
        return self.kind == "final"

    def stage_channels(self, backbone: Backbone) -> list[int]:
        """Channels of each of the backbone's stages (its ``feature_info``)."""
        info = getattr(backbone.model, "feature_info", None)
        if not info or not hasattr(backbone.model, "forward_intermediates"):
            raise SinterlabError(
                f"features.representation={self.kind}: {backbone.name} gives no stage outputs "
                "in this timm (no feature_info / forward_intermediates); use "
                "features.representation=final or a ConvNeXt, EfficientNet or ResNet backbone")
        return [int(stage["num_chs"]) for stage in info]

    def stage_indices(self, backbone: Backbone) -> tuple[int, ...]:
        """The chosen stages as ascending absolute indices (empty for ``final``)."""
        if self.is_final:
            return ()
        count = len(self.stage_channels(backbone))
        if self.stages is None:
            return tuple(range(count))
        outside = [i for i in self.stages if not -count <= i < count]
        if outside or not self.stages:
            raise SinterlabError(
                f"features.stages={list(self.stages)}: {backbone.name} has {count} stages; use "
                f"all or distinct indices in 0..{count - 1} (or -{count}..-1 from the end)")
        indices = [i % count for i in self.stages]
        if len(set(indices)) < len(indices):
            raise SinterlabError(f"features.stages={list(self.stages)}: a stage named twice; "
                                 "name each stage once")
        return tuple(sorted(indices))

    def columns(self, backbone: Backbone) -> list[str]:
        """The name of each value of the vector, in order: ``final.<i>``, then
        ``stage<s>.<statistic>.<channel>``."""
        names = [f"final.{i}" for i in range(backbone.embedding_dim)] \
            if self.kind != "stages" else []
        channels = self.stage_channels(backbone) if not self.is_final else []
        for stage in self.stage_indices(backbone):
            names += [f"stage{stage}.{statistic}.{c}" for statistic in self.statistics
                      for c in range(channels[stage])]
        return names

    def width(self, backbone: Backbone) -> int:
        """The embedding's length."""
        if self.is_final:
            return backbone.embedding_dim
        channels = self.stage_channels(backbone)
        stages = sum(channels[i] for i in self.stage_indices(backbone)) * len(self.statistics)
        return stages + (backbone.embedding_dim if self.kind == "both" else 0)

    def view_columns(self, view: str, backbone: Backbone) -> np.ndarray:
        """Indices into this representation's vector of the part a model reads under ``view``
        (final, stages or both: the final embedding, the stage statistics, all of it), so one
        extraction of ``both`` serves every view (``model.selection.representations``)."""
        if view not in KINDS:
            raise SinterlabError(f"model.selection.representations: {view} is not one of "
                                 f"{', '.join(KINDS)}")
        width = self.width(backbone)
        if view == self.kind:
            return np.arange(width)
        if self.kind != "both":
            raise SinterlabError(
                f"model.selection.representations: {view} is not in the extracted "
                f"features.representation={self.kind}; set features.representation=both (one "
                "forward pass gives the final embedding and the stage statistics)")
        final = backbone.embedding_dim
        return np.arange(final) if view == "final" else np.arange(final, width)

    def network(self, backbone: Backbone) -> nn.Module:
        """Patches -> this representation's vector (the timm model itself for ``final``)."""
        if self.is_final:
            return backbone.model
        return StageStatistics(backbone.model, self.stage_indices(backbone), self.statistics,
                               with_final=self.kind == "both").eval()

    def key(self, backbone: Backbone) -> dict | None:
        """What enters the embedding cache key (None for ``final``: the key it always had)."""
        if self.is_final:
            return None
        return {"kind": self.kind, "stages": list(self.stage_indices(backbone)),
                "statistics": list(self.statistics)}

    def tag(self, backbone: Backbone) -> str:
        """A file-name part naming it ('' for ``final``): ``stages-s0.1.2.3-mean.std``."""
        if self.is_final:
            return ""
        stages = ".".join(map(str, self.stage_indices(backbone)))
        return f"{self.kind}-s{stages}-{'.'.join(self.statistics)}"

    def describe(self, backbone: Backbone) -> str:
        """For reports: ``final``, ``stages 0, 1, 2, 3 (mean, std)`` or ``final + stages ...``."""
        if self.is_final:
            return "final"
        stages = ", ".join(map(str, self.stage_indices(backbone)))
        described = f"stages {stages} ({', '.join(self.statistics)})"
        return described if self.kind == "stages" else f"final + {described}"


FINAL = Representation()
