"""Per-run report: ``report.md`` written once from the run's :class:`RunMetrics`, and
``report.html`` rendered from that Markdown by Python-Markdown (``tables`` extension) with the
figures embedded.

The headline is the grouped, cross-validated number with its interval; every model is shown on
the same folds; the paper's leaky patch-level figure stays beside it, labelled.
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import markdown
import numpy as np

from sinterlab.atomic import write_text
from sinterlab.data.descriptor import Target
from sinterlab.evaluation.data_report import how_much_data_section
from sinterlab.evaluation.display import interval, long_name, number
from sinterlab.evaluation.metrics import LEVELS, ORDINAL
from sinterlab.evaluation.results import (
    CrossValidation,
    Interval,
    LevelCalibration,
    PredictionSetsCheck,
    ProtocolBlock,
    RunMetrics,
    as_run,
)
from sinterlab.models.scores import SCORE_NAMES


def model_name(key: str, cv: CrossValidation) -> str:
    """Display name; the plain head is named after its model config when not the paper's."""
    if key == "head" and cv.head_model not in (None, "mlp"):
        return f"{cv.head_model} head"
    return long_name(key)


LEAK_WARNING = ("⚠ split by patch: patches of one image are in train and test, so these scores "
                "are optimistic (leaky)")
RANDOM_INIT_WARNING = "⚠ random-init backbone: not transfer learning"
PAPER_KEY_ALIASES = {"f1": "f1_macro", "f1_score": "f1_macro", "auc": "auroc", "acc": "accuracy"}
#: the ordered target's columns: (metric, digits, header)
ORDERED_COLUMNS = (("mae", 1, "MAE [{unit}]"), ("mae_expected", 1, "MAE expected [{unit}]"),
                   ("within_one", 3, "within one level"), ("qwk", 3, "QWK"),
                   ("spearman", 3, "Spearman ρ"))


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    cells = [[str(c).replace("|", "\\|").replace("\n", " ") for c in row] for row in rows]
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in cells]) + "\n"


def _split_label(block: ProtocolBlock) -> str:
    kind = block.split.kind
    text = f"{block.cv.folds}-fold CV by {kind}" if block.cv.protocol == "cv" else \
        f"holdout split by {kind}"
    return text + (" (LEAKY)" if block.split.leaky else "")


# -- sections ------------------------------------------------------------------------------------
def _header(m: RunMetrics) -> list[str]:
    weights = m.backbone.weights
    facts = [f"task `{m.task}`", f"targets {', '.join(t.name for t in m.targets)}",
             f"protocol `{_split_label(m)}`, seeds {m.cv.seeds}",
             f"backbone `{m.backbone.name}`, weights **{weights.source}** ({weights.identity})"
             + ("" if m.backbone.representation == "final"
                else f", embedding: {m.backbone.representation}")]
    out = [f"# Run report: {m.experiment}\n", "; ".join(facts) + ".\n"]
    if m.split.leaky:
        out.append(f"> {LEAK_WARNING}\n")
    if weights.transfer_learning is False:
        out.append(f"> {RANDOM_INIT_WARNING}\n")
    if m.data.small_classes:
        out.append(f"> ⚠ class(es) {', '.join(map(str, m.data.small_classes))} have too few "
                   f"{m.split.kind}s: their images are tested by heads that never saw the class, "
                   "and they count in every score below (groups per class: see Data)\n")
    out += [f"> {name} skipped: {reason}\n" for name, reason in m.skipped.items()]
    if m.cv.instrument and m.cv.instrument.warning:
        out.append(f"> ⚠ {m.cv.instrument.warning}\n")
    return out


def _measures(m: RunMetrics) -> list[str]:
    """Which classical measures move with the parameter, strongest first."""
    record = m.measures
    if not record:
        return []
    out = ["## Microstructure measures\n",
           f"Measured on every image's segmented micrograph (pores vs solid; lengths in "
           f"{record.unit}), averaged per sample ({record.n_samples} samples); "
           "`measures.csv` has every image. The measures-only model (measures + logistic/ridge) "
           "is scored on the same folds as the other models above.\n"]
    if record.trends_skipped:
        return out + [f"Trends skipped: {record.trends_skipped}.\n"]
    lines = []
    for t in record.trends:
        if t.rho is None:
            lines.append(f"- {t.measure}: undefined (constant, or NaN in most samples)")
            continue
        direction = "rises" if t.rho > 0 else "falls"
        sure = "" if (t.p_value or 1) < 0.05 else " (not distinguishable from chance)"
        lines.append(f"- **{t.measure}** {direction} with {m.first_target.name} (Spearman ρ = "
                     f"{t.rho:.2f} [{number(t.low, 2)}, {number(t.high, 2)}], "
                     f"p = {number(t.p_value, 3)}){sure}")
    return out + ["\n".join(lines) + "\n"]


