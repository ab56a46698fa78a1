"""A run's results as types, from the protocol to the report: ``metrics.json`` is written from a
:class:`RunMetrics` and read back into one, and the report, the console summary and
``sinterlab-report`` read its attributes, not string keys.

Every block the evaluation produces has its dataclass here: the pooled intervals of a model
(:class:`Interval` per metric and level), a split's cross-validation (:class:`CrossValidation`,
with its :class:`Verdict`, permutation test and instrument check), the model selection
(:class:`Selection`), the calibration (:class:`Calibration`), the training record
(:class:`Training`) and a split kind's whole evaluation (:class:`ProtocolBlock`).
Free-form records stay dicts where their keys are data, not schema: the configuration sections
copied into the run (protocol, preprocessing, a model's module), a metric per name.

:func:`load` validates a ``metrics.json`` (or any block of it) into these types with pydantic:
a file newer than this code is refused, and an unknown (misspelled), missing or mistyped field
is one line naming it. :func:`jsonable` turns them back into plain JSON values.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import pydantic

from sinterlab.atomic import json_default
from sinterlab.data.descriptor import Target
from sinterlab.errors import SinterlabError
from sinterlab.evaluation.display import FALLBACK_MODEL
from sinterlab.typed import adapter, problem

#: the metrics.json version this code writes (and the newest it reads); 2: typed blocks, a
#: fold's models under ``models``, the verdict's ``primary_*`` keys (``head_*`` before)
SCHEMA = 2
#: the levels every metric is reported at
LEVELS = ("patch", "image", "sample")

T = TypeVar("T")

#: a result read back (metrics.json, or a block the evaluation built) refuses a field it does not
#: know by name: a misspelled field is an error, never a silent None
FORBID_UNKNOWN = pydantic.ConfigDict(extra="forbid")


def result(cls: type | None = None, **options: Any):
    """``@dataclass`` for a result type, read back refusing unknown fields."""
    def wrap(kind: type) -> type:
        kind.__pydantic_config__ = FORBID_UNKNOWN
        return dataclass(kind, **options)
    return wrap(cls) if cls is not None else wrap


# -- pooled and per-fold metrics ------------------------------------------------------------------
@result
class Interval:
    """A pooled out-of-fold metric with its bootstrap interval (resampling groups); against the
    block's reference model also the paired interval of (this model - reference)."""

    value: float | None
    low: float | None = None
    high: float | None = None
    #: this model minus the reference, and its paired interval
    diff: float | None = None
    diff_low: float | None = None
    diff_high: float | None = None

    @property
    def width(self) -> float | None:
        return None if self.low is None or self.high is None else self.high - self.low


@result
class Spread:
    """A metric's mean and standard deviation over the folds."""

    mean: float | None
    sd: float | None


@result
class ByLevel:
    """Something per level (patch, image, sample); a level a block lacks is None."""

    def at(self, level: str) -> Any:
        return getattr(self, level, None)


@result
class Metrics(ByLevel):
    """Metric name -> value at each level (lists for per-class AUROC and the confusion matrix)."""

    patch: dict[str, Any] | None = None
    image: dict[str, Any] | None = None
    sample: dict[str, Any] | None = None


@result
class Intervals(ByLevel):
    """Metric name -> pooled value and interval at each level: one model's row."""

    patch: dict[str, Interval] | None = None
    image: dict[str, Interval] | None = None
    sample: dict[str, Interval] | None = None

    def cell(self, level: str, metric: str) -> Interval | None:
        return (self.at(level) or {}).get(metric)


@result
class Spreads(ByLevel):
    patch: dict[str, Spread] | None = None
    image: dict[str, Spread] | None = None
    sample: dict[str, Spread] | None = None


@result
class Fold:
    """One outer fold: its test sizes and every model's metrics on its test groups."""

    fold: int
    test_groups: int
    test_images: int
    test_patches: int
    train_patches: int
    val_patches: int
    models: dict[str, Metrics] = field(default_factory=dict)


@result
class Bootstrap:
    n: int
    unit: str
    confidence: float = 0.95
    seed: int | None = None
    units: int | None = None


# -- the verdict and the checks against chance ----------------------------------------------------
@result
class SelectionCheck:
    """Did model selection choose a model behind another candidate by more than its interval?"""

    model: str
    value: float | None
    best_other: str
    best_value: float | None
    behind_by: float
    interval_width: float | None
    disagrees: bool


