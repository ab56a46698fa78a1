"""The paper's inverse model (Figure 5): hidden layers of Linear -> BatchNorm -> ReLU -> Dropout,
then one linear output per predicted parameter. One such head is one member of an ensemble."""

from __future__ import annotations

import torch
from torch import nn


def mlp_trunk(in_features: int, hidden: list[int], dropout: float, batch_norm: bool) -> nn.Module:
    layers: list[nn.Module] = []
    width = in_features
    for out in hidden:
        layers.append(nn.Linear(width, out))
        if batch_norm:
            layers.append(nn.BatchNorm1d(out))
        layers += [nn.ReLU(inplace=True), nn.Dropout(dropout)]
        width = out
    return nn.Sequential(*layers)


class MemberMLP(nn.Module):
    """One head: the shared trunk and one linear output per target (``out_sizes``)."""

    def __init__(self, in_features: int, hidden: list[int], dropout: float, batch_norm: bool,
                 out_sizes: list[int]):
        super().__init__()
        self.trunk = mlp_trunk(in_features, hidden, dropout, batch_norm)
        width = hidden[-1] if hidden else in_features
        self.outputs = nn.ModuleList(nn.Linear(width, k) for k in out_sizes)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = self.trunk(x)
        return [out(features) for out in self.outputs]
