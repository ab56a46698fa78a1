"""Every output file of a run is written once (the contracted outputs themselves:
tests/test_cli.py, on the suite's shared run)."""

import json

import pytest

from sinterlab.study.training import run_experiment

#: whole runs end to end: `make test-slow` (CI runs it after `make test`)
pytestmark = pytest.mark.slow


def test_every_output_file_is_written_once_and_metrics_read_back_typed(make_cfg, tmp_path,
                                                                      monkeypatch):
    """config.yaml is resolved before any work and written once (with what `auto` scale and the
    model checks decided), metrics.json, the manifest and each report once; metrics.json reads
    back into the very RunMetrics the run returned."""
    import os
    from collections import Counter

    from sinterlab.atomic import json_default
    from sinterlab.evaluation.results import jsonable, read_metrics

    written, replace = Counter(), os.replace

    def counted(src, dst, *args, **kwargs):
        written[os.path.relpath(dst, tmp_path)] += 1
        return replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", counted)
    metrics = run_experiment(make_cfg("evaluation.gallery.enabled=false"), tmp_path)
    for name in ("config.yaml", "metrics.json", "manifest.json", "report.md", "report.html",
                 "oof_predictions.csv"):
        assert written[name] == 1, (name, written[name])
    assert [path for path, n in written.items() if n > 1] == []
    def text(run):
        return json.dumps(jsonable(run), sort_keys=True, default=json_default)

    assert text(read_metrics(tmp_path / "metrics.json")) == text(metrics)
