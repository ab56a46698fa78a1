"""The head ensemble: learns, matches a head trained alone, stops members early, keeps the best."""

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import OmegaConf

from sinterlab.models.batches import GroupBatches, GroupRows
from sinterlab.models.calibration import fit_temperatures
from sinterlab.models.head import HeadEnsemble
from sinterlab.models.mlp import MemberMLP
from sinterlab.predict import load_model
from sinterlab.study.fit import head_batch
from tests.conftest import compose_train

HIDDEN = [32, 16, 8]


def spec(kind: str, members: int, **extra) -> dict:
    base = {"name": "t", "kind": kind, "loss_weight": 1.0}
    if kind == "classification":
        return base | {"num_classes": 2, "class_weights": None} | extra
    return base | extra


def make(targets, groups=1, seeds=(0,), dropout=0.0, lr=1e-2, patience=None, epochs=1):
    return HeadEnsemble(12, targets, HIDDEN, dropout, True, "adam", lr, 0.0, None, epochs,
                        groups=groups, seeds=seeds, patience=patience)


def fit(head, train, val=None, **trainer):
    pl.seed_everything(0, verbose=False)
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False,
                         num_sanity_val_steps=0, **trainer)
    trainer.fit(head, train, val)
    return trainer


def data(n=192, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 12, generator=gen)
    y = (x[:, 0] + x[:, 1] > 0).float()[:, None]
    return x, y


