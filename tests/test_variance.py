"""Variance components of a nested design (samples in classes, images in samples, patches in
images): the nested ANOVA recovers known components, agrees with a REML mixed model, and the
sentence names the axis that shrinks the noise most."""

from __future__ import annotations

from dataclasses import astuple

import numpy as np
import pytest

from sinterlab.evaluation.variance import (
    Components,
    advice,
    bootstrap_components,
    nested_components,
    reading_noise,
    sentence,
)


def nested_data(sd: tuple[float, float, float], classes: int = 3, samples: int = 8,
                images: int | tuple[int, int] = 5, patches: int | tuple[int, int] = 6,
                seed: int = 0):
    """Scores with class means 10 apart and the given sds between samples, images, patches;
    ``images``/``patches`` a range gives an unbalanced design."""
    rng = np.random.default_rng(seed)

    def count(n):
        return int(rng.integers(n[0], n[1] + 1)) if isinstance(n, tuple) else n

    rows = []
    for c in range(classes):
        for s in range(samples):
            u = rng.normal(0, sd[0])
            for i in range(count(images)):
                v = rng.normal(0, sd[1])
                for _ in range(count(patches)):
                    rows.append((10.0 * c + u + v + rng.normal(0, sd[2]), c, f"{c}-{s}",
                                 f"{c}-{s}-{i}"))
    score, cls, sample, image = (np.array(v) for v in zip(*rows, strict=True))
    return score, cls, sample, image


def test_nested_anova_recovers_known_components():
    # many samples so the estimates are tight; class means do not count as variance
    score, cls, sample, image = nested_data((2.0, 1.0, 0.5), samples=200)
    got = nested_components(score, cls, sample, image)
    assert got.between_samples == pytest.approx(4.0, rel=0.15)
    assert got.between_images == pytest.approx(1.0, rel=0.1)
    assert got.between_patches == pytest.approx(0.25, rel=0.05)


def test_nested_anova_agrees_with_a_reml_mixed_model():
    smf = pytest.importorskip("statsmodels.formula.api")
    pd = pytest.importorskip("pandas")
    for images, patches in ((5, 6), ((3, 7), (4, 9))):  # balanced, then unbalanced
        score, cls, sample, image = nested_data((1.5, 0.8, 0.5), samples=10, images=images,
                                                patches=patches, seed=3)
        ours = nested_components(score, cls, sample, image)
        frame = pd.DataFrame({"y": score, "cl": cls, "sa": sample, "im": image})
        fit = smf.mixedlm("y ~ C(cl)", frame, groups="sa", re_formula="1",
                          vc_formula={"im": "0 + C(im)"}).fit(reml=True)
        assert ours.between_patches == pytest.approx(fit.scale, rel=0.02)
        assert ours.between_images == pytest.approx(float(fit.vcomp[0]), rel=0.1)
        assert ours.between_samples == pytest.approx(float(fit.cov_re.iloc[0, 0]), rel=0.25)


def test_reading_noise_and_what_twice_the_data_removes():
    noise = reading_noise(Components(between_samples=4.0, between_images=4.0,
                                     between_patches=8.0), images=4, patches=2)
    # a sample's reading: 4 + 4/4 + 8/8 = 6
    assert noise.total == pytest.approx(6.0)
    assert astuple(noise.shares) == pytest.approx((4 / 6, 1 / 6, 1 / 6))
    assert noise.twice_images == pytest.approx(1 / 6)  # (1 + 1) / 2 of 6
    assert noise.twice_patches == pytest.approx(1 / 12)
    assert noise.twice_samples == 0.5


@pytest.mark.parametrize(("components", "words"), [
    ((4.0, 0.2, 0.1), "image more samples, not more images of each"),
    ((0.2, 6.0, 0.1), "more images of each sample pay off"),
    ((0.1, 0.1, 40.0), "more patches per image"),
])
def test_the_sentence_names_the_axis_that_pays(components, words):
    noise = reading_noise(Components(*components), images=4, patches=10)
    text = sentence(noise, 0.5, 4, 10)
    assert text.startswith(advice(noise, 0.5)) and words in advice(noise, 0.5)
    assert "twice the images per sample would remove" in text


def test_bootstrap_over_samples_brackets_the_truth():
    score, cls, sample, image = nested_data((2.0, 0.5, 0.5), samples=30, seed=5)
    draws = bootstrap_components(score, cls, sample, image, 100, 0)
    low, high = np.quantile([d.between_samples for d in draws], [0.025, 0.975])
    assert low < 4.0 < high
    images = np.quantile([d.between_images for d in draws], [0.025, 0.975])
    assert images[0] < 0.25 < images[1]


def test_one_image_per_sample_leaves_the_image_component_not_estimable():
    """One image per sample: no image has a sibling, so between images is not estimable (not
    0 [0, 0]) and the advice does not claim that images of one sample agree."""
    score, cls, sample, image = nested_data((2.0, 1.0, 0.5), samples=30, images=1)
    got = nested_components(score, cls, sample, image)
    assert got.between_images is None
    assert got.between_samples > 0 and got.between_patches > 0
    noise = reading_noise(got, images=1, patches=6)
    assert noise.shares.between_images is None
    assert "not estimable" in advice(noise, 2.0) and "agree closely" not in advice(noise, 2.0)
    assert "between images of one sample not estimable" in sentence(noise, 2.0, 1, 6)
    draws = bootstrap_components(score, cls, sample, image, n=5, seed=0)
    assert all(d.between_images is None for d in draws)
