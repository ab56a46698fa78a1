"""Per-run report: ``report.md`` written once from ``metrics.json``, and ``report.html`` rendered
from that Markdown by Python-Markdown (``tables`` extension) with the figures embedded.

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
from sinterlab.evaluation.data_report import how_much_data_section
from sinterlab.evaluation.display import interval, long_name, number, reported_model
from sinterlab.evaluation.metrics import LEVELS, ORDINAL


def model_name(key: str, cv: Mapping) -> str:
    """Display name; the plain head is named after its model config when not the paper's."""
    if key == "head" and cv.get("head_model") not in (None, "mlp"):
        return f"{cv['head_model']} head"
    return long_name(key)


LEAK_WARNING = ("⚠ split by patch: patches of one image are in train and test, so these scores "
                "are optimistic (leaky)")
RANDOM_INIT_WARNING = "⚠ random-init backbone: not transfer learning"
#: what the model.selection.score keys mean, as the report names them
SCORE_NAMES = {"rps": "ranked probability score (RPS)", "log_loss": "log-loss",
               "error": "error rate", "mse": "mean squared error", "mae": "mean absolute error"}
PAPER_KEY_ALIASES = {"f1": "f1_macro", "f1_score": "f1_macro", "auc": "auroc", "acc": "accuracy"}


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    cells = [[str(c).replace("|", "\\|").replace("\n", " ") for c in row] for row in rows]
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in cells]) + "\n"


def _split_label(block: Mapping) -> str:
    split, cv = block.get("split") or {}, block.get("cv") or {}
    if cv.get("protocol") == "cv":
        text = f"{cv['folds']}-fold CV by {split.get('kind')}"
    else:
        text = f"holdout split by {split.get('kind')}"
    return text + (" (LEAKY)" if split.get("leaky") else "")


# -- sections ------------------------------------------------------------------------------------
def _header(m: Mapping) -> list[str]:
    bb = m.get("backbone") or {}
    weights = bb.get("weights") or {}
    cv = m.get("cv") or {}
    facts = [f"task `{m.get('task')}`", f"targets {', '.join(t['name'] for t in m['targets'])}",
             f"protocol `{_split_label(m)}`, seeds {cv.get('seeds')}",
             f"backbone `{bb.get('name')}`, weights **{weights.get('source')}** "
             f"({weights.get('identity')})"]
    out = [f"# Run report: {m.get('experiment')}\n", "; ".join(facts) + ".\n"]
    if (m.get("split") or {}).get("leaky"):
        out.append(f"> {LEAK_WARNING}\n")
    if weights.get("transfer_learning") is False:
        out.append(f"> {RANDOM_INIT_WARNING}\n")
    small = (m.get("data") or {}).get("small_classes")
    if small:
        out.append(f"> ⚠ class(es) {', '.join(map(str, small))} have too few "
                   f"{(m.get('split') or {}).get('kind')}s: their images are tested by heads "
                   "that never saw the class, and they count in every score below "
                   "(groups per class: see Data)\n")
    out += [f"> {name} skipped: {reason}\n" for name, reason in (m.get("skipped") or {}).items()]
    warning = ((m.get("cv") or {}).get("instrument") or {}).get("warning")
    if warning:
        out.append(f"> ⚠ {warning}\n")
    return out


def _measures(m: Mapping) -> list[str]:
    """Which classical measures move with the parameter, strongest first."""
    record = m.get("measures") or {}
    if not record:
        return []
    target = (m.get("targets") or [{}])[0].get("name")
    out = ["## Microstructure measures\n",
           f"Measured on every image's segmented micrograph (pores vs solid; lengths in "
           f"{record.get('unit')}), averaged per sample ({record.get('n_samples')} samples); "
           "`measures.csv` has every image. The measures-only model (measures + logistic/ridge) "
           "is scored on the same folds as the other models above.\n"]
    if "trends_skipped" in record:
        return out + [f"Trends skipped: {record['trends_skipped']}.\n"]
    lines = []
    for t in record.get("trends") or []:
        if t["rho"] is None:
            lines.append(f"- {t['measure']}: undefined (constant, or NaN in most samples)")
            continue
        direction = "rises" if t["rho"] > 0 else "falls"
        sure = "" if (t["p_value"] or 1) < 0.05 else " (not distinguishable from chance)"
        lines.append(f"- **{t['measure']}** {direction} with {target} (Spearman ρ = "
                     f"{t['rho']:.2f} [{number(t['low'], 2)}, {number(t['high'], 2)}], "
                     f"p = {number(t['p_value'], 3)}){sure}")
    return out + ["\n".join(lines) + "\n"]


