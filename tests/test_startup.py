"""Console scripts import what they use: the ones that read files or a finished run, or only
print their help, load no torch (the training stack takes seconds to import); sinterlab-train
and sinterlab-predict import it once their configuration is checked."""

from __future__ import annotations

import subprocess
import sys

import pytest

#: prints, as the process ends, whether torch was imported
CHECK = ("import atexit, sys; atexit.register(lambda: print('torch imported:', 'torch' in "
         "sys.modules)); from sinterlab.cli.{script} import main; main()")


@pytest.mark.parametrize(("script", "help_line"), [("report", "usage: sinterlab-report"),
                                                   ("synth", "out: ???"), ("plan", "goal: map"),
                                                   ("train", "== Configuration groups =="),
                                                   ("predict", "== Configuration groups ==")])
def test_help_imports_no_torch(script, help_line, tmp_path):
    done = subprocess.run([sys.executable, "-c", CHECK.format(script=script), "--help"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert any(line.startswith(help_line) for line in lines), done.stdout[:2000]
    assert lines[-1] == "torch imported: False"


#: modules that must not import torch, one process for all: each is imported in turn and checked
NO_TORCH = ["sinterlab.cli.report", "sinterlab.cli.synth", "sinterlab.cli.plan",
            "sinterlab.cli.callbacks", "sinterlab.cli.train", "sinterlab.cli.predict",
            "sinterlab.evaluation", "sinterlab.evaluation.summary"]


def test_modules_import_no_torch():
    done = subprocess.run([sys.executable, "-c", "import importlib, sys\n"
                           f"for module in {NO_TORCH!r}:\n"
                           "    importlib.import_module(module)\n"
                           "    assert 'torch' not in sys.modules, f'{module} imports torch'\n"
                           "print('checked')"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("checked")