@result
class SelectionChecks:
    level: str
    metric: str
    nested: SelectionCheck | None = None
    final: SelectionCheck | None = None

    def checks(self) -> list[tuple[str, SelectionCheck]]:
        return [(role, check) for role in ("nested", "final")
                if (check := getattr(self, role)) is not None]


@result
class Verdict:
    """The best model at the headline level, and whether the primary model beats the best
    baseline by more than its interval width."""

    level: str
    metric: str
    higher_is_better: bool
    best_model: str | None
    scores: dict[str, float | None]
    primary: str | None = None
    best_baseline: str | None = None
    primary_margin: float | None = None
    primary_interval_width: float | None = None
    primary_beats_by_more_than_interval: bool | None = None
    baseline_minus_primary_interval: list[float | None] | None = None
    primary_clearly_better: bool | None = None
    selection: SelectionChecks | None = None


@result
class Permutation:
    """The out-of-fold accuracy against label permutations between samples (or why skipped)."""

    model: str | None = None
    observed_accuracy: float | None = None
    n_permutations: int | None = None
    permuted_accuracy_mean: float | None = None
    p_value: float | None = None
    tests_served_model: bool | None = None
    proxy_for: str | None = None
    served_accuracy: float | None = None
    skipped: str | None = None


@result
class InstrumentCheck(Permutation):
    """The imaging settings alone on the run's folds, and the settings per class."""

    features: list[str] = field(default_factory=list)
    warning: str | None = None
    by_class: dict[str, dict[str, str]] = field(default_factory=dict)


@result
class CrossValidation:
    """A split kind's protocol: folds, every model's pooled and per-fold metrics, the verdict."""

    protocol: str
    folds: int
    primary: str | None
    seeds: list[int]
    split_seed: int
    target: str
    per_fold: list[Fold]
    fold_statistics: dict[str, Spreads]
    pooled: dict[str, Intervals]
    bootstrap: Bootstrap
    verdict: Verdict
    head_model: str | None = None
    permutation: Permutation | None = None
    instrument: InstrumentCheck | None = None

    def cell(self, model: str, level: str, metric: str) -> Interval | None:
        row = self.pooled.get(model)
        return row.cell(level, metric) if row else None


# -- calibration ----------------------------------------------------------------------------------
@result
class Curve:
    confidence: list[float]
    accuracy: list[float]


@result
class LevelCalibration:
    """Expected calibration error at one level, before and after calibration."""

    n: int
    ece_raw: float | None = None
    ece_calibrated: float | None = None
    ece_raw_interval: list[float | None] | None = None
    ece_calibrated_interval: list[float | None] | None = None
    curve_raw: Curve | None = None
    curve_calibrated: Curve | None = None


@result
class SetsFold:
    fold: int
    images: int
    coverage: float | None
    mean_size: float | None = None
    half_width: float | None = None


@result
class PredictionSetsCheck:
    """Split-conformal prediction sets of the served image probabilities, checked by fold."""

    confidence: float
    ordered: bool
    images: int
    threshold: float
    coverage: float | None
    mean_size: float | None
    singletons: float | None
    per_fold: list[SetsFold]


@result
class ConformalCheck:
    """Split-conformal intervals of a regression target, checked by fold."""

    confidence: float
    coverage: float | None
    images: int
    half_width: float
    per_fold: list[SetsFold]


@result
class CalibrationBootstrap:
    n: int
    seed: int | None = None
    unit: str | None = None


@result
class Calibration(ByLevel):
    """How far the outputs can be trusted: ECE per level (classification) or the conformal
    interval (regression)."""

    bins: int | None = None
    headline_level: str | None = None
    confidence: float | None = None
    bootstrap: CalibrationBootstrap | None = None
    images_class_changed: int | None = None
    patch: LevelCalibration | None = None
    image: LevelCalibration | None = None
    sample: LevelCalibration | None = None
    sets: PredictionSetsCheck | None = None
    served: str | None = None
    conformal: ConformalCheck | None = None