def _instrument(m: Mapping) -> list[str]:
    """Imaging settings per class and the settings-only model on the same folds."""
    check = (m.get("cv") or {}).get("instrument") or {}
    if not check:
        return []
    out = ["## Imaging settings\n"]
    if "skipped" in check:
        return out + [f"Instrument-only check skipped: {check['skipped']}.\n"]
    out.append(f"{check['model']} ({', '.join(check['features'])}), on the same folds: "
               f"out-of-fold image accuracy {number(check['observed_accuracy'])} vs "
               f"{number(check['permuted_accuracy_mean'])} with labels permuted between samples; "
               f"p = {number(check['p_value'], 4)}. "
               + ("**The settings alone predict the parameter.**" if check.get("warning")
                  else "The settings alone do not predict the parameter better than chance.")
               + "\n")
    by_class = check.get("by_class") or {}
    fields = sorted({f for row in by_class.values() for f in row})
    if fields:
        out.append(_table(["class", *fields], [[c, *(row.get(f, "—") for f in fields)]
                                               for c, row in by_class.items()]))
    return out


def _verdict_text(cv: Mapping) -> str:
    v = cv.get("verdict") or {}
    if not v.get("best_model"):
        return ""
    metric, level = v["metric"], v["level"]
    lines = [f"Best model on {level}-level {metric}: **{model_name(v['best_model'], cv)}**."]
    if "best_baseline" in v:
        base = long_name(v["best_baseline"])
        head = model_name(v["primary"], cv)
        low, high = v["baseline_minus_head_interval"]
        paired = (f"{base} minus head: [{number(low)}, {number(high)}] (paired bootstrap)"
                  if low is not None else "")
        if v["head_beats_by_more_than_interval"]:
            lines.append(f"The {head} beats the best baseline ({base}) by "
                         f"{number(v['head_margin'])}, more than its interval width "
                         f"({number(v['head_interval_width'])}); "
                         f"{paired}.")
        elif v["head_margin"] > 0:
            lines.append(f"The {head} is ahead of the best baseline ({base}) by only "
                         f"{number(v['head_margin'])}, less than its interval width "
                         f"({number(v['head_interval_width'])}): **no clear gain over the "
                         f"{base}**; {paired}.")
        else:
            lines.append(f"**The {head} does not beat the {base}** (behind by "
                         f"{number(-v['head_margin'])}); {paired}.")
    agree = v.get("selection") or {}
    for role, what in (("nested", "The auto-selected model"), ("final", "The final model's "
                                                                          "candidate")):
        check = agree.get(role)
        if check and check["disagrees"]:
            lines.append(f"**Selection and {level}-level {metric} disagree:** {what} "
                         f"({long_name(check['model'])}, {number(check['value'])}) is behind "
                         f"{long_name(check['best_other'])} ({number(check['best_value'])}) by "
                         f"{number(check['behind_by'])}, more than its interval width "
                         f"({number(check['interval_width'])}); see Model selection.")
    return " ".join(lines) + "\n"


