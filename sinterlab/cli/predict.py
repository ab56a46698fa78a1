"""``sinterlab-predict run=RUN_DIR images=[a.tif,b.tif]``: predict with a finished run.

Exit status: 0 every image predicted; 1 predictions written, but some images could not be read
(their rows carry the reason in ``error``); 2 bad input, nothing predicted (``strict=true``
makes one bad image stop everything); 74 a file could not be written (disk full, quota, file
size limit, permission: one line naming it and the cause); 130 Ctrl-C (embeddings already
extracted stay cached).
"""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path

import hydra
from omegaconf import DictConfig

from sinterlab.atomic import write_with
from sinterlab.cli import CONF_DIR, one_line_errors
from sinterlab.config_schema import PREDICT, check_config


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="predict")
def main(cfg: DictConfig) -> None:
    with one_line_errors("sinterlab-predict"):
        check_config(cfg, PREDICT)
        # the model's stack (torch, timm: seconds) once the configuration is known good
        from sinterlab.explain.write import check_explainable, explain_images
        from sinterlab.predict import load_run_model, output_path, predict
        stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S_%f")
        run_dir = Path(cfg.run).expanduser().resolve()
        # before any backbone time: an existing out= is refused, not found out at the end
        out = output_path(cfg.out, run_dir / "predictions" / f"{stamp}.csv", cfg.overwrite)
        model = load_run_model(cfg)
        if cfg.maps:
            check_explainable(model)
        table, _ = predict(cfg, model)
        write_with(out, lambda p: table.to_csv(p, index=False))
        if cfg.maps:
            good = [p for p, e in zip(table["image"], table["error"], strict=True) if not e]
            written = explain_images(model, good, out.parent / f"{out.stem}_maps", cfg.stride,
                                     int(cfg.cam_patches), progress=False)[1]
    shown = table.assign(image=[Path(p).name for p in table["image"]])
    print(shown.to_string(index=False))
    print(f"predictions: {out}")
    if cfg.maps:
        print(f"maps: {written[-1].parent}")
    failed = table[table["error"] != ""]
    for image, reason in zip(failed["image"], failed["error"], strict=True):
        print(f"sinterlab-predict: not predicted: {image}: {reason}", file=sys.stderr)
    if len(failed):
        print(f"sinterlab-predict: {len(failed)} of {len(table)} images not predicted (see the "
              f"error column of {out})", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
