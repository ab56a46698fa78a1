"""Evaluation: metrics at patch/image/sample level, baselines, figures, reports, summaries."""

from sinterlab.evaluation.baselines import baseline_outputs
from sinterlab.evaluation.metrics import (
    aggregate_by_group,
    classification_metrics,
    evaluate_levels,
    evaluate_targets,
    regression_metrics,
)
from sinterlab.evaluation.report import write_report
from sinterlab.evaluation.statistics import bootstrap_intervals, permutation_test
from sinterlab.evaluation.summary import summarize_runs, write_summary

__all__ = [
    "aggregate_by_group",
    "baseline_outputs",
    "bootstrap_intervals",
    "classification_metrics",
    "evaluate_levels",
    "evaluate_targets",
    "permutation_test",
    "regression_metrics",
    "summarize_runs",
    "write_report",
    "write_summary",
]
