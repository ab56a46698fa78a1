"""Per-run report: ``report.md`` and a self-contained ``report.html`` built from ``metrics.json``.

The report is assembled once as a list of simple blocks (headings, paragraphs, warnings,
lists, tables, images) and rendered twice, to Markdown and to HTML, so both always say the
same thing.  Every key of the metrics dict is optional: missing parts are left out.
"""

from __future__ import annotations

import base64
import html
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sinterlab.atomic import write_text

LEVELS = ("patch", "image", "sample")
CLASSIFICATION_COLUMNS = ("accuracy", "f1_macro", "auroc", "n")
REGRESSION_COLUMNS = ("mae", "rmse", "r2", "n")
BASELINE_MODELS = ("pca_logreg", "linear_probe")
LEAK_WARNING = (
    "⚠ split by patch: patches of one image are in train and test, "
    "so these scores are optimistic (leaky)"
)
RANDOM_INIT_WARNING = "⚠ random-init backbone: not transfer learning"
# main metric per task: (key, higher is better)
MAIN_METRIC = {"classification": ("accuracy", True), "regression": ("mae", False)}
PAPER_KEY_ALIASES = {"f1": "f1_macro", "f1_score": "f1_macro", "auc": "auroc", "acc": "accuracy"}


# --------------------------------------------------------------------------- blocks
@dataclass
class _Block:
    kind: str  # h1 h2 h3 p warn ul table img
    text: str = ""
    items: list[str] = field(default_factory=list)
    headers: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)
    path: Path | None = None


def _get(d: Any, *keys: str) -> Any:
    for k in keys:
        if not isinstance(d, Mapping):
            return None
        d = d.get(k)
    return d


def _fmt(value: Any, digits: int) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value != value:  # NaN
            return "—"
        return f"{value:.{digits}f}"
    return str(value)


def _is_metric_dict(d: Any) -> bool:
    return isinstance(d, Mapping) and any(
        k in d for k in (*CLASSIFICATION_COLUMNS, *REGRESSION_COLUMNS)
    )


def _by_target(result: Any) -> dict[str | None, dict[str, dict]]:
    """{level: metrics} or {level: {target: metrics}} -> {target|None: {level: metrics}}."""
    if not isinstance(result, Mapping):
        return {}
    out: dict[str | None, dict[str, dict]] = {}
    for level in LEVELS:
        block = result.get(level)
        if _is_metric_dict(block):
            out.setdefault(None, {})[level] = block
        elif isinstance(block, Mapping):
            for name, metrics in block.items():
                if _is_metric_dict(metrics):
                    out.setdefault(name, {})[level] = metrics
    return out


def _baseline_by_target(baseline: Any) -> dict[str | None, dict[str, dict[str, dict]]]:
    """Baseline dict (model-first or target-first) -> {target|None: {model: {level: m}}}."""
    if not isinstance(baseline, Mapping):
        return {}
    out: dict[str | None, dict[str, dict[str, dict]]] = {}
    models = [k for k, v in baseline.items() if isinstance(v, Mapping) and _by_target(v)]
    if any(m in baseline for m in BASELINE_MODELS):
        for model in models:
            for target, levels in _by_target(baseline[model]).items():
                out.setdefault(target, {})[model] = levels
    else:  # keyed by target name first
        for target, sub in baseline.items():
            for inner_target, models_ in _baseline_by_target(sub).items():
                out[target if inner_target is None else inner_target] = models_
    return out


def _target_kind(metrics: dict, target: str | None, levels: dict[str, dict]) -> str:
    for t in metrics.get("targets") or []:
        if isinstance(t, Mapping) and t.get("name") == target and t.get("kind"):
            return str(t["kind"])
    sample = next(iter(levels.values()), {})
    if "accuracy" in sample:
        return "classification"
    if "mae" in sample:
        return "regression"
    return str(metrics.get("task") or "classification")


def _columns(kind: str) -> tuple[str, ...]:
    return REGRESSION_COLUMNS if kind == "regression" else CLASSIFICATION_COLUMNS


def _target_heading(target: str | None, kind: str) -> str | None:
    return None if target is None else f"{target} ({kind})"