# -- training and selection -----------------------------------------------------------------------
@result
class ImageMap:
    """One target's image calibration (:class:`~sinterlab.models.calibration.ImageCalibration`):
    per member its map of pooled image scores (rows of ``scale`` and ``bias``), whether the
    fitted map was kept over the raw probabilities, the held-out score per image of both that
    decided (``heldout_score``: rps, brier or log_loss) and the standard error of their
    difference (None: not checked; a run from before the check kept every map; one from
    before the score was named holds log-losses as ``heldout_log_loss_*``)."""

    pooling: str
    calibrator: str
    scale: list[list[float]]
    bias: list[list[float]]
    kept: list[bool] | None = None
    heldout_score: str | None = None
    heldout_score_raw: list[float | None] | None = None
    heldout_score_map: list[float | None] | None = None
    heldout_gain_error: list[float | None] | None = None
    heldout_log_loss_raw: list[float | None] | None = None
    heldout_log_loss_map: list[float | None] | None = None

    def heldout(self) -> tuple[str, list[float | None] | None, list[float | None] | None]:
        """(the check's score, per member its held-out score of the raw probabilities, of the
        map), whichever run wrote it."""
        if self.heldout_score:
            return self.heldout_score, self.heldout_score_raw, self.heldout_score_map
        return "log_loss", self.heldout_log_loss_raw, self.heldout_log_loss_map


@result
class Member:
    """One head of an ensemble: its fold, seed and best validation epoch."""

    member: int
    fold: int
    seed: int
    best_epoch: int | None
    best_val_loss: float | None
    stopped_epoch: int | None
    early_stopped: bool | None


@result
class Training:
    """How the reported model was trained on the folds (a head by epochs; a scikit-learn model
    fitted once per fold)."""

    model: str
    kind: str
    protocol: str
    checkpoint: str | None
    n_members: int
    wall_s: float
    inputs: str | None = None
    extra_inputs: list[str] = field(default_factory=list)
    members: list[Member] = field(default_factory=list)
    max_epochs: int | None = None
    epochs_run: int | None = None
    early_stopping_patience: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    best_val_loss: float | None = None
    temperatures: list[list[float] | None] = field(default_factory=list)
    image_calibration: list[ImageMap | None] = field(default_factory=list)
    s_per_epoch: float | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)


@result
class GridPoint:
    """One point of a candidate's grid: its inner scores per outer fold (served and raw image
    probabilities) and, where trained on the outer folds, its CV score and checkpoint."""

    candidate: str
    inner_scores: list[float]
    inner_scores_unserved: list[float]
    params: dict[str, Any]
    cv_score: float | None = None
    checkpoint: str | None = None
    kind: str | None = None
    #: added by the search past the written grid (``search`` of the candidate)
    extended: bool = False


@result
class FinalModel:
    """The point with the best mean inner score, refitted on every group: what predict serves."""

    model: str
    point: str
    params: dict[str, Any]
    module: dict[str, Any]
    inputs: str
    members: int
    checkpoint: str
    kind: str
    wall_s: float
    epochs: int | None = None
    temperatures: list[float | None] | None = None
    image_calibration: list[ImageMap | None] | None = None
    #: a weighted ensemble's members, heaviest first, each refitted on every group (its
    #: checkpoint and kind above are the heaviest member's); None: one model
    blend: list[BlendPart] | None = None
    #: the part of each patch's embedding it reads (model.selection.representations: final,
    #: stages or both); None: all of the extracted embedding
    representation: str | None = None

    @property
    def proxy(self) -> FinalModel:
        """The model that stands for the served one where one model must (a permutation
        test's refits, a learning curve): itself, or an ensemble's heaviest member."""
        return self.blend[0].model if self.blend else self


@result
class BlendPart:
    """One member of the served weighted ensemble and its weight."""

    weight: float
    model: FinalModel


@result
class Selection:
    """``model=auto``'s nested CV: every grid point's inner scores, the winners per outer fold
    and the final model."""

    candidates: list[str]
    score: str
    grid: str
    inner_folds: int
    inner_seeds: list[int]
    points: dict[str, GridPoint]
    inner_scores: dict[str, list[float]]
    tuned_points: dict[str, list[str]]
    cv_scores: dict[str, float]
    outer_fits: str
    not_trained: list[str]
    winners: list[str]
    winner_points: list[str]
    #: per outer fold, the winner's checkpoint (an ensemble's: the best single point's, trained
    #: on every outer fold, whose maps the gallery draws)
    fold_checkpoints: list[str | None]
    final: FinalModel
    candidate_wall_s: dict[str, float]
    wall_s: float
    #: per searched candidate, per outer fold: where its tuned point lies (past the written
    #: grid, at a declared hard bound, or on an edge of the values tried)
    optimum: dict[str, list[str]] = field(default_factory=dict)
    #: how the served point was chosen: best (lowest mean inner score) or one_se
    rule: str = "best"
    #: per outer fold, the other candidates within one standard error of its best point (the
    #: inner CV could not tell them apart); and over all folds, for the final model
    not_separated: list[list[str]] = field(default_factory=list)
    final_not_separated: list[str] = field(default_factory=list)
    #: per outer fold, the weighted ensemble's members (grid point labels) and weights, built
    #: on that fold's inner held-out images ([]: no ensemble competed)
    ensemble: list[dict[str, float]] = field(default_factory=list)
    #: per outer fold, the single point the rule chose among the candidates alone (the
    #: ``best_single`` row; []: no ensemble competed)
    single_winners: list[str] = field(default_factory=list)
    #: per representation (model.selection.representations, when several), per outer fold the
    #: point the rule chose among that representation's candidates alone (the
    #: ``auto@<representation>`` row); {}: one representation
    representations: dict[str, list[str]] = field(default_factory=dict)


