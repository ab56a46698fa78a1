"""`make bench`: extraction and head-training speed through sinterlab vs plain loops.

Part one: patches/s of ConvNeXt-T and EfficientNet-Lite0 through sinterlab's extraction
(patch cutting + Lightning predict + cache writes) versus a naive timm loop over the same patch
tensors in the same process; achieved GFLOP/s versus a measured SGEMM figure; cache-hit time.
Part two: the MLP head under the paper protocol (batch 32, validation every 10 epochs) on
4,800 x 768 (2 classes) and 12,000 x 768 (5 classes) through sinterlab's Lightning module versus
a plain PyTorch loop over the same tensors; epochs are a sample (BENCH_EPOCHS) and the paper's
1000 epochs are extrapolated from them. Results are appended to experiments/benchmarks.md.

Sizes come from the environment so that a quick check and a full run use the same code:
BENCH_IMAGES (images per backbone, default 8), BENCH_EPOCHS (head epochs, default 30),
BENCH_BACKBONES (comma list, default convnext_tiny,tf_efficientnet_lite0), BENCH_SEEDS (members
of the vectorized seed ensemble, default 5; its time is compared with one plain run).
Random-init weights are used for timing (speed does not depend on the weights' values).
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import tempfile
import time
from datetime import datetime
from pathlib import Path

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from sinterlab.models.ensemble import SeedEnsemble
from torch.utils.flop_counter import FlopCounterMode

from sinterlab.data.patches import PatchSampler
from sinterlab.data.preprocess import preprocess_image
from sinterlab.features.backbone import build_backbone
from sinterlab.features.cache import EmbeddingCache, file_sha256
from sinterlab.features.extract import ImageRef, cache_settings, extract_to_cache, patch_spec
from sinterlab.models.batches import TensorBatches
from sinterlab.models.head import ProcessParameterHead
from sinterlab.models.mlp import mlp_trunk

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
OUT = ROOT / "experiments" / "benchmarks.md"
N_IMAGES = int(os.environ.get("BENCH_IMAGES", 8))
EPOCHS = int(os.environ.get("BENCH_EPOCHS", 30))
BACKBONES = os.environ.get("BENCH_BACKBONES", "convnext_tiny,tf_efficientnet_lite0").split(",")
ENSEMBLE_SEEDS = int(os.environ.get("BENCH_SEEDS", 5))
PAPER_EPOCHS = 1000


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
    descriptor = ROOT / "data" / "demo" / "descriptor.csv"
    if not descriptor.is_file():
        subprocess.run([str(ROOT / ".venv" / "bin" / "sinterlab-synth"), "preset=demo",
                        f"out={descriptor.parent}"], check=True)
    return sorted((descriptor.parent / "images").glob("*.tif"))[:N_IMAGES]


def naive_loop(model, patches, batch_size: int, fmt) -> float:
    """Patches/s of a plain timm forward loop over ready tensors (after one warm-up batch)."""
    model = model.to(memory_format=fmt)
    with torch.inference_mode():
        model(patches[:batch_size].contiguous(memory_format=fmt))
        start = time.perf_counter()
        for chunk in patches.split(batch_size):
            model(chunk.contiguous(memory_format=fmt))
    return len(patches) / (time.perf_counter() - start)


def bench_extraction(name: str, images: list[Path], peak: float) -> dict:
    preprocess = OmegaConf.load(CONF / "preprocess" / "default.yaml")
    features = OmegaConf.load(CONF / "features" / "default.yaml")
    features.cache_dir = tempfile.mkdtemp(prefix="sinterlab-bench-")
    features.accelerator = "cpu"
    backbone = build_backbone(OmegaConf.create({"name": name, "pretrained": False}))
    spec = patch_spec(preprocess, backbone)
    sampler = PatchSampler(spec, backbone.mean, backbone.std)
    refs = [ImageRef(str(p), file_sha256(p)) for p in images]
    tensors = []
    for ref in refs:
        image, _ = preprocess_image(ref.path, preprocess)
        tensors.append(sampler.cut(image, sampler.params(*image.shape, ref.sha)))
    patches = torch.cat(tensors)
    naive = naive_loop(backbone.model, patches, features.batch_size, torch.contiguous_format)
    naive_nhwc = naive_loop(backbone.model, patches, features.batch_size, torch.channels_last)
    cache = EmbeddingCache(features.cache_dir, name, backbone.weights.sha256,
                           cache_settings(preprocess, spec, backbone, features))
    start = time.perf_counter()
    extract_to_cache(refs, cache, backbone, sampler, preprocess, features, progress=False)
    extract_s = time.perf_counter() - start
    start = time.perf_counter()  # a cache hit: hash the files, find and load every entry
    hit_refs = [ImageRef(str(p), file_sha256(p)) for p in images]
    stats = extract_to_cache(hit_refs, cache, backbone, sampler, preprocess, features,
                             progress=False)
    [cache.load(r.sha) for r in hit_refs]
    hit_s = time.perf_counter() - start
    assert stats["extracted"] == 0
    shutil.rmtree(features.cache_dir)
    ours = len(patches) / extract_s
    gflop = flops_per_patch(backbone.model, spec.output_size) / 1e9
    return {"backbone": name, "patches": len(patches), "gflop_per_patch": gflop,
            "naive_pps": naive, "naive_nhwc_pps": naive_nhwc, "sinterlab_pps": ours,
            "ratio": ours / naive, "ratio_nhwc": ours / naive_nhwc,
            "gflops": ours * gflop, "peak_share": ours * gflop / peak,
            "extract_s": extract_s, "hit_s": hit_s, "hit_speedup": extract_s / hit_s}


def mlp_flops_per_step(dims: list[int], batch: int) -> float:
    """Forward + backward of the linear layers: about 3 x 2 x MACs."""
    return 6 * batch * sum(a * b for a, b in zip(dims[:-1], dims[1:], strict=True))


def plain_loop(x, y, xv, yv, classes: int, epochs: int, cfg) -> float:
    torch.manual_seed(0)
    model = torch.nn.Sequential(mlp_trunk(x.shape[1], list(cfg.hidden), cfg.dropout, True),
                                torch.nn.Linear(cfg.hidden[-1], classes))
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay,
                           fused=True)
    gen = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(x), generator=gen)
        xs, ys = x[order], y[order]
        for i in range(0, len(x) - 1, cfg.batch_size):
            loss = F.cross_entropy(model(xs[i:i + cfg.batch_size]), ys[i:i + cfg.batch_size])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if (epoch + 1) % 10 == 0:
            model.eval()
            with torch.inference_mode():
                F.cross_entropy(model(xv), yv)
    return time.perf_counter() - start


def lightning_head(x, y, xv, yv, classes: int, epochs: int, cfg) -> float:
    pl.seed_everything(0, verbose=False)
    head = ProcessParameterHead(x.shape[1], [{"name": "c", "kind": "classification",
                                              "num_classes": classes}], list(cfg.hidden),
                                cfg.dropout, True, "adam", cfg.lr, cfg.weight_decay)
    trainer = pl.Trainer(max_epochs=epochs, check_val_every_n_epoch=10, accelerator="cpu",
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=0)
    start = time.perf_counter()
    trainer.fit(head, TensorBatches(x, y[:, None].float(), cfg.batch_size, shuffle=True),
                TensorBatches(xv, yv[:, None].float(), 4096, shuffle=False))
    return time.perf_counter() - start


def ensemble_loop(x, y, classes: int, epochs: int, cfg, seeds: list[int]) -> float:
    def make():
        return torch.nn.Sequential(mlp_trunk(x.shape[1], list(cfg.hidden), cfg.dropout, True),
                                   torch.nn.Linear(cfg.hidden[-1], classes))

    ensemble = SeedEnsemble(make, seeds, cfg.lr, cfg.weight_decay)
    generators = [torch.Generator().manual_seed(s) for s in seeds]
    start = time.perf_counter()
    for _ in range(epochs):
        ensemble.train_epoch(x, y, cfg.batch_size, generators)
    return time.perf_counter() - start


def bench_head(rows: int, classes: int, dim: int = 768) -> dict:
    cfg = OmegaConf.load(CONF / "model" / "mlp.yaml")
    gen = torch.Generator().manual_seed(0)
    n_train = int(rows * 0.8)
    x = torch.randn(rows, dim, generator=gen)
    y = torch.randint(0, classes, (rows,), generator=gen)
    xt, yt, xv, yv = x[:n_train], y[:n_train], x[n_train:], y[n_train:]
    plain = plain_loop(xt, yt, xv, yv, classes, EPOCHS, cfg)
    ours = lightning_head(xt, yt, xv, yv, classes, EPOCHS, cfg)
    ensemble = ensemble_loop(xt, yt, classes, EPOCHS, cfg, list(range(ENSEMBLE_SEEDS)))
    steps = EPOCHS * -(-n_train // cfg.batch_size)
    flops = mlp_flops_per_step([dim, *cfg.hidden, classes], cfg.batch_size) * steps
    return {"rows": rows, "classes": classes, "train_rows": n_train, "epochs": EPOCHS,
            "plain_s": plain, "sinterlab_s": ours, "ratio": ours / plain,
            "plain_gflops": flops / plain / 1e9, "sinterlab_gflops": flops / ours / 1e9,
            "paper_min": ours / EPOCHS * PAPER_EPOCHS / 60,
            "ensemble_s": ensemble, "ensemble_vs_one": ensemble / plain}


def main() -> None:
    peak = sgemm_gflops()
    print(f"SGEMM peak: {peak:.1f} GFLOP/s")
    images = demo_images()
    extraction = [bench_extraction(name, images, peak) for name in BACKBONES]
    heads = [bench_head(4800, 2), bench_head(12000, 5)]
    lines = [f"\n## {datetime.now():%Y-%m-%d %H:%M} — {machine()}\n",
             f"Measured SGEMM (2048², fp32): **{peak:.1f} GFLOP/s**.\n",
             "### Feature extraction (224 px patches, batch "
             f"{OmegaConf.load(CONF / 'features' / 'default.yaml').batch_size}, "
             f"{N_IMAGES} demo images x 40 patches)\n",
             "Naive loops run timm over the already-cut patch tensors (NCHW, and NHWC as sinterlab "
             "uses with features.channels_last); sinterlab's figure includes reading, cropping, "
             "equalizing and cutting the patches, Lightning's predict loop and the cache writes.\n",
             "| backbone | GFLOP/patch | naive NCHW (patches/s) | naive NHWC (patches/s) | "
             "sinterlab (patches/s) | sinterlab / naive NCHW | sinterlab / naive NHWC | "
             "sinterlab GFLOP/s | share of SGEMM | extraction s | cache hit s | hit speed-up |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['backbone']} | {r['gflop_per_patch']:.2f} | {r['naive_pps']:.1f} | "
              f"{r['naive_nhwc_pps']:.1f} | {r['sinterlab_pps']:.1f} | {r['ratio']:.2f}x | "
              f"{r['ratio_nhwc']:.2f}x | {r['gflops']:.0f} | "
              f"{r['peak_share']:.0%} | {r['extract_s']:.1f} | {r['hit_s']:.3f} | "
              f"{r['hit_speedup']:.0f}x |" for r in extraction]
    lines += ["", f"### MLP head (768-512-256-128-C, batch 32, val every 10 epochs; {EPOCHS} "
              "epochs measured, 1000 extrapolated)\n",
              "| rows x dim | classes | plain loop s | sinterlab s | sinterlab / plain | "
              "plain GFLOP/s | sinterlab GFLOP/s | paper protocol (1000 ep), min | "
              f"{ENSEMBLE_SEEDS}-seed vmap ensemble s | ensemble / one plain run |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['rows']} x 768 | {r['classes']} | {r['plain_s']:.1f} | "
              f"{r['sinterlab_s']:.1f} | {r['ratio']:.2f}x | {r['plain_gflops']:.1f} | "
              f"{r['sinterlab_gflops']:.1f} | {r['paper_min']:.1f} | {r['ensemble_s']:.1f} | "
              f"{r['ensemble_vs_one']:.2f}x |" for r in heads]
    text = "\n".join(lines) + "\n"
    print(text)
    if not OUT.exists():
        OUT.write_text("# Benchmarks\n\nAppended by `make bench` (experiments/bench.py).\n")
    with OUT.open("a") as handle:
        handle.write(text)


if __name__ == "__main__":
    main()
