"""The report's "How much data" section and its console line, written from the run's
``learning_curve`` and ``variance_components`` blocks of metrics.json."""

from __future__ import annotations

import math

from sinterlab.data.descriptor import Target
from sinterlab.evaluation.display import interval, long_name, number
from sinterlab.evaluation.results import (
    ACCURACY,
    SAMPLES_AXIS,
    LearningCurve,
    LearningCurves,
    Projection,
    VarianceComponents,
)

AXIS_WORDS = {"samples": "samples", "images": "images per sample",
              "patches": "patches per image"}


def _size(x: float | None) -> str:
    """A data size as a person counts it: whole units, rounded up."""
    return "—" if x is None else str(math.ceil(x - 1e-9))


def _run_range(cell: Projection) -> str:
    return f"[{number(cell.run_low)}, {number(cell.run_high)}]"


def _metric_name(metric: str, unit: str) -> str:
    return "image accuracy" if metric == ACCURACY else \
        "image MAE" + (f" ({unit})" if unit else "")


def _curve_table(curve: LearningCurve, metrics: list[str], unit: str) -> str:
    rows = []
    for p in curve.points:
        share = "all" if p.fraction == 1 else f"{p.fraction:g}"
        rows.append([f"{share} of today's", f"{p.x:.1f}",
                     *(interval(p.metric(m)) for m in metrics)])
    for k, proj in enumerate(curve.projection[metrics[0]]):
        cells = []
        for m in metrics:
            cell = curve.projection[m][k]
            cells.append(f"{interval(cell)}; a run: {_run_range(cell)}")
        rows.append([f"**{proj.multiplier:g}x (projected)**", f"{proj.x:.1f}", *cells])
    headers = ["data", curve.unit, *(_metric_name(m, unit) for m in metrics)]
    lines = "| " + " | ".join(headers) + " |\n|" + "---|" * len(headers) + "\n"
    return lines + "".join("| " + " | ".join(r) + " |\n" for r in rows)


def _needed(lc: LearningCurves) -> list[str]:
    out = []
    for need in lc.needed or []:
        target = f"image accuracy {need.accuracy:g}"
        reached = (f"{need.reached_share:.0%} of the bootstrap curves reach it within "
                   f"{_size(need.within)} samples per class")
        if need.samples_per_class is None:
            out.append(f"- {target}: **not within {_size(need.within)} samples per class** "
                       f"(how far this curve is trusted); {reached}.")
            continue
        high = f"more than {_size(need.within)}" if need.high is None else _size(need.high)
        low = "—" if need.low is None else _size(need.low)
        out.append(f"- {target}: about **{_size(need.samples_per_class)} samples per class** "
                   f"[{low}, {high}]; {reached}.")
    return out


def _studies(lc: LearningCurves) -> list[str]:
    s = lc.studies
    if not s:
        return []
    width = (f"about **{_size(s.narrower_at)} samples per class**" if s.narrower_at
             else f"more than {s.max_simulated} samples per class")
    power = (f"**{s.powered_at} samples per class**" if s.powered_at
             else f"more than {s.max_simulated} samples per class")
    return [f"- An image accuracy interval {s.interval_ratio:g} as wide as today's "
            f"({number(s.interval_width_today)} wide at {s.today} samples per class) needs "
            f"{width}.",
            f"- A permutation test against chance reaches p < {s.alpha:g} in "
            f"{s.power:.0%} of studies with {power} (today's size: {s.at_today().power:.0%} of "
            "studies)."]


