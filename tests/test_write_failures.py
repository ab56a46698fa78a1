"""A write that fails (disk full, quota, file size limit, permission) is one line naming the file
and the cause, exit 74: neither bad input (2) nor a bug (a traceback); the run folder records it
where the disk allows, and sinterlab-report tells it from a crash."""

from __future__ import annotations

import errno
import json
import logging
import os
import pickle
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sinterlab.atomic import write_json, write_text, write_with, writing
from sinterlab.cli import one_line_errors
from sinterlab.console import LogFile
from sinterlab.errors import WRITE_FAILED, WriteFailed
from sinterlab.evaluation.summary import failed_runs
from sinterlab.runs import CLAIM, ERROR, claim, failure, incomplete, record_failure
from tests.conftest import BIN, FAST


def failing(code: int):
    def writer(tmp: Path) -> None:
        tmp.write_bytes(b"half a file")
        raise OSError(code, os.strerror(code))
    return writer


@pytest.mark.parametrize(("code", "cause", "fix"), [
    (errno.ENOSPC, "disk full", "free space"),
    (errno.EDQUOT, "disk quota exceeded", "quota"),
    (errno.EFBIG, "file too large", "ulimit -f"),
    (errno.EACCES, "permission denied", "writable"),
    (errno.EROFS, "read-only file system", "writable disk"),
    (errno.EIO, "input/output error", "check the disk"),
])
def test_each_cause_is_one_line_naming_the_file(tmp_path, code, cause, fix):
    target = tmp_path / "figures" / "roc.png"
    with pytest.raises(WriteFailed) as err:
        write_with(target, failing(code))
    message = str(err.value)
    assert message.startswith(f"could not write {target} ({cause}")
    assert fix in message and "\n" not in message
    assert err.value.path == target
    assert list(target.parent.iterdir()) == []  # no half-written file, no temp file


def test_the_failure_crosses_a_process_boundary_whole(tmp_path):
    """Worker processes (sinterlab-synth workers=2) send it back pickled."""
    sent = WriteFailed(tmp_path / "a.tif", "disk full", "free space")
    back = pickle.loads(pickle.dumps(sent))
    assert (str(back), back.path, back.cause) == (str(sent), sent.path, "disk full")


def test_a_file_that_exists_stays_as_it_was(tmp_path):
    target = write_json(tmp_path / "metrics.json", {"accuracy": 0.9})
    with pytest.raises(WriteFailed, match="disk full"):
        write_with(target, failing(errno.ENOSPC))
    assert json.loads(target.read_text()) == {"accuracy": 0.9}


def test_a_folder_that_cannot_be_made_is_named(tmp_path):
    (tmp_path / "plain_file").write_text("")
    with pytest.raises(WriteFailed, match=r"could not write .*plain_file/run/a\.json"):
        write_text(tmp_path / "plain_file" / "run" / "a.json", "{}")


def test_a_library_that_wraps_the_failure_is_still_named(tmp_path):
    """Lightning's TensorBoard logger raises ValueError("you tried to log ...") from the
    OSError of the event file: the cause is found behind the wrapper."""
    with pytest.raises(WriteFailed, match=r"could not write .*tensorboard \(file too large"):
        with writing(tmp_path / "tensorboard"):
            try:
                raise OSError(errno.EFBIG, "File too large")
            except OSError as cause:
                raise ValueError("you tried to log 257.0") from cause


def test_writing_names_the_file_the_error_names(tmp_path):
    with pytest.raises(WriteFailed, match=r"could not write /x/events\.out"):
        with writing(tmp_path):
            raise OSError(errno.ENOSPC, "No space left on device", "/x/events.out")


@pytest.mark.parametrize("err", [ValueError("a bug"), PermissionError(errno.EACCES, "read")])
def test_writing_lets_everything_else_through(tmp_path, err):
    """A bug stays a bug; EACCES may come from reading, so only write_with names it."""
    with pytest.raises(type(err)):
        with writing(tmp_path):
            raise err