def _headline(m: Mapping) -> list[str]:
    cv = m.get("cv") or {}
    v = cv.get("verdict") or {}
    pooled = cv.get("pooled") or {}
    model = reported_model(cv)
    level, metric = v.get("level", "image"), v.get("metric", "accuracy")
    b = cv.get("bootstrap") or {}
    out = ["## Headline\n",
           f"**{model_name(model, cv)}, {level}-level {metric}: "
           f"{interval((pooled.get(model) or {}).get(level, {}).get(metric))}** "
           f"({_split_label(m)}; every tested {level} predicted by heads that never saw its "
           f"group; {int(b.get('confidence', 0.95) * 100)}% interval from {b.get('n')} bootstrap "
           f"resamples of the {b.get('units')} {b.get('unit')}s, not of patches).\n",
           _verdict_text(cv)]
    out += _ordered_headline(m, model, level)
    perm = cv.get("permutation") or {}
    if "p_value" in perm:
        proxy = perm.get("proxy_for")
        out.append(f"Against chance: p = {number(perm['p_value'], 4)} "
                   + ("for a **proxy**, not the served model: " if proxy else "")
                   + f"({perm['model']}: out-of-fold image accuracy "
                   f"{number(perm['observed_accuracy'])} vs "
                   f"{number(perm['permuted_accuracy_mean'])} on average over "
                   f"{perm['n_permutations']} label permutations between samples, folds kept)"
                   + (f"; the served model ({proxy}, image accuracy "
                      f"{number(perm.get('served_accuracy'))}) would be trained again for every "
                      "permutation, so its own p-value is not computed" if proxy else "")
                   + ".\n")
    contrast = m.get("contrast") or {}
    c_cv = contrast.get("cv") or {}
    c_pooled = c_cv.get("pooled") or {}
    c_model = reported_model(c_cv)
    if c_pooled:
        out.append(f"Beside it, {_split_label(contrast)}: {model_name(c_model, c_cv)} "
                   f"{level}-level {metric} {interval(c_pooled[c_model][level][metric])}"
                   + (" — the paper's kind of split, optimistic because patches of one image "
                      "sit in training and test." if contrast["split"].get("leaky") else ".")
                   + "\n")
    return out


def _ordered_target(m: Mapping) -> Mapping | None:
    first = (m.get("targets") or [{}])[0]
    return first if first.get("ordered") else None


def _step(target: Mapping) -> str:
    """'±50 BC' when the levels are evenly spaced, else 'one level'."""
    values = np.asarray(target.get("values") or [], dtype=float)
    steps = np.diff(values)
    if target.get("error_unit") != "levels" and len(steps) and np.allclose(steps, steps[0]):
        return f"±{steps[0]:g} {target.get('error_unit') or ''}".strip()
    return "one level"


def _ordered_headline(m: Mapping, model: str, level: str) -> list[str]:
    """An ordered target in its own units: MAE and within-one-level accuracy with intervals."""
    target = _ordered_target(m)
    cell = ((m.get("cv") or {}).get("pooled") or {}).get(model, {}).get(level, {})
    if not target or "mae" not in cell:
        return []
    unit = target.get("error_unit") or ""
    return [f"In {target['name']} terms: mean absolute error **{interval(cell['mae'], 1)} {unit}** "
            f"(from the probability-weighted expected value: {interval(cell['mae_expected'], 1)} "
            f"{unit}); "
            f"within one level ({_step(target)}): **{interval(cell['within_one'])}**; quadratic "
            f"weighted kappa {interval(cell['qwk'])}; Spearman ρ of the expected value with the "
            f"truth {interval(cell['spearman'])}.\n"]


def _ordered_table(m: Mapping) -> list[str]:
    target = _ordered_target(m)
    cv = m.get("cv") or {}
    pooled = cv.get("pooled") or {}
    if not target or not pooled:
        return []
    unit = target.get("error_unit") or ""
    rows = [[model_name(name, cv)] + [interval(levels["image"].get(k), 1 if "mae" in k else 3)
                                      for k in ("mae", "mae_expected", "within_one", "qwk",
                                                "spearman")]
            for name, levels in pooled.items()]
    return ["## Ordered target: errors in " + (unit or "levels") + "\n",
            f"Image level, every model on the same folds. MAE from the predicted level and from "
            f"the expected value (Σ p × level value); within one level = off by at most "
            f"{_step(target)}.\n",
            _table(["model", f"MAE [{unit}]", f"MAE expected [{unit}]", "within one level",
                    "QWK", "Spearman ρ"], rows)]


def _models_table(block: Mapping, title: str) -> list[str]:
    cv = block.get("cv") or {}
    pooled = cv.get("pooled") or {}
    if not pooled:
        return []
    first = next(iter(pooled.values()))
    metrics = [k for k in first["patch"] if k not in dict(ORDINAL)]
    headers = ["model"] + [f"{lvl} {mt}" for mt in metrics[:1] for lvl in LEVELS] + \
        [f"image {mt}" for mt in metrics[1:]]
    rows = []
    for name, levels in pooled.items():
        rows.append([model_name(name, cv)]
                    + [interval(levels[lvl][metrics[0]]) for lvl in LEVELS]
                    + [interval(levels["image"][mt]) for mt in metrics[1:]])
    return [f"## {title}\n",
            f"Pooled out-of-fold predictions of every model on the same folds "
            f"({_split_label(block)}); 95% intervals resample {cv['bootstrap']['unit']}s.\n",
            _table(headers, rows)]


