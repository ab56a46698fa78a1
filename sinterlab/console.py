"""A quiet console with the whole story in the log file: one line per stage with its wall time on
screen, and the libraries' banners, tips and known-harmless warnings in ``<task>.log`` only.

Lightning attaches its own stream handler when it is imported before logging is configured
(always, here: Hydra configures logging later), so its records never reach the log file and
print unformatted. :func:`route_library_logs` hands them to the root logger instead; the
console handler's :class:`ConsoleFilter` (``conf/hydra/default.yaml``) then keeps what a user
needs on screen.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from sinterlab.atomic import write_failure

log = logging.getLogger("sinterlab")

#: libraries whose INFO lines (accelerator banners, tips, "Seed set to 0", "`Trainer.fit`
#: stopped") are detail for the log file, not news for the console
CHATTY = ("lightning", "pytorch_lightning", "torch", "timm", "openvino", "onnxruntime",
          "hydra", "matplotlib", "PIL")

#: warnings that are harmless here, kept out of the console (the log file keeps them):
HARMLESS = re.compile("|".join([
    # lightning's pytree helper, deprecated by torch; not our code, no effect on results
    r"isinstance\(treespec, LeafSpec\)` is deprecated",
    # the extraction loader yields one whole image per batch (batch_size=None): no indices
    r"Couldn't infer the batch indices",
    # heads log per epoch, not per step: a short epoch is not a problem
    r"smaller than the logging interval",
    # each ensemble fit logs to its own TensorBoard version; folders exist from earlier fits
    r"Checkpoint directory .* exists and is not empty",
    # model=auto's final refit trains on every group, with no validation rows by design
    r"You defined a `validation_step` but have no `val_dataloader`",
    # the extraction and head loaders run in the main process on purpose (measured faster)
    r"does not have many workers which may be a bottleneck",
]))


class ConsoleFilter(logging.Filter):
    """Console only: drop the chatty libraries' records below WARNING, known-harmless warnings
    and records logged with ``extra={"file_only": True}``."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "file_only", False):  # already said on screen in other words
            return False
        root = record.name.split(".")[0]
        if record.levelno < logging.WARNING and root in CHATTY:
            return False
        return not (record.levelno <= logging.WARNING and HARMLESS.search(record.getMessage()))


class LogFile(logging.FileHandler):
    """The command's log file (``<task>.log``). A record it cannot write (disk full, quota)
    costs one warning on screen naming the file, and the file takes no more records, instead
    of logging's traceback for every record after it."""

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 (logging's name)
        err = sys.exc_info()[1]
        if not isinstance(err, OSError) or self.stream is None:
            super().handleError(record)
            return
        print(f"warning: {write_failure(self.baseFilename, err)}; the log file stops here",
              file=sys.stderr)
        self.close()
        self.emit = lambda record: None  # type: ignore[method-assign]


def on_terminal() -> bool:
    """Whether a progress bar would reach a person: Lightning's bars write to stdout, and in a
    log file or a pipe every frame they draw stays behind."""
    return sys.stdout.isatty()


def route_library_logs() -> None:
    """Send Lightning's records (and Python warnings) through the root logger's handlers, so
    the console filter applies and the log file keeps them."""
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning",
                 "lightning_fabric"):
        library = logging.getLogger(name)
        for handler in list(library.handlers):
            library.removeHandler(handler)
        library.propagate = True
    logging.captureWarnings(True)


@dataclass
class StageTiming:
    """One stage of a run: its name, its depth (a nested stage has a depth one more than its
    parent's) and its wall time (None while it runs, or where an error stopped it)."""

    stage: str
    depth: int
    wall_s: float | None = None


#: the stages of the run being recorded (:func:`recorded_stages`), None when nobody records
_stages: list[StageTiming] | None = None
_depth = 0


@contextmanager
def recorded_stages() -> Iterator[list[StageTiming]]:
    """Record every :func:`stage` opened inside, in the order the stages began."""
    global _stages
    outer, _stages = _stages, []
    try:
        yield _stages
    finally:
        _stages = outer


@contextmanager
def stage(name: str) -> Iterator[StageTiming]:
    """One console line per stage, with its wall time at the end (the start is in the log
    file, for a run that stops inside it). Yields the stage's record: its ``wall_s`` is set
    when the stage ends."""
    global _depth
    started = time.perf_counter()
    log.info("%s ...", name, extra={"file_only": True})
    entry = StageTiming(name, _depth)
    if _stages is not None:
        _stages.append(entry)
    _depth += 1
    try:
        yield entry
    finally:
        _depth -= 1
    entry.wall_s = round(time.perf_counter() - started, 2)
    log.info("%s: done in %.1f s", name, entry.wall_s)
