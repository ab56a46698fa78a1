"""Peak memory of patch preparation: read -> crop -> equalize -> cut every patch, per image.

This is what ``sinterlab.features.extract.ImagePatches`` does for each item before the backbone
sees it. The benchmark iterates over the images of the synthetic ``paper`` preset (300 images x
40 patches of 224 px) and over its first half (150 images), keeping nothing, each in a fresh
process so that the peak RSS (``ru_maxrss``) belongs to that run alone. Flat memory from 150 to
300 images shows that preparation streams one image at a time. No backbone is loaded: patches
are normalized with the mean/std of tf_efficientnet_lite0 (0.5).

    .venv/bin/python experiments/bench_patch_memory.py            # both sizes, appends the table
    .venv/bin/python experiments/bench_patch_memory.py --no-write # print only

The table is appended to ``experiments/benchmarks.md`` under "## Patch preparation memory".
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DESCRIPTOR = ROOT / "data" / "paper" / "descriptor.csv"
BENCHMARKS = ROOT / "experiments" / "benchmarks.md"
HEADING = "## Patch preparation memory"
#: tf_efficientnet_lite0's normalization and input size (no backbone is loaded)
MEAN, STD, INPUT_SIZE = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), 224
PER_IMAGE, PATCH_SIZE = 40, 224


def rss_mb() -> tuple[float, float]:
    """(current RSS, peak RSS) of this process in MB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    with open("/proc/self/statm") as handle:
        current = int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    return current, peak


def worker(images: int) -> dict:
    """Prepare the patches of the first ``images`` images, keeping nothing; report memory."""
    from omegaconf import OmegaConf

    from sinterlab.data.descriptor import PATH, load_descriptor
    from sinterlab.data.patches import PatchSampler, PatchSpec
    from sinterlab.features.cache import file_sha256
    from sinterlab.features.extract import ImagePatches, ImageRef

    cfg = OmegaConf.load(ROOT / "conf" / "preprocess" / "default.yaml")
    cfg.patches.per_image, cfg.patches.size = PER_IMAGE, PATCH_SIZE
    spec = PatchSpec(PER_IMAGE, PATCH_SIZE, INPUT_SIZE, bool(cfg.patches.hflip),
                     float(cfg.patches.rotation), int(cfg.patches.seed))
    table = load_descriptor(DESCRIPTOR, "burst_count", "classification").table
    refs = [ImageRef(p, file_sha256(p)) for p in table[PATH][:images]]
    dataset = ImagePatches(refs, cfg, PatchSampler(spec, MEAN, STD))

    _, before = rss_mb()
    tracemalloc.start()
    patches = 0
    started = time.perf_counter()
    for index in range(len(dataset)):
        item = dataset[index]
        patches += len(item["patches"])
        assert item["patches"].shape[1:] == (3, INPUT_SIZE, INPUT_SIZE)
        del item
    wall = time.perf_counter() - started
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    current, peak = rss_mb()
    return {"images": len(refs), "patches": patches, "peak_rss_mb": peak,
            "rss_before_mb": before, "rss_end_mb": current,
            "traced_peak_mb": traced_peak / 2**20, "wall_s": wall}


def machine() -> str:
    model = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"nproc {cores}, {model}, Python {platform.python_version()}"


def table(rows: list[dict]) -> str:
    lines = ["| images | patches | peak RSS MB | RSS before loop MB | numpy/Python peak MB "
             "(tracemalloc) | wall s |",
             "|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['images']} | {r['patches']} | {r['peak_rss_mb']:.0f} | "
                     f"{r['rss_before_mb']:.0f} | {r['traced_peak_mb']:.1f} | {r['wall_s']:.1f} |")
    return "\n".join(lines)


def append(block: str) -> None:
    """Add ``block`` at the end of the HEADING section of benchmarks.md (created if needed)."""
    text = BENCHMARKS.read_text() if BENCHMARKS.is_file() else "# Benchmarks\n"
    if HEADING not in text:
        text = text.rstrip("\n") + f"\n\n{HEADING}\n"
    start = text.index(HEADING) + len(HEADING)
    following = text.find("\n## ", start)
    end = len(text) if following < 0 else following + 1
    section = text[:end].rstrip("\n") + "\n\n" + block.strip("\n") + "\n"
    rest = text[end:]
    BENCHMARKS.parent.mkdir(parents=True, exist_ok=True)
    BENCHMARKS.write_text(section + ("\n" + rest if rest else ""))


def ensure_data() -> None:
    if DESCRIPTOR.is_file():
        return
    print(f"{DESCRIPTOR} missing: generating the paper preset (~1 min)", flush=True)
    synth = Path(sys.executable).with_name("sinterlab-synth")
    subprocess.run([str(synth), "preset=paper", f"out={DESCRIPTOR.parent}"], check=True,
                   cwd=ROOT)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--sizes", type=int, nargs="+", default=[150, 300])
    parser.add_argument("--no-write", action="store_true", help="print, do not append")
    args = parser.parse_args()
    if args.worker is not None:
        print(json.dumps(worker(args.worker)))
        return
    ensure_data()
    rows = []
    for images in args.sizes:
        out = subprocess.run([sys.executable, __file__, "--worker", str(images)], check=True,
                             capture_output=True, text=True, cwd=ROOT)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(f"{images} images: {rows[-1]}", flush=True)
    stamp = dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    block = (f"{stamp}, {machine()}. `experiments/bench_patch_memory.py`: synthetic `paper` "
             f"preset, {PER_IMAGE} patches of {PATCH_SIZE} px per image (rotation up to "
             "180 deg, hflip), read -> crop -> equalize -> cut, one process per row, nothing "
             "kept; no backbone.\n\n" + table(rows))
    print("\n" + block)
    if not args.no_write:
        append(block)
        print(f"\nappended to {BENCHMARKS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