# --------------------------------------------------------------------------- sections
def _header(metrics: dict, blocks: list[_Block], digits: int) -> None:
    experiment = metrics.get("experiment") or "unnamed experiment"
    blocks.append(_Block("h1", f"Run report: {experiment}"))
    facts = []
    for label, value in (
        ("task", metrics.get("task")),
        ("seed", metrics.get("seed")),
        ("split", _get(metrics, "split", "kind")),
        ("backbone", _get(metrics, "backbone", "name")),
    ):
        if value is not None:
            facts.append(f"{label}: `{_fmt(value, digits)}`")
    targets = [t.get("name") for t in metrics.get("targets") or [] if isinstance(t, Mapping)]
    if targets:
        facts.append("targets: " + ", ".join(f"`{t}`" for t in targets))
    if facts:
        blocks.append(_Block("p", "; ".join(facts)))
    if _get(metrics, "split", "leaky") is True:
        blocks.append(_Block("warn", LEAK_WARNING))
    weights = _get(metrics, "backbone", "weights") or {}
    transfer = weights.get("transfer_learning", weights.get("pretrained"))
    if transfer is False:
        blocks.append(_Block("warn", RANDOM_INIT_WARNING))


def _class_label(metrics: dict, key: str) -> str:
    for t in metrics.get("targets") or []:
        if not isinstance(t, Mapping):
            continue
        classes = [str(c) for c in t.get("classes") or []]
        names = t.get("class_names") or []
        if str(key) in classes and len(names) == len(classes):
            return str(names[classes.index(str(key))])
    return str(key)


def _counts_table(metrics: dict, counts: Mapping, digits: int) -> _Block | None:
    subsets = [s for s, v in counts.items() if isinstance(v, Mapping)]
    if not subsets:
        return None
    keys: list[str] = []
    for t in metrics.get("targets") or []:
        if isinstance(t, Mapping):
            keys.extend(str(c) for c in t.get("classes") or [] if str(c) not in keys)
    for s in subsets:
        keys.extend(str(k) for k in counts[s] if str(k) not in keys)
    present = [k for k in keys if any(str(k) in map(str, counts[s]) for s in subsets)]
    rows = []
    totals = dict.fromkeys(subsets, 0)
    for k in present:
        row = [_class_label(metrics, k)]
        row_total = 0
        for s in subsets:
            value = {str(kk): vv for kk, vv in counts[s].items()}.get(k)
            row.append(_fmt(value, digits))
            if isinstance(value, int | float) and not isinstance(value, bool):
                row_total += value
                totals[s] += value
        row.append(_fmt(row_total, digits))
        rows.append(row)
    rows.append(
        [
            "**total**",
            *(_fmt(totals[s], digits) for s in subsets),
            _fmt(sum(totals.values()), digits),
        ]
    )
    return _Block("table", headers=["class", *subsets, "total"], rows=rows)


def _data_section(metrics: dict, blocks: list[_Block], digits: int) -> None:
    data = metrics.get("data") or {}
    split = metrics.get("split") or {}
    if not data and not split:
        return
    blocks.append(_Block("h2", "Dataset and split"))
    items = []
    for label, key in (
        ("descriptor", "descriptor"),
        ("images", "n_images"),
        ("samples", "n_samples"),
        ("patches", "n_patches"),
    ):
        if data.get(key) is not None:
            items.append(f"{label}: `{_fmt(data[key], digits)}`")
    if split:
        desc = f"split: `{split.get('kind', '?')}`"
        if split.get("group_column"):
            desc += f" grouped by `{split['group_column']}`"
        fractions = split.get("fractions")
        if isinstance(fractions, Mapping) and fractions:
            desc += " (" + ", ".join(f"{k} {_fmt(v, 2)}" for k, v in fractions.items()) + ")"
        if split.get("fold") is not None:
            desc += f", fold {split['fold']}"
            if split.get("folds") is not None:
                desc += f" of {split['folds']}"
        desc += ", leaky" if split.get("leaky") else ", not leaky"
        items.append(desc)
        if split.get("note"):
            items.append(f"split note: {split['note']}")
    if data.get("sample_id_note"):
        items.append(f"sample ids: {data['sample_id_note']}")
    if items:
        blocks.append(_Block("ul", items=items))
    for key, title in (
        ("counts", "Images per class and subset"),
        ("patch_counts", "Patches per class and subset"),
    ):
        if isinstance(data.get(key), Mapping):
            table = _counts_table(metrics, data[key], digits)
            if table is not None:
                blocks.append(_Block("h3", title))
                blocks.append(table)


