"""Run folders: unique names, one run per folder, failures recorded, sweeps that go on past a
failed run; files created with the user's umask."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys

import pytest
from hydra.core.global_hydra import GlobalHydra

from sinterlab.atomic import write_text
from sinterlab.cli import CONF_DIR
from sinterlab.errors import SinterlabError
from sinterlab.runs import claim, failure, record_failure
from tests.conftest import FAST
from tests.test_bad_input import run_script
from tests.test_evaluation_report import dead_pid

COMPOSE = ("from hydra import compose, initialize_config_dir\n"
           "import sinterlab.cli\n"
           f"with initialize_config_dir(config_dir={str(CONF_DIR)!r}, version_base='1.3'):\n"
           "    cfg = compose('train', return_hydra_config=True)\n"
           "print(cfg.hydra.run.dir, cfg.hydra.sweep.dir)\n")


@pytest.mark.slow
def test_runs_started_in_the_same_second_get_their_own_folders(tmp_path):
    """Two processes composing at once (as two `sinterlab-train` started together)."""
    env = os.environ | {"PROJECT_ROOT": str(tmp_path)}
    started = [subprocess.Popen([sys.executable, "-c", COMPOSE], stdout=subprocess.PIPE,
                                text=True, env=env) for _ in range(2)]
    folders = [p.communicate(timeout=120)[0].split() for p in started]
    assert folders[0][0] != folders[1][0] and folders[0][1] != folders[1][1]
    assert all(f[0].startswith(str(tmp_path / "logs" / "train" / "runs")) for f in folders)


def test_a_folder_holds_one_run(tmp_path):
    claim(tmp_path / "run")
    with pytest.raises(SinterlabError, match="already holds another run"):
        claim(tmp_path / "run")


def test_a_failed_runs_folder_is_taken_over_by_the_same_command(tmp_path):
    claim(tmp_path)
    record_failure(tmp_path, "interrupted: 3 of 24 images have cached embeddings")
    claim(tmp_path)  # the user runs the same command (same hydra.run.dir) again
    assert failure(tmp_path) is None
    with pytest.raises(SinterlabError, match="already holds another run"):
        claim(tmp_path)


def test_failure_is_read_back_unless_the_run_finished(tmp_path):
    record_failure(tmp_path, "error: something\nmore detail")
    assert failure(tmp_path) == "error: something"
    (tmp_path / "metrics.json").write_text("{}")
    assert failure(tmp_path) is None


def test_files_follow_the_umask(tmp_path):
    """mkstemp alone makes 0600 files, which a lab group sharing a cache cannot read."""
    mask = os.umask(0)
    os.umask(mask)
    path = write_text(tmp_path / "shared.txt", "x")
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask


@pytest.mark.slow
def test_a_sweep_goes_on_past_a_failed_run_and_exits_2(tmp_path, tiny_descriptor, shared_cache,
                                                       monkeypatch, capsys):
    GlobalHydra.instance().clear()
    sweep = tmp_path / "sweep"
    code, out, err = run_script("train", [
        "-m", *FAST, f"data.descriptor={tiny_descriptor}", f"features.cache_dir={shared_cache}",
        "protocol.folds=50,3", f"hydra.sweep.dir={sweep}", f"paths.log_dir={tmp_path}"],
        monkeypatch, capsys)
    assert code == 2
    assert "too few sample groups" in (sweep / "0" / "error.txt").read_text()
    assert (sweep / "1" / "metrics.json").is_file()  # the next run still ran
    # one configuration per run folder: the resolved config.yaml, no Hydra .hydra/ copy
    assert (sweep / "1" / "config.yaml").is_file() and not (sweep / "1" / ".hydra").exists()
    assert "1 run(s) of the sweep failed" in err and str(sweep / "0" / "error.txt") in err


def test_a_dead_runs_folder_is_taken_over_and_a_finished_one_refused(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / ".sinterlab-run").write_text(json.dumps(
        {"pid": dead_pid(), "host": socket.gethostname(), "started": "t"}))  # kill -9
    assert "no longer running" in claim(run)
    with pytest.raises(SinterlabError, match="still running"):
        claim(run)  # this process holds it now
    (run / "metrics.json").write_text("{}")
    with pytest.raises(SinterlabError, match="holds a finished run"):
        claim(run, keep_own=True)


def test_a_refused_folder_gets_nothing_written_into_it(tmp_path, tiny_descriptor, monkeypatch,
                                                       capsys):
    """Hydra writes .hydra/ and train.log into the run folder before the run starts: the
    folder is claimed before that, so another run's record stays as it was."""
    run = tmp_path / "run"
    run.mkdir()
    alive = subprocess.Popen(["sleep", "60"])
    try:
        (run / ".sinterlab-run").write_text(json.dumps(
            {"pid": alive.pid, "host": socket.gethostname(), "started": "t"}))
        code, out, err = run_script("train", [*FAST, f"data.descriptor={tiny_descriptor}",
                                              f"hydra.run.dir={run}"], monkeypatch, capsys)
    finally:
        alive.kill()
        alive.wait()
    assert code == 2 and f"pid {alive.pid}" in err and "still running" in err
    assert [p.name for p in run.iterdir()] == [".sinterlab-run"]
