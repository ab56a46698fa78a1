"""Out-of-fold evaluation: folds, group bootstrap, permutation test, verdict."""

import numpy as np
import pytest

from sinterlab.data.splits import fold_assignments
from sinterlab.errors import SinterlabError
from sinterlab.evaluation.metrics import LEVELS
from sinterlab.evaluation.statistics import (
    LevelTables,
    RidgeFolds,
    bootstrap_intervals,
    permutation_test,
    verdict,
)

FRACTIONS = {"train": 0.8, "val": 0.1, "test": 0.1}


def design(samples_per_class=6, classes=3, images=2, patches=4):
    """Rows of patches: label, sample, image."""
    labels, samples, images_ = [], [], []
    for c in range(classes):
        for s in range(samples_per_class):
            for i in range(images):
                for _ in range(patches):
                    labels.append(c)
                    samples.append(f"c{c}s{s}")
                    images_.append(f"c{c}s{s}i{i}")
    return np.array(labels), np.array(samples), np.array(images_)


def test_folds_test_every_group_once_and_validate_inside_training():
    labels, samples, _ = design()
    assignment = fold_assignments(labels, samples, FRACTIONS, seed=0, folds=3)
    assert assignment.shape == (3, len(labels))
    tested = assignment == "test"
    assert (tested.sum(axis=0) == 1).all()  # every row tested exactly once
    for fold in assignment:
        for subset in ("train", "val", "test"):
            groups = set(samples[fold == subset])
            others = set(samples[fold != subset])
            assert not groups & others  # groups whole
        # stratified: each fold tests 2 samples of each class
        test_samples = np.unique(samples[fold == "test"])
        assert sorted(s[:2] for s in test_samples) == ["c0", "c0", "c1", "c1", "c2", "c2"]
        assert len(np.unique(samples[fold == "val"])) >= 3  # validation from training groups


def test_folds_depend_on_the_split_seed_only():
    labels, samples, _ = design()
    a = fold_assignments(labels, samples, FRACTIONS, seed=4, folds=3)
    b = fold_assignments(labels, samples, FRACTIONS, seed=4, folds=3)
    c = fold_assignments(labels, samples, FRACTIONS, seed=5, folds=3)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_folds_say_when_they_cannot_be_stratified(caplog):
    labels, samples, _ = design(samples_per_class=5, classes=3)  # 5 samples a class, 6 folds
    assignment = fold_assignments(labels, samples, FRACTIONS, seed=0, folds=6, what="sample")
    assert (assignment == "test").sum(axis=0).tolist() == [1] * len(labels)
    assert "6 folds are not stratified by label" in caplog.text


def test_too_few_groups_for_the_folds_is_a_clear_error():
    labels, samples, _ = design(samples_per_class=1, classes=2)
    with pytest.raises(SinterlabError, match="too few sample groups .2. for 3 folds"):
        fold_assignments(labels, samples, FRACTIONS, seed=0, folds=3, what="sample")


