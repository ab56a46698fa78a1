"""Which patch augmentation: the paper's arbitrary rotation (180), quarter turns (dihedral) or
flips only? One `sinterlab-train` run per setting on the same data and folds (the fold
assignment depends on the descriptor and protocol.split_seed only), scored by model=auto over
the two fast scikit-learn candidates (PCA + logistic regression on patches, logistic regression
on image means; minutes on a CPU, the heads would take an hour per setting), and a Markdown
table of every model's pooled image accuracy and ranked probability score with its interval.

    .venv/bin/python experiments/rotation_study.py DESCRIPTOR OUT_DIR [hydra overrides...]

The experiment is `demo` unless an override names another (e.g. `experiment=five_class`).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = {"180 (paper)": ["preprocess.patches.rotation=180"],
            "dihedral": ["preprocess.patches.rotation=dihedral"],
            "flips only": ["preprocess.patches.rotation=0"]}
RUN = ["model=auto", *(f"~model.candidates.{name}" for name in (
    "mlp", "linear", "mlp_small", "corn", "level_value", "sk_logreg")),
       "evaluation.contrast.enabled=false", "evaluation.gallery.enabled=false",
       "trainer.enable_progress_bar=false"]


def cell(c: dict) -> str:
    return f"{c['value']:.3f} [{c['low']:.3f}, {c['high']:.3f}]"


def main(descriptor: str, out: str, *overrides: str) -> None:
    out_dir = Path(out)
    train = Path(sys.executable).parent / "sinterlab-train"
    rows = []
    for name, setting in SETTINGS.items():
        run_dir = out_dir / name.split()[0]
        started = time.perf_counter()
        experiment = [] if any(o.startswith("experiment=") for o in overrides) else \
            ["experiment=demo"]
        subprocess.run([str(train), *experiment, *RUN, *setting,
                        f"data.descriptor={descriptor}", f"hydra.run.dir={run_dir}",
                        *overrides], check=True, cwd=ROOT)
        wall = time.perf_counter() - started
        metrics = json.loads((run_dir / "metrics.json").read_text())
        pooled = metrics["cv"]["pooled"]
        rows.append((name, wall, {m: cell(levels["image"]["accuracy"])
                                  for m, levels in pooled.items()},
                     metrics["selection"]["final"]["point"],
                     min(metrics["selection"]["cv_scores"].values()),
                     metrics["selection"]["score"]))
    models = list(rows[0][2])
    lines = ["| rotation | " + " | ".join(models)
             + " | final model | its CV score | wall s |",
             "|---|" + "---|" * (len(models) + 3)]
    for name, wall, cells, final, score, kind in rows:
        lines.append(f"| {name} | " + " | ".join(cells[m] for m in models)
                     + f" | {final} | {kind} {score:.4f} | {wall:.0f} |")
    table = "\n".join(lines) + "\n"
    (out_dir / "rotation_study.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main(*sys.argv[1:])