def _instrument(m: RunMetrics) -> list[str]:
    """Imaging settings per class and the settings-only model on the same folds."""
    check = m.cv.instrument
    if not check:
        return []
    out = ["## Imaging settings\n"]
    if check.skipped:
        return out + [f"Instrument-only check skipped: {check.skipped}.\n"]
    out.append(f"{check.model} ({', '.join(check.features)}), on the same folds: "
               f"out-of-fold image accuracy {number(check.observed_accuracy)} vs "
               f"{number(check.permuted_accuracy_mean)} with labels permuted between samples; "
               f"p = {number(check.p_value, 4)}. "
               + ("**The settings alone predict the parameter.**" if check.warning
                  else "The settings alone do not predict the parameter better than chance.")
               + "\n")
    fields = sorted({f for row in check.by_class.values() for f in row})
    if fields:
        out.append(_table(["class", *fields], [[c, *(row.get(f, "—") for f in fields)]
                                               for c, row in check.by_class.items()]))
    return out


def _verdict_text(cv: CrossValidation) -> str:
    v = cv.verdict
    if not v.best_model:
        return ""
    lines = [f"Best model on {v.level}-level {v.metric}: **{model_name(v.best_model, cv)}**."]
    if v.best_baseline:
        base = long_name(v.best_baseline)
        head = model_name(v.primary, cv)
        low, high = v.baseline_minus_primary_interval or (None, None)
        paired = (f"{base} minus head: [{number(low)}, {number(high)}] (paired bootstrap)"
                  if low is not None else "")
        if v.primary_beats_by_more_than_interval:
            lines.append(f"The {head} beats the best baseline ({base}) by "
                         f"{number(v.primary_margin)}, more than its interval width "
                         f"({number(v.primary_interval_width)}); {paired}.")
        elif v.primary_margin > 0:
            lines.append(f"The {head} is ahead of the best baseline ({base}) by only "
                         f"{number(v.primary_margin)}, less than its interval width "
                         f"({number(v.primary_interval_width)}): **no clear gain over the "
                         f"{base}**; {paired}.")
        else:
            lines.append(f"**The {head} does not beat the {base}** (behind by "
                         f"{number(-v.primary_margin)}); {paired}.")
    what = {"nested": "The auto-selected model", "final": "The final model's candidate"}
    for role, check in (v.selection.checks() if v.selection else []):
        if check.disagrees:
            lines.append(f"**Selection and {v.level}-level {v.metric} disagree:** {what[role]} "
                         f"({long_name(check.model)}, {number(check.value)}) is behind "
                         f"{long_name(check.best_other)} ({number(check.best_value)}) by "
                         f"{number(check.behind_by)}, more than its interval width "
                         f"({number(check.interval_width)}); see Model selection.")
    return " ".join(lines) + "\n"


def _headline(m: RunMetrics) -> list[str]:
    cv, model = m.cv, m.reported
    level, metric, b = cv.verdict.level, cv.verdict.metric, cv.bootstrap
    out = ["## Headline\n",
           f"**{model_name(model, cv)}, {level}-level {metric}: "
           f"{interval(cv.cell(model, level, metric))}** "
           f"({_split_label(m)}; every tested {level} predicted by heads that never saw its "
           f"group; {int(b.confidence * 100)}% interval from {b.n} bootstrap "
           f"resamples of the {b.units} {b.unit}s, not of patches).\n",
           _verdict_text(cv), *_ordered_headline(m, model, level)]
    perm = cv.permutation
    if perm and perm.p_value is not None:
        proxy = perm.proxy_for
        out.append(f"Against chance: p = {number(perm.p_value, 4)} "
                   + ("for a **proxy**, not the served model: " if proxy else "")
                   + f"({perm.model}: out-of-fold image accuracy "
                   f"{number(perm.observed_accuracy)} vs "
                   f"{number(perm.permuted_accuracy_mean)} on average over "
                   f"{perm.n_permutations} label permutations between samples, folds kept)"
                   + (f"; the served model ({proxy}, image accuracy "
                      f"{number(perm.served_accuracy)}) would be trained again for every "
                      "permutation, so its own p-value is not computed" if proxy else "")
                   + ".\n")
    contrast = m.contrast
    if contrast and contrast.cv.pooled:
        c_model = contrast.reported
        out.append(f"Beside it, {_split_label(contrast)}: {model_name(c_model, contrast.cv)} "
                   f"{level}-level {metric} {interval(contrast.cv.cell(c_model, level, metric))}"
                   + (" — the paper's kind of split, optimistic because patches of one image "
                      "sit in training and test." if contrast.split.leaky else ".")
                   + "\n")
    return out