def test_overfits_a_separable_set_in_every_fold():
    x, y = data()
    rows = [np.arange(0, 96), np.arange(96, 192)]
    head = make([spec("classification", 4)], groups=2, seeds=(0, 1))
    fit(head, GroupBatches(x, y, rows, 32), max_epochs=40)
    probs = head.predict_members(torch.stack([x[r] for r in rows]))[0]  # (4, 96, 2)
    truth = torch.stack([y[r, 0] for r in rows]).numpy()
    for m in range(4):
        assert (probs[m].argmax(axis=1) == truth[m // 2]).mean() == 1.0


def test_regression_recovers_a_linear_target_in_its_units():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(256, 12, generator=gen)
    value = 150 + 40 * x[:, 0] - 25 * x[:, 3]  # burst-count-like scale
    target = spec("regression", 1, mean=[float(value.mean())], std=[float(value.std())])
    head = make([target])
    fit(head, GroupBatches(x, value[:, None], [np.arange(256)], 32), max_epochs=80)
    predicted = head.predict_members(x)[0][0]
    assert np.abs(predicted - value.numpy()).mean() < 10  # in BC, the target's sd is ~47


def test_a_member_trains_as_the_same_head_alone():
    """Dropout off: member (fold 1, seed 1) of a 2 x 2 ensemble whose folds differ in size ends
    with the weights of one MemberMLP trained alone on the same rows in the same order."""
    x, y = data(200)
    rows = [np.arange(0, 120), np.arange(120, 200)]  # unequal folds: fold 1 wraps around
    head = make([spec("classification", 4)], groups=2, seeds=(3, 7), lr=1e-3)
    loader = GroupBatches(x, y, rows, 32)
    steps = 50
    epochs = -(-steps // loader.steps)
    fit(head, loader, max_steps=steps)

    torch.manual_seed(7)
    alone = MemberMLP(12, HIDDEN, 0.0, True, [2])
    optimizer = torch.optim.Adam(alone.parameters(), lr=1e-3, weight_decay=0.0, fused=True)
    order = torch.cat([loader.order(e)[1] for e in range(epochs)])
    alone.train()
    for i in range(steps):
        index = order[i * 32:(i + 1) * 32]
        loss = F.cross_entropy(alone(x[index])[0], y[index, 0].long())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    state = head.stack.member_state(3)
    # a bias just before batch norm has zero gradient in exact arithmetic and no effect on the
    # output; Adam turns its rounding noise into lr-sized steps, so it (and the running mean
    # that carries it) is compared through the outputs with batch statistics instead
    cancelled = {f"trunk.{i}.bias" for i in (0, 4, 8)} | {f"trunk.{i}.running_mean"
                                                         for i in (1, 5, 9)}
    for name, tensor in alone.state_dict().items():
        if name.endswith("num_batches_tracked") or name in cancelled:
            continue
        torch.testing.assert_close(state[name], tensor, atol=1e-4, rtol=0, msg=name)
    with torch.no_grad():
        batch = x[:64]
        torch.testing.assert_close(head.train()(torch.stack([batch, batch]))[0][3],
                                   alone.train()(batch)[0], atol=1e-4, rtol=0)


def test_members_stop_early_and_keep_their_best_weights():
    x, y = data(256)
    rows = [np.arange(0, 128), np.arange(128, 256)]
    val = [np.arange(128, 160), np.arange(0, 32)]  # each fold validates on the other's rows
    head = make([spec("classification", 2)], groups=2, seeds=(0,), lr=5e-2, patience=2,
                epochs=200)
    trainer = fit(head, GroupBatches(x, y, rows, 32), GroupRows(x, y, val), max_epochs=200,
                  check_val_every_n_epoch=1)
    summary = head.member_summary()
    assert trainer.current_epoch < 200  # every member stopped: the run ended early
    assert all(r["early_stopped"] for r in summary)
    for r in summary:
        assert r["stopped_epoch"] - r["best_epoch"] >= 2
    # the weights kept are those of the best validation loss, member by member
    losses = []
    with torch.no_grad():
        for batch in GroupRows(x, y, val):
            sums, _ = head.eval()._member_losses(head(batch[0]), batch[1], batch[2])
            losses.append(sums)
    np.testing.assert_allclose(losses[0].numpy(), head.best_loss.numpy(), rtol=1e-5)


def test_group_batches_see_every_row_of_each_fold_each_epoch():
    x, y = data(100)
    rows = [np.arange(0, 70), np.arange(70, 100)]
    loader = GroupBatches(x, y, rows, 16)
    assert loader.steps == 5 and len(loader) == 5
    order = loader.order(0)
    assert order.shape == (2, 80)
    for g, r in enumerate(rows):
        assert set(order[g].tolist()) == set(r.tolist())
    assert not torch.equal(loader.order(0), loader.order(1))  # reshuffled every epoch
    with pytest.raises(ValueError, match="at least one"):
        GroupBatches(x, y, [np.arange(3), np.array([], dtype=int)], 16)


def ordered_levels(n: int = 1200) -> tuple[torch.Tensor, torch.Tensor]:
    """Five ordered levels whose neighbours overlap: a noisy linear score, cut into bins."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, 12, generator=gen)
    z = x[:, 0] + 0.5 * x[:, 1] + 0.6 * torch.randn(n, generator=gen)
    return x, torch.bucketize(z, torch.tensor([-1.2, -0.4, 0.4, 1.2])).float()[:, None]


@pytest.mark.parametrize("loss", ["cross_entropy", "corn", "level_value"])
def test_ordinal_heads_give_level_probabilities_and_learn_an_ordered_target(loss):
    """CORN (coral-pytorch) and the level-value regression turn their outputs (C-1 conditional
    logits; one value) into probabilities over the five levels, and read the level to within
    about half a level, like the cross-entropy head. Measured on this set (seeds 0/1/2, 600
    test rows): MAE in levels cross-entropy 0.58-0.66, CORN 0.59-0.66, level value 0.61-0.63;
    ranked probability score 0.102-0.103, 0.102-0.106, 0.107-0.112: no framing wins here."""
    x, y = ordered_levels()
    train, test = np.arange(600), np.arange(600, 1200)
    target = spec("classification", 1, num_classes=5) | {"values": [50, 100, 150, 200, 250]}
    head = HeadEnsemble(12, [target], HIDDEN, 0.2, True, "adam", 1e-3, 1e-4, None, 30,
                        loss=loss)
    outputs = {"cross_entropy": 5, "corn": 4, "level_value": 1}[loss]
    assert head.stack(x[None, :2])[0].shape[-1] == outputs
    fit(head, GroupBatches(x, y, [train], 32), max_epochs=30)
    if loss == "level_value":  # its spread comes from validation rows, as a temperature
        fit_temperatures(head, x, y, [np.arange(400, 600)])
        assert 0.05 < head.temperatures()[0][0] < 5
    probs = head.predict_members(x[test])[0][0]
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert (probs >= 0).all()
    truth = y[test, 0].numpy()
    mae = np.abs(probs.argmax(axis=1) - truth).mean()
    middle = np.abs(2 - truth).mean()  # always the middle level
    assert mae < 0.75 < middle


@pytest.mark.parametrize("cls", [torch.optim.Adam, torch.optim.AdamW])
def test_configured_optimizer_gets_lr_and_weight_decay_and_checkpoints_keep_its_path(cls,
                                                                                      tmp_path):
    path = f"torch.optim.{cls.__name__}"
    cfg = compose_train([f"model.module.optimizer._target_={path}", "model.module.hidden=[8]"],
                        tmp_path)
    head = instantiate(cfg.model.module)(in_features=12, targets=[spec("classification", 1)])
    optimizer = head.configure_optimizers()
    assert type(optimizer) is cls and optimizer.defaults["fused"]
    assert optimizer.defaults["lr"] == cfg.model.module.lr
    assert optimizer.defaults["weight_decay"] == cfg.model.module.weight_decay
    x, y = data(64)
    trainer = fit(head, GroupBatches(x, y, [np.arange(64)], 32), max_epochs=1)
    trainer.save_checkpoint(tmp_path / "head.ckpt")
    loaded = load_model(tmp_path / "head.ckpt", "head")  # weights_only: a plain string path
    assert loaded.hparams.optimizer == head.hparams.optimizer == path
    assert type(loaded.configure_optimizers()) is cls


@pytest.mark.parametrize(("name", "cls"), [("adam", torch.optim.Adam),
                                           ("adamw", torch.optim.AdamW)])
def test_checkpoints_of_older_runs_name_their_optimizer_in_a_word(name, cls):
    head = HeadEnsemble(12, [spec("classification", 1)], HIDDEN, 0.0, True, name, 1e-3, 0.0)
    assert type(head.configure_optimizers()) is cls


@pytest.mark.parametrize(("optimizer", "match"), [
    ({"_target_": "torch.optim.Adamm", "_partial_": True}, "torch.optim.Adamm"),
    ("torch.nn.Linear", "not an optimizer class"),
    ("sgd", "'sgd' is not an optimizer class"),
    ({"_target_": "torch.optim.Adam", "lr": 0.1}, "model.module.lr")])
def test_an_unknown_optimizer_is_a_clear_error(optimizer, match):
    with pytest.raises(ValueError, match=match):
        HeadEnsemble(12, [spec("classification", 1)], HIDDEN, 0.0, True, optimizer, 1e-3, 0.0)


def test_stacked_corn_loss_equals_coral_pytorchs_per_member():
    """Issue 34: CORN's loss for every member in one expression, equal to coral-pytorch's
    ``corn_loss`` called once per member on its own rows (gradients too)."""
    from coral_pytorch.losses import corn_loss

    from sinterlab.models.head import stacked_corn_loss

    torch.manual_seed(0)
    logits = torch.randn(6, 50, 4, requires_grad=True)
    labels = torch.randint(0, 5, (6, 50))
    keep = torch.rand(6, 50) > 0.3
    keep[5] = False  # a member without rows in this batch
    keep[4] = labels[4] == 0  # only the lowest level: only task 0 reads rows
    batched = stacked_corn_loss(logits, labels, keep)
    reference = torch.stack([corn_loss(logits[m][keep[m]], labels[m][keep[m]], 5)
                             for m in range(5)])
    torch.testing.assert_close(batched[:5], reference)
    assert batched[5] == 0
    grad, = torch.autograd.grad(batched[:5].sum(), logits)
    grad_ref, = torch.autograd.grad(reference.sum(), logits)
    torch.testing.assert_close(grad, grad_ref)


def test_a_head_shrinks_its_batch_where_an_epoch_would_be_a_few_steps():
    """model=auto's heads train at batch 128 with lr 2e-3; a member with fewer rows than 25
    steps of 128 trains at rows / 25 (not below 32), the learning rate scaled by the square
    root; without the keys the configured values stand."""
    model = OmegaConf.create({"batch_size": 128, "min_steps_per_epoch": 25,
                              "min_batch_size": 32, "module": {"lr": 2e-3}})
    rows = [np.arange(n) for n in (4000, 4400, 4800)]  # the paper preset's inner members
    assert head_batch(model, rows) == (128, 2e-3)
    batch, lr = head_batch(model, [np.arange(n) for n in (800, 880, 960)])  # the demo's
    assert batch == 35 and lr == pytest.approx(2e-3 * (35 / 128) ** 0.5)
    assert head_batch(model, [np.arange(100)])[0] == 32
    plain = OmegaConf.create({"batch_size": 32, "module": {"lr": 1e-3}})
    assert head_batch(plain, [np.arange(100)]) == (32, 1e-3)


def test_a_bag_head_reads_the_mean_row_of_each_image():
    """pooling=image_mean: given an image's patches, every patch gets the output of their
    mean; without image ids each row is read on its own (the mean rows it was trained on)."""
    bag = HeadEnsemble(12, [spec("classification", 2)], HIDDEN, 0.0, True, "adam", 1e-2, 0.0,
                       groups=2, pooling="image_mean")
    x, _ = data(12)
    images = np.repeat(["b", "a", "c"], 4)  # ids out of sorted order
    probs = bag.predict_members(x, images=images)[0]  # (M, N, C)
    means = torch.stack([x[images == i].mean(dim=0) for i in ("b", "a", "c")])
    alone = bag.predict_members(means)[0]
    assert np.allclose(probs, np.repeat(alone, 4, axis=1), atol=1e-6)
    # per group ids (G, N): the second group sees other images
    groups = np.stack([images, np.repeat(["a", "b", "c", "d"], 3)])
    split = bag.predict_members(x[None].expand(2, -1, -1), images=groups)[0]
    assert np.allclose(split[0], probs[0], atol=1e-6)
    assert np.allclose(split[1, :3], bag.predict_members(x[:3].mean(0, keepdim=True))[0][1],
                       atol=1e-6)
    with pytest.raises(ValueError, match="a head reads one of"):
        HeadEnsemble(12, [spec("classification", 2)], HIDDEN, 0.0, True, "adam", 1e-2, 0.0,
                     pooling="measures")