def test_the_kernels_file_size_limit_is_named(tmp_path):
    """``ulimit -f``: the kernel refuses the write (EFBIG), the file is named."""
    target = tmp_path / "big.json"
    script = ("import resource, sys\n"
              "from sinterlab.atomic import write_json\n"
              "from sinterlab.errors import WriteFailed\n"
              "resource.setrlimit(resource.RLIMIT_FSIZE, (10_000, 10_000))\n"
              "try:\n"
              f"    write_json({str(target)!r}, list(range(100_000)))\n"
              "except WriteFailed as err:\n"
              "    print(err)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60)
    assert done.stdout.startswith(f"could not write {target} (file too large"), done.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_command_stopped_by_a_failed_write_exits_74_with_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as done:
        with one_line_errors("sinterlab-predict"):
            write_with(tmp_path / "predictions.csv", failing(errno.EDQUOT))
    assert done.value.code == WRITE_FAILED == 74
    err = capsys.readouterr().err
    assert err == (f"sinterlab-predict: stopped: could not write {tmp_path / 'predictions.csv'} "
                   "(disk quota exceeded); free space within your quota or ask for a larger "
                   "one, or write elsewhere, then run the same command again\n")


def test_an_unnamed_failed_write_of_a_library_is_still_exit_74(capsys):
    with pytest.raises(SystemExit) as done:
        with one_line_errors("sinterlab-explain"):
            raise OSError(errno.ENOSPC, "No space left on device")
    assert done.value.code == 74
    assert "could not write a file the library writing it did not name (disk full" in \
        capsys.readouterr().err


# -- the run folder records it, as far as the disk allows --------------------------------------
MESSAGE = ("stopped: could not write /runs/1/checkpoints/sample-ensemble.ckpt (disk full: no "
           "space left on the device); free space on that disk, or write elsewhere, then run "
           "the same command again")


def test_a_run_stopped_by_a_failed_write_is_reported_as_such(tmp_path):
    claim(tmp_path / "1")
    assert record_failure(tmp_path / "1", MESSAGE) == tmp_path / "1" / ERROR
    assert failed_runs(tmp_path) == [("1", MESSAGE)]


def test_without_room_for_error_txt_the_claim_holds_the_reason(tmp_path, monkeypatch):
    """The disk is full: error.txt cannot be written, the claim's reserved bytes can."""
    run = tmp_path / "1"
    claim(run)
    size = (run / CLAIM).stat().st_size

    def disk_full(path, text):
        raise WriteFailed(path, "disk full", "free space")
    monkeypatch.setattr("sinterlab.runs.write_text", disk_full)
    assert record_failure(run, MESSAGE + "\nmore") == run / CLAIM
    assert not (run / ERROR).exists() and (run / CLAIM).stat().st_size == size
    assert failure(run) == MESSAGE and incomplete(run) is None
    assert failed_runs(tmp_path) == [("1", MESSAGE)]
    assert record_failure(run, "x" * 5000) == run / CLAIM  # too long: cut to fit
    assert failure(run).endswith("xxx...") and (run / CLAIM).stat().st_size == size
    claim(run)  # the same command takes the folder over
    assert failure(run) is None


def test_when_nothing_can_be_written_record_failure_says_so_without_raising(tmp_path,
                                                                             monkeypatch):
    def disk_full(path, text):
        raise WriteFailed(path, "disk full", "free space")
    monkeypatch.setattr("sinterlab.runs.write_text", disk_full)
    assert record_failure(tmp_path / "unclaimed", MESSAGE) is None


def test_a_log_file_that_cannot_be_written_warns_once(tmp_path, capsys):
    handler = LogFile(tmp_path / "train.log")
    handler.setFormatter(logging.Formatter("%(message)s"))

    class FullDisk:
        def write(self, text):
            raise OSError(errno.ENOSPC, "No space left on device")

        def flush(self):
            pass

        def close(self):
            pass
    handler.stream = FullDisk()
    logger = logging.getLogger("test_write_failures")
    logger.addHandler(handler)
    logger.propagate = False  # this handler alone: not the root's, which other tests may leave
    try:
        for i in range(3):
            logger.warning("record %d", i)
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    err = capsys.readouterr().err
    assert err == (f"warning: could not write {tmp_path / 'train.log'} (disk full: no space "
                   "left on the device); free space on that disk, or write elsewhere; the log "
                   "file stops here\n")


@pytest.mark.slow
def test_a_training_run_over_the_file_size_limit(tmp_path, tiny_descriptor, shared_cache,
                                                 trained_run):
    """``ulimit -f`` below the checkpoint's size, as the issue's probe ran it: one line naming
    the checkpoint, exit 74, no traceback; sinterlab-report names it too."""
    run_dir = tmp_path / "sweep" / "0"

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (4 << 20, 4 << 20))
    done = subprocess.run(
        [str(BIN / "sinterlab-train"), *FAST, f"data.descriptor={tiny_descriptor}",
         f"features.cache_dir={shared_cache}", f"hydra.run.dir={run_dir}",
         f"paths.log_dir={tmp_path / 'logs'}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600, preexec_fn=limit)
    assert done.returncode == 74, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("sinterlab-train:")]
    checkpoint = run_dir / "checkpoints" / "sample-ensemble.ckpt"
    assert lines == [f"sinterlab-train: {(run_dir / ERROR).read_text().strip()}"]
    assert lines[0].startswith(f"sinterlab-train: stopped: could not write {checkpoint} "
                               "(file too large")
    assert not checkpoint.exists() and not (run_dir / "metrics.json").exists()
    shutil.copytree(trained_run, tmp_path / "sweep" / "1")  # beside a finished run
    report = subprocess.run([str(BIN / "sinterlab-report"), str(tmp_path / "sweep")],
                            capture_output=True, text=True, timeout=300)
    assert report.returncode == 0, report.stderr
    assert f"skipped run 0: stopped: could not write {checkpoint}" in report.stderr
    assert "crashed" not in report.stderr + report.stdout
