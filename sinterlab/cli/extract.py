"""``sinterlab-extract``: fill the embedding and measures cache for a descriptor's images, or a
deterministic shard of them (``shard=i shards=n``), as a Hydra app: a multirun over shards with a
launcher (``hydra/launcher=slurm``, ``submitit_local``) is many jobs filling one shared cache.

The descriptor and config are checked as a training run checks them (the same preprocessing,
physical scale and backbone key the same entries). An image another live job is extracting is
left to it; a killed job's images are extracted by the next run of the same command.

Exit status: 0 done; 2 bad input; 74 a file could not be written (disk full, quota: one line
naming it and the cause); 130 Ctrl-C (what was extracted stays cached).
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from sinterlab.cli import CONF_DIR, one_line_errors
from sinterlab.config_schema import EXTRACT, check_config
from sinterlab.study.extraction import extract_shard

PROG = "sinterlab-extract"


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="extract")
def main(cfg: DictConfig) -> None:
    with one_line_errors(PROG):
        check_config(cfg, EXTRACT)
        stats = extract_shard(cfg)
    print(f"{PROG}: shard {cfg.shard} of {cfg.shards}: {stats['images']} images, "
          f"{stats['from_cache']} already cached, {stats['extracted']} extracted"
          + (f", {stats['left_to_others']} left to other jobs" if stats.get("left_to_others")
             else "") + f" ({stats['folder']})")


if __name__ == "__main__":
    main()
