"""``sinterlab-explain run=RUN_DIR images=[a.tif,b.tif]``: prediction maps and Grad-CAM.

Exit status: 0 every image explained; 1 some images could not be read (named on screen);
2 bad input, nothing written; 74 a file could not be written (one line naming it and the
cause); 130 Ctrl-C.
"""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path

import hydra
from omegaconf import DictConfig

from sinterlab.cli import CONF_DIR, one_line_errors
from sinterlab.config_schema import EXPLAIN, check_config
from sinterlab.explain.write import explain_images
from sinterlab.predict import collect_images, load_run_model, missing_images, output_path

PROG = "sinterlab-explain"


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="explain")
def main(cfg: DictConfig) -> None:
    with one_line_errors(PROG):
        check_config(cfg, EXPLAIN)
        stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S_%f")
        out = output_path(cfg.out, Path(cfg.run).expanduser().resolve() / "explain" / stamp,
                          cfg.overwrite)
        model = load_run_model(cfg)
        asked = collect_images(cfg.images, cfg.descriptor, cfg.suffixes)
        missing = missing_images(asked)
        paths = [p for p in asked if str(p) not in missing]
        _, written, bad = explain_images(model, paths, out, cfg.stride, int(cfg.cam_patches))
        bad = missing | bad
    for path in written:
        print(path)
    for image, reason in bad.items():
        print(f"{PROG}: not explained: {image}: {reason}", file=sys.stderr)
    if bad:
        sys.exit(1)


if __name__ == "__main__":
    main()