def _ordered_target(m: RunMetrics) -> Target | None:
    first = m.first_target
    return first if first.ordered else None


def _step(target: Target) -> str:
    """'±50 BC' when the levels are evenly spaced, else 'one level'."""
    steps = np.diff(np.asarray(target.values, dtype=float))
    if target.error_unit != "levels" and len(steps) and np.allclose(steps, steps[0]):
        return f"±{steps[0]:g} {target.error_unit}".strip()
    return "one level"


def _ordered_headline(m: RunMetrics, model: str, level: str) -> list[str]:
    """An ordered target in its own units: MAE and within-one-level accuracy with intervals."""
    target = _ordered_target(m)
    cell = (m.cv.pooled[model].at(level) or {}) if model in m.cv.pooled else {}
    if not target or "mae" not in cell:
        return []
    unit = target.error_unit
    mae, expected, within, qwk, rho = (cell.get(k) for k, _, _ in ORDERED_COLUMNS)
    return [f"In {target.name} terms: mean absolute error **{interval(mae, 1)} {unit}** "
            f"(from the probability-weighted expected value: {interval(expected, 1)} "
            f"{unit}); within one level ({_step(target)}): **{interval(within)}**; quadratic "
            f"weighted kappa {interval(qwk)}; Spearman ρ of the expected value with the "
            f"truth {interval(rho)}.\n"]


def _ordered_table(m: RunMetrics) -> list[str]:
    target = _ordered_target(m)
    if not target or not m.cv.pooled:
        return []
    unit = target.error_unit
    rows = [[model_name(name, m.cv)] + [interval(row.cell("image", k), digits)
                                        for k, digits, _ in ORDERED_COLUMNS]
            for name, row in m.cv.pooled.items()]
    return ["## Ordered target: errors in " + (unit or "levels") + "\n",
            f"Image level, every model on the same folds. MAE from the predicted level and from "
            f"the expected value (Σ p × level value); within one level = off by at most "
            f"{_step(target)}.\n",
            _table(["model", *(h.format(unit=unit) for _, _, h in ORDERED_COLUMNS)], rows)]


def _models_table(block: ProtocolBlock, title: str) -> list[str]:
    cv = block.cv
    if not cv.pooled:
        return []
    first = next(iter(cv.pooled.values()))
    metrics = [k for k in first.patch or {} if k not in dict(ORDINAL)]
    headers = ["model"] + [f"{lvl} {mt}" for mt in metrics[:1] for lvl in LEVELS] + \
        [f"image {mt}" for mt in metrics[1:]]
    rows = [[model_name(name, cv)] + [interval(row.cell(lvl, metrics[0])) for lvl in LEVELS]
            + [interval(row.cell("image", mt)) for mt in metrics[1:]]
            for name, row in cv.pooled.items()]
    return [f"## {title}\n",
            f"Pooled out-of-fold predictions of every model on the same folds "
            f"({_split_label(block)}); 95% intervals resample {cv.bootstrap.unit}s.\n",
            _table(headers, rows)]


def _folds_table(m: RunMetrics) -> list[str]:
    cv = m.cv
    if not cv.per_fold:
        return []
    level, metric = cv.verdict.level, cv.verdict.metric
    models = [k for k in cv.pooled if k in cv.per_fold[0].models]
    rows = [[f.fold, f.test_groups, f.test_images, f.test_patches]
            + [number(f.models[k].at(level)[metric]) for k in models] for f in cv.per_fold]
    spread = {k: cv.fold_statistics[k].at(level)[metric] for k in models}
    rows.append(["mean ± sd", "", "", ""] + [f"{number(s.mean)} ± {number(s.sd)}"
                                             for s in spread.values()])
    return ["## Per fold\n", f"{level}-level {metric} on each fold's test groups.\n",
            _table(["fold", "test groups", "test images", "test patches",
                    *(model_name(k, cv) for k in models)], rows)]


