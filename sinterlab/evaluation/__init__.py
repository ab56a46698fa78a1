"""Evaluation: metrics at patch/image/sample level, baselines, figures, reports, summaries.

Import from the submodules (``sinterlab.evaluation.metrics``, ``...report``): the package
itself imports none of them, so a command that reads a finished run (``sinterlab-report``)
loads no torch.
"""
