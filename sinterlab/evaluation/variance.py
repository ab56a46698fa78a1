"""Where a model's out-of-fold output varies: between samples of one class, between images of one
sample, between patches of one image (variance components of a nested design, by the method of
moments of a nested ANOVA, unbalanced designs included), with intervals from a bootstrap that
resamples samples within their class, and the one sentence a process engineer acts on.

The output is read per patch on one scale: an ordered target's expected level in its units, an
unordered target's probability of the true class, a regression's value. A sample's reading (the
mean over its m images of k patches) varies around its class's as
``between_samples + between_images / m + between_patches / (m k)``; twice the samples halve the
noise of what a class looks like, twice the images per sample only the last two terms.
"""

from __future__ import annotations

from dataclasses import astuple, dataclass, fields

import numpy as np


@dataclass(frozen=True)
class Components:
    """Something per nested level, outermost first (a variance, a share, whether it is
    estimable); None where a level is not estimable."""

    between_samples: float | None
    between_images: float | None
    between_patches: float | None

    def items(self) -> list[tuple[str, float | None]]:
        """(level, value) in :data:`COMPONENTS` order."""
        return list(zip(COMPONENTS, astuple(self), strict=True))


#: the nested levels, outermost first, as metrics.json and the report name them
COMPONENTS = tuple(f.name for f in fields(Components))


@dataclass(frozen=True)
class ReadingNoise:
    """How the components add up in a sample's reading: their total, each one's share, and the
    share of it twice the images per sample, twice the patches per image or twice the samples
    (of a class's mean reading) would remove."""

    total: float
    estimable: Components
    shares: Components
    twice_images: float
    twice_patches: float
    twice_samples: float


def nested_components(score: np.ndarray, classes: np.ndarray, samples: np.ndarray,
                      images: np.ndarray) -> Components:
    """Variance components of ``score`` (per patch) with fixed class means, samples within
    classes, images within samples and patches within images (nested ANOVA, method of moments:
    the mean squares equated to their expectations in an unbalanced design, negative estimates
    set to 0)."""
    score = np.asarray(score, dtype=np.float64)
    codes = [np.unique(np.asarray(v), return_inverse=True)[1].reshape(-1)
             for v in (classes, samples, images)]
    # nesting made explicit: an image (sample) code names its sample (class) too
    c, s, i = codes
    s = np.unique(np.stack([c, s]), axis=1, return_inverse=True)[1].reshape(-1)
    i = np.unique(np.stack([s, i]), axis=1, return_inverse=True)[1].reshape(-1)
    n = len(score)

    def sums(group: np.ndarray, values: np.ndarray) -> np.ndarray:
        return np.bincount(group, weights=values)

    n_i, n_s, n_c = (np.bincount(g).astype(np.float64) for g in (i, s, c))
    mean_i, mean_s, mean_c = (sums(g, score) / k for g, k in ((i, n_i), (s, n_s), (c, n_c)))
    sample_of_image = np.zeros(len(n_i), dtype=np.int64)
    sample_of_image[i] = s
    class_of_sample = np.zeros(len(n_s), dtype=np.int64)
    class_of_sample[s] = c
    ss_p = float(((score - mean_i[i]) ** 2).sum())
    ss_i = float((n_i * (mean_i - mean_s[sample_of_image]) ** 2).sum())
    ss_s = float((n_s * (mean_s - mean_c[class_of_sample]) ** 2).sum())
    df_p, df_i, df_s = n - len(n_i), len(n_i) - len(n_s), len(n_s) - len(n_c)
    ms_p = ss_p / df_p if df_p > 0 else 0.0
    ms_i = ss_i / df_i if df_i > 0 else 0.0
    ms_s = ss_s / df_s if df_s > 0 else 0.0
    # sum over images of n_i^2, per sample and per class
    sq_by_sample = sums(sample_of_image, n_i ** 2)
    sq_by_class = sums(class_of_sample, sq_by_sample)
    k1 = (n - (sq_by_sample / n_s).sum()) / df_i if df_i > 0 else 0.0
    k2 = ((sq_by_sample / n_s).sum() - (sq_by_class / n_c).sum()) / df_s if df_s > 0 else 0.0
    k3 = (n - (sums(class_of_sample, n_s ** 2) / n_c).sum()) / df_s if df_s > 0 else 0.0
    patches = ms_p
    image = max((ms_i - ms_p) / k1, 0.0) if k1 > 0 else 0.0
    sample = max((ms_s - ms_p - k2 * image) / k3, 0.0) if k3 > 0 else 0.0
    # a level without replicates (one image per sample: no image has a sibling) tells nothing
    # of its variance: not estimable (None), never 0; its variance is counted in the level above
    return Components(sample if df_s > 0 else None, image if df_i > 0 else None,
                      patches if df_p > 0 else None)


