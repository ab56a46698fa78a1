"""Design table, laboratory nuisance and file writing for the synthetic SEM data set.

A *sample* is one sintered spot ``(slide, set, burst_count, duty_cycle)``; several SEM images
are taken inside it. Nuisance is hierarchical and multiplicative (log-normal): a slide factor,
a set factor and a sample factor on the effective-energy factor, the particle size scale and
the film thickness, plus a small per-image energy jitter. Each imaging session (one per
sample, set or slide: ``nuisance.session_level``) has its own brightness, contrast, focus
(probe blur), working distance and detector. Images of one sample therefore share a look
that has nothing to do with the burst count: splitting patches of one sample across train
and test leaks it.

Every random draw is seeded from ``numpy.random.SeedSequence([seed, domain, ...keys])`` so
the output does not depend on the order or the number of worker processes.

Files written into ``out_dir`` (each atomically: temp name in the same folder + ``os.replace``):
``images/*.tif``, ``truth.csv`` (bar height and physics per image), ``contact_sheet.png``,
``synth.json`` (resolved config + generator version) and, last, ``descriptor.csv`` (with a
measured sheet-resistance column when the preset enables ``measurements.sheet_resistance``).
"""

from __future__ import annotations

import io
import json
import os
import time
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import tifffile
from omegaconf import DictConfig, OmegaConf

from sinterlab.atomic import write_bytes
from sinterlab.synth.measurements import measured, sample_sheet_resistance
from sinterlab.synth.microstructure import effective_energy, sinter_state, sintered_surface
from sinterlab.synth.render import acquire, render_info_bar, se_signal

GENERATOR_VERSION = "sinterlab.synth/1.0"
CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
PRESET_DIR = CONF_DIR / "synth" / "preset"
DESCRIPTOR_COLUMNS = [
    "image",
    "sample_id",
    "slide",
    "set",
    "burst_count",
    "duty_cycle",
    "power_w",
    "session",
]

# seed domains
_SLIDE, _SET, _SAMPLE, _SESSION, _IMAGE, _MEASURE = 1, 2, 3, 4, 5, 6


# ----------------------------------------------------------------------------- config
def _load_with_defaults(path: Path) -> DictConfig:
    """Load a preset yaml, resolving a ``defaults`` list of sibling presets (no Hydra)."""
    cfg = OmegaConf.load(path)
    defaults = cfg.pop("defaults", None) or []
    merged = OmegaConf.create()
    self_done = False
    for entry in defaults:
        if entry == "_self_":
            merged = OmegaConf.merge(merged, cfg)
            self_done = True
        else:
            merged = OmegaConf.merge(merged, _load_with_defaults(path.parent / f"{entry}.yaml"))
    if not self_done:
        merged = OmegaConf.merge(merged, cfg)
    return merged


def load_preset(name: str, dotlist: Iterable[str] | None = None, **overrides: Any) -> DictConfig:
    """Config of preset ``name`` (``conf/synth/preset/<name>.yaml``) without Hydra.

    Top-level keys of ``conf/synth.yaml`` (``seed``, ``workers``) are included; ``out`` and
    ``hydra`` are not. Overrides: keyword arguments (``seed=3``, nested keys with ``__``:
    ``image__width=64``, or dicts: ``design={"slides": 1}``) and/or a Hydra-style dotlist
    (``["image.width=64"]``).
    """
    path = PRESET_DIR / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))
        raise ValueError(f"unknown synth preset {name!r}; known: {known}")
    root = OmegaConf.load(CONF_DIR / "synth.yaml")
    for key in ("defaults", "hydra", "out"):
        root.pop(key, None)
    cfg = OmegaConf.merge(_load_with_defaults(path), root)
    for key, value in overrides.items():
        OmegaConf.update(cfg, key.replace("__", "."), value, merge=True)
    if dotlist:
        cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(list(dotlist)))
    return cfg


def _as_config(cfg: DictConfig | dict) -> DictConfig:
    """Full config: ``cfg`` merged over the paper preset (so partial dicts work)."""
    if isinstance(cfg, DictConfig):
        cfg = OmegaConf.to_container(cfg, resolve=True)
    user = OmegaConf.create({k: v for k, v in cfg.items() if k not in ("out", "hydra")})
    return OmegaConf.merge(load_preset("paper"), user)


