"""Many MLP heads as one module: parameters stacked along a member axis, batched matmuls.

Cross-validation trains folds x seeds heads; on a CPU one head's batch-32 step is too small to
keep the cores busy, so the heads are stacked. Members are ordered fold-major: member
``m = g * S + s`` is seed ``s`` of group (fold) ``g``. The S members of a group see the same
rows in the same order, so the first and largest layer of a group is one wide GEMM
``(S * H, D) @ (D, B)``; the later layers are ``baddbmm`` over all members. Each member keeps its
own initialisation, dropout masks and batch-norm statistics; batch norm is computed per member
over its own batch (``F.batch_norm`` over members x channels).

Activations are kept transposed, (members, features, batch): the batch axis is then the
contiguous one that batch norm reduces over, and a group's first-layer output splits into its
members without a copy. Every weight is stored as its ``nn.Linear`` stacked along two member
axes (group, seed), so one member's weights can be copied, restored or exported as a plain
:class:`MemberMLP`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sinterlab.models.mlp import MemberMLP


def _layers(member: MemberMLP) -> list[tuple[nn.Linear, nn.BatchNorm1d | None]]:
    """(Linear, BatchNorm or None) per hidden layer of a member's trunk."""
    modules = list(member.trunk)
    out = []
    for i, module in enumerate(modules):
        if isinstance(module, nn.Linear):
            following = modules[i + 1] if i + 1 < len(modules) else None
            out.append((module, following if isinstance(following, nn.BatchNorm1d) else None))
    return out


