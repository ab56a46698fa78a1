"""Whole batches served from in-memory tensors.

The embeddings of a whole study fit in memory (12,000 x 768 floats are 37 MB), so a
``DataLoader`` that collates one sample at a time only adds overhead to a head whose step costs a
few milliseconds. ``TensorBatches`` shuffles once per epoch with a seeded generator and yields
slices; under DDP each rank takes every ``world_size``-th batch.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


class TensorBatches:
    """Iterable of ``(x, y)`` batches over aligned tensors; a Lightning dataloader."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, shuffle: bool,
                 seed: int = 0):
        self.x, self.y = x, y
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.epoch = 0

    def _rank(self) -> tuple[int, int]:
        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
        return 0, 1

    def _starts(self) -> range:
        n = len(self.x)
        # a final batch of one row breaks batch norm in training: fold it into the previous one
        last = n - 1 if self.shuffle and n > 1 and n % self.batch_size == 1 else n
        return range(0, last, self.batch_size)

    def __len__(self) -> int:
        rank, world = self._rank()
        return len(self._starts()[rank::world])

    def __iter__(self):
        order = None
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(len(self.x), generator=generator)
            self.epoch += 1
        x, y = (self.x, self.y) if order is None else (self.x[order], self.y[order])
        starts = list(self._starts())
        rank, world = self._rank()
        for i in range(rank, len(starts), world):
            stop = starts[i + 1] if i + 1 < len(starts) else len(x)
            yield x[starts[i]:stop], y[starts[i]:stop]
