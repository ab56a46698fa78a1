"""The weighted ensemble of candidates (issue 43): greedy selection on inner held-out image
outputs, cross-fitted inner scores, and predict serving a blend of checkpoints by weight."""

from pathlib import Path

import numpy as np
import pytest

from sinterlab.study.ensemble import blend, cross_fitted, greedy_weights
from tests.conftest import only_candidates


def log_loss(truth: np.ndarray, probs: np.ndarray) -> float:
    return float(-np.mean(np.log(probs[np.arange(len(truth)), truth])))


def two_views(n: int = 60, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two members, each sure and right on its own half of the images and unsure on the
    other: either alone is mediocre, their mean is good."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 2, n)
    sure = np.where(truth[:, None] == np.arange(2), 0.95, 0.05)
    half = np.arange(n) < n // 2
    a = np.where(half[:, None], sure, 0.5)
    b = np.where(half[:, None], 0.5, sure)
    return np.stack([a, b]), truth


def test_greedy_weights_serve_one_member_or_blend_complementary_ones():
    outputs, truth = two_views()
    weights = greedy_weights(outputs, truth, log_loss, rounds=20)
    assert weights.sum() == pytest.approx(1.0)
    assert weights == pytest.approx([0.5, 0.5])
    mixed = log_loss(truth, blend(outputs, weights))
    assert mixed < min(log_loss(truth, o) for o in outputs) - 0.05
    # beside a member that is right everywhere, the others get no weight
    perfect = np.where(truth[:, None] == np.arange(2), 0.99, 0.01)
    weights = greedy_weights(np.concatenate([outputs, perfect[None]]), truth, log_loss, 20)
    assert weights == pytest.approx([0.0, 0.0, 1.0])
    with pytest.raises(ValueError, match="rounds"):
        greedy_weights(outputs, truth, log_loss, 0)


def test_a_cross_fitted_group_never_reads_its_own_truth():
    outputs, truth = two_views(n=90)
    groups = np.repeat(np.arange(3), 30)
    out = cross_fitted(outputs, truth, groups, log_loss, rounds=10)
    flipped = truth.copy()
    flipped[groups == 1] = 1 - flipped[groups == 1]
    again = cross_fitted(outputs, flipped, groups, log_loss, rounds=10)
    # group 1's outputs are weighted by what the other groups chose: unchanged
    np.testing.assert_array_equal(out[groups == 1], again[groups == 1])
    # the others' weights were fitted on group 1's (now wrong) truth among the rest
    assert not np.array_equal(out[groups != 1], again[groups != 1])


#: the cheap candidates of a tiny model=auto run whose rule prefers the ensemble when the inner
#: CV cannot tell it from the best single point (one_se with the ensemble first in the order)
PREFER_ENSEMBLE = ["model=auto", "protocol.folds=3", "protocol.seeds=[0]",
                   "model.selection.inner_folds=2", "model.selection.rule=one_se",
                   "model.selection.ensemble.complexity=0",
                   *only_candidates("sk_logreg_image", "sk_measures", "mlp_image")]


@pytest.mark.slow
def test_a_served_ensemble_is_its_members_mean_by_weight(make_cfg, tiny_descriptor, tmp_path):
    import json

    from sinterlab.manifest import RunManifest
    from sinterlab.predict import load_run_model, predict
    from sinterlab.study.training import run_experiment
    from tests.conftest import predict_config

    run_dir = tmp_path / "run"
    run_experiment(make_cfg(*PREFER_ENSEMBLE), run_dir)
    selection = json.loads((run_dir / "metrics.json").read_text())["selection"]
    final = selection["final"]
    assert final["model"] == "ensemble" and final["point"].startswith("ensemble: ")
    weights = [part["weight"] for part in final["blend"]]
    assert sum(weights) == pytest.approx(1.0) and weights == sorted(weights, reverse=True)
    manifest = RunManifest.read(run_dir / "manifest.json")
    assert [m.checkpoint for m in manifest.blend] == [
        part["model"]["checkpoint"] for part in final["blend"]]
    assert all(manifest.recorded(m.checkpoint) for m in manifest.blend)  # hashed, verified
    # every outer fold's ensemble was built on that fold's inner images: weights per fold
    assert len(selection["ensemble"]) == 3 and len(selection["single_winners"]) == 3
    report = (run_dir / "report.md").read_text()
    assert "Weighted ensemble" in report and "The final model is the ensemble" in report

    images = sorted((tiny_descriptor.parent / "images").glob("*.tif"))[:3]
    cfg = predict_config(run_dir, images=[str(p) for p in images], members=True)
    table, _ = predict(cfg)
    assert table["model"].str.startswith("ensemble: ").all()
    # the expected burst count is linear in the probabilities: the blend's is the members'
    # own (each served alone from its checkpoint), weighted
    alone = [predict(cfg, load_run_model(cfg, m.checkpoint))[0] for m in manifest.blend]
    expected = sum(m.weight * t["burst_count_expected"] for m, t in zip(
        manifest.blend, alone, strict=True))
    np.testing.assert_allclose(table["burst_count_expected"], expected, atol=0.02)
    if len(manifest.blend) > 1:
        assert "burst_count_member1" in table
    # explain draws the members that read patches, by their renormalised weights
    from sinterlab.explain.write import explain_images

    model = load_run_model(cfg)
    _, written, bad = explain_images(model, images[:1], tmp_path / "maps", cam_patches=1,
                                     progress=False)
    assert not bad and any(Path(p).name.endswith("_map.png") for p in written)
    assert sum(p.weight for p in model.patch_parts()) == pytest.approx(1.0)