def _folds_table(m: Mapping) -> list[str]:
    cv = m.get("cv") or {}
    folds = cv.get("per_fold") or []
    if not folds:
        return []
    level, metric = cv["verdict"]["level"], cv["verdict"]["metric"]
    models = [k for k in cv["pooled"] if k in folds[0]]
    rows = [[f["fold"], f["test_groups"], f["test_images"], f["test_patches"]]
            + [number(f[k][level][metric]) for k in models] for f in folds]
    stats = cv.get("fold_statistics") or {}
    rows.append(["mean ± sd", "", "", ""] + [
        f"{number(stats[k][level][metric]['mean'])} ± {number(stats[k][level][metric]['sd'])}"
        for k in models])
    return ["## Per fold\n", f"{level}-level {metric} on each fold's test groups.\n",
            _table(["fold", "test groups", "test images", "test patches",
                    *(model_name(k, cv) for k in models)], rows)]


def _samples_table(m: Mapping) -> list[str]:
    samples = m.get("samples") or []
    if not samples:
        return []
    columns = [c for c in samples[0] if c != "sample"]
    rows = [[s["sample"], *(number(s[c]) for c in columns)] for s in samples]
    return ["## Per sample\n", "Each tested sample, what its images were read as out of fold "
            "(`oof_samples.csv`; per image: `oof_predictions.csv`).\n",
            _table(["sample", *columns], rows)]


def _selection(m: Mapping) -> list[str]:
    sel = m.get("selection")
    if not sel:
        return []
    names = sel["candidates"]
    score = SCORE_NAMES.get(sel["score"], sel["score"])
    rows = [[f, sel["winner_points"][f],
             *(number(sel["inner_scores"][n][f]) for n in names)]
            for f in range(len(sel["winners"]))]
    final = sel["final"]
    refit = (f"for {final['epochs']} epochs (the median best epoch of its CV heads), "
             f"{final['members']} seeds" if final.get("epochs") else "with these settings")
    wall = sel.get("candidate_wall_s") or {}
    cv = m.get("cv") or {}
    v = cv.get("verdict") or {}
    level, metric = v.get("level", "image"), v.get("metric", "accuracy")
    wins = {n: sel["winners"].count(n) for n in names}
    chosen = [[long_name(n) + (" **(final)**" if n == final["model"] else ""),
               number(float(np.mean(sel["inner_scores"][n]))), number(sel["cv_scores"].get(n)),
               interval(((cv.get("pooled") or {}).get(n) or {}).get(level, {}).get(metric)),
               wins[n], number(wall.get(n), 1)] for n in names]
    return ["## Model selection (nested CV)\n",
            f"For each outer fold, every candidate (and every point of its grid, "
            f"`model.selection.grid={sel['grid']}`) was scored by the **{score}** of the image "
            f"probabilities `sinterlab-predict` would serve (each model's image calibration, "
            f"fitted on validation images of the inner training groups only) on held-out groups "
            f"of a {sel['inner_folds']}-fold grouped CV inside that fold's training groups "
            f"(seeds {sel['inner_seeds']}); no outer test row was read. The best point, trained "
            "on the outer training groups, predicted the outer test fold: that is the "
            "auto-selected row above, the honest score of choosing a model this way. Each "
            "candidate's own row takes its best grid point per outer fold by the same inner "
            "score.\n",
            f"What chose, beside what a user reads (lower {sel['score']} is better; "
            f"{level}-level {metric} of each candidate's row above, on the same folds):\n",
            _table(["candidate", f"mean inner {sel['score']}", f"CV {sel['score']}",
                    f"{level} {metric}", "outer folds won", "time (s)"], chosen),
            _table(["outer fold", "winner", *(f"inner {sel['score']}: {long_name(n)}"
                                             for n in names)], rows),
            f"Final model (used by `sinterlab-predict`): **{final.get('point', final['model'])}**"
            f", the best mean inner {score} over the outer folds, refitted on every group "
            f"{refit} (`{final['checkpoint']}`). Selection took {number(sel['wall_s'], 1)} s.\n",
            *([f"Not trained on the outer folds (they won no outer fold and are not the final "
               f"model, so they could not change the answer; `model.selection.outer_fits=all` "
               f"trains them for rows of their own): "
               f"{', '.join(long_name(n) for n in sel['not_trained'])}.\n"]
              if sel.get("not_trained") else [])]