# -- what the run read ----------------------------------------------------------------------------
@result
class Split:
    kind: str
    leaky: bool
    protocol: str
    folds: int
    group_column: str | None = None
    fractions: dict[str, float] = field(default_factory=dict)
    split_seed: int | None = None
    note: str | None = None


@result
class Weights:
    source: str
    identity: str | None = None
    sha256: str | None = None
    pretrained: bool | None = None
    transfer_learning: bool | None = None


@result
class Backbone:
    name: str
    weights: Weights
    #: the length of each patch's embedding (of its representation)
    embedding_dim: int | None = None
    input_size: int | None = None
    mean: list[float] = field(default_factory=list)
    std: list[float] = field(default_factory=list)
    #: what the embedding is made of (features.representation): ``final`` or its stages
    representation: str = "final"


@result
class ClassGroups:
    groups: int
    images: int


@result
class Data:
    descriptor: str
    n_images: int
    n_samples: int
    n_patches: int
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    patch_counts: dict[str, dict[str, int]] = field(default_factory=dict)
    sample_id_note: str | None = None
    warnings: list[str] = field(default_factory=list)
    small_classes: list[str] = field(default_factory=list)
    class_groups: dict[str, ClassGroups] | None = None


@result
class Inputs:
    """What the models read: the image embedding and ``data.extra_inputs``."""

    extra: list[str]
    note: str
    image_only_compared: bool | None = None


@result
class Cache:
    images: int
    extracted: int
    from_cache: int
    folder: str
    patches_per_s: float | None = None
    left_to_others: int | None = None
    runtime: str = "torch"


@result
class Trend:
    """How a microstructure measure moves with the parameter across samples."""

    measure: str
    rho: float | None
    low: float | None = None
    high: float | None = None
    p_value: float | None = None


@result
class MeasuresSummary:
    """The microstructure measures per sample and their trends with the first target."""

    unit: str
    measures: list[str]
    n_samples: int
    per_sample: list[dict[str, Any]] = field(default_factory=list)
    trends: list[Trend] = field(default_factory=list)
    trends_skipped: str | None = None


@result
class GalleryEntry:
    image: str
    kind: str
    fold: int
    truth: Any
    predicted: Any
    confidence: float | None
    checkpoint: str | None
    map: str


@result
class StageTime:
    stage: str
    depth: int
    wall_s: float | None


@result
class VarianceComponents:
    """Where the reported model's out-of-fold output varies within a class (nested ANOVA):
    each component with its interval, its share of a sample's reading noise, what twice the
    images, patches or samples would remove, and the sentence a process engineer acts on. A
    component without replicates (one image per sample) is not estimable: NaN, never 0."""

    model: str
    output: str
    images_per_sample: float
    patches_per_image: float
    components: dict[str, Interval]
    shares: dict[str, Interval]
    twice_images: float
    twice_patches: float
    twice_samples: float
    bootstrap: Bootstrap
    advice: str
    sentence: str
    note: str | None = None
    #: the figure, relative to the run folder
    figure: str | None = None


# -- how much data: learning curves ---------------------------------------------------------------
@result
class Cell:
    """A value with its percentile interval (None where no draw was finite)."""

    value: float
    low: float | None
    high: float | None


@result
class PointCell(Cell):
    """A learning-curve point's metric: the mean over the subset draws, its interval, and each
    subset draw's own value."""

    per_draw: list[float]


@result
class CurvePoint:
    """One data size along an axis: the share of today's fitted units kept, the size it counts
    and the curve's metrics there (accuracy, and MAE for an ordered target; MAE for a
    regression)."""

    fraction: float
    x: float
    accuracy: PointCell | None = None
    mae: PointCell | None = None

    def metric(self, name: str) -> PointCell:
        return getattr(self, name)


