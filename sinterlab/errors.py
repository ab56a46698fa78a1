"""The exception types users see, each a one-line message naming the file and the fix, and the
exit status each ends a command with."""

from pathlib import Path

#: exit status of a command stopped because a file could not be written (disk full, quota, file
#: size limit, permission): EX_IOERR of sysexits.h, apart from bad input (2), Ctrl-C (130) and a
#: bug (1, with its traceback)
WRITE_FAILED = 74


class SinterlabError(Exception):
    """Bad input or configuration; the message says which file or key, and what to do."""


class WriteFailed(Exception):
    """A file could not be written: neither bad input nor a bug. The message names the file,
    the cause (disk full, quota, file size limit, permission) and what to do."""

    def __init__(self, path: str | Path, cause: str, fix: str):
        super().__init__(f"could not write {path} ({cause}); {fix}")
        self.path, self.cause, self.fix = Path(path), cause, fix

    def __reduce__(self):  # from a worker process, with its fields
        return type(self), (self.path, self.cause, self.fix)
