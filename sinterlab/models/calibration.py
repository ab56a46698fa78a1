"""Temperature scaling of each member's class probabilities (Guo et al., 2017).

After training, every member's logits on its own fold's validation rows get one temperature
``T`` (the one minimising their cross-entropy; ``softmax(logits / T)``). ``T`` never changes a
member's predicted class, only how sure it claims to be. Members without validation rows (the
final refit of ``model=auto``) take the median temperature of their candidate's CV members.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from sinterlab.models.head import HeadEnsemble

#: temperatures are kept inside this range (a member that fits its validation rows perfectly
#: would otherwise be pushed towards T -> 0)
BOUNDS = (0.05, 20.0)


def _fit(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(S, N, C) logits of S members on the same N rows -> their S temperatures."""
    log_t = torch.zeros(len(logits), requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.5, max_iter=100, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        scaled = logits / log_t.exp()[:, None, None]
        loss = F.cross_entropy(scaled.flatten(0, 1), labels.repeat(len(logits)))
        loss.backward()
        return loss

    optimizer.step(closure)
    return log_t.detach().exp().clamp(*BOUNDS)


def fit_temperatures(head: HeadEnsemble, x: torch.Tensor, y: torch.Tensor,
                     val_rows: list[np.ndarray]) -> None:
    """Set every classification target's per-member temperature from its group's ``val_rows``
    (one index array per group, as the head's groups are ordered)."""
    per_group = head.stack.per_group
    for i, target in enumerate(head.targets):
        if target["kind"] != "classification":
            continue
        temps = []
        for g, rows in enumerate(val_rows):
            logits = head.logits(x[rows])[i][g * per_group:(g + 1) * per_group].clone()
            temps.append(_fit(logits, y[rows, i].long().clone()) if len(rows)
                         else torch.ones(per_group))
        getattr(head, f"temperature_{i}").copy_(torch.cat(temps))


def set_temperatures(head: HeadEnsemble, temperatures: list[float | None]) -> None:
    """One temperature per target for every member (None: regression, nothing to set)."""
    for i, value in enumerate(temperatures):
        if value is not None:
            getattr(head, f"temperature_{i}").fill_(float(value))