def reading_noise(components: Components, images: float, patches: float) -> ReadingNoise:
    """How the components add up in a sample's reading (the mean of its ``images`` images of
    ``patches`` patches): each one's share, and by how much twice the images per sample, or
    twice the patches per image, would shrink that reading's variance (twice the samples halve
    the variance of a class's mean reading: 0.5)."""
    values = astuple(components)
    parts = np.array([v or 0.0 for v in values]) / np.array([1.0, images, images * patches])
    total = float(parts.sum())
    estimable = Components(*(v is not None for v in values))
    if total <= 0:
        return ReadingNoise(0.0, estimable, Components(None, None, None), 0.0, 0.0, 0.5)
    return ReadingNoise(
        total, estimable,
        Components(*(float(p / total) if v is not None else None
                     for v, p in zip(values, parts, strict=True))),
        twice_images=float((parts[1] + parts[2]) / 2 / total),
        twice_patches=float(parts[2] / 2 / total), twice_samples=0.5)


def bootstrap_components(score: np.ndarray, classes: np.ndarray, samples: np.ndarray,
                         images: np.ndarray, n: int, seed: int) -> list[Components]:
    """The components of ``n`` bootstrap data sets that draw every class's samples with
    replacement (a sample drawn twice counts as two samples)."""
    classes = np.unique(np.asarray(classes).astype(str), return_inverse=True)[1].reshape(-1)
    images = np.unique(np.asarray(images).astype(str), return_inverse=True)[1].reshape(-1)
    _, first, position = np.unique(np.asarray(samples).astype(str), return_index=True,
                                   return_inverse=True)
    sample_class = classes[first]
    rows_of = [np.flatnonzero(position == k) for k in range(len(first))]
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        drawn = np.concatenate([rng.choice(np.flatnonzero(sample_class == c),
                                           size=int((sample_class == c).sum()))
                                for c in np.unique(sample_class)])
        rows = np.concatenate([rows_of[k] for k in drawn])
        copy = np.repeat(np.arange(len(drawn)), [len(rows_of[k]) for k in drawn])
        out.append(nested_components(score[rows], classes[rows], copy,
                                     copy * (images.max() + 1) + images[rows]))
    return out


def advice(noise: ReadingNoise, worthwhile: float) -> str:
    """Which of more samples, more images per sample or more patches per image shrinks the
    noise of what a class looks like most: more images (patches) pay off when twice them remove
    at least ``worthwhile`` times what twice the samples remove."""
    if not noise.estimable.between_images:
        return ("one image per sample: how much images of one sample differ is not estimable "
                "(it is counted in between samples); image two or more of some samples before "
                "choosing between more images and more samples")
    if noise.shares.between_samples is None:
        return "the output does not vary within a class: more data of any kind changes nothing"
    enough = worthwhile * noise.twice_samples
    if noise.twice_patches >= enough:
        return ("patches of one image disagree: more patches per image "
                "(preprocess.patches.per_image) pay off before more images or samples")
    if noise.twice_images >= enough:
        return ("images of one sample disagree: more images of each sample pay off before "
                "more samples")
    return "images of one sample agree closely: image more samples, not more images of each"


def sentence(noise: ReadingNoise, worthwhile: float, images: float, patches: float) -> str:
    """The one sentence a process engineer acts on: :func:`advice`, with the shares of a
    sample's reading noise and what twice the images, patches or samples would remove."""
    lead = advice(noise, worthwhile)
    shares = noise.shares
    if shares.between_samples is None:
        return lead

    def share(value: float | None) -> str:
        return f"{value:.0%}" if value is not None else "not estimable"
    return (f"{lead} (between samples of one class {share(shares.between_samples)}, between "
            f"images of one sample {share(shares.between_images)}, between patches of one image "
            f"{share(shares.between_patches)} of a sample's reading noise with {images:g} images "
            f"of {patches:g} patches; twice the images per sample would remove "
            f"{noise.twice_images:.0%} of it, twice the patches per image "
            f"{noise.twice_patches:.0%}, twice the samples {noise.twice_samples:.0%} of the "
            "noise of a class's mean)")