# ----------------------------------------------------------------------------- design
def _rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), *[int(k) for k in key]]))


def sample_id(slide: int, set_: int, bc: int, dc: int) -> str:
    return f"s{slide}-set{set_}-bc{bc}-dc{dc}"


def _lognormal_factors(seed: int, key: tuple[int, ...], sds: Any) -> dict[str, float]:
    rng = _rng(seed, *key)
    z = rng.standard_normal(3)
    return {
        "energy": float(np.exp(float(sds.energy) * z[0])),
        "size": float(np.exp(float(sds.size) * z[1])),
        "thickness": float(np.exp(float(sds.thickness) * z[2])),
    }


def _session(cfg: DictConfig, slide: int, set_: int, bc: int, dc: int) -> tuple[str, dict]:
    nz = cfg.nuisance
    level = str(nz.session_level)
    if level == "sample":
        name, key = sample_id(slide, set_, bc, dc), (slide, set_, bc, dc)
    elif level == "set":
        name, key = f"s{slide}-set{set_}", (slide, set_, 0, 0)
    elif level == "slide":
        name, key = f"s{slide}", (slide, 0, 0, 0)
    else:
        raise ValueError(f"nuisance.session_level must be sample|set|slide, got {level!r}")
    rng = _rng(cfg.seed, _SESSION, *key)
    z = rng.standard_normal(4)
    hv = list(nz.hv_kv)
    det = list(nz.detectors)
    params = {
        "brightness": float(nz.brightness.mean) + float(nz.brightness.sd) * float(z[0]),
        "contrast": float(nz.contrast.median) * float(np.exp(float(nz.contrast.log_sd) * z[1])),
        "blur_sigma": float(nz.blur_sigma_px.median)
        * float(np.exp(float(nz.blur_sigma_px.log_sd) * z[2])),
        "wd_mm": float(nz.wd_mm.mean) + float(nz.wd_mm.sd) * float(z[3]),
        "hv_kv": float(hv[int(rng.integers(len(hv)))]),
        "detector": str(det[int(rng.integers(len(det)))]),
    }
    return f"sess-{name}", params


def design_table(cfg: DictConfig | dict) -> list[dict[str, Any]]:
    """One dict per image with design values, nuisance factors and the per-image seed key."""
    cfg = _as_config(cfg)
    d, nz = cfg.design, cfg.nuisance
    seed = int(cfg.seed)
    rows = []
    for slide in range(1, int(d.slides) + 1):
        f_slide = _lognormal_factors(seed, (_SLIDE, slide), nz.slide_sd)
        for set_ in range(1, int(d.sets) + 1):
            f_set = _lognormal_factors(seed, (_SET, slide, set_), nz.set_sd)
            for dc in d.duty_cycles:
                for bc in d.burst_counts:
                    bc, dc = int(bc), int(dc)
                    key = (slide, set_, bc, dc)
                    f_smp = _lognormal_factors(seed, (_SAMPLE, *key), nz.sample_sd)
                    session, sess = _session(cfg, *key)
                    sid = sample_id(*key)
                    for i in range(1, int(d.images_per_sample) + 1):
                        rows.append(
                            {
                                "image": f"images/{sid}-img{i:02d}.tif",
                                "sample_id": sid,
                                "slide": slide,
                                "set": set_,
                                "burst_count": bc,
                                "duty_cycle": dc,
                                "power_w": float(d.power_w),
                                "session": session,
                                "energy_factor": f_slide["energy"]
                                * f_set["energy"]
                                * f_smp["energy"],
                                "size_factor": f_slide["size"] * f_set["size"] * f_smp["size"],
                                "thickness": f_slide["thickness"]
                                * f_set["thickness"]
                                * f_smp["thickness"],
                                **sess,
                                "seed_key": (_IMAGE, *key, i),
                            }
                        )
    return rows


