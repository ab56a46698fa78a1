"""Calibration of each member's class probabilities, per patch and per image.

Per patch: temperature scaling (Guo et al., 2017). After training, every member's logits on its
own fold's validation rows get one temperature ``T`` (the one minimising their cross-entropy;
``softmax(logits / T)``). ``T`` never changes a member's predicted class, only how sure it
claims to be.

Per image (what ``sinterlab-predict`` serves): a patch-calibrated member is not an
image-calibrated one. An image's patches are correlated, and the mean of their probabilities
pulls every image towards the middle. So each member's raw patch probabilities are pooled per
image (:data:`POOLINGS`), and a map of the pooled scores (:data:`CALIBRATORS`) is fitted on
validation *images* of the ensemble's members, never on a test group of the member that uses
it. Only the members' probabilities are read, so any model whose members give class
probabilities is calibrated the same way.

The identity is always a candidate (:class:`MapCheck`): a member's fitted map is served only
where, cross-fitted over the samples of the images it is fitted on (by default each sample
held out in turn), it beats the raw probabilities (the mean of the member's raw patch
probabilities, as the report's "raw") on images it was not fitted on, by a bounded proper
score (the ranked probability score of ordered levels) and by more than the noise of that
gain. Otherwise the member serves the raw probabilities: a map fitted on a handful of
validation images can make them worse (issue 44).

Members without validation rows (the final refit of ``model=auto``) take the median of their
candidate's CV members that kept their map (temperature, or element-wise image scale and
bias) where most of them did, else the raw probabilities.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from scipy.special import log_softmax, softmax

from sinterlab.atomic import write_json
from sinterlab.data.groups import Groups
from sinterlab.errors import SinterlabError
from sinterlab.models.head import HeadEnsemble
from sinterlab.models.scores import SCORE_NAMES, brier_scores, ranked_probability_scores
from sinterlab.threads import small_torch
from sinterlab.typed import STRICT, from_json

#: temperatures are kept inside this range (a member that fits its validation rows perfectly
#: would otherwise be pushed towards T -> 0)
BOUNDS = (0.05, 20.0)


@small_torch
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



# -- the probability served per image --------------------------------------------------------
#: pooled image scores: the log of the mean patch probability, or the mean patch
#: log-probability (the normalised geometric mean: evidence of the patches adds up)
POOLINGS = ("mean_probability", "mean_log_probability")
#: maps of a member's pooled scores s to softmax(scale * s + bias): one temperature (scale 1/T,
#: no bias), vector scaling (scale and bias per class), or none (softmax(s) as pooled)
CALIBRATORS = ("temperature", "vector", "none")
#: log of a probability that underflowed to 0 in float32
TINY = float(np.finfo(np.float32).tiny)
#: the pooling of the raw probabilities, the identity candidate: softmax of the log of the mean
#: patch probability is that mean
RAW_POOLING = "mean_probability"


def _log_losses(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per row, the cross-entropy of softmax(scores) against ``labels``."""
    return -log_softmax(scores, axis=1)[np.arange(len(labels)), labels]


#: per image, what the check compares a map and the raw probabilities by (of softmax of the
#: pooled scores; lower is better; each a proper score): log-loss (unbounded: one confidently
#: wrong sample can outweigh every other), Brier score, ranked probability score (ordered
#: classes)
CHECK_SCORES = {
    "log_loss": _log_losses,
    "brier": lambda scores, labels: brier_scores(labels, softmax(scores, axis=1)),
    "rps": lambda scores, labels: ranked_probability_scores(labels, softmax(scores, axis=1)),
}


@dataclass(frozen=True)
class MapCheck:
    """When a fitted map beats the raw probabilities: its images' samples are dealt into
    ``folds`` parts (by label, so each part holds every label it can; None: one part per
    sample, each held out in turn); the map fitted on the other parts must lower the held-out
    parts' score per image (``score`` of unordered classes, ``ordered_score`` of ordered ones:
    a name of :data:`CHECK_SCORES`) below the raw probabilities' by more than ``min_gain``
    plus ``standard_errors`` standard errors of that gain (images of one sample are not
    independent: the error is over samples)."""

    folds: int | None
    score: str
    ordered_score: str
    min_gain: float
    standard_errors: float

    def __post_init__(self):
        for key, name in (("classification", self.score), ("ordered", self.ordered_score)):
            if name not in CHECK_SCORES:
                raise ValueError(f"evaluation.calibration.check.score.{key}={name!r}: use one "
                                 f"of {list(CHECK_SCORES)}")

    @classmethod
    def from_config(cls, calibration) -> MapCheck:
        """From ``evaluation.calibration`` (``check.folds: samples``: one part per sample)."""
        check = calibration.check
        folds = None if check.folds == "samples" else int(check.folds)
        return cls(folds, str(check.score.classification), str(check.score.ordered),
                   float(check.min_gain), float(check.standard_errors))

    def score_of(self, ordered: bool) -> str:
        """The score that judges a map of a target with ordered classes or not."""
        return self.ordered_score if ordered else self.score

    def keeps(self, gain: float, error: float) -> bool:
        """Is a held-out ``gain`` (score per image, raw minus map) with standard ``error``
        enough to serve the map?"""
        return bool(gain - self.standard_errors * error > self.min_gain)


