"""Console scripts: sinterlab-train, -predict, -synth, -report, -explain, -extract, -plan.

This package imports the standard library, OmegaConf and sinterlab's first layer only: each
script imports what it uses, so ``sinterlab-report``, ``-synth`` and ``-plan --help`` load no
torch."""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from pathlib import Path

from omegaconf import OmegaConf

from sinterlab.atomic import quiet_thread_write_failures, writing
from sinterlab.console import route_library_logs
from sinterlab.errors import WRITE_FAILED, SinterlabError, WriteFailed
from sinterlab.runs import RunInterrupted, sigint_raises_interrupted

#: the Hydra config folder at the repository root
CONF_DIR = Path(__file__).resolve().parents[2] / "conf"

# `${cwd:}` in conf/paths: the folder a command started in, usable before Hydra's own config
# exists (hydra.sweep.dir is resolved before `${hydra:runtime.cwd}` is available)
OmegaConf.register_new_resolver("cwd", os.getcwd, replace=True)

#: a failed write whose library named no file (sinterlab's own writes always name theirs)
UNNAMED = "a file the library writing it did not name"


def stopped(err: WriteFailed) -> str:
    """The line a command stopped by a failed write ends with."""
    return f"stopped: {err}, then run the same command again"


@contextmanager
def one_line_errors(prog: str):
    """Bad input: its one line on screen, exit 2; a failed write (disk full): the file and the
    cause, exit 74; Ctrl-C: what is cached, exit 130."""
    route_library_logs()
    quiet_thread_write_failures()
    try:
        with sigint_raises_interrupted(), writing(UNNAMED):
            yield
    except SinterlabError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        sys.exit(2)
    except WriteFailed as err:
        print(f"{prog}: {stopped(err)}", file=sys.stderr)
        sys.exit(WRITE_FAILED)
    except RunInterrupted as err:
        print(f"{prog}: {err.describe()}", file=sys.stderr)
        sys.exit(130)