class StackedMLP(nn.Module):
    """``groups`` x ``per_group`` copies of :class:`MemberMLP`, initialised from ``members``."""

    def __init__(self, members: list[MemberMLP], groups: int, dropout: float,
                 momentum: float = 0.1, eps: float = 1e-5):
        super().__init__()
        if len(members) % groups:
            raise ValueError(f"{len(members)} members do not split into {groups} groups")
        self.groups, self.per_group = groups, len(members) // groups
        self.dropout, self.momentum, self.eps = dropout, momentum, eps
        layers = [_layers(m) for m in members]
        self.depth = len(layers[0])
        self.batch_norm = self.depth > 0 and layers[0][0][1] is not None
        self.out_sizes = [o.out_features for o in members[0].outputs]
        for i in range(self.depth):
            self._stack(f"w{i}", [ls[i][0].weight for ls in layers])
            self._stack(f"b{i}", [ls[i][0].bias for ls in layers])
            if self.batch_norm:
                self._stack(f"gamma{i}", [ls[i][1].weight for ls in layers])
                self._stack(f"beta{i}", [ls[i][1].bias for ls in layers])
                self._stack(f"mean{i}", [ls[i][1].running_mean for ls in layers], buffer=True)
                self._stack(f"var{i}", [ls[i][1].running_var for ls in layers], buffer=True)
        for t in range(len(self.out_sizes)):
            self._stack(f"out_w{t}", [m.outputs[t].weight for m in members])
            self._stack(f"out_b{t}", [m.outputs[t].bias for m in members])

    @property
    def members(self) -> int:
        return self.groups * self.per_group

    def _stack(self, name: str, tensors: list[torch.Tensor], buffer: bool = False) -> None:
        stacked = torch.stack([t.detach() for t in tensors]).reshape(
            self.groups, self.per_group, *tensors[0].shape).clone()
        if buffer:
            self.register_buffer(name, stacked)
        else:
            self.register_parameter(name, nn.Parameter(stacked))

    # -- forward -----------------------------------------------------------------------------
    def _norm(self, h: torch.Tensor, i: int) -> torch.Tensor:
        """Batch norm of ``h`` (X, C, B) over its batch axis, per member and channel: seen as
        one sample of X * C channels of length B, it is torch's own batch norm."""
        flat = [getattr(self, f"{n}{i}").view(-1) for n in ("mean", "var", "gamma", "beta")]
        out = F.batch_norm(h.reshape(1, -1, h.shape[2]), *flat, training=self.training,
                           momentum=self.momentum, eps=self.eps)
        return out.view_as(h)

    def _activate(self, h: torch.Tensor, i: int) -> torch.Tensor:
        if self.batch_norm:
            h = self._norm(h, i)
        h = F.relu(h)
        if not self.training or self.dropout == 0:
            return h
        # inverted dropout from one uniform draw: torch's bernoulli_ took ~1 ms per layer and
        # step at this size on a CPU, about 3x this
        keep = torch.rand_like(h) >= self.dropout
        return h * keep * (1.0 / (1.0 - self.dropout))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``x`` (G, B, D): group g's rows -> per target (M, B, k), members fold-major."""
        G, S, M = self.groups, self.per_group, self.members
        if x.shape[0] != G:
            raise ValueError(f"input has {x.shape[0]} row groups, the ensemble {G}")
        B, D = x.shape[1], x.shape[2]
        xt = x.transpose(1, 2)  # (G, D, B); BLAS reads the transpose in place
        if self.depth:
            H = self.w0.shape[2]
            h = torch.baddbmm(self.b0.view(G, S * H, 1), self.w0.view(G, S * H, D), xt)
            h = self._activate(h, 0).view(M, H, B)
        else:  # a linear head: every member reads its group's rows
            h = xt.unsqueeze(1).expand(G, S, D, B).reshape(M, D, B)
        for i in range(1, self.depth):
            w = getattr(self, f"w{i}")
            h = torch.baddbmm(getattr(self, f"b{i}").view(M, -1, 1), w.view(M, *w.shape[2:]), h)
            h = self._activate(h, i)
        outputs = []
        for t in range(len(self.out_sizes)):
            w = getattr(self, f"out_w{t}")
            out = torch.baddbmm(getattr(self, f"out_b{t}").view(M, -1, 1),
                                w.view(M, *w.shape[2:]), h)
            outputs.append(out.transpose(1, 2))
        return outputs

    # -- one member --------------------------------------------------------------------------
    def member_state(self, m: int) -> dict[str, torch.Tensor]:
        """Member ``m``'s weights as a :class:`MemberMLP` state dict."""
        g, s = divmod(m, self.per_group)
        take = {name: tensor[g, s].detach().clone()
                for name, tensor in [*self.named_parameters(), *self.named_buffers()]}
        state, trunk_index = {}, 0
        step = 4 if self.batch_norm else 3  # Linear, [BatchNorm], ReLU, Dropout
        for i in range(self.depth):
            state[f"trunk.{trunk_index}.weight"] = take[f"w{i}"]
            state[f"trunk.{trunk_index}.bias"] = take[f"b{i}"]
            if self.batch_norm:
                bn = trunk_index + 1
                state |= {f"trunk.{bn}.weight": take[f"gamma{i}"],
                          f"trunk.{bn}.bias": take[f"beta{i}"],
                          f"trunk.{bn}.running_mean": take[f"mean{i}"],
                          f"trunk.{bn}.running_var": take[f"var{i}"]}
            trunk_index += step
        for t in range(len(self.out_sizes)):
            state[f"outputs.{t}.weight"] = take[f"out_w{t}"]
            state[f"outputs.{t}.bias"] = take[f"out_b{t}"]
        return state

    def snapshot(self) -> dict[str, torch.Tensor]:
        """A copy of every parameter and buffer (member axes first)."""
        return {name: tensor.detach().clone()
                for name, tensor in [*self.named_parameters(), *self.named_buffers()]}

    @torch.no_grad()
    def copy_members(self, source: dict[str, torch.Tensor], members: list[int],
                     into_self: bool) -> None:
        """Copy ``members`` between this module and ``source`` (a :meth:`snapshot`)."""
        own_tensors = dict([*self.named_parameters(), *self.named_buffers()])
        for name, saved in source.items():
            own = own_tensors[name]
            for m in members:
                g, s = divmod(m, self.per_group)
                if into_self:
                    own[g, s].copy_(saved[g, s])
                else:
                    saved[g, s].copy_(own[g, s])