# ----------------------------------------------------------------------------- rendering
def render_image(cfg: DictConfig, row: dict[str, Any]) -> tuple[np.ndarray, dict[str, Any]]:
    """Render one micrograph (uint8, microstructure + info bar) and its ground truth."""
    ph, im, rd = cfg.physics, cfg.image, cfg.render
    rng = _rng(cfg.seed, *row["seed_key"])
    e_factor = row["energy_factor"] * float(
        np.exp(float(cfg.nuisance.image_energy_sd) * rng.standard_normal())
    )
    energy = effective_energy(row["burst_count"], row["duty_cycle"], e_factor, ph)
    r0 = float(ph.r0_nm) * row["size_factor"]
    state = sinter_state(energy, r0, ph, row["thickness"])
    w, h = int(im.width), int(im.height)
    pixel_nm = slide_pixel_nm(cfg, row["slide"])
    bar_lo, bar_hi = (int(v) for v in im.bar_height)
    bar_h = int(rng.integers(bar_lo, bar_hi + 1))
    height, pore = sintered_surface(rng, (h, w), state, pixel_nm, ph)
    r_px = state.mean_radius_nm / pixel_nm
    signal = se_signal(height, pore, r_px, rd)
    micro = acquire(signal, rng, row["brightness"], row["contrast"], row["blur_sigma"], rd)
    bar = render_info_bar(
        w, bar_h, pixel_nm, hv_kv=row["hv_kv"], wd_mm=row["wd_mm"], detector=row["detector"]
    )
    truth = {
        "image": row["image"],
        "sample_id": row["sample_id"],
        "bar_height": bar_h,
        "micro_height": h,
        "energy": state.energy,
        "neck_ratio": state.neck_ratio,
        "porosity": state.porosity,
        "mean_radius_nm": state.mean_radius_nm,
        "mean_radius_px": r_px,
        "energy_factor": e_factor,
        "size_factor": row["size_factor"],
        "thickness": row["thickness"],
        "brightness": row["brightness"],
        "contrast": row["contrast"],
        "blur_sigma": row["blur_sigma"],
    }
    return np.vstack([micro, bar]), truth


def slide_pixel_nm(cfg: DictConfig, slide: int) -> float:
    """The pixel size a slide was imaged at: ``image.pixel_nm``, unless the preset images that
    slide at another magnification (``image.pixel_nm_by_slide``)."""
    by_slide = cfg.image.get("pixel_nm_by_slide") or {}
    return float(by_slide.get(slide, by_slide.get(str(slide), cfg.image.pixel_nm)))


# ----------------------------------------------------------------------------- writing
def fei_metadata(pixel_nm: float, hv_kv: float, wd_mm: float, detector: str) -> str:
    """The INI text FEI/Thermo Fisher microscopes write into TIFF tag 34682 (the sections and
    keys sinterlab reads; SI units as the instruments write them)."""
    return ("[System]\r\nSystemType=sinterlab-synth\r\n"
            f"[Beam]\r\nHV={hv_kv * 1000:g}\r\n"
            f"[Scan]\r\nPixelWidth={pixel_nm * 1e-9:.6g}\r\nPixelHeight={pixel_nm * 1e-9:.6g}\r\n"
            f"[Stage]\r\nWorkingDistance={wd_mm / 1000:.6g}\r\n"
            f"[Detectors]\r\nName={detector}\r\n")


def tiff_bytes(img: np.ndarray, metadata: str | None = None) -> bytes:
    """Grayscale TIFF without timestamps (byte-reproducible); ``metadata``: FEI-style INI text
    for tag 34682, as the instrument writes it."""
    buf = io.BytesIO()
    extratags = [(34682, "s", 0, metadata, True)] if metadata else []
    tifffile.imwrite(buf, img, photometric="minisblack", metadata=None, extratags=extratags)
    return buf.getvalue()


def _render_and_write(args: tuple[dict, dict, str]) -> dict[str, Any]:
    cfg_dict, row, out_dir = args
    cfg = OmegaConf.create(cfg_dict)
    img, truth = render_image(cfg, row)
    metadata = fei_metadata(slide_pixel_nm(cfg, row["slide"]), row["hv_kv"], row["wd_mm"],
                            row["detector"])
    write_bytes(Path(out_dir) / row["image"], tiff_bytes(img, metadata))
    return truth