def _paper(m: Mapping) -> list[str]:
    paper = m.get("paper") or {}
    numbers = {k: v for k, v in paper.items() if isinstance(v, int | float)
               and not isinstance(v, bool)}
    if not numbers:
        return []
    blocks = [b for b in (m, m.get("contrast")) if b and "test" in b]
    rows = [[k, number(float(v)), *(number(b["test"]["patch"].get(PAPER_KEY_ALIASES.get(k, k)))
                                  if "patch" in b["test"] else "—" for b in blocks)]
            for k, v in numbers.items()]
    return ["## The paper's figures\n",
            "The paper split its patches at random (leaky). Patch-level metrics of the MLP head "
            "here, pooled out of fold:\n",
            _table(["metric (patch level)", "paper", *(_split_label(b) for b in blocks)], rows)]


def _calibration(m: Mapping) -> list[str]:
    """How far the head's probabilities (or values) can be trusted, out of fold."""
    cal = m.get("calibration")
    if not cal:
        return []
    if "conformal" in cal:
        c = cal["conformal"]
        target = m["targets"][0]
        unit = f" {target.get('unit')}".rstrip()
        coverage = "not checkable (one fold)" if c["coverage"] is None else \
            f"{c['coverage']:.3f} of {c['images']} images"
        return ["## How far to trust a value\n",
                f"Split-conformal interval at {c['confidence']:.0%} confidence (from the "
                f"out-of-fold residuals of images): prediction ± {c['half_width']:.3g}{unit}. "
                f"Checked fold by fold on residuals the interval never saw: coverage "
                f"{coverage}. `sinterlab-predict` gives every image this interval.\n"]
    temps = [t for t in (m.get("training") or {}).get("temperatures") or [] if t]
    spread = (f" Patch level: each member's temperature on its own validation rows, "
              f"{min(temps[0]):.2f}–{max(temps[0]):.2f} (median {float(np.median(temps[0])):.2f};"
              " > 1 means the raw head was over-confident)." if temps else "")
    levels = [level for level in LEVELS if level in cal]
    rows = [[level, cal[level]["n"],
             _ece(cal[level], "raw"), _ece(cal[level], "calibrated")] for level in levels]
    if "served" not in cal:  # a run folder without image calibration: temperatures only
        return ["## How far to trust a probability\n",
                "Expected calibration error of the out-of-fold probabilities (top label, "
                f"{cal['bins']} bins), before and after each member's temperature scaling on its "
                f"own validation rows.{spread} `sinterlab-predict` reports the mean of the "
                "temperature-scaled patch probabilities per image.\n",
                _table(["level", "n", "ECE raw", "ECE temperature-scaled"], rows)]
    image = cal["image"]
    k = cal.get("images_class_changed")
    changed = (f" The served class differs from the one the accuracies above count (mean of "
               f"temperature-scaled patch probabilities) on {k} of {image['n']} images."
               if k else "")
    return ["## How far to trust a probability\n",
            f"**Image level (what `sinterlab-predict` serves): ECE {_ece(image, 'calibrated')}, "
            f"raw {_ece(image, 'raw')}.** Served per image: {cal['served']}, cross-fitted on the "
            "validation images of every fold but those of the member's own test groups, "
            "averaged over the members. "
            f"Expected calibration error of the out-of-fold probabilities (top label, "
            f"{cal['bins']} bins); {cal['confidence']:.0%} intervals from "
            f"{cal['bootstrap']['n']} bootstrap resamples of {cal['bootstrap']['unit']}s. "
            "Raw: the members' uncalibrated patch probabilities, per image and sample their mean. "
            "Calibrated: per image the served probability, per sample the mean of its images'."
            f"{spread}{changed}\n",
            _table(["level", "n", "ECE raw", "ECE calibrated"], rows), *_sets(cal.get("sets"))]


