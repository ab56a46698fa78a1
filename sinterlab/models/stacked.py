"""Many MLP heads as one module: parameters stacked along a member axis, batched matmuls.

Cross-validation trains folds x seeds heads; on a CPU one head's batch-32 step is too small to
keep the cores busy, so the heads are stacked. Members are ordered fold-major: member
``m = g * S + s`` is seed ``s`` of group (fold) ``g``. The S members of a group see the same
rows in the same order, so the first and largest layer of a group is one wide GEMM
``(B, D) @ (D, S * H)``; the later layers are ``baddbmm`` over all members. Each member keeps its
own initialisation, dropout masks and batch-norm statistics; batch norm is computed per member
over its own batch (``torch.var_mean`` over the batch axis).

Every tensor is stored with its two member axes (group, seed) explicit, so one member's
weights can be copied, restored or exported as a plain :class:`MemberMLP`.
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
            self._stack(f"w{i}", [ls[i][0].weight.T for ls in layers])
            self._stack(f"b{i}", [ls[i][0].bias for ls in layers])
            if self.batch_norm:
                self._stack(f"gamma{i}", [ls[i][1].weight for ls in layers])
                self._stack(f"beta{i}", [ls[i][1].bias for ls in layers])
                self._stack(f"mean{i}", [ls[i][1].running_mean for ls in layers], buffer=True)
                self._stack(f"var{i}", [ls[i][1].running_var for ls in layers], buffer=True)
        for t in range(len(self.out_sizes)):
            self._stack(f"out_w{t}", [m.outputs[t].weight.T for m in members])
            self._stack(f"out_b{t}", [m.outputs[t].bias for m in members])

    @property
    def members(self) -> int:
        return self.groups * self.per_group

    def _stack(self, name: str, tensors: list[torch.Tensor], buffer: bool = False) -> None:
        stacked = torch.stack([t.detach() for t in tensors]).reshape(
            self.groups, self.per_group, *tensors[0].shape)
        if name == "w0":  # (G, D, S, H): a group's first layer is one (D, S*H) matrix
            stacked = stacked.permute(0, 2, 1, 3)
        stacked = stacked.contiguous().clone()
        if buffer:
            self.register_buffer(name, stacked)
        else:
            self.register_parameter(name, nn.Parameter(stacked))

    def member_view(self, name: str, tensor: torch.Tensor | None = None) -> torch.Tensor:
        """``tensor`` (default: this module's own) with the member axes first: (G, S, ...)."""
        tensor = getattr(self, name) if tensor is None else tensor
        return tensor.permute(0, 2, 1, 3) if name == "w0" else tensor

    # -- forward -----------------------------------------------------------------------------
    def _norm(self, h: torch.Tensor, i: int, shape: tuple[int, int]) -> torch.Tensor:
        """Batch norm over axis 1 of ``h`` (X, B, C), per member and channel."""
        gamma, beta = (getattr(self, f"{n}{i}").reshape(shape).unsqueeze(1)
                       for n in ("gamma", "beta"))
        running_mean, running_var = (getattr(self, f"{n}{i}").view(shape) for n in ("mean", "var"))
        if self.training:
            var, mean = torch.var_mean(h, dim=1, keepdim=True, correction=0)
            with torch.no_grad():
                n = h.shape[1]
                running_mean.lerp_(mean.squeeze(1), self.momentum)
                running_var.lerp_(var.squeeze(1) * (n / max(n - 1, 1)), self.momentum)
        else:
            mean, var = running_mean.unsqueeze(1), running_var.unsqueeze(1)
        return (h - mean) * torch.rsqrt(var + self.eps) * gamma + beta

    def _activate(self, h: torch.Tensor, i: int, shape: tuple[int, int]) -> torch.Tensor:
        if self.batch_norm:
            h = self._norm(h, i, shape)
        return F.dropout(F.relu(h), self.dropout, self.training)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``x`` (G, B, D): group g's rows -> per target (M, B, k), members fold-major."""
        G, S, M = self.groups, self.per_group, self.members
        if x.shape[0] != G:
            raise ValueError(f"input has {x.shape[0]} row groups, the ensemble {G}")
        B = x.shape[1]
        if self.depth:
            H = self.w0.shape[-1]
            h = torch.baddbmm(self.b0.view(G, 1, S * H), x, self.w0.view(G, -1, S * H))
            h = self._activate(h, 0, (G, S * H))
            h = h.view(G, B, S, H).transpose(1, 2).reshape(M, B, H)
        else:  # a linear head: every member reads its group's rows
            h = x.unsqueeze(1).expand(G, S, B, x.shape[2]).reshape(M, B, x.shape[2])
        for i in range(1, self.depth):
            w = getattr(self, f"w{i}")
            h = torch.baddbmm(getattr(self, f"b{i}").view(M, 1, -1), h, w.view(M, *w.shape[2:]))
            h = self._activate(h, i, (M, w.shape[-1]))
        outputs = []
        for t in range(len(self.out_sizes)):
            w = getattr(self, f"out_w{t}")
            outputs.append(torch.baddbmm(getattr(self, f"out_b{t}").view(M, 1, -1), h,
                                         w.view(M, *w.shape[2:])))
        return outputs

    # -- one member --------------------------------------------------------------------------
    def member_state(self, m: int) -> dict[str, torch.Tensor]:
        """Member ``m``'s weights as a :class:`MemberMLP` state dict."""
        g, s = divmod(m, self.per_group)
        take = {name: self.member_view(name)[g, s].detach().clone()
                for name, _ in [*self.named_parameters(), *self.named_buffers()]}
        state, trunk_index = {}, 0
        step = 4 if self.batch_norm else 3  # Linear, [BatchNorm], ReLU, Dropout
        for i in range(self.depth):
            state[f"trunk.{trunk_index}.weight"] = take[f"w{i}"].T
            state[f"trunk.{trunk_index}.bias"] = take[f"b{i}"]
            if self.batch_norm:
                bn = trunk_index + 1
                state |= {f"trunk.{bn}.weight": take[f"gamma{i}"],
                          f"trunk.{bn}.bias": take[f"beta{i}"],
                          f"trunk.{bn}.running_mean": take[f"mean{i}"],
                          f"trunk.{bn}.running_var": take[f"var{i}"]}
            trunk_index += step
        for t in range(len(self.out_sizes)):
            state[f"outputs.{t}.weight"] = take[f"out_w{t}"].T
            state[f"outputs.{t}.bias"] = take[f"out_b{t}"]
        return state

    def snapshot(self) -> dict[str, torch.Tensor]:
        """A copy of every parameter and buffer (member axes first)."""
        return {name: self.member_view(name).detach().clone()
                for name, _ in [*self.named_parameters(), *self.named_buffers()]}

    @torch.no_grad()
    def copy_members(self, source: dict[str, torch.Tensor], members: list[int],
                     into_self: bool) -> None:
        """Copy ``members`` between this module and ``source`` (a :meth:`snapshot`)."""
        for name, saved in source.items():
            own = self.member_view(name)
            for m in members:
                g, s = divmod(m, self.per_group)
                if into_self:
                    own[g, s].copy_(saved[g, s])
                else:
                    saved[g, s].copy_(own[g, s])
