"""Batches for an ensemble whose member groups (folds) train on different rows.

The embeddings of a whole study fit in memory (12,000 x 1,280 floats are 61 MB), so batches are
gathered from in-memory tensors instead of collated row by row.

``GroupBatches`` (training): each group (fold) shuffles its own training rows every epoch with a
seeded generator (seed, group, epoch). Folds of unequal size take the same number of steps, that
of the largest fold; a smaller fold continues into a fresh permutation of its rows to fill its
last steps, as ``DistributedSampler`` pads a rank. So every row is seen at least once per epoch
and a fold's surplus (at most the size difference) a second time; every batch is full, so batch
norm never sees a batch of one row. Under DDP each rank takes every ``world_size``-th step.

``GroupRows`` (validation, prediction): each group's rows padded to a common length, with a
0/1 weight per row so that padding counts for nothing.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.distributed as dist


def _rank() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class GroupBatches:
    """Iterable of ``(x, y)`` with x (G, B, D), y (G, B, T): one batch of each group's rows."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, rows: list[np.ndarray],
                 batch_size: int, seed: int = 0):
        if any(len(r) == 0 for r in rows):
            raise ValueError("every group needs at least one training row")
        self.x, self.y, self.rows = x, y, [np.asarray(r) for r in rows]
        self.batch_size, self.seed = batch_size, seed
        self.epoch = 0

    @property
    def steps(self) -> int:
        return math.ceil(max(len(r) for r in self.rows) / self.batch_size)

    def order(self, epoch: int) -> torch.Tensor:
        """(G, steps * batch_size) row indices of one epoch."""
        length = self.steps * self.batch_size
        orders = []
        for g, rows in enumerate(self.rows):
            rng = np.random.default_rng([self.seed, g, epoch])
            repeats = math.ceil(length / len(rows))
            orders.append(np.concatenate([rng.permutation(rows) for _ in range(repeats)])[:length])
        return torch.from_numpy(np.stack(orders))

    def __len__(self) -> int:
        rank, world = _rank()
        return len(range(rank, self.steps, world))

    def __iter__(self):
        order = self.order(self.epoch)
        self.epoch += 1
        rank, world = _rank()
        b = self.batch_size
        for i in range(rank, self.steps, world):
            index = order[:, i * b:(i + 1) * b]
            yield self.x[index], self.y[index]


class GroupRows:
    """Iterable of ``(x, y, w)``: each group's rows padded to one length, in chunks of ``chunk``."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, rows: list[np.ndarray],
                 chunk: int = 4096):
        self.x, self.y, self.chunk = x, y, chunk
        length = max(max((len(r) for r in rows), default=0), 1)
        self.index = torch.zeros(len(rows), length, dtype=torch.long)
        self.weight = torch.zeros(len(rows), length)
        for g, r in enumerate(rows):
            self.index[g, :len(r)] = torch.as_tensor(np.asarray(r), dtype=torch.long)
            self.weight[g, :len(r)] = 1.0

    def __len__(self) -> int:
        return math.ceil(self.index.shape[1] / self.chunk)

    def __iter__(self):
        for start in range(0, self.index.shape[1], self.chunk):
            index = self.index[:, start:start + self.chunk]
            yield self.x[index], self.y[index], self.weight[:, start:start + self.chunk]