def _curves_section(lc: LearningCurves, unit: str) -> list[str]:
    """The learning curves' part of the section: what was trained, a table per axis, the
    limit, the samples needed and the simulated studies."""
    metrics = lc.metrics
    served = lc.model or "no model of its own"
    seeds = (f"; heads trained with seeds {lc.head_seeds} only, so the full-data point "
             "can differ from the run's own row" if lc.head_seeds else "")
    out = [f"The served model (**{served}**) and the best baseline "
           f"({long_name(lc.baseline)}) trained again inside the same outer folds on "
           f"nested subsets of each fold's training data ({lc.draws} random subsets "
           "per fraction: samples drawn within each class, images within each sample, "
           "patches within each image; the test samples unchanged), scored on the same "
           "test images; intervals from the run's bootstrap over test samples. Sizes "
           f"count the data set (as a run of that size would hold){seeds}. Fitted per "
           "curve: error (or MAE) = floor + scale · size^−exponent; dashed where it "
           "extrapolates. \"a run\": the interval a run on that much new data would "
           "measure (the curve's interval and a run's own sampling noise).\n"]
    for axis, curve in (lc.axes or {}).items():
        out.append(f"**More {AXIS_WORDS[axis]}** (today {curve.today:.1f} {curve.unit}):\n")
        out.append(_curve_table(curve, metrics, unit))
    for axis, reason in (lc.axes_skipped or {}).items():
        out.append(f"More {AXIS_WORDS[axis]}: not measured ({reason}).\n")
    if lc.baseline_curve:
        out.append(f"**{long_name(lc.baseline)}, more samples:**\n")
        out.append(_curve_table(lc.baseline_curve, metrics, unit))
    samples = lc.curve(SAMPLES_AXIS)
    if samples is not None:
        first = samples.fit[metrics[0]]
        out.append(f"Limit of the {_metric_name(metrics[0], unit)} with unlimited samples "
                   f"(the curve's floor): {interval(first.limit)}; exponent "
                   f"{first.exponent:.2f}.\n")
        out += ["\n".join(_needed(lc) + _studies(lc)) + "\n"]
    if lc.figure:
        out.append(f"![learning curves]({lc.figure})\n")
    out.append(f"Learning curves took {number(lc.wall_s, 1)} s.\n")
    return out


def how_much_data_section(lc: LearningCurves | None, vc: VarianceComponents | None,
                          target: Target) -> list[str]:
    """Learning curves (``lc``) along samples, images per sample and patches per image; what
    twice and four times the data would give; the samples needed; and the variance components
    (``vc``) of the first ``target``'s outputs."""
    if not lc and not vc:
        return []
    unit = (target.error_unit if target.ordered else "") or target.unit or ""
    out = ["## How much data\n"]
    if vc:
        out.append(f"**{vc.sentence[0].upper()}{vc.sentence[1:]}.**\n")
    if not lc:
        out.append("Learning curves: off (`evaluation.learning_curve.enabled=true` trains the "
                   "served model again on subsets of each fold's training data and projects "
                   "the score for more samples, images and patches).\n")
    elif lc.skipped:
        out.append(f"Learning curves skipped: {lc.skipped}.\n")
    else:
        out += _curves_section(lc, unit)
    if vc:
        rows = [[name.replace("_", " "),
                 number(vc.components[name].value, 4, missing="not estimable"),
                 interval(vc.shares[name], missing="not estimable")]
                for name in vc.components]
        out.append(f"Variance components of the out-of-fold {vc.output} of the "
                   f"{long_name(vc.model)}, per patch, within each class (nested ANOVA; "
                   "intervals from "
                   f"{vc.bootstrap.n} bootstrap draws of samples within their class)"
                   + (f"; {vc.note}" if vc.note else "") + ":\n")
        out.append("| component | variance | share of a sample's reading noise |\n|---|---|---|\n"
                   + "".join("| " + " | ".join(r) + " |\n" for r in rows))
        if vc.figure:
            out.append(f"![variance components]({vc.figure})\n")
    return out


def console_line(lc: LearningCurves | None, vc: VarianceComponents | None) -> str | None:
    """One line: the score twice the samples (images, patches) would give (learning curves
    ``lc``), and the advice of the variance components ``vc``."""
    parts = []
    if lc and lc.axes:
        metric = lc.metrics[0]
        for axis, curve in lc.axes.items():
            proj = curve.projection[metric][0]
            today = curve.points[-1].metric(metric).value
            if axis == SAMPLES_AXIS:
                parts.append(f"image {metric} {today:.3f} today -> {interval(proj)} with "
                             f"{proj.multiplier:g}x samples ({_size(proj.x)} per class)")
            else:
                parts.append(f"{proj.multiplier:g}x {AXIS_WORDS[axis]} {proj.value:.3f}")
    if vc:
        parts.append(vc.advice)
    return "how much data: " + "; ".join(parts) if parts else None