def pool_images(probs: np.ndarray, images: np.ndarray, pooling: str,
                ) -> tuple[np.ndarray, np.ndarray]:
    """(M, N, C) member probabilities of N patches -> (image ids in order of first appearance,
    (M, I, C) pooled log-scores per member and image)."""
    if pooling not in POOLINGS:
        raise ValueError(f"calibration pooling={pooling!r}: use one of {list(POOLINGS)}")
    groups = Groups.of(images)
    probs = torch.as_tensor(np.asarray(probs), dtype=torch.float64)
    values = probs if pooling == "mean_probability" else probs.clamp_min(TINY).log()
    means = torch.from_numpy(groups.means(values.numpy(), axis=1))
    scores = means.clamp_min(TINY).log() if pooling == "mean_probability" else means
    return groups.names, scores.numpy()


@dataclass
class ImageCalibration:
    """Per member (rows of ``scale`` and ``bias``, (M, C)), the map of its pooled image scores
    to the probability served: ``softmax(scale * score + bias)``; a member whose fitted map
    was not ``kept`` serves its raw probabilities (scale 1, bias 0 on the log of the mean
    patch probability: that mean). ``loss_raw``, ``loss_map`` and ``gain_error``: per member,
    the held-out ``score`` (a name of :data:`CHECK_SCORES`) per image of the raw probabilities
    and of the cross-fitted map that decided, and the standard error of their difference (NaN
    where nothing was checked: no calibrator, or a refit member)."""

    pooling: str
    calibrator: str
    scale: np.ndarray
    bias: np.ndarray
    kept: np.ndarray | None = None
    loss_raw: np.ndarray | None = None
    loss_map: np.ndarray | None = None
    gain_error: np.ndarray | None = None
    score: str = "log_loss"

    def __post_init__(self):
        members = len(self.scale)
        # a calibration saved before the identity check: every member served its map
        self.kept = np.ones(members, bool) if self.kept is None else np.asarray(self.kept, bool)
        for name in ("loss_raw", "loss_map", "gain_error"):
            value = getattr(self, name)
            setattr(self, name, np.full(members, np.nan) if value is None else
                    np.asarray([np.nan if v is None else v for v in value], dtype=float))

    def apply(self, probs: np.ndarray, images: np.ndarray,
              members: slice | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(M, N, C) probabilities of ``members`` (default all) -> (image ids, (M, I, C)
        calibrated image probabilities)."""
        members = slice(None) if members is None else members
        names, scores = pool_images(probs, images, self.pooling)
        served = softmax(self.scale[members, None] * scores + self.bias[members, None], axis=2)
        raw = ~self.kept[members]
        if raw.any():
            served[raw] = softmax(pool_images(np.asarray(probs)[raw], images, RAW_POOLING)[1],
                                  axis=2)
        return names, served

    def median(self, members: int) -> ImageCalibration:
        """For ``members`` members without validation rows: where more than half of these
        members kept their map, the element-wise median of the kept maps; else the raw
        probabilities."""
        kept = 2 * int(self.kept.sum()) > len(self.kept)
        if kept:
            scale, bias = (np.median(a[self.kept], axis=0) for a in (self.scale, self.bias))
        else:
            scale, bias = np.ones(self.scale.shape[1]), np.zeros(self.scale.shape[1])
        return ImageCalibration(self.pooling, self.calibrator,
                                np.repeat(scale[None], members, axis=0),
                                np.repeat(bias[None], members, axis=0),
                                np.full(members, kept), score=self.score)

    def describe(self) -> str:
        what = {"temperature": "temperature", "vector": "vector scaling",
                "none": "no calibrator"}[self.calibrator]
        fitted = f"image {what} on the {self.pooling.replace('_', ' ')} of the patches"
        kept, members = int(self.kept.sum()), len(self.kept)
        if kept == members:
            return fitted
        raw = "the raw probabilities (mean of the patch probabilities)"
        score = SCORE_NAMES[self.score]
        if not kept:
            return f"kept {raw}: the fitted image {what} did not improve the held-out {score}"
        return f"{fitted} for {kept} of {members} members; {raw} for the other " \
               f"{members - kept}, whose fitted {what} did not improve the held-out {score}"

    def as_dict(self) -> dict:
        def losses(a):
            return [None if np.isnan(v) else float(v) for v in a]
        return {"pooling": self.pooling, "calibrator": self.calibrator,
                "scale": self.scale.tolist(), "bias": self.bias.tolist(),
                "kept": self.kept.tolist(), "heldout_score": self.score,
                "heldout_score_raw": losses(self.loss_raw),
                "heldout_score_map": losses(self.loss_map),
                "heldout_gain_error": losses(self.gain_error)}

    @classmethod
    def from_dict(cls, d: dict) -> ImageCalibration:
        """From :meth:`as_dict`, or a record from before the check's score was named (its
        held-out losses were log-losses)."""
        score = d.get("heldout_score")
        raw, fitted = (d.get("heldout_score_raw"), d.get("heldout_score_map")) if score else \
            (d.get("heldout_log_loss_raw"), d.get("heldout_log_loss_map"))
        return cls(d["pooling"], d["calibrator"], np.asarray(d["scale"], dtype=float),
                   np.asarray(d["bias"], dtype=float), d.get("kept"), raw, fitted,
                   d.get("heldout_gain_error"), score or "log_loss")


def _fit_map(scores: np.ndarray, labels: np.ndarray, calibrator: str,
             ) -> tuple[np.ndarray, np.ndarray]:
    """One member's (I, C) pooled scores and image labels -> its scale and bias (C,)."""
    c = scores.shape[1]
    if calibrator == "none" or not len(scores):
        return np.ones(c), np.zeros(c)
    s = torch.as_tensor(scores, dtype=torch.float64)
    y = torch.as_tensor(labels, dtype=torch.long)
    if calibrator == "temperature":
        params = [torch.zeros(1, dtype=torch.float64, requires_grad=True)]  # log T

        def mapped():
            return s / params[0].exp()
    elif calibrator == "vector":
        params = [torch.ones(c, dtype=torch.float64, requires_grad=True),
                  torch.zeros(c, dtype=torch.float64, requires_grad=True)]

        def mapped():
            return s * params[0] + params[1]
    else:
        raise ValueError(f"calibration calibrator={calibrator!r}: use one of {list(CALIBRATORS)}")
    optimizer = torch.optim.LBFGS(params, lr=0.5, max_iter=100, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = F.cross_entropy(mapped(), y)
        loss.backward()
        return loss

    optimizer.step(closure)
    if calibrator == "temperature":
        return np.full(c, 1 / float(params[0].detach().exp().clamp(*BOUNDS))), np.zeros(c)
    return params[0].detach().numpy(), params[1].detach().numpy()


@small_torch
def _fit_temperatures(scores: np.ndarray, labels: np.ndarray, train: np.ndarray) -> np.ndarray:
    """The temperatures of P maps at once (what :func:`_fit_map` fits one by one): map p is
    fitted on the (I, C) pooled ``scores`` of the images ``train[p]`` (a (P, I) mask). The
    objectives are separate (map p's loss reads its own temperature only), so one L-BFGS on
    their sum finds each minimum; one solve instead of P (a leave-one-sample-out check)."""
    s = torch.as_tensor(scores, dtype=torch.float64)
    y = torch.as_tensor(labels, dtype=torch.long)
    weights = torch.as_tensor(train, dtype=torch.float64)
    weights = weights / weights.sum(dim=1, keepdim=True)
    log_t = torch.zeros(len(train), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.5, max_iter=100, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        logp = torch.log_softmax(s[None] / log_t.exp()[:, None, None], dim=2)
        picked = logp.gather(2, y[None, :, None].expand(len(train), -1, 1))[..., 0]
        loss = -(weights * picked).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return log_t.detach().exp().clamp(*BOUNDS).numpy()


def _check_map(scores: np.ndarray, raw: np.ndarray, labels: np.ndarray, units: np.ndarray,
               calibrator: str, check: MapCheck, score: str,
               ) -> tuple[bool, float, float, float]:
    """Does a map fitted on the pooled image ``scores`` beat the ``raw`` log-probabilities on
    images it was not fitted on, by ``score`` (a name of :data:`CHECK_SCORES`)? Cross-fitted
    over ``units`` (each image's sample, kept in one part), dealt in label order into
    ``check.folds`` parts (None: one per unit). Returns (kept, held-out score per image of the
    raw probabilities, of the map, the standard error of their difference over units); fewer
    than two units: nothing to hold out, the raw probabilities are kept."""
    names, codes = np.unique(units, return_inverse=True)
    if len(names) < 2:
        return False, np.nan, np.nan, np.nan
    first = np.unique(codes, return_index=True)[1]
    part_of = np.empty(len(names), int)
    folds = len(names) if check.folds is None else check.folds
    part_of[np.lexsort((names, labels[first]))] = np.arange(len(names)) % folds
    part = part_of[codes]
    loss_map, loss_raw = np.zeros(len(labels)), np.zeros(len(labels))
    losses = CHECK_SCORES[score]
    parts = np.unique(part)
    if calibrator == "temperature":  # every part's map in one solve
        c = scores.shape[1]
        maps = [(np.full(c, 1 / t), np.zeros(c))
                for t in _fit_temperatures(scores, labels, part[None, :] != parts[:, None])]
    else:
        maps = [_fit_map(scores[part != p], labels[part != p], calibrator) for p in parts]
    for p, (scale, bias) in zip(parts, maps, strict=True):
        held = part == p
        loss_map[held] = losses(scale * scores[held] + bias, labels[held])
        loss_raw[held] = losses(raw[held], labels[held])
    # the mean gain per image is a sum over units: its error from the spread of the units' sums
    per_unit = np.bincount(codes, weights=loss_raw - loss_map)
    error = float(np.sqrt(len(names)) * per_unit.std(ddof=1) / len(labels))
    gain = float(loss_raw.mean() - loss_map.mean())
    return check.keeps(gain, error), float(loss_raw.mean()), float(loss_map.mean()), error


@small_torch
def fit_image_calibration(probs: np.ndarray, labels: np.ndarray, images: np.ndarray,
                          member_rows: list[np.ndarray], hidden: list[np.ndarray],
                          pooling: str, calibrator: str, pools: np.ndarray | None = None, *,
                          check: MapCheck, units: np.ndarray | None = None,
                          ordered: bool = False) -> ImageCalibration:
    """Cross-fitted maps of (M, N, C) raw member probabilities (``labels`` per row), each kept
    only where it beats the raw probabilities (``check``, by its score of ``ordered`` classes
    or not, over ``units``: each row's sample; default its image).

    Member m's map is fitted on the validation images of every member (``member_rows``: each
    member's own validation rows, pooled per image with its own probabilities) less the rows
    ``hidden[m]`` (a boolean per row: the member's test rows). One fold's validation images are
    a handful of samples, too few to fit even one temperature reliably; all folds' are many,
    and none of them is a test group of the member that uses the map. ``pools`` (M, M): which
    members' outputs may enter member m's map (default all); model selection's inner members
    take only those of their own outer fold, whose training never read its test rows. The
    same images decide whether the map is kept: fitted on some of their samples, scored on the
    others.
    """
    fitted: dict[bytes, tuple] = {}
    members = len(member_rows)
    pools = np.ones((members, members), bool) if pools is None else np.asarray(pools, bool)
    units = np.asarray(images if units is None else units).astype(str)
    out = []
    for m in range(members):
        key = np.asarray(hidden[m], dtype=bool).tobytes() + pools[m].tobytes()
        if key not in fitted:
            c = probs.shape[2]
            scores, raw = [np.zeros((0, c))], [np.zeros((0, c))]
            targets, groups = [np.zeros(0, int)], [np.zeros(0, str)]
            for k, rows in enumerate(member_rows):
                if not pools[m, k]:
                    continue
                rows = rows[~hidden[m][rows]]
                first = np.unique(pd.factorize(np.asarray(images[rows]).astype(str))[0],
                                  return_index=True)[1]
                scores.append(pool_images(probs[k:k + 1, rows], images[rows], pooling)[1][0])
                raw.append(pool_images(probs[k:k + 1, rows], images[rows], RAW_POOLING)[1][0])
                targets.append(labels[rows][first].astype(int))
                groups.append(units[rows][first])
            scores, raw, targets, groups = map(np.concatenate, (scores, raw, targets, groups))
            checked = (True, np.nan, np.nan, np.nan) if calibrator == "none" else \
                _check_map(scores, raw, targets, groups, calibrator, check,
                           check.score_of(ordered))
            scale, bias = _fit_map(scores, targets, calibrator) if checked[0] else \
                (np.ones(c), np.zeros(c))
            fitted[key] = (scale, bias, *checked)
        out.append(fitted[key])
    return ImageCalibration(pooling, calibrator,
                            *(np.asarray(a) for a in zip(*out, strict=True)),
                            score=check.score_of(ordered))


def head_image_calibration(head, x: torch.Tensor, y: torch.Tensor,
                           images: np.ndarray, val_rows: list[np.ndarray],
                           test_rows: list[np.ndarray], pooling: str,
                           calibrator: str, pools: np.ndarray | None = None,
                           measures: np.ndarray | None = None, *, check: MapCheck,
                           units: np.ndarray | None = None,
                           ) -> list[ImageCalibration | None]:
    """Per target of ``head`` (any candidate; ``measures``: each row's image's measures, for
    one that reads them), its members' cross-fitted
    image calibration from their groups' ``val_rows``, each member's map blind to its group's
    ``test_rows`` and kept only where it beats the raw probabilities (``check``, over ``units``:
    each row's sample) (None for regression). An ensemble without validation rows (scikit-learn)
    passes its test rows as both: member f's map is then fitted on the out-of-fold images of
    the other folds' members, never on an image of its own test groups. ``pools`` (G, G):
    which groups may calibrate which (see :func:`fit_image_calibration`)."""
    per_group = head.per_group
    used = np.unique(np.concatenate(val_rows)) if val_rows else np.zeros(0, int)
    where = np.full(len(x), -1)
    where[used] = np.arange(len(used))
    ids = np.asarray(images).astype(str)
    outputs = head.predict_members(x[used], calibrated=False, images=ids[used],
                                   measures=None if measures is None else measures[used])
    member_rows = [where[rows] for rows in val_rows for _ in range(per_group)]
    hidden = [np.isin(used, rows) for rows in test_rows for _ in range(per_group)]
    if pools is not None:
        pools = np.repeat(np.repeat(np.asarray(pools, bool), per_group, axis=0), per_group, axis=1)
    return [fit_image_calibration(out, y[used, i].numpy(), images[used], member_rows, hidden,
                                  pooling, calibrator, pools, check=check,
                                  units=None if units is None else np.asarray(units)[used],
                                  ordered=bool(t.get("ordered")))
            if t["kind"] == "classification" else None
            for i, (t, out) in enumerate(zip(head.targets, outputs, strict=True))]


def calibration_path(checkpoint: Path) -> Path:
    """Where an ensemble's image calibration lives: beside its checkpoint."""
    return checkpoint.with_suffix(".calibration.json")


def save_image_calibration(checkpoint: Path, calibrations: list[ImageCalibration | None],
                           ) -> Path:
    return write_json(calibration_path(checkpoint),
                      {"targets": [c and c.as_dict() for c in calibrations]})


@dataclass(frozen=True)
class CalibrationRecord:
    """One target's image calibration as saved: what predict reads, checked field by field."""

    __pydantic_config__ = STRICT
    pooling: Literal[POOLINGS]  # type: ignore[valid-type]
    calibrator: Literal[CALIBRATORS]  # type: ignore[valid-type]
    scale: list[list[float]]
    bias: list[list[float]]
    #: per member: whether its map was served (a file from before the check: every member's)
    kept: list[bool] | None = None
    #: what the check scored by, and per member the held-out score of the raw probabilities
    #: and of the map (a file from before the score was named: log-losses, as the last two)
    heldout_score: Literal[tuple(CHECK_SCORES)] | None = None  # type: ignore[valid-type]
    heldout_score_raw: list[float | None] | None = None
    heldout_score_map: list[float | None] | None = None
    heldout_gain_error: list[float | None] | None = None
    heldout_log_loss_raw: list[float | None] | None = None
    heldout_log_loss_map: list[float | None] | None = None


@dataclass(frozen=True)
class CalibrationFile:
    __pydantic_config__ = STRICT
    targets: list[CalibrationRecord | None]


def load_image_calibration(checkpoint: Path) -> list[ImageCalibration | None] | None:
    """The image calibration saved beside ``checkpoint``; None when the run folder has none
    (a run from before image calibration: its images are served the mean of
    temperature-scaled patch probabilities). A damaged one, or a field of the wrong type, is a
    one-line error."""
    path = calibration_path(checkpoint)
    if not path.is_file():
        return None
    fix = "restore it from a copy of the run folder, or train again"
    try:
        text = path.read_bytes()
    except OSError as err:
        raise SinterlabError(f"{path}: the image calibration of the model is unreadable "
                             f"({err.strerror}); {fix}") from None
    saved = from_json(CalibrationFile, text, path, fix)
    return [c and ImageCalibration.from_dict(asdict(c)) for c in saved.targets]