def _contact_sheet(cfg: DictConfig, out_dir: Path, rows: list[dict]) -> None:
    """One labelled tile per burst count (first image of its most typical sample), each with
    a scale bar from the rendered pixel size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib_scalebar.scalebar import ScaleBar

    d = cfg.design
    dcs = [int(v) for v in d.duty_cycles]
    dc = int(cfg.physics.dc_ref) if int(cfg.physics.dc_ref) in dcs else dcs[0]
    tw = int(cfg.image.contact_width)
    bcs = [int(v) for v in d.burst_counts]
    fig, axes = plt.subplots(1, len(bcs), figsize=(len(bcs) * tw / 100, tw / 100 + 0.4),
                             dpi=100, squeeze=False)
    for ax, bc in zip(axes[0], bcs, strict=True):
        # the most typical sample of this burst count: energy and size factors closest to 1
        row = min(
            (r for r in rows if r["burst_count"] == bc and r["duty_cycle"] == dc),
            key=lambda r: abs(np.log(r["energy_factor"])) + abs(np.log(r["size_factor"])),
        )
        ax.imshow(tifffile.imread(out_dir / row["image"]), cmap="gray")
        ax.add_artist(ScaleBar(float(cfg.image.pixel_nm), "nm", location="upper right",
                               box_alpha=0.7, font_properties={"size": 7}))
        ax.set_title(f"BC {bc}  DC {dc}%", fontsize=8)
        ax.axis("off")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    write_bytes(out_dir / "contact_sheet.png", buffer.getvalue())


def _csv_bytes(df: pd.DataFrame) -> bytes:
    return df.to_csv(index=False, lineterminator="\n", float_format="%.6g").encode()


def _sheet_resistance(cfg: DictConfig, row: dict[str, Any]) -> float:
    """The sample's measured sheet resistance (Ω/sq): one probe measurement per sample, so
    every image of the sample carries the same value; seeded by the sample alone."""
    law = cfg.measurements.sheet_resistance
    true = sample_sheet_resistance(row["burst_count"], row["duty_cycle"], cfg.physics, law,
                                   row["energy_factor"], row["size_factor"], row["thickness"])
    key = (row["slide"], row["set"], row["burst_count"], row["duty_cycle"])
    return measured(true, _rng(cfg.seed, _MEASURE, *key), law)


def generate_dataset(cfg: DictConfig | dict, out_dir: Path | str) -> Path:
    """Generate the synthetic data set into ``out_dir``; returns the descriptor path.

    ``cfg`` is a full preset config (see :func:`load_preset`) or a partial dict merged over
    the paper preset. ``cfg.workers`` > 1 renders in worker processes (0 = all cores);
    the files do not depend on it.
    """
    cfg = _as_config(cfg)
    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    rows = design_table(cfg)
    cfg_dict = OmegaConf.to_container(cfg, resolve=True)
    workers = int(cfg.get("workers", 1))
    if workers == 0:
        workers = os.cpu_count() or 1
    jobs = [(cfg_dict, r, str(out_dir)) for r in rows]
    t0 = time.perf_counter()
    if workers > 1 and len(rows) > 1:
        with ProcessPoolExecutor(max_workers=min(workers, len(rows))) as pool:
            truth = list(pool.map(_render_and_write, jobs, chunksize=4))
    else:
        truth = [_render_and_write(j) for j in jobs]
    elapsed = time.perf_counter() - t0

    write_bytes(out_dir / "truth.csv", _csv_bytes(pd.DataFrame(truth)))
    _contact_sheet(cfg, out_dir, rows)
    meta = {"generator": GENERATOR_VERSION, "n_images": len(rows), "config": cfg_dict}
    write_bytes(
        out_dir / "synth.json", (json.dumps(meta, indent=2, sort_keys=True) + "\n").encode()
    )
    desc = pd.DataFrame(rows)[DESCRIPTOR_COLUMNS]
    law = (cfg.get("measurements") or {}).get("sheet_resistance")
    if law is not None and law.get("enabled"):
        desc[str(law.column)] = [_sheet_resistance(cfg, r) for r in rows]
    desc_path = out_dir / "descriptor.csv"
    write_bytes(desc_path, _csv_bytes(desc))  # last: only points at written images
    generate_dataset.last_stats = {"n_images": len(rows), "seconds": elapsed}
    return desc_path


generate_dataset.last_stats = {}