def _sets(sets: Mapping | None) -> list[str]:
    """The conformal prediction sets of images and their checked coverage."""
    if not sets:
        return []
    kind = ("a contiguous range of levels (e.g. 150–200)" if sets["ordered"]
            else "a set of classes")
    checked = ("not checkable (one fold)" if sets["coverage"] is None else
               f"**{sets['coverage']:.3f}** of {sets['images']} images, {sets['mean_size']:.2f} "
               f"classes per set on average, {sets['singletons']:.0%} of sets a single class")
    rows = [[f["fold"], f["images"], number(f["coverage"]), number(f["mean_size"], 2)]
            for f in sets["per_fold"]]
    return [f"**Prediction sets at {sets['confidence']:.0%}** (split-conformal on the served "
            f"image probabilities; each image gets {kind} that holds the true value for "
            f"{sets['confidence']:.0%} of new images). Checked fold by fold on images the "
            f"threshold never saw: coverage {checked}. `sinterlab-predict` writes each "
            "image's set.\n",
            *([_table(["fold", "images", "coverage", "mean set size"], rows)] if rows else [])]


def _ece(level: Mapping, key: str) -> str:
    """'0.081 [0.052, 0.120]' from a level of the calibration block."""
    low, high = level.get(f"ece_{key}_interval") or (None, None)
    return interval({"value": level[f"ece_{key}"], "low": low, "high": high})


def _gallery(m: Mapping) -> list[str]:
    """Most confidently right and wrong out-of-fold images, each with its map."""
    records = m.get("gallery")
    if not records:
        return []
    out = ["## Gallery\n",
           "Per class, the out-of-fold image predicted most confidently right and most "
           "confidently wrong (regression: closest and farthest), each mapped by the members that "
           "never saw it (the seeds of the fold that tested it). Colour: the class the patches "
           "covering a pixel predict; opacity: their confidence.\n"]
    for r in records:
        confidence = "" if r.get("confidence") is None or r["confidence"] != r["confidence"] \
            else f" ({r['confidence']:.2f})"
        out.append(f"**{r['kind']}**: `{Path(str(r['image'])).name}`, true {r['truth']}, "
                   f"predicted {r['predicted']}{confidence}, fold {r['fold']}\n\n"
                   f"![{Path(r['map']).stem}]({r['map']})\n")
    return out


def _training(m: Mapping) -> list[str]:
    tr = m.get("training") or {}
    if not tr:
        return []
    if not tr.get("history"):  # a scikit-learn model: fitted, not trained by epochs
        params = ", ".join(f"{k}={v}" for k, v in (tr.get("params") or {}).items())
        return ["## Training\n",
                f"{tr.get('protocol')}. {long_name(tr.get('model'))} "
                f"({params}): {tr.get('n_members')} members (one per fold) fitted in "
                f"{number(tr.get('wall_s'), 1)} s.\n"]
    members = tr.get("members") or []
    rows = [[r["fold"], r["seed"], number(r["best_epoch"]), number(r["best_val_loss"]),
             r["stopped_epoch"], number(r["early_stopped"])] for r in members]
    return ["## Training\n",
            f"{tr.get('protocol')}. {long_name(tr.get('model'))}: "
            f"{tr.get('n_members')} heads (folds x seeds) trained as one "
            f"ensemble in {number(tr.get('wall_s'), 1)} s ({tr.get('epochs_run')} epochs of at "
            f"most {tr.get('max_epochs')}); each kept the weights of its lowest validation loss.\n",
            _table(["fold", "seed", "best epoch", "best val loss", "stopped at epoch",
                    "early-stopped"], rows)]


def _stages(m: Mapping) -> list[str]:
    """Each stage's wall time and its share of the run (metrics.json ``stages``; a stage the
    report was written during shows as running)."""
    stages = m.get("stages") or []
    total = sum(s["wall_s"] or 0 for s in stages if s["depth"] == 0)
    if not total:
        return []
    rows = [["&nbsp;&nbsp;" * s["depth"] + s["stage"],
             "running" if s["wall_s"] is None else number(s["wall_s"], 1),
             "" if s["wall_s"] is None else f"{s['wall_s'] / total:.0%}"] for s in stages]
    return ["## Where the time went\n", f"{number(total, 1)} s in the stages below.\n",
            _table(["stage", "wall s", "share"], rows)]


