"""The vectorized seed ensemble trains every member, keeps them distinct, and exports them."""

import torch
from torch import nn

from sinterlab.models.ensemble import SeedEnsemble
from sinterlab.models.mlp import mlp_trunk


def make() -> nn.Module:
    return nn.Sequential(mlp_trunk(16, [32, 16, 8], 0.1, True), nn.Linear(8, 2))


def test_members_learn_independently_and_export_as_modules():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(256, 16, generator=gen)
    y = (x[:, 0] - x[:, 1] > 0).long()
    ensemble = SeedEnsemble(make, [0, 1, 2], lr=1e-2, weight_decay=0.0)
    generators = [torch.Generator().manual_seed(s) for s in ensemble.seeds]
    first = ensemble.train_epoch(x, y, 32, generators)
    for _ in range(25):
        last = ensemble.train_epoch(x, y, 32, generators)
    assert (last < first).all()
    probs = ensemble.predict_proba(x)
    assert probs.shape == (3, 256, 2)
    assert ((probs.argmax(-1) == y).float().mean(dim=1) > 0.95).all()
    assert not torch.allclose(probs[0], probs[1])  # other seeds, other members
    member = ensemble.member(2, make()).eval()
    with torch.no_grad():
        torch.testing.assert_close(member(x).softmax(-1), probs[2])
