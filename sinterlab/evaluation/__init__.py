"""Evaluation: metrics at patch/image/sample level, baselines, figures, reports, summaries."""

from sinterlab.evaluation.baselines import run_baselines
from sinterlab.evaluation.metrics import (
    aggregate_by_group,
    classification_metrics,
    evaluate_levels,
    evaluate_targets,
    regression_metrics,
)
from sinterlab.evaluation.report import write_report
from sinterlab.evaluation.summary import summarize_runs, write_summary

__all__ = [
    "aggregate_by_group",
    "classification_metrics",
    "evaluate_levels",
    "evaluate_targets",
    "regression_metrics",
    "run_baselines",
    "summarize_runs",
    "write_report",
    "write_summary",
]
