"""The paper's inverse model (Figure 5): hidden layers of Linear -> BatchNorm -> ReLU -> Dropout."""

from __future__ import annotations

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