def _data(m: Mapping) -> list[str]:
    d, bb, cache = m.get("data") or {}, m.get("backbone") or {}, m.get("cache") or {}
    weights = bb.get("weights") or {}
    inputs = m.get("inputs") or {}
    extra = inputs.get("extra")
    items = [f"descriptor `{d.get('descriptor')}`: {d.get('n_images')} images, "
             f"{d.get('n_samples')} samples, {d.get('n_patches')} patches",
             f"backbone `{bb.get('name')}` (embedding {bb.get('embedding_dim')}), weights "
             f"{weights.get('source')} `{weights.get('identity')}` sha256 "
             f"`{str(weights.get('sha256'))[:16]}…`, transfer learning: "
             f"{number(weights.get('transfer_learning'))}",
             f"embeddings: {cache.get('from_cache')} images from cache, {cache.get('extracted')} "
             f"extracted, runtime {cache.get('runtime', 'torch')} (`{cache.get('folder')}`)",
             "preprocessing: " + ", ".join(f"{k} `{v}`" for k, v in _flat(m.get("preprocess"))),
             "model input: " + (
                 f"image embedding + extra inputs {', '.join(f'`{n}`' for n in extra)} "
                 f"({inputs.get('note')})" if extra
                 else "image embedding only (no data.extra_inputs)")]
    for note in (d.get("sample_id_note"), (m.get("split") or {}).get("note")):
        if note:
            items.append(f"note: {note}")
    items += [f"**warning:** {warning}" for warning in d.get("warnings") or []]
    out = ["## Data, backbone, preprocessing\n", "\n".join(f"- {i}" for i in items) + "\n"]
    groups = d.get("class_groups")
    if groups:
        kind = (m.get("split") or {}).get("kind")
        small = set(d.get("small_classes") or [])
        out.append(_table(["class", f"{kind}s", "images", ""],
                          [[c, g["groups"], g["images"], "too few" if c in small else ""]
                           for c, g in groups.items()]))
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


def report_markdown(metrics: Mapping, figures: Mapping[str, Path] | None, run_dir: Path) -> str:
    parts = [*_header(metrics), *_headline(metrics),
             *_models_table(metrics, "Models on the same folds"), *_ordered_table(metrics),
             *_folds_table(metrics),
             *_samples_table(metrics), *_calibration(metrics), *_selection(metrics),
             *how_much_data_section(metrics)]
    contrast = metrics.get("contrast")
    if contrast:
        parts += _models_table(contrast, f"Leak contrast: {_split_label(contrast)}")
    parts += [*_measures(metrics), *_instrument(metrics), *_gallery(metrics), *_paper(metrics),
              *_training(metrics), *_data(metrics), *_stages(metrics),
              *_figures(figures, Path(run_dir))]
    return "\n".join(parts)


def _embed_images(text: str, run_dir: Path) -> str:
    """Markdown image links -> data URIs, so report.html stands alone."""
    def embed(match: re.Match) -> str:
        path = run_dir / match.group(2)
        if not path.is_file():
            return match.group(0)
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        return f"![{match.group(1)}](data:image/png;base64,{data})"
    return re.sub(r"!\[([^\]]*)\]\(([^)]+\.png)\)", embed, text)


def write_markdown_report(run_dir: Path, metrics: Mapping,
                          figures: Mapping[str, Path] | None = None) -> Path:
    """Write ``report.md`` into ``run_dir``."""
    return write_text(Path(run_dir) / "report.md", report_markdown(metrics, figures, run_dir))


def markdown_page(text: str, folder: Path, title: str, heading: str = "") -> str:
    """A standalone HTML page of Markdown ``text`` whose PNG links (relative to ``folder``)
    are embedded, with ``heading`` above it."""
    body = markdown.markdown(_embed_images(text, folder), extensions=["tables"])
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
            "</title><style>body{font-family:sans-serif;max-width:70em;margin:auto}"
            "table{border-collapse:collapse}td,th{border:1px solid #ccc;"
            "padding:2px 6px}blockquote{background:#fff3cd;padding:4px}</style>"
            f"</head><body>{heading}{body}</body></html>\n")


def write_html_report(run_dir: Path, metrics: Mapping) -> Path:
    """Render ``report.md`` to ``report.html`` with the figures embedded."""
    run_dir = Path(run_dir)
    text = (run_dir / "report.md").read_text(encoding="utf-8")
    return write_text(run_dir / "report.html",
                      markdown_page(text, run_dir, f"sinterlab: {metrics.get('experiment')}"))


def write_report(run_dir: Path, metrics: Mapping, figures: Mapping[str, Path] | None = None,
                 ) -> tuple[Path, Path]:
    """Write ``report.md`` and ``report.html`` into ``run_dir``."""
    return (write_markdown_report(run_dir, metrics, figures),
            write_html_report(run_dir, metrics))
