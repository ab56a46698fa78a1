"""Every file sinterlab writes goes through here: atomic writes (a temp file in the same folder,
then ``os.replace``), and a failed write named in one line.

A killed run never leaves a half-written file behind, so caches and reports stay valid. Files get
the permissions the user's umask gives a new file (``mkstemp`` alone makes them 0600), so a lab
group can share one cache folder. A write that fails (disk full, quota, file size limit,
permission) raises :class:`~sinterlab.errors.WriteFailed` naming the file and the cause, never a
bare ``OSError`` without a file name; files written by a library as it goes (TensorBoard's event
files) are named through :func:`writing`.
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
import threading
from collections.abc import Callable
from contextlib import contextmanager, suppress
from pathlib import Path

from sinterlab.errors import WriteFailed


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


#: permissions of a file created the ordinary way (``open(path, "w")``) under this umask
FILE_MODE = 0o666 & ~_umask()

#: what a failed write's errno means, and what to do about it
CAUSES = {
    errno.ENOSPC: ("disk full: no space left on the device",
                   "free space on that disk, or write elsewhere"),
    errno.EDQUOT: ("disk quota exceeded",
                   "free space within your quota or ask for a larger one, or write elsewhere"),
    errno.EFBIG: ("file too large: over this process's file size limit (ulimit -f) or the file "
                  "system's", "raise the limit (ulimit -f unlimited), or write to another disk"),
    errno.EACCES: ("permission denied", "make the folder writable for you, or write elsewhere"),
    errno.EPERM: ("operation not permitted",
                  "make the folder writable for you, or write elsewhere"),
    errno.EROFS: ("read-only file system", "write to a writable disk"),
}
#: errnos that only a write gives: a library's OSError with one of them is a failed write
#: even when it names no file (EACCES and EPERM also come from reading)
WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS})


def write_failure(path: str | Path, err: OSError) -> WriteFailed:
    """The one-line :class:`WriteFailed` of ``err``, raised writing ``path``."""
    cause, fix = CAUSES.get(err.errno, (None, "check the disk and the folder"))
    if cause is None:
        cause = (err.strerror or type(err).__name__).lower()
    return WriteFailed(path, cause, fix)


def failed_write(err: BaseException) -> OSError | None:
    """The OSError of a failed write behind ``err`` (itself, or what it was raised from or
    during: libraries wrap it, Lightning's logger in a ValueError), None when there is none."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno in WRITE_ERRNOS:
            return err
        err = err.__cause__ or err.__context__
    return None


@contextmanager
def writing(path: str | Path):
    """Within the block a library writes ``path`` (a file or the folder of its files) its own
    way: a failed write there (:data:`WRITE_ERRNOS`, however the library wrapped it) raises
    :class:`WriteFailed` naming the file the error names, else ``path``."""
    try:
        yield
    except WriteFailed:
        raise
    except Exception as err:
        cause = failed_write(err)
        if cause is None:
            raise
        raise write_failure(cause.filename or path, cause) from err


@contextmanager
def atomic_path(path: str | Path, suffix: str = ""):
    """Yield a temporary path next to ``path``; rename it onto ``path`` if the block succeeds.
    Any OSError on the way (the block's writes included) raises :class:`WriteFailed`."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or path.suffix,
                                   dir=path.parent)
        os.close(fd)
        yield Path(tmp)
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except OSError as err:
        raise write_failure(path, err) from err
    except Exception as err:  # a writer that wrapped the OSError of its write
        cause = failed_write(err)
        if cause is None:
            raise
        raise write_failure(path, cause) from err
    finally:
        if tmp is not None and os.path.exists(tmp):
            with suppress(OSError):
                os.remove(tmp)


def write_with(path: str | Path, writer: Callable[[Path], object]) -> Path:
    """Call ``writer(tmp_path)`` and move the result onto ``path`` atomically."""
    with atomic_path(path) as tmp:
        writer(tmp)
    return Path(path)


def write_bytes(path: str | Path, data: bytes) -> Path:
    return write_with(path, lambda tmp: tmp.write_bytes(data))


def write_text(path: str | Path, text: str) -> Path:
    return write_with(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_json(path: str | Path, obj: object) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=json_default) + "\n")


def json_default(value: object) -> object:
    """numpy scalars/arrays and paths in metrics dicts."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def quiet_thread_write_failures() -> None:
    """A library's writer thread that dies of a failed write (TensorBoard's) prints no
    traceback: the failure comes back to the main thread, which names it (:func:`writing`)."""
    default = threading.excepthook

    def hook(args: threading.ExceptHookArgs) -> None:
        if args.exc_value is None or failed_write(args.exc_value) is None:
            default(args)

    if getattr(threading.excepthook, "__module__", None) != __name__:
        threading.excepthook = hook