def _samples_table(m: RunMetrics) -> list[str]:
    if not m.samples:
        return []
    columns = list(m.samples[0])
    rows = [[number(s[c]) for c in columns] for s in m.samples]
    return ["## Per sample\n", "Each tested sample, what its images were read as out of fold "
            "(`oof_samples.csv`; per image: `oof_predictions.csv`).\n", _table(columns, rows)]


def _selection(m: RunMetrics) -> list[str]:
    sel = m.selection
    if not sel:
        return []
    names, final, cv = sel.candidates, sel.final, m.cv
    score = SCORE_NAMES.get(sel.score, sel.score)
    rows = [[f, sel.winner_points[f], *(number(sel.inner_scores[n][f]) for n in names)]
            for f in range(len(sel.winners))]
    refit = (f"for {final.epochs} epochs (the median best epoch of its CV heads), "
             f"{final.members} seeds" if final.epochs else "with these settings")
    level, metric = cv.verdict.level, cv.verdict.metric
    chosen = [[long_name(n) + (" **(final)**" if n == final.model else ""),
               number(float(np.mean(sel.inner_scores[n]))), number(sel.cv_scores.get(n)),
               interval(cv.cell(n, level, metric)), sel.winners.count(n),
               number(sel.candidate_wall_s.get(n), 1)] for n in names]
    return ["## Model selection (nested CV)\n",
            f"For each outer fold, every candidate (and every point of its grid, "
            f"`model.selection.grid={sel.grid}`) was scored by the **{score}** of the image "
            f"probabilities `sinterlab-predict` would serve (each model's image calibration, "
            f"fitted on validation images of the inner training groups only) on held-out groups "
            f"of a {sel.inner_folds}-fold grouped CV inside that fold's training groups "
            f"(seeds {sel.inner_seeds}); no outer test row was read. The best point, trained "
            "on the outer training groups, predicted the outer test fold: that is the "
            "auto-selected row above, the honest score of choosing a model this way. Each "
            "candidate's own row takes its best grid point per outer fold by the same inner "
            "score.\n",
            f"What chose, beside what a user reads (lower {sel.score} is better; "
            f"{level}-level {metric} of each candidate's row above, on the same folds):\n",
            _table(["candidate", f"mean inner {sel.score}", f"CV {sel.score}",
                    f"{level} {metric}", "outer folds won", "time (s)"], chosen),
            _table(["outer fold", "winner", *(f"inner {sel.score}: {long_name(n)}"
                                             for n in names)], rows),
            *_separation(sel),
            *_ensemble(sel, cv, level, metric),
            *_representations(sel, cv, level, metric),
            f"Final model (used by `sinterlab-predict`): **{final.point}**"
            f", {_rule_words(sel, score)}, refitted on every group "
            f"{refit} (`{final.checkpoint}`). Selection took {number(sel.wall_s, 1)} s.\n",
            *(["Where each searched candidate's tuned point lies per outer fold (a grid "
               "dimension with a `search` block in its model config is extended past the "
               "written values until the optimum is interior or at a hard bound):\n",
               _table(["candidate", *(f"outer fold {f}" for f in range(len(sel.winners)))],
                      [[long_name(n), *sel.optimum[n]] for n in sel.optimum])]
              if sel.optimum else []),
            *([f"Not trained on the outer folds (they won no outer fold and are not the final "
               f"model, so they could not change the answer; `model.selection.outer_fits=all` "
               f"trains them for rows of their own): "
               f"{', '.join(long_name(n) for n in sel.not_trained)}.\n"]
              if sel.not_trained else [])]


def _rule_words(sel, score: str) -> str:
    if sel.rule == "one_se":
        return (f"the simplest candidate within one standard error of the best mean inner "
                f"{score} over the outer folds")
    return f"the best mean inner {score} over the outer folds"


def representation_of(label: str) -> str:
    """The representation a grid point's label names (``<candidate>@<representation> ...``)."""
    name = label.split(" ")[0]
    return name.split("@", 1)[1] if "@" in name else "all"


def _representations(sel, cv, level: str, metric: str) -> list[str]:
    """Under model.selection.representations: what each outer fold chose, and the nested row
    of each representation's candidates alone."""
    if not sel.representations:
        return []
    chosen = []
    for f, label in enumerate(sel.winner_points):
        parts = sel.ensemble[f] if label == "ensemble" and sel.ensemble else {label: 1.0}
        views = dict.fromkeys(representation_of(p) for p in parts)
        chosen.append(f"fold {f}: {' + '.join(views)}")
    rows = [[view, ", ".join(winners), interval(cv.cell(f"auto@{view}", level, metric))]
            for view, winners in sel.representations.items()]
    return ["Representations (`model.selection.representations`: every candidate read each "
            "part of the patch embedding, chosen by the same inner CV). What each outer fold "
            f"chose: {'; '.join(chosen)}. The nested row of each representation's candidates "
            f"alone ({level} {metric}):\n",
            _table(["representation", "winner per outer fold", f"{level} {metric}"], rows)]


