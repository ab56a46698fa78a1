"""A run folder's life: claimed by one run, then finished (``metrics.json``) or failed
(``error.txt``), and Ctrl-C as an exit that keeps what was computed.

Two runs never share a folder: the first claims it with an exclusive create, and a second run
aimed at the same folder stops before writing anything. A failed or interrupted run leaves its
reason in ``error.txt`` and no ``metrics.json``; a killed one leaves its claim, whose pid is gone.
``sinterlab-report`` tells each apart, and the same command takes such a folder over.

A run stopped by a failed write (disk full) may not be able to write ``error.txt`` either: its
claim reserves room for the reason at the start (:data:`CLAIM_BYTES`), overwritten in place.
"""

from __future__ import annotations

import json
import os
import signal
import socket
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from sinterlab.atomic import FILE_MODE, write_failure, write_text
from sinterlab.errors import SinterlabError, WriteFailed

CLAIM, ERROR, METRICS = ".sinterlab-run", "error.txt", "metrics.json"
#: size of a run's claim file: room for why the run stopped when error.txt cannot be written
CLAIM_BYTES = 1024


class FolderTaken(SinterlabError):
    """The run folder belongs to another run: this run writes nothing into it."""


def holder(run_dir: str | Path) -> dict:
    """Who claimed ``run_dir`` ({} if nobody), with ``alive``: True/False when the claim was
    made on this host (the pid is checked), None when another host made it."""
    return claim_holder(Path(run_dir) / CLAIM)


def claim_holder(path: str | Path) -> dict:
    """Who wrote the claim file ``path`` ({} if none), with ``alive`` as in :func:`holder`."""
    try:
        other = json.loads(Path(path).read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError):
        other = {}
    alive = None
    if other.get("host") == socket.gethostname() and isinstance(other.get("pid"), int):
        try:
            os.kill(other["pid"], 0)
            alive = True
        except ProcessLookupError:
            alive = False
        except PermissionError:  # another user's live process
            alive = True
    return other | {"alive": alive}


def _set_aside(run_dir: Path, name: str) -> None:
    try:
        os.replace(run_dir / name, run_dir / f"{name}.earlier-{os.getpid()}")
    except FileNotFoundError:
        pass  # another process took the folder over first: the exclusive create decides


def _create(path: Path, content: dict, size: int = 0) -> bool:
    """Create ``path`` holding ``content`` as JSON padded with spaces to ``size`` bytes, unless
    it exists (False); a failed write leaves no file behind and raises WriteFailed."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        return False
    except OSError as err:
        raise write_failure(path, err) from err
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(json.dumps(content).ljust(size))
    except OSError as err:
        path.unlink(missing_ok=True)
        raise write_failure(path, err) from err
    return True


def claim_file(path: str | Path) -> bool:
    """Create the claim file ``path`` for this process (True), unless a live process holds it
    (False); a dead holder's claim is replaced."""
    path = Path(path)
    for _ in range(2):
        if _create(path, {"pid": os.getpid(), "host": socket.gethostname()}):
            return True
        if claim_holder(path).get("alive") is not False:
            return False
        path.unlink(missing_ok=True)  # its holder died (kill -9): take the image over
    return False


def claim(run_dir: str | Path, keep_own: bool = False) -> str | None:
    """Mark ``run_dir`` as this process's run. A folder that holds a finished run, or one whose
    run is still alive (or on another host), is refused; one whose run failed (``error.txt``) or
    died (its pid is gone on this host, e.g. after ``kill -9``) is taken over, which is returned
    as a note to log. ``keep_own``: a claim this process already holds is kept (the run
    continuing what ``sinterlab-train`` claimed before Hydra wrote into the folder)."""
    run_dir = Path(run_dir)
    other = holder(run_dir)
    if (run_dir / METRICS).is_file():
        raise FolderTaken(f"{run_dir}: folder holds a finished run ({METRICS}); give this run "
                          "its own folder (hydra.run.dir=...) or delete the old one")
    if keep_own and other.get("pid") == os.getpid() and other.get("host") == socket.gethostname():
        return None
    where = (f"pid {other.get('pid', '?')} on {other.get('host', '?')}, started "
             f"{other.get('started', '?')}")
    note = None
    if failure(run_dir):  # a failed or interrupted run left no results: the same command resumes
        _set_aside(run_dir, CLAIM)
        _set_aside(run_dir, ERROR)
    elif other and other["alive"] is False:
        _set_aside(run_dir, CLAIM)
        note = (f"{run_dir}: the run that held this folder ({where}) is no longer running "
                "(killed?); this run takes the folder over")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise write_failure(run_dir, err) from err
    me = {"pid": os.getpid(), "host": socket.gethostname(),
          "started": datetime.now().isoformat(timespec="seconds")}
    if not _create(run_dir / CLAIM, me, CLAIM_BYTES):
        other = holder(run_dir)
        where = (f"pid {other.get('pid', '?')} on {other.get('host', '?')}, started "
                 f"{other.get('started', '?')}")
        state = ("still running" if other.get("alive") else
                 f"on another host: if it is dead there, delete {run_dir / CLAIM} to reuse "
                 "the folder")
        raise FolderTaken(
            f"{run_dir}: folder already holds another run ({where}; {state}); give this run "
            "its own folder (hydra.run.dir=...)")
    return note


def incomplete(run_dir: str | Path) -> str | None:
    """Why a claimed run folder has neither results nor ``error.txt`` (None if it has one):
    the run is still going, died, or ran on another host."""
    run_dir = Path(run_dir)
    if (run_dir / METRICS).is_file() or failure(run_dir):
        return None
    other = holder(run_dir)
    if not other:
        return None
    where = f"pid {other.get('pid', '?')} on {other.get('host', '?')}"
    return {True: f"still running ({where})", None: f"no result yet ({where}, another host)",
            False: f"died without a result ({where} is gone); run its command again to "
                   "redo it in this folder"}[other["alive"]]


def record_failure(run_dir: str | Path, message: str) -> Path | None:
    """Leave the reason a run stopped in its folder (``error.txt``); where that cannot be
    written (the disk is full), its first line in the room the run's claim reserved. Returns
    the file, or None when neither could be written: never raises."""
    run_dir = Path(run_dir)
    try:
        return write_text(run_dir / ERROR, message.rstrip() + "\n")
    except WriteFailed:
        pass
    path = run_dir / CLAIM
    first = (message.splitlines() or [""])[0]
    try:  # overwritten in place: no block to allocate, the size does not change
        with open(path, "r+b") as handle:
            size = os.fstat(handle.fileno()).st_size
            record = json.loads(handle.read())

            def encoded(reason: str) -> bytes:
                return json.dumps(record | {"stopped": reason}, ensure_ascii=False).encode()

            data = encoded(first)
            while len(data) > size and len(first) > 3:  # the end of a long line goes
                first = first[:max(len(first) - (len(data) - size) - 3, 0)] + "..."
                data = encoded(first)
            if len(data) > size:
                return None
            handle.seek(0)
            handle.write(data.ljust(size))
        return path
    except (OSError, ValueError, TypeError):
        return None


def failure(run_dir: str | Path) -> str | None:
    """The first line of a failed run's ``error.txt`` (or the reason its claim holds, where
    error.txt could not be written); None when the run did not fail."""
    path = Path(run_dir) / ERROR
    if (Path(run_dir) / METRICS).is_file():
        return None
    if not path.is_file():
        return claim_holder(Path(run_dir) / CLAIM).get("stopped")
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
