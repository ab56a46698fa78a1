"""How a run's results are written for people: which model a run reports, the display names of
its models (long in the report and summary tables, short on the console) and the number and
interval formats they share.
"""

from __future__ import annotations

from typing import Any

#: the model a run reports when it trained none of its own (no ``cv.primary``): a baseline that
#: every run fits
FALLBACK_MODEL = "linear_probe"

#: model key (as in metrics.json) -> (long name: report and summary tables, short name: console)
MODEL_NAMES: dict[str, tuple[str, str]] = {
    "head": ("MLP head", "head"),
    "auto": ("auto-selected model (nested CV)", "auto (nested)"),
    "mlp": ("MLP head (paper)", "mlp"),
    "linear": ("linear head", "linear"),
    "mlp_small": ("small MLP head", "mlp_small"),
    "sk_logreg": ("logistic/ridge, C tuned", "LR tuned"),
    "sk_pca_logreg": ("PCA + logistic/ridge, tuned", "PCA+LR tuned"),
    "sk_logreg_image": ("logistic/ridge on image means, C tuned", "LR img tuned"),
    "sk_forest": ("random forest on image means", "RF img"),
    "sk_svm": ("RBF SVM on image means, C tuned", "SVM img"),
    "sk_measures": ("measures + logistic, C tuned", "measures LR tuned"),
    "sk_image_measures": ("image means + measures, logistic, C tuned", "img+measures LR"),
    "pca_logreg": ("PCA + logistic/ridge", "PCA+LR"),
    "linear_probe": ("linear probe", "linear probe"),
    "measures": ("measures + logistic/ridge", "measures+LR"),
    "image_only": ("same model, image only (no extra inputs)", "image_only"),
    "corn": ("CORN ordinal head", "corn"),
    "level_value": ("level-value regression head", "level value"),
    "mlp_image": ("bag MLP head on image means", "bag mlp"),
    "level_value_image": ("bag level-value head on image means", "bag level value"),
    "ensemble": ("weighted ensemble of the candidates (nested)", "ensemble"),
    "best_single": ("best single candidate (nested, without the ensemble)", "best single"),
}


def reported_model(primary: str | None) -> str:
    """The model whose outputs a split's block reports (headline, out-of-fold tables, figures,
    console summary): its primary model (the head or the auto-selected one), else the linear
    probe. ``primary``: the block's ``cv.primary``."""
    return primary or FALLBACK_MODEL


def long_name(key: str) -> str:
    """The model's name in the report and the summary tables (the key itself when unknown)."""
    return MODEL_NAMES[key][0] if key in MODEL_NAMES else key


def short_name(key: str) -> str:
    """The model's name in the console's summary lines (the key itself when unknown)."""
    return MODEL_NAMES[key][1] if key in MODEL_NAMES else key


def number(value: Any, digits: int = 3, missing: str = "—") -> str:
    """A float to ``digits`` decimals, a bool as yes/no, None or NaN as ``missing``; anything
    else as ``str``."""
    if value is None or (isinstance(value, float) and value != value):
        return missing
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def interval(cell: Any, digits: int = 3, missing: str = "—") -> str:
    """'0.812 [0.700, 0.900]' from a cell with ``value``, ``low`` and ``high`` (an
    :class:`~sinterlab.evaluation.results.Interval` or ``Cell``, a learning curve's
    projection); the value alone when it has no interval."""
    if not cell:
        return missing
    value, low, high = cell.value, cell.low, cell.high
    if low is None:
        return number(value, digits, missing)
    return f"{number(value, digits, missing)} [{number(low, digits, missing)}, " \
        f"{number(high, digits, missing)}]"


def selection_warning(check: Any, level: str, metric: str) -> str:
    """One line: the chosen model scores below another candidate by more than its interval
    (``check``: a :class:`~sinterlab.evaluation.results.SelectionCheck`)."""
    return (f"model selection and {level} {metric} disagree: {check.model} "
            f"({check.value:.3f}) is behind {check.best_other} ({check.best_value:.3f}) "
            f"by {check.behind_by:.3f}, more than its interval width "
            f"({check.interval_width:.3f})")
