"""`make bench`: extraction and head-training speed through sinterlab vs plain loops.

Part one: patches/s of ConvNeXt-T and EfficientNet-Lite0 per inference runtime (eager torch in
NCHW and NHWC, ONNX Runtime, OpenVINO), alone on ready patch tensors and through sinterlab's
whole extraction (reading, cutting, Lightning predict, cache writes), against the best naive timm
loop in the same process; GFLOP/s against a measured SGEMM figure; patch-cutting cost; 0 vs 1
cutting workers; cache-hit time.
Part two: the head ensemble of cross-validation (folds x seeds members, batch 32) on 12,000 rows
of 768-d (ConvNeXt-T) and 1280-d (EfficientNet-Lite0) embeddings, 5 classes: its step divided by
the members against one head's step in a plain loop (per-member cost), the same ensemble through
Lightning against a plain loop, achieved GFLOP/s beside the SGEMM figure, and a profile.
Part three: the wall time of `experiment=five_class model=auto` on the paper preset, split into
the run's stages (needs data/paper and its cached embeddings).
Part four: patches/s of each representation (features.representation final, stages, both:
the final embedding, stage statistics, both from one pass) per backbone and runtime, alone and
through sinterlab's extraction.
Part five (startup): the wall time of starting each console script (``--help``) and of importing
the training stack, against importing torch, Lightning and timm alone, interleaved round by round
in fresh processes (median of BENCH_STARTUP_ROUNDS, default 7). Results are appended to
experiments/benchmarks.md.

Sizes come from the environment so that a quick check and a full run use the same code:
BENCH_IMAGES (images per backbone, default 8), BENCH_EPOCHS (head epochs, default 3),
BENCH_BACKBONES (comma list, default convnext_tiny,tf_efficientnet_lite0), BENCH_FOLDS (5),
BENCH_SEEDS (3), BENCH_REPEATS (head timings: best of 3), BENCH_PARTS (comma list of
extraction,head,cv,representation,startup; default all), BENCH_DEMO (the demo data's folder, default
data/demo, generated when absent).
Random-init weights are used for timing (speed does not depend on the weights' values).
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch.utils.flop_counter import FlopCounterMode

from sinterlab.data.patches import PatchSampler
from sinterlab.data.preprocess import preprocess_image
from sinterlab.features.backbone import build_backbone
from sinterlab.features.cache import EmbeddingCache, file_sha256
from sinterlab.features.extract import ImageRef, cache_settings, extract_to_cache, patch_spec
from sinterlab.features.representation import FINAL, KINDS, Representation
from sinterlab.features.runtime import build_runner
from sinterlab.models.batches import GroupBatches, GroupRows
from sinterlab.models.head import HeadEnsemble
from sinterlab.models.mlp import MemberMLP

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
OUT = ROOT / "experiments" / "benchmarks.md"
N_IMAGES = int(os.environ.get("BENCH_IMAGES", 8))
EPOCHS = int(os.environ.get("BENCH_EPOCHS", 3))
BACKBONES = os.environ.get("BENCH_BACKBONES", "convnext_tiny,tf_efficientnet_lite0").split(",")
FOLDS = int(os.environ.get("BENCH_FOLDS", 5))
SEEDS = int(os.environ.get("BENCH_SEEDS", 3))
PARTS = os.environ.get("BENCH_PARTS",
                       "extraction,head,cv,representation,startup").split(",")
STARTUP_ROUNDS = int(os.environ.get("BENCH_STARTUP_ROUNDS", 7))
#: what the start-up part times: name -> the Python code a fresh process runs
STARTUP = {"import torch": "import torch",
           "import torch, lightning.pytorch, timm": "import torch, lightning.pytorch, timm",
           "import sinterlab.cli.train": "import sinterlab.cli.train",
           "import sinterlab.study.training (the training code)":
               "import sinterlab.study.training",
           **{f"sinterlab-{name} --help": f"import sys; sys.argv = ['sinterlab-{name}', "
              f"'--help']; from sinterlab.cli.{name} import main; main()"
              for name in ("report", "synth", "plan", "predict", "train")}}
DEMO = Path(os.environ.get("BENCH_DEMO", ROOT / "data" / "demo"))
REPEATS = int(os.environ.get("BENCH_REPEATS", 3))
#: ONNX exports of the random-init backbones timed here (made once, kept between runs)
EXPORTS = Path(tempfile.gettempdir()) / "sinterlab-bench-exports"


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text()
                .splitlines() if line.startswith("model name")), platform.processor())
    return (f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} "
            f"({torch.get_num_threads()} threads)")


def sgemm_gflops(n: int = 2048, reps: int = 10) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.perf_counter() - start) / 1e9


def flops_per_patch(model: torch.nn.Module, size: int) -> float:
    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        model(torch.zeros(1, 3, size, size))
    return counter.get_total_flops()


def demo_images() -> list[Path]:
    descriptor = DEMO / "descriptor.csv"
    if not descriptor.is_file():
        subprocess.run([str(ROOT / ".venv" / "bin" / "sinterlab-synth"), "preset=demo",
                        f"out={descriptor.parent}"], check=True)
    return sorted((descriptor.parent / "images").glob("*.tif"))[:N_IMAGES]


def exports(backbone) -> Path:
    return EXPORTS / f"{backbone.name}-{backbone.weights.sha256[:12]}"


def loop(run, patches, batch_size: int) -> float:
    """Patches/s of ``run`` over ready patch tensors in batches (after one warm-up batch)."""
    with torch.inference_mode():
        run(patches[:batch_size])
        start = time.perf_counter()
        for chunk in patches.split(batch_size):
            run(chunk)
    return len(patches) / (time.perf_counter() - start)


def naive_loop(model, patches, batch_size: int, fmt) -> float:
    """A plain timm forward loop in memory format ``fmt``."""
    model = model.to(memory_format=fmt)
    return loop(lambda c: model(c.contiguous(memory_format=fmt)), patches, batch_size)


def cut_patches(refs, preprocess, sampler) -> tuple[torch.Tensor, float]:
    """Every image's patches, and the milliseconds per patch of cutting them (after reading,
    cropping and equalizing, which are timed apart)."""
    images = [(preprocess_image(ref.path, preprocess)[0], ref.sha) for ref in refs]
    start = time.perf_counter()
    tensors = [sampler.cut(image, sampler.params(*image.shape, sha)) for image, sha in images]
    patches = torch.cat(tensors)
    return patches, 1000 * (time.perf_counter() - start) / len(patches)


def through_sinterlab(refs, backbone, sampler, spec, preprocess, features, runtime: str,
                      workers: int, representation: Representation = FINAL,
                      ) -> tuple[float, float]:
    """Seconds to extract ``refs`` into a fresh cache the way a run does (reading, cropping,
    equalizing, cutting, Lightning's predict loop, cache writes; the ONNX export excluded),
    and seconds for the cache hit that follows (hashing, finding, loading every entry)."""
    features = OmegaConf.merge(features, {"runtime": runtime, "num_workers": workers,
                                          "cache_dir": tempfile.mkdtemp(prefix="sinterlab-")})
    cache = EmbeddingCache(features.cache_dir, backbone.name, backbone.weights.sha256,
                           cache_settings(preprocess, spec, backbone, runtime, representation))
    runner = build_runner(runtime, backbone, exports(backbone), spec.output_size,
                          representation)  # exported once
    start = time.perf_counter()
    extract_to_cache(refs, cache, runner, sampler, preprocess, features, progress=False)
    extract_s = time.perf_counter() - start
    start = time.perf_counter()
    hits = [ImageRef(r.path, file_sha256(r.path)) for r in refs]
    assert extract_to_cache(hits, cache, runner, sampler, preprocess, features,
                            progress=False)["extracted"] == 0
    [cache.load(r.sha) for r in hits]
    hit_s = time.perf_counter() - start
    shutil.rmtree(features.cache_dir)
    return extract_s, hit_s


def bench_extraction(name: str, images: list[Path], peak: float) -> list[dict]:
    """Per runtime (torch in both memory formats, ONNX Runtime, OpenVINO): the runtime alone on
    ready patch tensors, and sinterlab's whole extraction with it, against the best naive torch
    loop; with 0 and 1 patch-cutting workers for the fastest runtime."""
    preprocess = OmegaConf.load(CONF / "preprocess" / "default.yaml")
    features = OmegaConf.load(CONF / "features" / "default.yaml")
    features.accelerator = "cpu"
    backbone = build_backbone(name, pretrained=False)
    spec = patch_spec(preprocess, backbone)
    sampler = PatchSampler(spec, backbone.mean, backbone.std)
    refs = [ImageRef(str(p), file_sha256(p)) for p in images]
    patches, cut_ms = cut_patches(refs, preprocess, sampler)
    gflop = flops_per_patch(backbone.model, spec.output_size) / 1e9
    batch = int(features.batch_size)
    naive = {"NCHW": naive_loop(backbone.model, patches, batch, torch.contiguous_format),
             "NHWC": naive_loop(backbone.model, patches, batch, torch.channels_last)}
    best_naive = max(naive.values())
    rows = []
    for runtime, fmt in (("torch", "NCHW"), ("torch", "NHWC"), ("onnxruntime", "-"),
                         ("openvino", "-")):
        backbone.channels_last = fmt == "NHWC"
        alone = naive[fmt] if runtime == "torch" else loop(
            build_runner(runtime, backbone, exports(backbone), spec.output_size), patches, batch)
        extract_s, hit_s = through_sinterlab(refs, backbone, sampler, spec, preprocess,
                                             features, runtime, int(features.num_workers))
        ours = len(patches) / extract_s
        rows.append({"backbone": name, "runtime": runtime, "format": fmt, "gflop": gflop,
                     "patches": len(patches), "alone": alone, "sinterlab": ours,
                     "vs_naive": ours / best_naive, "gflops": alone * gflop,
                     "share": alone * gflop / peak, "extract_s": extract_s, "hit_s": hit_s,
                     "cut_ms": cut_ms, "workers": int(features.num_workers)})
    fastest = max(rows, key=lambda r: r["sinterlab"])
    other = 1 - fastest["workers"]
    backbone.channels_last = fastest["format"] == "NHWC"
    extract_s, _ = through_sinterlab(refs, backbone, sampler, spec, preprocess, features,
                                     fastest["runtime"], other)
    rows.append(fastest | {"workers": other, "sinterlab": len(patches) / extract_s,
                           "vs_naive": len(patches) / extract_s / best_naive,
                           "extract_s": extract_s, "hit_s": float("nan")})
    return rows


def bench_representations(name: str, images: list[Path]) -> list[dict]:
    """Per representation (conf/features/default.yaml's stages and statistics) and runtime
    (torch in NHWC, ONNX Runtime, OpenVINO): patches/s of its network alone on ready patch
    tensors, and through sinterlab's whole extraction; each against the final embedding under
    the same runtime."""
    preprocess = OmegaConf.load(CONF / "preprocess" / "default.yaml")
    features = OmegaConf.load(CONF / "features" / "default.yaml")
    features.accelerator = "cpu"
    backbone = build_backbone(name, pretrained=False, channels_last=True)
    spec = patch_spec(preprocess, backbone)
    sampler = PatchSampler(spec, backbone.mean, backbone.std)
    refs = [ImageRef(str(p), file_sha256(p)) for p in images]
    patches, _ = cut_patches(refs, preprocess, sampler)
    batch, rows = int(features.batch_size), []
    through_sinterlab(refs[:1], backbone, sampler, spec, preprocess, features, "torch",
                      int(features.num_workers))  # warm-up: the first Trainer's start-up
    for runtime in ("torch", "onnxruntime", "openvino"):
        for kind in KINDS:
            representation = Representation.from_config(
                OmegaConf.merge(features, {"representation": kind}))
            runner = build_runner(runtime, backbone, exports(backbone), spec.output_size,
                                  representation)
            alone = loop(runner, patches, batch)
            extract_s, _ = through_sinterlab(refs, backbone, sampler, spec, preprocess,
                                             features, runtime, int(features.num_workers),
                                             representation)
            rows.append({"backbone": name, "runtime": runtime,
                         "representation": representation.describe(backbone),
                         "width": representation.width(backbone), "patches": len(patches),
                         "alone": alone, "sinterlab": len(patches) / extract_s})
        final = rows[-len(KINDS)]
        for row in rows[-len(KINDS):]:
            row["vs_final"] = row["sinterlab"] / final["sinterlab"]
    return rows


def mlp_flops_per_step(dims: list[int], batch: int) -> float:
    """Forward + backward of the linear layers: about 3 x 2 x MACs."""
    return 6 * batch * sum(a * b for a, b in zip(dims[:-1], dims[1:], strict=True))


def fake_folds(rows: int, folds: int, val_share: float = 0.1) -> list[dict]:
    """Fold f tests every folds-th row; validation is a share of the rest (timing only)."""
    out = []
    for f in range(folds):
        rest = np.setdiff1d(np.arange(rows), np.arange(f, rows, folds))
        n_val = int(len(rest) * val_share)
        out.append({"train": rest[n_val:], "val": rest[:n_val]})
    return out


def plain_head_loop(x, y, fold: dict, classes: int, epochs: int, cfg) -> float:
    """One head in a plain PyTorch loop (fused Adam, validation every epoch): seconds/step."""
    torch.manual_seed(0)
    model = MemberMLP(x.shape[1], list(cfg.hidden), cfg.dropout, True, [classes])
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay,
                           fused=True)
    loader = GroupBatches(x, y[:, None].float(), [fold["train"]], cfg.batch_size)
    xv, yv = x[fold["val"]], y[fold["val"]]
    start = time.perf_counter()
    for _ in range(epochs):
        model.train()
        for xb, yb in loader:
            loss = F.cross_entropy(model(xb[0])[0], yb[0, :, 0].long())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        model.eval()
        with torch.inference_mode():
            F.cross_entropy(model(xv)[0], yv)
    return (time.perf_counter() - start) / (epochs * loader.steps)


def make_ensemble(dim: int, classes: int, folds: int, seeds: list[int], cfg) -> HeadEnsemble:
    target = {"name": "c", "kind": "classification", "num_classes": classes,
              "class_weights": None, "loss_weight": 1.0}
    return HeadEnsemble(dim, [target], list(cfg.hidden), cfg.dropout, True, "adam", cfg.lr,
                        cfg.weight_decay, None, EPOCHS, groups=folds, seeds=seeds,
                        patience=None)


def ensemble_plain_loop(x, y, folds: list[dict], classes: int, epochs: int, cfg,
                        seeds: list[int], profile: bool = False):
    """The same HeadEnsemble stepped by hand (no Lightning): seconds/step (and a profile)."""
    pl.seed_everything(0, verbose=False)
    head = make_ensemble(x.shape[1], classes, len(folds), seeds, cfg)
    opt = head.configure_optimizers()
    yf = y[:, None].float()
    loader = GroupBatches(x, yf, [f["train"] for f in folds], cfg.batch_size)
    val = GroupRows(x, yf, [f["val"] for f in folds])

    def epoch():
        head.train()
        for xb, yb in loader:
            losses, _ = head._member_losses(head(xb), yb)
            opt.zero_grad(set_to_none=True)
            losses.sum().backward()
            opt.step()
        head.eval()
        with torch.inference_mode():
            for xv, yv, wv in val:
                head._member_losses(head(xv), yv, wv)

    table = None
    start = time.perf_counter()
    for _ in range(epochs if not profile else 0):
        epoch()
    per_step = (time.perf_counter() - start) / (epochs * loader.steps)
    if profile:
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            epoch()
        table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=10)
    return per_step, table


def ensemble_lightning(x, y, folds: list[dict], classes: int, epochs: int, cfg,
                       seeds: list[int]) -> float:
    """The ensemble through Lightning's Trainer.fit, as sinterlab trains it: seconds/step."""
    pl.seed_everything(0, verbose=False)
    head = make_ensemble(x.shape[1], classes, len(folds), seeds, cfg)
    yf = y[:, None].float()
    loader = GroupBatches(x, yf, [f["train"] for f in folds], cfg.batch_size)
    trainer = pl.Trainer(max_epochs=epochs, check_val_every_n_epoch=1, accelerator="cpu",
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=0)
    start = time.perf_counter()
    trainer.fit(head, loader, GroupRows(x, yf, [f["val"] for f in folds]))
    return (time.perf_counter() - start) / (epochs * loader.steps)


def bench_head(rows: int, classes: int, dim: int, peak: float) -> dict:
    """Per-member cost of FOLDS x SEEDS members stacked, against one head alone."""
    model = OmegaConf.load(CONF / "model" / "mlp.yaml")
    cfg = OmegaConf.merge(model.module, {"batch_size": model.batch_size})
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(rows, dim, generator=gen)
    y = torch.randint(0, classes, (rows,), generator=gen)
    folds = fake_folds(rows, FOLDS)
    seeds = list(range(SEEDS))
    members = FOLDS * SEEDS
    # best of REPEATS: the shortest time is the least disturbed by the rest of the machine
    one = min(plain_head_loop(x, y, folds[0], classes, EPOCHS, cfg) for _ in range(REPEATS))
    stacked = min(ensemble_plain_loop(x, y, folds, classes, EPOCHS, cfg, seeds)[0]
                  for _ in range(REPEATS))
    _, profile = ensemble_plain_loop(x, y, folds, classes, 1, cfg, seeds, profile=True)
    lightning = min(ensemble_lightning(x, y, folds, classes, EPOCHS, cfg, seeds)
                    for _ in range(REPEATS))
    flops = mlp_flops_per_step([dim, *cfg.hidden, classes], cfg.batch_size)
    return {"rows": rows, "dim": dim, "classes": classes, "members": members,
            "train_rows": len(folds[0]["train"]),
            "one_ms": one * 1e3, "stacked_ms": stacked * 1e3, "lightning_ms": lightning * 1e3,
            "per_member": stacked / members / one, "lightning_vs_plain": lightning / stacked,
            "one_gflops": flops / one / 1e9, "stacked_gflops": flops * members / stacked / 1e9,
            "sgemm": peak, "profile": profile,
            "epoch_s": lightning * -(-len(folds[0]["train"]) // cfg.batch_size)}


def bench_cv_run() -> dict | None:
    """Wall time of `experiment=five_class model=auto` (nested CV by sample) on the synthetic
    paper preset, embeddings from the cache (run `make sweep` or this once to fill it), split
    into the run's stages (metrics.json ``stages``); BENCH_CV_ARGS adds overrides (for
    example the sweep's `~model.candidates.mlp`)."""
    descriptor = ROOT / "data" / "paper" / "descriptor.csv"
    if not descriptor.is_file():
        return None
    from hydra import compose, initialize_config_dir

    from sinterlab.evaluation.results import jsonable
    from sinterlab.study.training import run_experiment

    run_dir = Path(tempfile.mkdtemp(prefix="sinterlab-bench-cv-"))
    extra = os.environ.get("BENCH_CV_ARGS", "").split()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=[
            "experiment=five_class", "model=auto", "backbone=efficientnet_lite0_offline",
            f"data.descriptor={descriptor}", "trainer.enable_progress_bar=false",
            "evaluation.contrast.train_head=false", f"paths.output_dir={run_dir}",
            f"paths.log_dir={run_dir / 'logs'}", f"paths.root_dir={ROOT}", *extra])
    start = time.perf_counter()
    metrics = run_experiment(cfg, run_dir)
    wall = time.perf_counter() - start
    auto = metrics.cv.pooled["auto"].image
    return {"wall_s": wall, "stages": jsonable(metrics.stages), "args": extra,
            "extracted": metrics.cache.extracted,
            "candidates": metrics.selection.candidates,
            "final": metrics.selection.final.point,
            "image_accuracy": jsonable(auto["accuracy"]),
            "image_mae": jsonable(auto.get("mae")),
            "device": "cuda" if torch.cuda.is_available() else "cpu"}


def is_training(name: str) -> bool:
    """Stages that train models (candidates of model selection, heads), as opposed to the
    statistics, baselines and figures around them."""
    return any(word in name for word in ("candidate", "outer folds of", "head training",
                                         "refitted"))


def stage_lines(cv: dict) -> list[str]:
    """The cv run's stages as a table, each with its share of the wall time; a stage above a
    quarter of it that neither trains models nor holds a stage that does is flagged."""
    stages = cv["stages"]
    lines = ["| stage | wall s | share | |", "|---|---|---|---|"]
    for i, entry in enumerate(stages):
        inside = []  # the stages nested in this one: those after it, deeper, until it ends
        for later in stages[i + 1:]:
            if later["depth"] <= entry["depth"]:
                break
            inside.append(later["stage"])
        share = (entry["wall_s"] or 0) / cv["wall_s"]
        trains = any(is_training(name) for name in [entry["stage"], *inside])
        flag = "over a quarter" if share > 0.25 and not trains else ""
        indent = "&nbsp;&nbsp;" * entry["depth"]
        lines.append(f"| {indent}{entry['stage']} | {entry['wall_s']:.1f} | {share:.0%} | "
                     f"{flag} |")
    return lines


def bench_startup() -> dict[str, float]:
    """Median wall seconds of each :data:`STARTUP` entry in a fresh interpreter, the entries
    interleaved round by round (so a slow moment of the machine falls on all of them)."""
    times: dict[str, list[float]] = {name: [] for name in STARTUP}
    for _ in range(STARTUP_ROUNDS):
        for name, code in STARTUP.items():
            started = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            times[name].append(time.perf_counter() - started)
    return {name: float(np.median(values)) for name, values in times.items()}


def append(lines: list[str]) -> None:
    """Print and append one part's lines to benchmarks.md (a later part's failure keeps it)."""
    text = "\n".join(lines) + "\n"
    print(text)
    if not OUT.exists():
        OUT.write_text("# Benchmarks\n\nAppended by `make bench` (experiments/bench.py).\n")
    with OUT.open("a") as handle:
        handle.write(text)
    lines.clear()


def main() -> None:
    peak = sgemm_gflops()
    print(f"SGEMM peak: {peak:.1f} GFLOP/s ({torch.get_num_threads()} threads)")
    lines = [f"\n## {datetime.now():%Y-%m-%d %H:%M} — {machine()}\n",
             f"Measured SGEMM (2048², fp32, {torch.get_num_threads()} threads): "
             f"**{peak:.1f} GFLOP/s**.\n"]
    if "extraction" in PARTS:
        images = demo_images()
        rows = [row for name in BACKBONES for row in bench_extraction(name, images, peak)]
        lines += [
            "### Feature extraction per runtime and memory format (224 px patches, batch "
            f"{OmegaConf.load(CONF / 'features' / 'default.yaml').batch_size}, "
            f"{N_IMAGES} demo images x 40 patches, {torch.get_num_threads()} threads)\n",
            "*alone*: the runtime over already-cut patch tensors (for torch: the naive timm "
            "loop); *sinterlab*: the whole extraction with that runtime (reading, cropping, "
            "equalizing, cutting, Lightning's predict loop, cache writes; the one-time ONNX "
            "export excluded), over the best naive torch loop of the same backbone. GFLOP/s "
            "and the share of SGEMM are the runtime's own (*alone*).\n",
            "| backbone | runtime | format | workers | alone (patches/s) | sinterlab "
            "(patches/s) | sinterlab / best naive torch | GFLOP/s | share of SGEMM | cut ms/patch "
            "| extraction s | cache hit s |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        lines += [f"| {r['backbone']} | {r['runtime']} | {r['format']} | {r['workers']} | "
                  f"{r['alone']:.1f} | {r['sinterlab']:.1f} | {r['vs_naive']:.2f}x | "
                  f"{r['gflops']:.0f} | {r['share']:.0%} | {r['cut_ms']:.2f} | "
                  f"{r['extract_s']:.1f} | "
                  f"{'—' if np.isnan(r['hit_s']) else format(r['hit_s'], '.3f')} |" for r in rows]
        append(lines)
    if "head" in PARTS:
        heads = [bench_head(12000, 5, 768, peak), bench_head(12000, 5, 1280, peak)]
        lines += [
            "", f"### Head ensemble: {FOLDS} folds x {SEEDS} seeds = {FOLDS * SEEDS} members "
            f"(D-512-256-128-5, batch 32, validation every epoch; {EPOCHS} epochs timed)\n",
            f"Best of {REPEATS} timings each. "
            "one head = one MemberMLP in a plain PyTorch loop on fold 0's training rows; "
            "stacked = the HeadEnsemble stepped in a plain loop; Lightning = the same ensemble "
            "through Trainer.fit, as sinterlab trains it. Per member = stacked step / members "
            "/ one-head step (the target is <= 0.6x).\n",
            "| rows x dim | members | one head ms/step | stacked ms/step | per member | "
            "Lightning ms/step | Lightning / plain | one head GFLOP/s | stacked GFLOP/s | SGEMM "
            "GFLOP/s | s/epoch (Lightning) |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
        lines += [f"| {r['rows']} x {r['dim']} | {r['members']} | {r['one_ms']:.2f} | "
                  f"{r['stacked_ms']:.1f} | {r['per_member']:.2f}x | {r['lightning_ms']:.1f} | "
                  f"{r['lightning_vs_plain']:.2f}x | {r['one_gflops']:.0f} | "
                  f"{r['stacked_gflops']:.0f} | {r['sgemm']:.0f} | {r['epoch_s']:.1f} |"
                  for r in heads]
        lines += ["", f"Profile of one stacked epoch ({heads[-1]['dim']}-d):\n", "```",
                  heads[-1]["profile"].strip(), "```"]
        append(lines)
    if "cv" in PARTS:
        cv = bench_cv_run()
        if cv:
            acc = cv["image_accuracy"]
            lines += ["", "### `experiment=five_class model=auto` on the paper preset (nested "
                      "5-fold CV by sample, cached EfficientNet-Lite0 embeddings, contrast "
                      "baselines only" + (f"; {' '.join(cv['args'])}" if cv["args"] else "")
                      + ")\n",
                      f"Wall time **{cv['wall_s'] / 60:.1f} min** ({cv['extracted']} images "
                      f"extracted; candidates {', '.join(cv['candidates'])}; final "
                      f"{cv['final']}; heads on {cv['device']}). Pooled out-of-fold image "
                      f"accuracy {acc['value']:.3f} [{acc['low']:.3f}, {acc['high']:.3f}]"
                      + (f", MAE {cv['image_mae']['value']:.1f} [{cv['image_mae']['low']:.1f}, "
                         f"{cv['image_mae']['high']:.1f}] BC" if cv.get("image_mae") else "")
                      + ".\n", *stage_lines(cv)]
    append(lines)
    if "representation" in PARTS:
        images = demo_images()
        rows = [row for name in BACKBONES for row in bench_representations(name, images)]
        lines += [
            "", "### Extraction per representation (features.representation; 224 px patches, "
            f"batch {OmegaConf.load(CONF / 'features' / 'default.yaml').batch_size}, "
            f"{N_IMAGES} demo images x 40 patches, {torch.get_num_threads()} threads)\n",
            "*alone*: the representation's network over already-cut patch tensors; "
            "*sinterlab*: the whole extraction with it (one-time ONNX export excluded); "
            "*vs final*: sinterlab patches/s over the final embedding's under the same "
            "runtime. Stages and statistics as conf/features/default.yaml.\n",
            "| backbone | runtime | representation | width | alone (patches/s) | sinterlab "
            "(patches/s) | vs final |", "|---|---|---|---|---|---|---|"]
        lines += [f"| {r['backbone']} | {r['runtime']} | {r['representation']} | {r['width']} "
                  f"| {r['alone']:.1f} | {r['sinterlab']:.1f} | {r['vs_final']:.2f}x |"
                  for r in rows]
        append(lines)
    if "startup" in PARTS:
        times = bench_startup()
        stack = times["import torch, lightning.pytorch, timm"]
        lines += ["", f"### Start-up (fresh processes, median of {STARTUP_ROUNDS} interleaved "
                  "rounds)\n", "| what | wall s | vs torch + Lightning + timm |", "|---|---|---|"]
        lines += [f"| `{name}` | {t:.2f} | {t / stack:.2f}x |" for name, t in times.items()]
        append(lines)


if __name__ == "__main__":
    main()