@result
class Band:
    """The fitted curve on a grid of sizes and its interval over the bootstrap curves."""

    x: list[float]
    value: list[float]
    low: list[float]
    high: list[float]


@result
class CurveFit:
    """loss = floor + scale * size ** -exponent through the points; ``limit`` is the score
    with unlimited data (the floor, as the metric)."""

    floor: float
    scale: float
    exponent: float
    model: str
    limit: Cell
    band: Band


@result
class Projection:
    """The score the curve expects at ``multiplier`` times today's size ``x``, its interval,
    and the interval a run on that much data would measure."""

    multiplier: float
    x: float
    value: float
    low: float | None
    high: float | None
    run_low: float | None
    run_high: float | None


@result
class LearningCurve:
    """One model along one axis: the points, per metric the fit and the projections."""

    points: list[CurvePoint]
    fit: dict[str, CurveFit]
    projection: dict[str, list[Projection]]
    unit: str
    today: float
    fractions: list[float]


@result
class SamplesNeeded:
    """The samples per class at which the accuracy curve reaches ``accuracy`` (None beyond
    ``within``, where the curve is not trusted), and the share of bootstrap curves that do."""

    accuracy: float
    samples_per_class: float | None
    low: float | None
    high: float | None
    within: float
    reached_share: float


@result
class StudySize:
    samples_per_class: int
    interval_width: float
    power: float


@result
class FutureStudies:
    """Studies of n samples per class simulated from today's samples: the width of their
    accuracy interval and the power of the permutation test against chance."""

    today: int
    by_size: list[StudySize]
    alpha: float
    power: float
    interval_ratio: float
    interval_width_today: float
    width_exponent: float | None
    narrower_at: float | None
    powered_at: int | None
    max_simulated: int
    method: str

    def at_today(self) -> StudySize:
        return next(r for r in self.by_size if r.samples_per_class >= self.today)


@result
class LearningCurves:
    """The served model (and the best baseline along samples) trained again on nested subsets
    of each outer fold's training data: per axis its curve, the samples needed for the target
    accuracies and the simulated future studies; or only why it was skipped."""

    skipped: str | None = None
    model: str | None = None
    baseline: str | None = None
    level: str | None = None
    metrics: list[str] | None = None
    draws: int | None = None
    head_seeds: list[int] | None = None
    axes: dict[str, LearningCurve] | None = None
    baseline_curve: LearningCurve | None = None
    axes_skipped: dict[str, str] | None = None
    needed: list[SamplesNeeded] | None = None
    studies: FutureStudies | None = None
    wall_s: float | None = None
    #: the figure, relative to the run folder
    figure: str | None = None

    def curve(self, axis: str) -> LearningCurve | None:
        """The served model's curve along ``axis``; along samples the baseline's where the
        model has none."""
        own = (self.axes or {}).get(axis)
        return own or (self.baseline_curve if axis == SAMPLES_AXIS else None)


#: the learning-curve axis of more samples (per class)
SAMPLES_AXIS = "samples"
#: the metrics a learning curve follows: image accuracy, and image MAE in the target's units
ACCURACY, MAE = "accuracy", "mae"


# -- the blocks -----------------------------------------------------------------------------------
@result(kw_only=True)
class ProtocolBlock:
    """One split kind's evaluation: the run's own split, or the leak contrast's."""

    split: Split
    cv: CrossValidation
    baseline: dict[str, Metrics]
    baseline_info: dict[str, Any]
    training: Training | None = None
    test: Metrics | None = None
    calibration: Calibration | None = None
    selection: Selection | None = None
    learning_curve: LearningCurves | None = None
    variance_components: VarianceComponents | None = None

    @property
    def reported(self) -> str:
        """The model whose outputs the block reports: its primary model (the head, or the
        auto-selected one), else the linear probe (a baseline every run fits)."""
        return self.cv.primary or FALLBACK_MODEL


@result(kw_only=True)
class RunMetrics(ProtocolBlock):
    """``metrics.json``: the run's own split's block and everything around it."""

    #: written first, before the block's fields
    LEADING: ClassVar[tuple[str, ...]] = ("schema", "experiment", "task", "seed", "protocol",
                                          "targets")

    schema: int = SCHEMA
    experiment: str
    task: str
    seed: int
    protocol: dict[str, Any]
    targets: list[Target]
    backbone: Backbone
    preprocess: dict[str, Any]
    data: Data
    inputs: Inputs
    cache: Cache
    samples: list[dict[str, Any]] = field(default_factory=list)
    contrast: ProtocolBlock | None = None
    paper: dict[str, Any] | None = None
    skipped: dict[str, str] = field(default_factory=dict)
    measures: MeasuresSummary | None = None
    stages: list[StageTime] = field(default_factory=list)
    gallery: list[GalleryEntry] | None = None
    tensorboard: str | None = None

    @property
    def first_target(self) -> Target:
        return self.targets[0]