def _ensemble(sel, cv, level: str, metric: str) -> list[str]:
    """The weighted ensemble: its members and weights per outer fold, its row beside the best
    single candidate's, and the served one's members where it is the final model."""
    if not sel.ensemble:
        return []
    rows = [[f, "; ".join(f"{w:.2f} x {label}" for label, w in sorted(
                 weights.items(), key=lambda x: -x[1])), sel.single_winners[f],
             "yes" if sel.winners[f] == "ensemble" else "no"]
            for f, weights in enumerate(sel.ensemble)]
    pair = [[long_name(n), interval(cv.cell(n, level, metric))]
            for n in ("ensemble", "best_single") if cv.cell(n, level, metric)]
    blend = sel.final.blend
    served = ("The final model is the ensemble: "
              + "; ".join(f"{part.weight:.2f} x {part.model.point} (`{part.model.checkpoint}`)"
                          for part in blend)
              + ", each refitted on every group; `sinterlab-predict` serves the mean of their "
              "image probabilities by weight (`members=true` adds each member's answer).\n"
              ) if blend else ""
    return ["Weighted ensemble (greedy forward selection with replacement over each outer "
            "fold's tuned point of every candidate, on that fold's inner held-out image "
            "outputs; its inner score cross-fitted over the inner groups, so it competes with "
            "single candidates on equal terms):\n",
            _table(["outer fold", "members and weights", "best single point", "served"], rows),
            *([f"Its nested row beside the best single candidate's ({level} {metric}):\n",
               _table(["row", f"{level} {metric}"], pair)] if pair else []),
            served]


def _separation(sel) -> list[str]:
    """Whether the inner CV could tell the candidates apart, fold by fold, and which rule
    served (the one-standard-error rule or the best mean)."""
    if not sel.not_separated:
        return []
    rule = ("the simplest of them (`model.selection.rule=one_se`: by the `complexity` of each "
            "model config)" if sel.rule == "one_se" else
            "the best inner score regardless (`model.selection.rule=best`)")
    rows = [[f, ", ".join(long_name(n) for n in ties) or "— (separated)"]
            for f, ties in enumerate(sel.not_separated)]
    tied = sum(bool(t) for t in sel.not_separated)
    lead = ("The inner CV could not tell the candidates apart" if tied == len(rows) else
            f"The inner CV could not tell some candidates apart ({tied} of {len(rows)} outer "
            "folds)" if tied else "The inner CV separated the best candidate from the others")
    return [f"{lead}: within one standard error of each fold's best point (per-sample losses "
            f"paired on the same inner held-out samples). Where it could not, {rule} was "
            f"served. Over all folds: "
            + (", ".join(long_name(n) for n in sel.final_not_separated) or "none")
            + " within one standard error of the best.\n",
            _table(["outer fold", "candidates within one SE of the best"], rows)]


def _paper(m: RunMetrics) -> list[str]:
    numbers = {k: v for k, v in (m.paper or {}).items() if isinstance(v, int | float)
               and not isinstance(v, bool)}
    if not numbers:
        return []
    blocks = [b for b in (m, m.contrast) if b and b.test]
    rows = [[k, number(float(v)), *(number(b.test.patch.get(PAPER_KEY_ALIASES.get(k, k)))
                                  if b.test.patch else "—" for b in blocks)]
            for k, v in numbers.items()]
    return ["## The paper's figures\n",
            "The paper split its patches at random (leaky). Patch-level metrics of the MLP head "
            "here, pooled out of fold:\n",
            _table(["metric (patch level)", "paper", *(_split_label(b) for b in blocks)], rows)]