def test_bootstrap_resamples_whole_samples_not_patches():
    labels, samples, images = design(samples_per_class=4, classes=2)
    probs = np.eye(2)[labels] * 0.8 + 0.1
    table = LevelTables("classification", labels, probs, images, samples, samples)
    for draw in table.draws(20, seed=0):
        drawn = samples[draw["patch"]]
        units, counts = np.unique(drawn, return_counts=True)
        # each drawn sample comes with all of its 8 patches (a multiple when drawn twice)
        assert (counts % 8 == 0).all()
        assert counts.sum() == len(labels)
        # image and sample levels draw the same samples
        per_sample = dict(zip(units, counts // 8, strict=True))
        image_units = table.levels["image"][2][draw["image"]]
        assert all((image_units == u).sum() == 2 * k for u, k in per_sample.items())


def test_bootstrap_interval_width_reflects_samples_not_patches():
    """Same predictions, patches x10: a patch bootstrap would narrow; a sample one does not."""
    rng = np.random.default_rng(0)
    labels, samples, images = design(samples_per_class=5, classes=2, patches=2)
    sample_correct = {s: rng.random() < 0.7 for s in np.unique(samples)}
    right = np.array([sample_correct[s] for s in samples])
    probs = np.where(right[:, None], np.eye(2)[labels], np.eye(2)[1 - labels]) * 0.8 + 0.1

    def width(repeat):
        table = LevelTables("classification", np.repeat(labels, repeat),
                            np.repeat(probs, repeat, axis=0), np.repeat(images, repeat),
                            np.repeat(samples, repeat), np.repeat(samples, repeat))
        cell = bootstrap_intervals({"m": table}, 300, seed=1)["m"].cell("patch", "accuracy")
        assert cell.low <= cell.value <= cell.high
        return cell.width

    assert width(10) == pytest.approx(width(1), abs=0.05)
    assert width(1) > 0.2  # 10 samples: the interval is wide, as it should be


def test_paired_difference_and_verdict():
    labels, samples, images = design(samples_per_class=6, classes=2)
    good = np.eye(2)[labels] * 0.8 + 0.1
    rng = np.random.default_rng(0)
    noisy = rng.dirichlet([1, 1], size=len(labels))
    tables = {name: LevelTables("classification", labels, out, images, samples, samples)
              for name, out in (("head", noisy), ("linear_probe", good))}
    pooled = bootstrap_intervals(tables, 200, seed=0, reference="head")
    cell = pooled["linear_probe"].cell("image", "accuracy")
    assert cell.value == 1.0 and cell.diff > 0 and cell.diff_low > 0
    v = verdict(pooled, "classification", "image", "head")
    assert v.best_model == "linear_probe" and v.best_baseline == "linear_probe"
    assert not v.primary_beats_by_more_than_interval and not v.primary_clearly_better


def test_permutation_test_separates_signal_from_chance():
    rng = np.random.default_rng(0)
    labels, samples, images = design(samples_per_class=6, classes=2, images=2, patches=1)
    fold = fold_assignments(labels, samples, FRACTIONS, seed=0, folds=3)
    image_fold = (fold == "test").argmax(axis=0)
    signal = rng.normal(size=(len(labels), 16)) + 2.0 * labels[:, None]
    noise = rng.normal(size=(len(labels), 16))
    strong = permutation_test(signal, labels, samples, image_fold, 50, seed=0, alpha=1.0)
    none = permutation_test(noise, labels, samples, image_fold, 50, seed=0, alpha=1.0)
    assert strong["observed_accuracy"] > 0.9 and strong["p_value"] < 0.05
    assert none["p_value"] > 0.05


@pytest.mark.parametrize("classes, features", [(2, 16), (3, 16), (4, 80)])
def test_all_permutations_at_once_equal_a_refit_per_permutation(classes, features):
    """The closed-form ridge of every labelling gives scikit-learn's refitted classifier's
    accuracies, with more features than training images too (the kernel form) and a fold whose
    training images lack a class."""
    from sklearn.linear_model import RidgeClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(classes)
    labels, samples, images = design(samples_per_class=5, classes=classes, images=2, patches=1)
    fold = fold_assignments(labels, samples, FRACTIONS, seed=0, folds=3)
    image_fold = (fold == "test").argmax(axis=0)
    x = rng.normal(size=(len(labels), features)) + 0.7 * labels[:, None]
    fast = permutation_test(x, labels, samples, image_fold, 30, seed=1, alpha=1.0)
    refit = permutation_test(x, labels, samples, image_fold, 30, seed=1, alpha=1.0,
                             make_model=lambda: make_pipeline(StandardScaler(),
                                                              RidgeClassifier(alpha=1.0)))
    assert fast == refit
    assert 0.0 < fast["observed_accuracy"] <= 1.0
    lacking = labels.copy()
    lacking[(image_fold != 0) & (labels == classes - 1)] = 0  # fold 0 trains without a class
    one = RidgeFolds(x, image_fold, 1.0).correct(lacking[None])[0]
    model = make_pipeline(StandardScaler(), RidgeClassifier(alpha=1.0))
    expected = 0
    for f in range(3):
        test = image_fold == f
        model.fit(x[~test], lacking[~test])
        expected += int(np.sum(model.predict(x[test]) == lacking[test]))
    assert one == expected


@pytest.mark.parametrize("kind, classes, ordered", [
    ("classification", 2, False), ("classification", 4, False), ("regression", None, False),
    ("classification", 5, True), ("classification", 2, True)])
def test_bootstrap_draw_metrics_equal_the_metrics_of_the_drawn_rows(kind, classes, ordered):
    """Unit statistics score a draw exactly as the metrics of its rows, duplicates included
    (ties in the scores, classes absent from a draw and a level with few rows)."""
    rng = np.random.default_rng(3)
    labels, samples, images = design(samples_per_class=3, classes=classes or 3, patches=3)
    if kind == "classification":
        output = rng.dirichlet(np.ones(classes), size=len(labels)).round(1)  # ties
        output[:, 0] += 0.3 * (labels == 0)
        y = labels
    else:
        y = labels * 50.0 + 50
        output = y + rng.normal(scale=30, size=len(y))
    values = 50.0 * (np.arange(classes) + 1) if ordered else None
    table = LevelTables(kind, y, output, images, samples, samples, values)
    counts = table.unit_counts(40, seed=5)
    fast = table.draw_metrics(counts)
    for d, draw in enumerate(table.draws(40, seed=5)):
        slow = table.metrics(draw)
        for level in LEVELS:
            for metric, value in slow[level].items():
                expected = np.nan if value is None else value
                np.testing.assert_allclose(fast[level][metric][d], expected, rtol=1e-6,  # float32
                                           atol=1e-6, err_msg=f"{level} {metric} draw {d}")
