"""A run folder's life: claimed by one run, then finished (``metrics.json``) or failed
(``error.txt``), and Ctrl-C as an exit that keeps what was computed.

Two runs never share a folder: the first claims it with an exclusive create, and a second run
aimed at the same folder stops before writing anything. A failed or interrupted run leaves its
reason in ``error.txt`` and no ``metrics.json``, so ``sinterlab-report`` can tell it apart.
"""

from __future__ import annotations

import json
import os
import signal
import socket
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from sinterlab.atomic import FILE_MODE, write_text
from sinterlab.errors import SinterlabError

CLAIM, ERROR, METRICS = ".sinterlab-run", "error.txt", "metrics.json"


class FolderTaken(SinterlabError):
    """The run folder belongs to another run: this run writes nothing into it."""


def claim(run_dir: str | Path) -> None:
    """Mark ``run_dir`` as this process's run; refuse a folder another run holds, unless that
    run failed (``error.txt``, no results), which this run then takes over."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if failure(run_dir):  # a failed or interrupted run left no results: the same command resumes
        try:
            os.replace(run_dir / CLAIM, run_dir / f"{CLAIM}.failed-{os.getpid()}")
            os.replace(run_dir / ERROR, run_dir / f"{ERROR}.earlier")
        except FileNotFoundError:
            pass  # another process took the folder over first: the exclusive create decides
    me = {"pid": os.getpid(), "host": socket.gethostname(),
          "started": datetime.now().isoformat(timespec="seconds")}
    try:
        fd = os.open(run_dir / CLAIM, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        try:
            other = json.loads((run_dir / CLAIM).read_text())
        except (OSError, ValueError):
            other = {}
        raise FolderTaken(
            f"{run_dir}: folder already holds another run (pid {other.get('pid', '?')} on "
            f"{other.get('host', '?')}, started {other.get('started', '?')}); give this run "
            "its own folder (hydra.run.dir=...) or delete the old one") from None
    with os.fdopen(fd, "w") as handle:
        json.dump(me, handle)


def record_failure(run_dir: str | Path, message: str) -> Path:
    """Leave the reason a run stopped in its folder (``error.txt``)."""
    return write_text(Path(run_dir) / ERROR, message.rstrip() + "\n")


def failure(run_dir: str | Path) -> str | None:
    """The first line of a failed run's ``error.txt``; None when the run did not fail."""
    path = Path(run_dir) / ERROR
    if (Path(run_dir) / METRICS).is_file() or not path.is_file():
        return None
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    return lines[0] if lines else "failed (empty error.txt)"


class RunInterrupted(BaseException):
    """Ctrl-C during a run. Not a ``KeyboardInterrupt``, which Lightning's trainer turns into
    ``sys.exit(1)``; a ``BaseException`` so that nothing catching ``Exception`` swallows it.
    ``cached`` is (images with embeddings in the cache, images of the run, cache folder) once
    known."""

    def __init__(self) -> None:
        super().__init__("interrupted")
        self.cached: tuple[int, int, Path] | None = None

    def describe(self) -> str:
        if self.cached is None:
            return "interrupted before extraction began; nothing of this run was computed"
        done, total, folder = self.cached
        return (f"interrupted: {done} of {total} images have cached embeddings in {folder}; "
                "run the same command again to resume from them")


def _raise_interrupted(signum, frame) -> None:
    raise RunInterrupted()


@contextmanager
def sigint_raises_interrupted():
    """Within the block, Ctrl-C raises :class:`RunInterrupted` (the previous handler after)."""
    previous = signal.signal(signal.SIGINT, _raise_interrupted)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