def _calibration(m: RunMetrics) -> list[str]:
    """How far the head's probabilities (or values) can be trusted, out of fold."""
    cal = m.calibration
    if not cal:
        return []
    if cal.conformal:
        c = cal.conformal
        unit = f" {m.first_target.unit}".rstrip()
        coverage = "not checkable (one fold)" if c.coverage is None else \
            f"{c.coverage:.3f} of {c.images} images"
        return ["## How far to trust a value\n",
                f"Split-conformal interval at {c.confidence:.0%} confidence (from the "
                f"out-of-fold residuals of images): prediction ± {c.half_width:.3g}{unit}. "
                f"Checked fold by fold on residuals the interval never saw: coverage "
                f"{coverage}. `sinterlab-predict` gives every image this interval.\n"]
    temps = [t for t in (m.training.temperatures if m.training else []) if t]
    spread = (f" Patch level: each member's temperature on its own validation rows, "
              f"{min(temps[0]):.2f}–{max(temps[0]):.2f} (median {float(np.median(temps[0])):.2f};"
              " > 1 means the raw head was over-confident)." if temps else "")
    rows = [[level, cal.at(level).n, _ece(cal.at(level), "raw"),
             _ece(cal.at(level), "calibrated")] for level in LEVELS if cal.at(level)]
    if not cal.served:  # a run folder without image calibration: temperatures only
        return ["## How far to trust a probability\n",
                "Expected calibration error of the out-of-fold probabilities (top label, "
                f"{cal.bins} bins), before and after each member's temperature scaling on its "
                f"own validation rows.{spread} `sinterlab-predict` reports the mean of the "
                "temperature-scaled patch probabilities per image.\n",
                _table(["level", "n", "ECE raw", "ECE temperature-scaled"], rows)]
    k = cal.images_class_changed
    changed = (f" The served class differs from the one the accuracies above count (mean of "
               f"temperature-scaled patch probabilities) on {k} of {cal.image.n} images."
               if k else "")
    return ["## How far to trust a probability\n",
            f"**Image level (what `sinterlab-predict` serves): ECE "
            f"{_ece(cal.image, 'calibrated')}, raw {_ece(cal.image, 'raw')}.** Served per image: "
            f"{cal.served}, averaged over the members; each member's map is fitted on the "
            "validation images of every fold but those of its own test groups (cross-fitted)."
            f"{_map_choice(m)} "
            f"Expected calibration error of the out-of-fold probabilities (top label, "
            f"{cal.bins} bins); {cal.confidence:.0%} intervals from "
            f"{cal.bootstrap.n} bootstrap resamples of {cal.bootstrap.unit}s. "
            "Raw: the members' uncalibrated patch probabilities, per image and sample their mean. "
            "Calibrated: per image the served probability, per sample the mean of its images'."
            f"{spread}{changed}\n",
            _table(["level", "n", "ECE raw", "ECE calibrated"], rows), *_sets(cal.sets)]


def _map_choice(m: RunMetrics) -> str:
    """Per fold, whether its fitted image map or the raw probabilities are served, with the
    held-out scores that decided, and what the final model of model=auto serves."""
    first = (m.training.image_calibration or [None])[0] if m.training else None
    score, raws, maps = first.heldout() if first else (None, None, None)
    if not first or not first.kept or not raws:
        return ""  # a run from before the check, or no calibrator to check
    folds = [member.fold for member in m.training.members] or list(range(len(first.kept)))
    errors = first.heldout_gain_error or [None] * len(first.kept)
    choices = {}
    for fold, kept, raw, fitted, error in zip(folds, first.kept, raws, maps, errors,
                                              strict=True):
        if fold not in choices:
            choices[fold] = (f"fold {fold}: " + ("its map" if kept else "raw") + (
                "" if raw is None else f" ({number(fitted)} vs {number(raw)}, gain "
                f"{number(raw - fitted)} ± {number(error)})"))
    what = {"temperature": "temperature", "vector": "vector scaling"}.get(first.calibrator)
    if what is None:
        return ""
    final = (m.selection.final.image_calibration or [None])[0] if m.selection else None
    refit = "" if not final or final.kept is None else (
        " The final model, refitted on every sample, serves "
        + ("the median of the kept maps" if all(final.kept) else "the raw probabilities")
        + f": {sum(first.kept)} of {len(first.kept)} CV members kept their map.")
    name = SCORE_NAMES.get(score, score)
    return (f" The raw probabilities are always a candidate: a fold's fitted image {what} is "
            "served only where, fitted on some samples of its calibration images and scored "
            f"on the others, it lowers their {name} below the raw probabilities' by more than "
            f"the noise of that gain (`evaluation.calibration.check`; held-out {name} per "
            "image, map vs raw, and the gain ± its standard error over samples): "
            f"{'; '.join(choices.values())}.{refit}")