# -- reading and writing --------------------------------------------------------------------------
def load(kind: type[T], data: Any, source: str = "metrics.json") -> T:
    """``data`` (JSON values) as ``kind``; a missing or mistyped field is one line naming it and
    ``source``."""
    try:
        return adapter(kind).validate_python(data)
    except pydantic.ValidationError as err:
        raise SinterlabError(f"{source}: {problem(err)} ({err.error_count()} problem(s)); run "
                             "the experiment again with this sinterlab") from None


def record_of(kind: type[T], data: Any, source: str = "the run's results") -> T:
    """A block the evaluation built as a dict (numpy scalars and arrays allowed) as ``kind``,
    exactly as metrics.json will hold it."""
    return load(kind, json.loads(json.dumps(data, default=json_default)), source)


def read_metrics(path: str | Path) -> RunMetrics:
    """A run folder's ``metrics.json``; one newer than this code is refused with the fix."""
    path = Path(path)
    data = json.loads(path.read_text(encoding="utf-8"))
    schema = data.get("schema", 1) if isinstance(data, dict) else None
    if not isinstance(schema, int) or isinstance(schema, bool) or schema < 1:
        raise SinterlabError(f"{path}: metrics schema {schema!r} is not a version number; "
                             "restore the file or run the experiment again")
    if schema > SCHEMA:
        raise SinterlabError(f"{path}: metrics schema {schema} is newer than this sinterlab "
                             f"reads ({SCHEMA}); upgrade sinterlab")
    return load(RunMetrics, without_derived(upgrade(data)), str(path))


def as_run(metrics: RunMetrics | dict) -> RunMetrics:
    """A run's metrics as :class:`RunMetrics` (a metrics.json dict is read into one, untouched)."""
    return metrics if isinstance(metrics, RunMetrics) else \
        load(RunMetrics, without_derived(upgrade(copy.deepcopy(dict(metrics)))))


#: what :meth:`Target.as_dict` writes for a reader beside a target's fields (derived from them)
DERIVED_TARGET_FIELDS = ("class_names", "error_unit")


def without_derived(data: dict) -> dict:
    """``data`` without the values metrics.json holds for a reader but derives from its own
    fields (a target's class names and error unit): what is left is read strictly."""
    targets = data.get("targets")
    for target in targets if isinstance(targets, list) else []:
        for name in DERIVED_TARGET_FIELDS if isinstance(target, dict) else ():
            target.pop(name, None)
    return data


#: schema 1's verdict keys, named after the head although they judge any primary model
RENAMED_VERDICT_KEYS = {"head_margin": "primary_margin",
                        "head_interval_width": "primary_interval_width",
                        "head_beats_by_more_than_interval": "primary_beats_by_more_than_interval",
                        "baseline_minus_head_interval": "baseline_minus_primary_interval",
                        "head_clearly_better": "primary_clearly_better"}


def upgrade(data: dict) -> dict:
    """A schema-1 metrics dict in schema 2's shape: a fold's models under ``models``, the
    verdict's keys named after the primary model."""
    for block in (data, data.get("contrast") or {}):
        cv = block.get("cv") or {}
        if isinstance(cv.get("verdict"), dict):
            cv["verdict"] = {RENAMED_VERDICT_KEYS.get(k, k): v for k, v in cv["verdict"].items()}
        cv["per_fold"] = [row if "models" in row else
                          {**{k: v for k, v in row.items() if not isinstance(v, dict)},
                           "models": {k: v for k, v in row.items() if isinstance(v, dict)}}
                          for row in cv.get("per_fold") or []]
    return data


def jsonable(value: Any) -> Any:
    """Dataclasses, dicts and lists as plain JSON values (a target with its derived class
    names, as :meth:`Target.as_dict` writes it); a field left at its default None is left
    out."""
    if isinstance(value, Target):
        return value.as_dict()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        # a field left at its default None is absent (as in the files before schema 2)
        leading = getattr(value, "LEADING", ())
        fields = sorted(dataclasses.fields(value), key=lambda f: f.name not in leading)
        return {f.name: jsonable(getattr(value, f.name)) for f in fields
                if not (f.default is None and getattr(value, f.name) is None)}
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value
