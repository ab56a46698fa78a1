"""The type and range of every number a user may type on a command line, per entry config, in
one table: :func:`check_config` runs once at the start of each console script and reports the
first value outside its range as one line, ``<key>=<value>: <what is wrong>; use <allowed>``.

A table of dotted keys rather than Hydra structured configs: the YAML groups keep composing as
they do (``_target_`` nodes, ``+data.order.x=[...]``, candidates under ``model.candidates``),
and a key absent from a config (an optional group, ``features: null`` in predict) is skipped.
``*`` in a key stands for every key of a mapping (``model.candidates.*.module.lr``).
``tests/test_config_schema.py`` fails when a number in ``conf/`` has no rule here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sinterlab.errors import SinterlabError


def _is_list(value) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, str)


def _shown(value) -> str:
    """A value as it would be typed on the command line."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}: {_shown(v)}" for k, v in value.items()) + "}"
    if _is_list(value):
        return "[" + ", ".join(_shown(v) for v in value) + "]"
    return str(value)


def _bound(bound, cfg) -> float | None:
    """A bound: a number, or the dotted key of another number in the config."""
    return _select(cfg, bound) if isinstance(bound, str) else bound


def _select(cfg, key: str):
    node = cfg
    for part in key.split("."):
        node = node[part]
    return node


@dataclass(frozen=True)
class Number:
    """A number (an integer when ``integer``) within [low, high] (open ends when ``low_open``,
    ``high_open``); null and some ``words`` (``auto``) also allowed when listed. A bound may be
    another key's dotted name (``shard`` below ``shards``)."""

    integer: bool = False
    low: float | str | None = None
    high: float | str | None = None
    low_open: bool = False
    high_open: bool = False
    null: bool = False
    words: tuple[str, ...] = ()
    #: said after the range (what to use instead)
    hint: str = ""

    def problem(self, value, cfg) -> str | None:
        if value is None:
            return None if self.null else "no value"
        if isinstance(value, str) and value in self.words:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            return "not an integer" if self.integer else "not a number"
        if not math.isfinite(value):
            return "not a finite number"
        if self.integer and not isinstance(value, int):
            return "not an integer"
        low, high = _bound(self.low, cfg), _bound(self.high, cfg)
        if low is not None and (value < low or (self.low_open and value == low)) or \
                high is not None and (value > high or (self.high_open and value == high)):
            return "out of range"
        return None

    def allowed(self, cfg) -> str:
        what = "an integer" if self.integer else "a number"
        low, high = _bound(self.low, cfg), _bound(self.high, cfg)
        if low is not None and low == high and not (self.low_open or self.high_open):
            what = _num(low)
        elif low is not None and high is not None:
            what += (f" in {'(' if self.low_open else '['}{_num(low)}, {_num(high)}"
                     f"{')' if self.high_open else ']'}")
        elif low is not None:
            what += f" {'>' if self.low_open else '>='} {_num(low)}"
        elif high is not None:
            what += f" {'<' if self.high_open else '<='} {_num(high)}"
        named = [f"{b}={_num(_bound(b, cfg))}" for b in (self.low, self.high)
                 if isinstance(b, str)]
        if named:
            what += f" ({', '.join(named)})"
        choices = [*(["null"] if self.null else []), *self.words, what]
        said = ", ".join(choices[:-1]) + " or " + choices[-1] if len(choices) > 1 else what
        return f"{said} {self.hint}" if self.hint else said