def _sets(sets: PredictionSetsCheck | None) -> list[str]:
    """The conformal prediction sets of images and their checked coverage."""
    if not sets:
        return []
    kind = "a contiguous range of levels (e.g. 150–200)" if sets.ordered else "a set of classes"
    checked = ("not checkable (one fold)" if sets.coverage is None else
               f"**{sets.coverage:.3f}** of {sets.images} images, {sets.mean_size:.2f} "
               f"classes per set on average, {sets.singletons:.0%} of sets a single class")
    rows = [[f.fold, f.images, number(f.coverage), number(f.mean_size, 2)]
            for f in sets.per_fold]
    return [f"**Prediction sets at {sets.confidence:.0%}** (split-conformal on the served "
            f"image probabilities; each image gets {kind} that holds the true value for "
            f"{sets.confidence:.0%} of new images). Checked fold by fold on images the "
            f"threshold never saw: coverage {checked}. `sinterlab-predict` writes each "
            "image's set.\n",
            *([_table(["fold", "images", "coverage", "mean set size"], rows)] if rows else [])]


def _ece(level: LevelCalibration, which: str) -> str:
    """'0.081 [0.052, 0.120]' of the raw or calibrated ECE of a level."""
    low, high = getattr(level, f"ece_{which}_interval") or (None, None)
    return interval(Interval(getattr(level, f"ece_{which}"), low, high))


def _gallery(m: RunMetrics) -> list[str]:
    """Most confidently right and wrong out-of-fold images, each with its map."""
    if not m.gallery:
        return []
    out = ["## Gallery\n",
           "Per class, the out-of-fold image predicted most confidently right and most "
           "confidently wrong (regression: closest and farthest), each mapped by the members that "
           "never saw it (the seeds of the fold that tested it). Colour: the class the patches "
           "covering a pixel predict; opacity: their confidence.\n"]
    for r in m.gallery:
        confidence = "" if r.confidence is None or r.confidence != r.confidence \
            else f" ({r.confidence:.2f})"
        out.append(f"**{r.kind}**: `{Path(str(r.image)).name}`, true {r.truth}, "
                   f"predicted {r.predicted}{confidence}, fold {r.fold}\n\n"
                   f"![{Path(r.map).stem}]({r.map})\n")
    return out


def _training(m: RunMetrics) -> list[str]:
    tr = m.training
    if not tr:
        return []
    if not tr.history:  # a scikit-learn model: fitted, not trained by epochs
        params = ", ".join(f"{k}={v}" for k, v in tr.params.items())
        return ["## Training\n",
                f"{tr.protocol}. {long_name(tr.model)} ({params}): {tr.n_members} members "
                f"(one per fold) fitted in {number(tr.wall_s, 1)} s.\n"]
    rows = [[r.fold, r.seed, number(r.best_epoch), number(r.best_val_loss), r.stopped_epoch,
             number(r.early_stopped)] for r in tr.members]
    return ["## Training\n",
            f"{tr.protocol}. {long_name(tr.model)}: {tr.n_members} heads (folds x seeds) "
            f"trained as one ensemble in {number(tr.wall_s, 1)} s ({tr.epochs_run} epochs of at "
            f"most {tr.max_epochs}); each kept the weights of its lowest validation loss.\n",
            _table(["fold", "seed", "best epoch", "best val loss", "stopped at epoch",
                    "early-stopped"], rows)]


def _stages(m: RunMetrics) -> list[str]:
    """Each stage's wall time and its share of the run (a stage the report was written during
    shows as running)."""
    total = sum(s.wall_s or 0 for s in m.stages if s.depth == 0)
    if not total:
        return []
    rows = [["&nbsp;&nbsp;" * s.depth + s.stage,
             "running" if s.wall_s is None else number(s.wall_s, 1),
             "" if s.wall_s is None else f"{s.wall_s / total:.0%}"] for s in m.stages]
    return ["## Where the time went\n", f"{number(total, 1)} s in the stages below.\n",
            _table(["stage", "wall s", "share"], rows)]


