"""Several seeds of the MLP head trained at once as one vectorized ensemble.

On a CPU a head step at batch 32 is too small to keep the cores busy, so K seeds (or folds)
trained one after another cost about K times one. Stacking the K heads' parameters
(``torch.func.stack_module_state``) and mapping one functional step over them with ``vmap``
turns K small matrix products into one batched product per layer. Each member keeps its own
initialisation, batch order, dropout masks and batch-norm statistics; Adam is element-wise, so
one optimizer over the stacked tensors equals K independent ones.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad_and_value, stack_module_state, vmap


class SeedEnsemble:
    """K copies of ``make_model()``, one per seed, trained together on the same rows."""

    def __init__(self, make_model, seeds: list[int], lr: float, weight_decay: float):
        self.seeds = list(seeds)
        members = []
        for seed in self.seeds:
            torch.manual_seed(seed)
            members.append(make_model())
        self.params, self.buffers = stack_module_state(members)
        self.base = copy.deepcopy(members[0]).to("meta")
        self.optimizer = torch.optim.Adam(list(self.params.values()), lr=lr,
                                          weight_decay=weight_decay, fused=True)

    def _loss(self, params, buffers, x, y):
        return F.cross_entropy(functional_call(self.base, (params, buffers), (x,)), y)

    def train_epoch(self, x: torch.Tensor, y: torch.Tensor, batch_size: int,
                    generators: list[torch.Generator]) -> torch.Tensor:
        """One epoch; member k shuffles with ``generators[k]``. Returns mean loss per member."""
        self.base.train()
        orders = torch.stack([torch.randperm(len(x), generator=g) for g in generators])
        step = vmap(grad_and_value(self._loss), randomness="different")
        total = torch.zeros(len(self.seeds))
        steps = 0
        for start in range(0, len(x) - 1, batch_size):
            index = orders[:, start:start + batch_size]
            grads, loss = step(self.params, self.buffers, x[index], y[index])
            for name, tensor in self.params.items():
                tensor.grad = grads[name]
            self.optimizer.step()
            total += loss.detach()
            steps += 1
        return total / max(steps, 1)

    @torch.no_grad()
    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        """(K, n, C) class probabilities, batch norm in eval mode."""
        self.base.eval()
        forward = vmap(lambda p, b: functional_call(self.base, (p, b), (x,)))
        return forward(self.params, self.buffers).softmax(dim=-1)

    def member(self, k: int, template: nn.Module) -> nn.Module:
        """Member ``k`` as an ordinary module (a copy of ``template`` with its weights)."""
        model = copy.deepcopy(template)
        state = {n: t[k] for n, t in {**self.params, **self.buffers}.items()}
        model.load_state_dict(state)
        return model