def _flatten(d: Mapping, prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for k, v in d.items():
        name = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.extend(_flatten(v, name + "."))
        else:
            out.append((name, v))
    return out


def _preprocess_section(metrics: dict, blocks: list[_Block], digits: int) -> None:
    pre = metrics.get("preprocess")
    if not isinstance(pre, Mapping) or not pre:
        return
    blocks.append(_Block("h2", "Preprocessing"))
    blocks.append(_Block("ul", items=[f"{k}: `{_fmt(v, digits)}`" for k, v in _flatten(pre)]))


def _backbone_section(metrics: dict, blocks: list[_Block], digits: int) -> None:
    bb = metrics.get("backbone")
    if not isinstance(bb, Mapping) or not bb:
        return
    blocks.append(_Block("h2", "Backbone and weights"))
    weights = bb.get("weights") or {}
    rows = []
    for label, value in (
        ("backbone", bb.get("name")),
        ("embedding dim", bb.get("embedding_dim")),
        ("weights source", weights.get("source")),
        ("weights identity", weights.get("identity")),
        ("weights sha256", weights.get("sha256")),
        ("pretrained", weights.get("pretrained")),
        ("transfer learning", weights.get("transfer_learning")),
    ):
        if value is not None:
            rows.append([label, f"`{_fmt(value, digits)}`"])
    for k, v in _flatten(
        {
            k: v
            for k, v in weights.items()
            if k not in {"source", "identity", "sha256", "pretrained", "transfer_learning"}
        }
    ):
        rows.append([f"weights {k}", f"`{_fmt(v, digits)}`"])
    if rows:
        blocks.append(_Block("table", headers=["item", "value"], rows=rows))


def _training_section(metrics: dict, blocks: list[_Block], digits: int) -> None:
    tr = metrics.get("training") or {}
    cache = metrics.get("cache") or {}
    items = []
    for label, key in (
        ("protocol", "protocol"),
        ("max epochs", "max_epochs"),
        ("best epoch", "best_epoch"),
        ("best validation loss", "best_val_loss"),
        ("wall time (s)", "wall_s"),
    ):
        if tr.get(key) is not None:
            items.append(f"{label}: `{_fmt(tr[key], digits)}`")
    if tr.get("history"):
        items.append(f"history rows: `{len(tr['history'])}`")
    if cache:
        items.append(
            "embedding cache: " + ", ".join(f"{k} `{_fmt(v, digits)}`" for k, v in cache.items())
        )
    if items:
        blocks.append(_Block("h2", "Training"))
        blocks.append(_Block("ul", items=items))


def _metric_table(
    levels: dict[str, dict], kind: str, digits: int, first: str = "level", label: str | None = None
) -> tuple[list[str], list[list[str]]]:
    cols = _columns(kind)
    rows = []
    for level in LEVELS:
        if level in levels:
            lead = [label, level] if label is not None else [level]
            rows.append([*lead, *(_fmt(levels[level].get(c), digits) for c in cols)])
    headers = ([first, "level"] if label is not None else [first]) + list(cols)
    return headers, rows


def _per_class_auroc(
    metrics: dict, target: str | None, levels: dict[str, dict], digits: int
) -> _Block | None:
    lists = {lv: m.get("auroc_per_class") for lv, m in levels.items()}
    lists = {lv: v for lv, v in lists.items() if isinstance(v, list) and len(v) > 2}
    if not lists:
        return None
    names = None
    for t in metrics.get("targets") or []:
        if isinstance(t, Mapping) and (target is None or t.get("name") == target):
            names = t.get("class_names") or t.get("classes")
            break
    width = max(len(v) for v in lists.values())
    if not names or len(names) != width:
        names = [str(i) for i in range(width)]
    rows = [[lv, *(_fmt(a, digits) for a in v)] for lv, v in lists.items()]
    return _Block("table", headers=["level", *map(str, names)], rows=rows)


def _test_section(metrics: dict, blocks: list[_Block], digits: int) -> None:
    test = _by_target(metrics.get("test"))
    blocks.append(_Block("h2", "Test metrics (MLP head)"))
    if not test:
        blocks.append(_Block("p", "No test metrics recorded."))
        return
    blocks.append(
        _Block(
            "p",
            "Image and sample levels average the patch outputs "
            "(probabilities or predictions) of each image / sample.",
        )
    )
    for target, levels in test.items():
        kind = _target_kind(metrics, target, levels)
        heading = _target_heading(target, kind)
        if heading:
            blocks.append(_Block("h3", heading))
        headers, rows = _metric_table(levels, kind, digits)
        blocks.append(_Block("table", headers=headers, rows=rows))
        per_class = _per_class_auroc(metrics, target, levels, digits)
        if per_class is not None:
            blocks.append(_Block("p", "One-vs-rest AUROC per class:"))
            blocks.append(per_class)


def _main_value(levels: dict[str, dict] | None, kind: str) -> float | None:
    key, _ = MAIN_METRIC.get(kind, MAIN_METRIC["classification"])
    value = _get(levels or {}, "patch", key)
    return float(value) if isinstance(value, int | float) else None


def _baseline_section(metrics: dict, blocks: list[_Block], digits: int) -> None:
    baseline = metrics.get("baseline")
    by_target = _baseline_by_target(baseline)
    if not by_target:
        return
    test = _by_target(metrics.get("test"))
    blocks.append(_Block("h2", "Baselines"))
    blocks.append(
        _Block(
            "p",
            "`pca_logreg`: standardise, PCA, then logistic regression "
            "(ridge for regression); `linear_probe`: standardise, then "
            "logistic / ridge regression on the full embeddings.",
        )
    )
    ev = _get(baseline, "pca_explained_variance")
    if isinstance(ev, int | float):
        k = _get(baseline, "pca_components")
        comps = f" by {k} components" if k is not None else ""
        blocks.append(
            _Block(
                "p", f"Variance explained{comps} of the PCA baseline: {_fmt(float(ev), digits)}."
            )
        )
    for target, models in by_target.items():
        head_levels = test.get(target, {})
        kind = _target_kind(metrics, target, head_levels or next(iter(models.values())))
        heading = _target_heading(target, kind)
        if heading:
            blocks.append(_Block("h3", heading))
        headers: list[str] = []
        rows: list[list[str]] = []
        for model, levels in (("MLP head", head_levels), *models.items()):
            if levels:
                headers, part = _metric_table(levels, kind, digits, "model", model)
                rows.extend(part)
        blocks.append(_Block("table", headers=headers, rows=rows))
        sentence = _head_vs_baseline(head_levels, models, kind, digits)
        if sentence:
            blocks.append(_Block("p", sentence))


def _head_vs_baseline(head: dict, models: dict[str, dict], kind: str, digits: int) -> str | None:
    key, higher_better = MAIN_METRIC.get(kind, MAIN_METRIC["classification"])
    head_value = _main_value(head, kind)
    scores = {m: _main_value(levels, kind) for m, levels in models.items()}
    scores = {m: v for m, v in scores.items() if v is not None}
    if head_value is None or not scores:
        return None
    pick = max if higher_better else min
    best = pick(scores, key=scores.get)
    diff = head_value - scores[best]
    if diff == 0:
        return (
            f"Main metric (patch-level {key}): the MLP head and the best baseline (`{best}`) "
            f"both score {_fmt(head_value, digits)}."
        )
    direction = "above" if diff > 0 else "below"
    verdict = "better" if (diff > 0) == higher_better else "worse"
    note = "higher is better" if higher_better else "lower is better"
    return (
        f"Main metric (patch-level {key}, {note}): the MLP head scores "
        f"{_fmt(head_value, digits)}, {_fmt(abs(diff), digits)} {direction} the best baseline "
        f"(`{best}`, {_fmt(scores[best], digits)}), i.e. {verdict} than the baseline."
    )


def _leak_section(metrics: dict, blocks: list[_Block], digits: int) -> None:
    contrast = metrics.get("contrast")
    if not isinstance(contrast, Mapping):
        return
    main_kind = _get(metrics, "split", "kind") or "main"
    c_kind = _get(contrast, "split", "kind") or "contrast"
    c_leaky = _get(contrast, "split", "leaky")
    c_label = f"{c_kind}{' (leaky)' if c_leaky else ''}"
    m_label = f"{main_kind}{' (leaky)' if _get(metrics, 'split', 'leaky') else ''}"
    head = _by_target(metrics.get("test"))
    head_c = _by_target(contrast.get("test"))
    probe = _baseline_by_target(metrics.get("baseline"))
    probe_c = _baseline_by_target(contrast.get("baseline"))
    targets = list(dict.fromkeys([*head, *head_c, *probe, *probe_c]))
    if not targets:
        return
    blocks.append(_Block("h2", "Leak check"))
    blocks.append(
        _Block(
            "p",
            f"The same pipeline on the `{main_kind}` split and on the "
            f"`{c_kind}` contrast split. A large gap means the contrast "
            "scores profit from patches of the same image/sample on both "
            "sides of the split.",
        )
    )
    for target in targets:
        kind = _target_kind(metrics, target, head.get(target) or head_c.get(target) or {})
        key, _ = MAIN_METRIC.get(kind, MAIN_METRIC["classification"])
        heading = _target_heading(target, kind)
        if heading:
            blocks.append(_Block("h3", heading))
        sources = (
            head.get(target),
            head_c.get(target),
            _get(probe.get(target), "linear_probe"),
            _get(probe_c.get(target), "linear_probe"),
        )
        rows = [
            [level, *(_fmt(_get(src, level, key), digits) for src in sources)] for level in LEVELS
        ]
        headers = [
            f"level ({key})",
            f"head, {m_label}",
            f"head, {c_label}",
            f"linear probe, {m_label}",
            f"linear probe, {c_label}",
        ]
        blocks.append(_Block("table", headers=headers, rows=rows))


def _paper_section(metrics: dict, blocks: list[_Block], digits: int) -> None:
    paper = metrics.get("paper")
    if not isinstance(paper, Mapping) or not paper:
        return
    # the paper split patches at random: compare like with like, and show the grouped split too
    runs = [(f"{_get(metrics, 'split', 'kind') or 'this run'} split", metrics.get("test"))]
    contrast = metrics.get("contrast") or {}
    if contrast.get("test"):
        runs.append((f"{_get(contrast, 'split', 'kind')} split", contrast.get("test")))
    runs = [(name, next(iter(_by_target(test).values()), {})) for name, test in runs if test]
    blocks.append(_Block("h2", "Paper"))
    if paper.get("split") and f"{paper['split']} split" in [name for name, _ in runs]:
        blocks.append(_Block("p", f"The paper's figures come from a split by {paper['split']}; "
                                  f"compare them with the {paper['split']} split column."))
    rows = []
    notes = []
    for key, value in paper.items():
        if isinstance(value, int | float) and not isinstance(value, bool):
            ours_key = PAPER_KEY_ALIASES.get(key, key)
            rows.append([key, _fmt(float(value), digits),
                         *(_fmt(_get(levels, "patch", ours_key), digits) for _, levels in runs)])
        elif value is not None and key != "split":
            notes.append(f"{key}: {value}")
    if rows:
        blocks.append(_Block("table", headers=["metric (patch level)", "paper",
                                               *(name for name, _ in runs)], rows=rows))
    if notes:
        blocks.append(_Block("ul", items=notes))


def _figures_section(figures: Mapping[str, Path] | None, blocks: list[_Block]) -> None:
    if not figures:
        return
    blocks.append(_Block("h2", "Figures"))
    for name, path in figures.items():
        if path is None:
            continue
        blocks.append(_Block("h3", str(name).replace("_", " ")))
        blocks.append(_Block("img", text=str(name), path=Path(path)))


def build_blocks(metrics: dict, figures: Mapping[str, Path] | None, digits: int) -> list[_Block]:
    blocks: list[_Block] = []
    for section in (
        _header,
        _data_section,
        _preprocess_section,
        _backbone_section,
        _training_section,
        _test_section,
        _baseline_section,
        _leak_section,
        _paper_section,
    ):
        section(metrics, blocks, digits)
    _figures_section(figures, blocks)
    return blocks


# --------------------------------------------------------------------------- renderers
def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(blocks: list[_Block], run_dir: Path) -> str:
    out: list[str] = []
    for b in blocks:
        if b.kind in ("h1", "h2", "h3"):
            out.append("#" * int(b.kind[1]) + " " + b.text)
        elif b.kind == "p":
            out.append(b.text)
        elif b.kind == "warn":
            out.append(f"> **{b.text}**")
        elif b.kind == "ul":
            out.append("\n".join(f"- {item}" for item in b.items))
        elif b.kind == "table":
            lines = [
                "| " + " | ".join(map(_md_cell, b.headers)) + " |",
                "|" + "|".join("---" for _ in b.headers) + "|",
            ]
            lines += ["| " + " | ".join(map(_md_cell, r)) + " |" for r in b.rows]
            out.append("\n".join(lines))
        elif b.kind == "img" and b.path is not None:
            if b.path.is_file():
                try:
                    ref = os.path.relpath(b.path.resolve(), run_dir.resolve())
                except ValueError:  # other drive (Windows)
                    ref = str(b.path.resolve())
                out.append(f"![{b.text}]({Path(ref).as_posix()})")
            else:
                out.append(f"*figure `{b.text}` missing: `{b.path}`*")
        out.append("")
    return "\n".join(out)


_CODE = re.compile(r"`([^`]*)`")
_BOLD = re.compile(r"\*\*([^*]+)\*\*")


def _inline_html(text: str) -> str:
    escaped = html.escape(text, quote=False)
    escaped = _CODE.sub(r"<code>\1</code>", escaped)
    return _BOLD.sub(r"<strong>\1</strong>", escaped)


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;
margin:2em auto;padding:0 1em;color:#222;line-height:1.45}
table{border-collapse:collapse;margin:.6em 0 1.2em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left}
th{background:#f2f2f2} td code{word-break:break-all}
.warn{background:#fff3cd;border:1px solid #e0b000;border-left:6px solid #e0a000;
padding:.6em 1em;margin:.8em 0;font-weight:600}
img{max-width:100%;border:1px solid #ddd}
code{background:#f5f5f5;padding:0 .2em}
"""


def render_html(blocks: list[_Block], title: str) -> str:
    body: list[str] = []
    for b in blocks:
        if b.kind in ("h1", "h2", "h3"):
            body.append(f"<{b.kind}>{_inline_html(b.text)}</{b.kind}>")
        elif b.kind == "p":
            body.append(f"<p>{_inline_html(b.text)}</p>")
        elif b.kind == "warn":
            body.append(f'<div class="warn">{_inline_html(b.text)}</div>')
        elif b.kind == "ul":
            body.append("<ul>" + "".join(f"<li>{_inline_html(i)}</li>" for i in b.items) + "</ul>")
        elif b.kind == "table":
            head = "".join(f"<th>{_inline_html(h)}</th>" for h in b.headers)
            rows = "".join(
                "<tr>" + "".join(f"<td>{_inline_html(c)}</td>" for c in r) + "</tr>" for r in b.rows
            )
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif b.kind == "img" and b.path is not None:
            if b.path.is_file():
                data = base64.b64encode(b.path.read_bytes()).decode("ascii")
                body.append(
                    f'<figure><img alt="{html.escape(b.text)}" '
                    f'src="data:image/png;base64,{data}"></figure>'
                )
            else:
                body.append(
                    f"<p><em>{_inline_html(f'figure `{b.text}` missing: `{b.path}`')}</em></p>"
                )
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )


def write_report(
    run_dir: Path,
    metrics: dict,
    figures: dict[str, Path],
    digits: int = 3,
) -> tuple[Path, Path]:
    """Write ``run_dir/report.md`` and a self-contained ``run_dir/report.html`` atomically."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    blocks = build_blocks(metrics or {}, figures or {}, digits)
    title = f"Run report: {(metrics or {}).get('experiment') or 'unnamed experiment'}"
    md_path = write_text(run_dir / "report.md", render_markdown(blocks, run_dir))
    html_path = write_text(run_dir / "report.html", render_html(blocks, title))
    return md_path, html_path
