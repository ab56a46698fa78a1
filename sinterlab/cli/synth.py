"""``sinterlab-synth``: write a synthetic SEM data set (images, descriptor.csv, truth.csv).

    sinterlab-synth out=data/demo
    sinterlab-synth preset=paper out=data/paper seed=1 workers=2

``preset=X`` is short for the Hydra override ``synth/preset=X``. Exit status 74: a file could
not be written (one line naming it and the cause).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import hydra
from hydra.utils import to_absolute_path
from omegaconf import DictConfig

from sinterlab.cli import CONF_DIR, one_line_errors, stopped
from sinterlab.config_schema import SYNTH, check_config
from sinterlab.errors import WRITE_FAILED, WriteFailed


def _alias_preset(argv: list[str]) -> list[str]:
    out = []
    for a in argv:
        for prefix in ("preset=", "+preset="):
            if a.startswith(prefix):
                a = "synth/preset=" + a[len(prefix) :]
        out.append(a)
    return out


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="synth")
def _app(cfg: DictConfig) -> None:
    from sinterlab.synth.generate import generate_dataset

    with one_line_errors("sinterlab-synth"):
        check_config(cfg, SYNTH)
    out = Path(to_absolute_path(str(cfg.out)))
    t0 = time.perf_counter()
    try:
        desc = generate_dataset(cfg, out)
    except WriteFailed as err:
        print(f"sinterlab-synth: {stopped(err)}", file=sys.stderr)
        sys.exit(WRITE_FAILED)
    total = time.perf_counter() - t0
    n = generate_dataset.last_stats.get("n_images", 0)
    print(f"preset={cfg.get('preset')} seed={cfg.seed}: {n} images -> {out}")
    print(f"descriptor: {desc}")
    print(f"generation time: {total:.1f} s ({n / max(total, 1e-9):.2f} images/s)")


def main() -> None:
    sys.argv = [sys.argv[0], *_alias_preset(sys.argv[1:])]
    _app()


if __name__ == "__main__":
    main()