def _num(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


@dataclass(frozen=True)
class Choice:
    """One of the named words."""

    words: tuple[str, ...]

    def allowed(self, cfg) -> str:
        return ", ".join(self.words[:-1]) + " or " + self.words[-1] if len(self.words) > 1 \
            else self.words[0]


#: what a scikit-learn model or a baseline computes in
DTYPE = Choice(("float32", "float64"))


@dataclass(frozen=True)
class Each:
    """A list whose every element meets ``rule``; ``length`` elements when given, in ascending
    order when ``ascending``; or null when ``null``."""

    rule: Number | Choice
    length: int | None = None
    ascending: bool = False
    null: bool = False

    def allowed(self, cfg) -> str:
        size = f"{self.length} " if self.length else ""
        order = ", ascending" if self.ascending else ""
        return (f"a list of {size}values, each {self.rule.allowed(cfg)}{order}"
                + (", or null" if self.null else ""))


@dataclass(frozen=True)
class Shares:
    """A mapping of the named shares, each in [0, 1], that sum to 1."""

    names: tuple[str, ...]

    def allowed(self, cfg) -> str:
        return f"shares {{{', '.join(self.names)}}} in [0, 1] that sum to 1"


@dataclass(frozen=True)
class Either:
    """A value that meets one of ``rules``."""

    rules: tuple[Number | Choice | Each, ...]

    def allowed(self, cfg) -> str:
        return " or ".join(rule.allowed(cfg) for rule in self.rules)


@dataclass(frozen=True)
class Switch:
    """The rule of the case named by another key's value (``protocol.name``)."""

    key: str
    cases: dict[str, Number]


@dataclass(frozen=True)
class Grid:
    """A search grid (``model.grid``): dotted keys under ``prefix`` -> lists of values, each
    value checked by the rule of the key it sets."""

    prefix: str


Rule = Number | Choice | Each | Either | Shares | Switch | Grid

# -- the ranges that recur ------------------------------------------------------------------
ANY = Number()
POSITIVE = Number(low=0, low_open=True)
NONNEGATIVE = Number(low=0)
PROBABILITY = Number(low=0, high=1, low_open=True, high_open=True)
FRACTION = Number(low=0, high=1)
OPEN_FRACTION = Number(low=0, high=1, low_open=True)  # (0, 1]
COUNT = Number(integer=True, low=1)
NONNEGATIVE_COUNT = Number(integer=True, low=0)
SEED = Number(integer=True, low=0, high=2**32 - 1)
SEEDS = Each(SEED)
#: Lightning's devices: auto, a count (-1: every device) or a list of device indices
DEVICES = Either((Number(integer=True, low=-1, words=("auto",)), Each(NONNEGATIVE_COUNT)))

PREPROCESS = {
    "preprocess.read.percentiles": Each(Number(low=0, high=100), length=2, ascending=True),
    "preprocess.crop.top": NONNEGATIVE,
    "preprocess.crop.bottom": NONNEGATIVE,
    "preprocess.crop.left": NONNEGATIVE,
    "preprocess.crop.right": NONNEGATIVE,
    "preprocess.crop.auto.search_fraction": OPEN_FRACTION,
    "preprocess.crop.auto.flat_fraction": OPEN_FRACTION,
    "preprocess.crop.auto.tolerance": NONNEGATIVE,
    "preprocess.crop.auto.min_height": NONNEGATIVE_COUNT,
    "preprocess.equalize.clahe_clip_limit": POSITIVE,
    "preprocess.equalize.clahe_tile_grid": Each(COUNT, length=2),
    "preprocess.patches.per_image": COUNT,
    "preprocess.patches.size": COUNT,
    "preprocess.patches.size_um": Number(low=0, low_open=True, null=True),
    "preprocess.patches.output_size": Number(integer=True, low=1, null=True),
    "preprocess.patches.rotation": Number(low=0, high=360, words=("dihedral",)),
    "preprocess.patches.seed": SEED,
    "preprocess.checks.blank_range": NONNEGATIVE,
    "preprocess.checks.saturated_fraction": OPEN_FRACTION,
    "preprocess.scale.pixel_size_nm": Number(low=0, low_open=True, null=True, words=("auto",)),
    "preprocess.scale.outlier_factor": Number(low=1, low_open=True, null=True),
}

MEASURES = {
    "measures.segmentation.classes": Number(integer=True, low=2),
    "measures.segmentation.block_size": Number(integer=True, low=3),
    "measures.segmentation.smooth_sigma": NONNEGATIVE,
    "measures.segmentation.min_size": NONNEGATIVE_COUNT,
    "measures.overlays": NONNEGATIVE_COUNT,
    "measures.baseline_c": POSITIVE,
}

FEATURES = {
    "features.batch_size": COUNT,
    "features.num_workers": NONNEGATIVE_COUNT,
    "features.devices": DEVICES,
    "features.wait_poll_s": POSITIVE,
    # what a patch's embedding is made of (sinterlab/features/representation.py)
    "features.representation": Choice(("final", "stages", "both")),
    "features.stages": Either((Choice(("all",)), Each(Number(integer=True)))),
    "features.statistics": Each(Choice(("mean", "std", "max"))),
}

#: a model config (a head or a scikit-learn candidate), relative to ``model`` or a candidate
MODEL = {
    "module.hidden": Each(COUNT),
    "module.dropout": Number(low=0, high=1, high_open=True),
    "module.lr": POSITIVE,
    "module.weight_decay": NONNEGATIVE,
    "module.scheduler.min_lr": NONNEGATIVE,
    "module.scheduler.patience": NONNEGATIVE_COUNT,
    "module.scheduler.factor": PROBABILITY,
    "module.C": POSITIVE,
    "module.pca": Number(integer=True, low=1, null=True),
    "module.max_iter": COUNT,
    "module.tol": POSITIVE,
    # scikit-learn estimators of conf/model (a forest, an SVM)
    "module.n_estimators": COUNT,
    "module.min_samples_leaf": COUNT,
    "module.random_state": Number(integer=True, low=0, high=2**32 - 1, null=True),
    "module.n_jobs": Number(integer=True, low=-1, null=True),
    "module.gamma": Number(low=0, low_open=True, words=("scale", "auto")),
    "module.dtype": DTYPE,
    "batch_size": COUNT,
    "loss_weights.*": NONNEGATIVE,
    "complexity": NONNEGATIVE_COUNT,
    # how model=auto searches a grid dimension past its written values (study/selection.py)
    "search.*.low": ANY,
    "search.*.high": ANY,
    "search.*.factor": Number(low=1, low_open=True, null=True),
    "search.*.step": Number(low=0, low_open=True, null=True),
    "search.*.scale": Choice(("log", "linear")),
}

TRAIN = {
    "library_threads": Number(integer=True, low=1, null=True),
    "seed": SEED,
    **PREPROCESS,
    **MEASURES,
    **FEATURES,
    **{f"model.{key}": rule for key, rule in MODEL.items()},
    "model.grid": Grid("model"),
    **{f"model.candidates.*.{key}": rule for key, rule in MODEL.items()},
    "model.candidates.*.grid": Grid("model.candidates.*"),
    # model=auto's heads stop sooner than a head trained alone (conf/model/auto.yaml)
    "model.candidates.*.early_stopping.patience": Number(integer=True, low=1, null=True),
    # and shrink their batch on small data (sinterlab.study.fit.head_batch)
    "model.candidates.*.min_steps_per_epoch": Number(integer=True, low=1, null=True),
    "model.candidates.*.min_batch_size": Number(integer=True, low=1, null=True),
    "model.selection.inner_folds": Number(integer=True, low=2),
    "model.selection.inner_seeds": SEEDS,
    "model.selection.max_extensions": NONNEGATIVE_COUNT,
    "model.selection.ensemble.rounds": Number(integer=True, low=1),
    "model.selection.ensemble.complexity": Number(integer=True, low=0),
    "model.selection.representations": Each(Choice(("final", "stages", "both")), null=True),
    "split.fractions": Shares(("train", "val", "test")),
    "split.min_groups_per_class": COUNT,
    "split.min_class_groups": COUNT,
    "protocol.folds": Switch("protocol.name", {
        "cv": Number(integer=True, low=2, hint="(protocol=holdout for one split)"),
        "holdout": Number(integer=True, low=1, high=1, hint="(protocol=cv for folds)")}),
    "protocol.seeds": SEEDS,
    "protocol.split_seed": SEED,
    "protocol.check_val_every_n_epoch": COUNT,
    "protocol.early_stopping.patience": Number(integer=True, low=1, null=True),
    "protocol.early_stopping.min_delta": NONNEGATIVE,
    "trainer.max_epochs": COUNT,
    "trainer.min_epochs": NONNEGATIVE_COUNT,
    "trainer.check_val_every_n_epoch": COUNT,
    "trainer.devices": DEVICES,
    "trainer.log_every_n_steps": COUNT,
    "trainer.num_sanity_val_steps": Number(integer=True, low=-1),
    "evaluation.pca_components": COUNT,
    "evaluation.baseline_max_iter": COUNT,
    "evaluation.baseline_C": POSITIVE,
    "evaluation.baseline_dtype": DTYPE,
    "evaluation.baseline_tol": POSITIVE,
    "evaluation.baselines.*.components": COUNT,
    "evaluation.baselines.*.C": POSITIVE,
    "evaluation.baselines.*.max_iter": COUNT,
    "evaluation.baselines.*.tol": POSITIVE,
    "evaluation.bootstrap.n": COUNT,
    "evaluation.bootstrap.confidence": PROBABILITY,
    "evaluation.bootstrap.seed": SEED,
    "evaluation.permutation.n": NONNEGATIVE_COUNT,
    "evaluation.permutation.alpha": POSITIVE,
    "evaluation.permutation.seed": SEED,
    "evaluation.instrument.depth": COUNT,
    "evaluation.instrument.alpha": PROBABILITY,
    "evaluation.paper.f1": FRACTION,
    "evaluation.paper.auroc": FRACTION,
    "evaluation.paper.accuracy": FRACTION,
    "evaluation.paper.auroc_range": Each(FRACTION, length=2, ascending=True),
    "evaluation.paper_training.max_epochs": COUNT,
    "evaluation.paper_training.batch_size": COUNT,
    "evaluation.paper_training.lr": POSITIVE,
    "evaluation.paper_training.check_val_every_n_epoch": COUNT,
    "evaluation.calibration.bins": COUNT,
    "evaluation.calibration.conformal_confidence": PROBABILITY,
    "evaluation.calibration.check.folds": Number(integer=True, low=2, words=("samples",)),
    "evaluation.calibration.check.score.classification": Choice(("log_loss", "brier")),
    "evaluation.calibration.check.score.ordered": Choice(("rps", "brier", "log_loss")),
    "evaluation.calibration.check.min_gain": NONNEGATIVE,
    "evaluation.calibration.check.standard_errors": NONNEGATIVE,
    "evaluation.tensorboard.projector_patches": NONNEGATIVE_COUNT,
    "evaluation.tensorboard.thumbnail": COUNT,
    "evaluation.gallery.per_kind": COUNT,
    "evaluation.gallery.stride": Number(integer=True, low=1, null=True),
    "evaluation.learning_curve.fractions.*": Each(OPEN_FRACTION, ascending=True),
    "evaluation.learning_curve.draws": COUNT,
    "evaluation.learning_curve.seed": SEED,
    "evaluation.learning_curve.head_seeds": SEEDS,
    "evaluation.learning_curve.fit.exponent.low": POSITIVE,
    "evaluation.learning_curve.fit.exponent.high": Number(
        low="evaluation.learning_curve.fit.exponent.low"),
    "evaluation.learning_curve.fit.exponent.steps": COUNT,
    "evaluation.learning_curve.fit.band_points": Number(integer=True, low=2),
    "evaluation.learning_curve.projection": Each(Number(low=1, low_open=True), ascending=True),
    "evaluation.learning_curve.targets": Each(PROBABILITY),
    "evaluation.learning_curve.max_factor": Number(low=1, low_open=True),
    "evaluation.learning_curve.studies.studies": COUNT,
    "evaluation.learning_curve.studies.permutations": COUNT,
    "evaluation.learning_curve.studies.alpha": PROBABILITY,
    "evaluation.learning_curve.studies.power": PROBABILITY,
    "evaluation.learning_curve.studies.interval_ratio": PROBABILITY,
    "evaluation.variance_components.bootstrap": COUNT,
    "evaluation.variance_components.worthwhile": POSITIVE,
}

EXTRACT = {**TRAIN, "shards": COUNT,
           "shard": Number(integer=True, low=0, high="shards", high_open=True)}

PLAN = {
    **PREPROCESS,
    **MEASURES,
    "space.parameters.*.low": ANY,
    "space.parameters.*.high": ANY,
    "space.parameters.*.step": POSITIVE,
    "space.parameters.*.levels": Each(ANY),
    "surrogate.interval": PROBABILITY,
    "surrogate.min_samples": Number(integer=True, low=2),
    "surrogate.seed": SEED,
    "map.points": Number(integer=True, low=2),
    "map.fixed.*": ANY,
    "target.value": ANY,
    "target.probability": PROBABILITY,
    "target.rows": COUNT,
    "next.q": COUNT,
    "next.mc_samples": COUNT,
    "next.seed": SEED,
    "space.max_settings": COUNT,
}

PREDICT = {
    **PREPROCESS,
    **FEATURES,
    "stride": Number(integer=True, low=1, null=True),
    "cam_patches": NONNEGATIVE_COUNT,
    "checks.pixel_size_tolerance": NONNEGATIVE,
}

EXPLAIN = PREDICT

#: ``sinterlab-synth``: the design, the image, and the generator's physics (its presets)
SYNTH = {
    "seed": SEED,
    "workers": NONNEGATIVE_COUNT,
    "design.burst_counts": Each(POSITIVE),
    "design.duty_cycles": Each(Number(low=0, high=100, low_open=True)),
    "design.power_w": POSITIVE,
    "design.slides": COUNT,
    "design.sets": COUNT,
    "design.images_per_sample": COUNT,
    "image.width": COUNT,
    "image.height": COUNT,
    "image.pixel_nm": POSITIVE,
    "image.pixel_nm_by_slide.*": POSITIVE,
    "image.bar_height": Each(NONNEGATIVE_COUNT, length=2, ascending=True),
    "image.contact_width": COUNT,
    **{f"physics.{key}": POSITIVE for key in (
        "r0_nm", "coverage", "layer_depth", "dc_ref", "neck_E0", "neck_n", "coarsen_m",
        "densify_E", "neck_closing", "neck_gamma", "neck_smooth", "pore_softness")},
    **{f"physics.{key}": NONNEGATIVE for key in (
        "radius_log_sd", "dc_alpha", "coarsen_K", "thickness_exp")},
    "physics.neck_cap": OPEN_FRACTION,
    "physics.porosity_0": Number(low=0, high=1, high_open=True),
    "physics.porosity_inf": Number(low=0, high=1, high_open=True),
    **{f"nuisance.{level}.*": NONNEGATIVE for level in ("slide_sd", "set_sd", "sample_sd")},
    "nuisance.image_energy_sd": NONNEGATIVE,
    "nuisance.brightness.mean": FRACTION,
    "nuisance.brightness.sd": NONNEGATIVE,
    "nuisance.contrast.median": POSITIVE,
    "nuisance.contrast.log_sd": NONNEGATIVE,
    "nuisance.blur_sigma_px.median": NONNEGATIVE,
    "nuisance.blur_sigma_px.log_sd": NONNEGATIVE,
    "nuisance.hv_kv": Each(POSITIVE),
    "nuisance.wd_mm.mean": POSITIVE,
    "nuisance.wd_mm.sd": NONNEGATIVE,
    **{f"render.{key}": NONNEGATIVE for key in (
        "base", "k_tilt", "k_edge", "k_dir", "max_tilt", "pore_dark", "line_noise_sd",
        "drift_sd_px")},
    **{f"render.{key}": POSITIVE for key in ("edge_sigma", "signal_ref", "dose")},
    **{f"measurements.sheet_resistance.{key}": POSITIVE for key in (
        "rho_bulk_uohm_cm", "thickness_nm", "percolation_exp", "damage_dc", "damage_n")},
    "measurements.sheet_resistance.solid_threshold": Number(low=0, high=1, high_open=True),
    "measurements.sheet_resistance.neck_exp": NONNEGATIVE,
    "measurements.sheet_resistance.noise_log_sd": NONNEGATIVE,
}

#: numbers in conf/ that take any value on purpose, with the reason
UNCHECKED = {
    "data.classes": "class labels: whatever values the target column holds",
    "data.order.*": "class labels in their order: whatever values the target column holds",
}

#: the schema of each entry config (conf/<name>.yaml)
SCHEMAS = {"train": TRAIN, "extract": EXTRACT, "plan": PLAN, "predict": PREDICT,
           "explain": EXPLAIN, "synth": SYNTH}


def expand(cfg, pattern: str) -> list[tuple[str, object]]:
    """(dotted key, value) of every key of ``cfg`` that ``pattern`` names (``*``: every key of
    a mapping); keys absent, null on the way, or missing (``???``) are left out."""
    found = [("", cfg)]
    for part in pattern.split("."):
        step = []
        for prefix, node in found:
            if not isinstance(node, Mapping):
                continue
            for name in (list(node) if part == "*" else [part] if part in node else []):
                step.append((f"{prefix}.{name}" if prefix else str(name), node[name]))
        found = step
    return found


def violation(key: str, value, rule: Rule, cfg, schema: dict) -> str | None:
    """The one-line message for ``value`` at ``key`` breaking ``rule``; None when it meets it."""
    if isinstance(rule, Switch):
        case = rule.cases.get(str(_select(cfg, rule.key)))
        return violation(key, value, case, cfg, schema) if case else None
    if isinstance(rule, Choice):
        return None if value in rule.words else \
            f"{key}={_shown(value)}: not allowed; use {rule.allowed(cfg)}"
    if isinstance(rule, Number):
        problem = rule.problem(value, cfg)
        return f"{key}={_shown(value)}: {problem}; use {rule.allowed(cfg)}" if problem else None
    if isinstance(rule, Each):
        if value is None and rule.null:
            return None
        if not _is_list(value) or rule.length and len(value) != rule.length:
            why = "not a list" if not _is_list(value) else f"{len(value)} values"
            return f"{key}={_shown(value)}: {why}; use {rule.allowed(cfg)}"
        for i, item in enumerate(value):
            found = violation(f"{key}[{i}]", item, rule.rule, cfg, schema)
            if found:
                return found
        if rule.ascending and list(value) != sorted(value):
            return f"{key}={_shown(value)}: not in ascending order; use {rule.allowed(cfg)}"
        return None
    if isinstance(rule, Either):
        if any(not violation(key, value, r, cfg, schema) for r in rule.rules):
            return None
        first = rule.rules[0]
        problem = first.problem(value, cfg) if isinstance(first, Number) else "not allowed"
        return f"{key}={_shown(value)}: {problem}; use {rule.allowed(cfg)}"
    if isinstance(rule, Shares):
        if not isinstance(value, Mapping) or set(map(str, value)) != set(rule.names):
            return f"{key}={_shown(value)}: not the shares named; use {rule.allowed(cfg)}"
        for name in rule.names:
            found = violation(f"{key}.{name}", value[name], FRACTION, cfg, schema)
            if found:
                return found
        total = sum(float(value[name]) for name in rule.names)
        if not math.isclose(total, 1.0, abs_tol=1e-6):
            return f"{key}={_shown(value)}: the shares sum to {total:g}; use {rule.allowed(cfg)}"
        return None
    return _grid_violation(key, value, rule, cfg, schema)


def _grid_violation(key: str, value, rule: Grid, cfg, schema: dict) -> str | None:
    if not isinstance(value, Mapping):
        return f"{key}={_shown(value)}: not a mapping; use {{dotted key: [values]}}"
    for name, values in value.items():
        if not _is_list(values):
            return (f"{key}.{name}={_shown(values)}: not a list; use a list of the values to "
                    "search")
        target = schema.get(f"{rule.prefix}.{name}")
        for i, item in enumerate(values if target else []):
            found = violation(f"{key}.{name}[{i}]", item, target, cfg, schema)
            if found:
                return found
    return None


def check_config(cfg, schema: dict) -> None:
    """Raise :class:`SinterlabError` with one line for the first value of ``cfg`` outside its
    rule in ``schema`` (in the schema's order); keys absent from ``cfg`` are skipped."""
    for pattern, rule in schema.items():
        for key, value in expand(cfg, pattern):
            found = violation(key, value, rule, cfg, schema)
            if found:
                raise SinterlabError(found)