def _data(m: RunMetrics) -> list[str]:
    d, bb, cache, extra = m.data, m.backbone, m.cache, m.inputs.extra
    items = [f"descriptor `{d.descriptor}`: {d.n_images} images, {d.n_samples} samples, "
             f"{d.n_patches} patches",
             f"backbone `{bb.name}` (embedding {bb.embedding_dim}"
             f"{'' if bb.representation == 'final' else ': ' + bb.representation}), weights "
             f"{bb.weights.source} `{bb.weights.identity}` sha256 "
             f"`{str(bb.weights.sha256)[:16]}…`, transfer learning: "
             f"{number(bb.weights.transfer_learning)}",
             f"embeddings: {cache.from_cache} images from cache, {cache.extracted} extracted, "
             f"runtime {cache.runtime} (`{cache.folder}`)",
             "preprocessing: " + ", ".join(f"{k} `{v}`" for k, v in _flat(m.preprocess)),
             "model input: " + (
                 f"image embedding + extra inputs {', '.join(f'`{n}`' for n in extra)} "
                 f"({m.inputs.note})" if extra else "image embedding only (no data.extra_inputs)")]
    items += [f"note: {note}" for note in (d.sample_id_note, m.split.note) if note]
    items += [f"**warning:** {warning}" for warning in d.warnings]
    out = ["## Data, backbone, preprocessing\n", "\n".join(f"- {i}" for i in items) + "\n"]
    if d.class_groups:
        small = set(d.small_classes)
        out.append(_table(["class", f"{m.split.kind}s", "images", ""],
                          [[c, g.groups, g.images, "too few" if c in small else ""]
                           for c, g in d.class_groups.items()]))
    return out


def _flat(d: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if not isinstance(d, Mapping):
        return []
    out = []
    for k, v in d.items():
        out += _flat(v, f"{prefix}{k}.") if isinstance(v, Mapping) else [(f"{prefix}{k}", v)]
    return out


def _figures(figures: Mapping[str, Path] | None, run_dir: Path) -> list[str]:
    if not figures:
        return []
    out = ["## Figures\n", "From the pooled out-of-fold predictions.\n"]
    for name, path in figures.items():
        rel = Path(path).resolve().relative_to(run_dir.resolve()).as_posix()
        out.append(f"### {name.replace('_', ' ')}\n\n![{name}]({rel})\n")
    return out


def report_markdown(metrics: RunMetrics | Mapping, figures: Mapping[str, Path] | None,
                    run_dir: Path) -> str:
    m = as_run(metrics)
    parts = [*_header(m), *_headline(m), *_models_table(m, "Models on the same folds"),
             *_ordered_table(m), *_folds_table(m), *_samples_table(m), *_calibration(m),
             *_selection(m),
             *how_much_data_section(m.learning_curve, m.variance_components, m.first_target)]
    if m.contrast:
        parts += _models_table(m.contrast, f"Leak contrast: {_split_label(m.contrast)}")
    parts += [*_measures(m), *_instrument(m), *_gallery(m), *_paper(m), *_training(m),
              *_data(m), *_stages(m), *_figures(figures, Path(run_dir))]
    return "\n".join(parts)


def _embed_images(page: str, folder: Path) -> str:
    """The HTML ``page``'s PNG sources (relative to ``folder``) -> data URIs, so the page stands
    alone. Done after Markdown: its inline patterns would scan every base64 character (1.4 s
    of a run's report)."""
    def embed(match: re.Match) -> str:
        path = folder / html.unescape(match.group(1))
        if not path.is_file():
            return match.group(0)
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        return f'src="data:image/png;base64,{data}"'
    return re.sub(r'src="([^"]+\.png)"', embed, page)


def markdown_page(text: str, folder: Path, title: str, heading: str = "") -> str:
    """A standalone HTML page of Markdown ``text`` whose PNG links (relative to ``folder``)
    are embedded, with ``heading`` above it."""
    body = _embed_images(markdown.markdown(text, extensions=["tables"]), folder)
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
            "</title><style>body{font-family:sans-serif;max-width:70em;margin:auto}"
            "table{border-collapse:collapse}td,th{border:1px solid #ccc;"
            "padding:2px 6px}blockquote{background:#fff3cd;padding:4px}</style>"
            f"</head><body>{heading}{body}</body></html>\n")


def write_html_report(run_dir: Path, text: str, experiment: str) -> Path:
    """``report.html``: the Markdown report ``text`` with the figures embedded."""
    run_dir = Path(run_dir)
    return write_text(run_dir / "report.html",
                      markdown_page(text, run_dir, f"sinterlab: {experiment}"))


def write_report(run_dir: Path, metrics: RunMetrics | Mapping,
                 figures: Mapping[str, Path] | None = None) -> tuple[Path, Path]:
    """Write ``report.md`` and ``report.html`` into ``run_dir``, each once."""
    m = as_run(metrics)
    text = report_markdown(m, figures, run_dir)
    return (write_text(Path(run_dir) / "report.md", text),
            write_html_report(run_dir, text, m.experiment))
