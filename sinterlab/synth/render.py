"""Secondary-electron (SE) imaging model and the microscope info bar.

SE contrast of a surface ``h(x, y)`` (all constants from the preset yaml, section ``render``):

* **tilt contrast**: SE yield rises as 1/cos(theta) with the local surface tilt,
  ``1/cos = sqrt(1 + |grad h|^2)`` (clipped at ``max_tilt``);
* **edge effect**: convex rims and small protrusions emit more SEs, modelled by the positive
  part of ``h - G_sigma * h`` (sigma ~ ``edge_sigma`` * particle radius);
* **detector side**: the Everhart-Thornley detector sees faces turned towards it brighter,
  ``k_dir * dh/dx``;
* **pores** are dark (SEs from the bottom of a pore are re-absorbed): ``* (1 - pore_dark * pore)``.

Acquisition: session brightness/contrast, probe blur (Gaussian, sigma from the session focus),
shot noise (Poisson statistics, ``dose`` electrons per pixel at unit signal), scan-line
noise (a random offset per row) and stage/beam drift (a random-walk horizontal shift per row).
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

_FONT = cv2.FONT_HERSHEY_SIMPLEX
BAR_BACKGROUND = 6
BAR_FOREGROUND = 235


def se_signal(height: np.ndarray, pore: np.ndarray, r_px: float, render: Any) -> np.ndarray:
    """Noise-free SE signal (float32, ~0..1) of a height map (pixel units) and pore mask."""
    gx = cv2.Sobel(height, cv2.CV_32F, 1, 0, ksize=3, scale=0.125)
    gy = cv2.Sobel(height, cv2.CV_32F, 0, 1, ksize=3, scale=0.125)
    slope2 = gx * gx + gy * gy
    inv_cos = np.minimum(np.sqrt(1.0 + slope2), float(render.max_tilt))
    sig = max(float(render.edge_sigma) * r_px, 0.7)
    edge = np.maximum(height - cv2.GaussianBlur(height, (0, 0), sig), 0.0) / max(r_px, 1.0)
    direction = gx / np.sqrt(1.0 + slope2)
    s = (
        float(render.base)
        + float(render.k_tilt) * (inv_cos - 1.0)
        + float(render.k_edge) * edge
        + float(render.k_dir) * direction
    )
    s *= 1.0 - float(render.pore_dark) * pore
    return s.astype(np.float32)


def acquire(
    signal: np.ndarray,
    rng: np.random.Generator,
    brightness: float,
    contrast: float,
    blur_sigma: float,
    render: Any,
) -> np.ndarray:
    """Turn an SE signal into an 8-bit micrograph with blur, shot/line noise and drift."""
    img = signal
    if blur_sigma > 0.05:
        img = cv2.GaussianBlur(img, (0, 0), float(blur_sigma))
    img = float(brightness) + float(contrast) * (img - float(render.signal_ref))
    img = np.clip(img, 0.0, 1.0)
    dose = float(render.dose)
    # Poisson statistics (variance = mean count) in the normal approximation, valid for the
    # tens of electrons per pixel used here and several times faster than rng.poisson
    noise = rng.standard_normal(img.shape, dtype=np.float32)
    img = (img + np.sqrt(img / dose) * noise).astype(np.float32)
    h, w = img.shape
    img += rng.normal(0.0, float(render.line_noise_sd), (h, 1)).astype(np.float32)
    drift = np.cumsum(rng.normal(0.0, float(render.drift_sd_px), h)).astype(np.float32)
    drift -= drift.mean()
    map_x = np.arange(w, dtype=np.float32)[None, :] + drift[:, None]
    map_y = np.repeat(np.arange(h, dtype=np.float32)[:, None], w, axis=1)
    img = cv2.remap(img, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    return np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)


def nice_scale_bar_nm(field_width_nm: float, fraction: float = 0.2) -> float:
    """Largest 1-2-5 length (nm) not longer than ``fraction`` of the field width."""
    target = field_width_nm * fraction
    best = 1.0
    for decade in range(0, 7):
        for m in (1, 2, 5):
            v = m * 10.0**decade
            if v <= target:
                best = v
    return best


def format_length(nm: float) -> str:
    return f"{nm / 1000:g} um" if nm >= 1000 else f"{nm:g} nm"


def _fit_text(text: str, max_w: int, max_h: int, thickness: int) -> float:
    (tw, th), _ = cv2.getTextSize(text, _FONT, 1.0, thickness)
    return max(min(max_w / max(tw, 1), max_h / max(th, 1)), 0.1)


def render_info_bar(
    width: int,
    bar_height: int,
    pixel_nm: float,
    hv_kv: float = 5.0,
    wd_mm: float = 4.9,
    detector: str = "ETD",
    display_width_mm: float = 127.0,
) -> np.ndarray:
    """Dark microscope info band (uint8, ``bar_height x width``) with text and a scale bar."""
    bar = np.full((bar_height, width), BAR_BACKGROUND, dtype=np.uint8)
    hfw_nm = width * pixel_nm
    mag = int(round(display_width_mm * 1e6 / hfw_nm, -2 if hfw_nm < 1e5 else 0))
    mag_txt = f"{mag:,}".replace(",", " ")
    lines = [
        f"HV {hv_kv:.2f} kV  WD {wd_mm:.1f} mm  mag {mag_txt} x  det {detector}",
        f"HFW {hfw_nm / 1000:.2f} um  spot 3.0  mode SE",
    ]
    thick = 1 if bar_height < 60 else 2
    pad = max(2, bar_height // 10)
    text_w = int(width * 0.66)
    line_h = (bar_height - 3 * pad) // 2
    scale = min(_fit_text(t, text_w, line_h, thick) for t in lines)
    for i, t in enumerate(lines):
        (_, th), _ = cv2.getTextSize(t, _FONT, scale, thick)
        y = pad + (i + 1) * th + i * pad + (line_h - th) // 2
        cv2.putText(bar, t, (pad, y), _FONT, scale, BAR_FOREGROUND, thick, cv2.LINE_AA)
    # scale bar: white rectangle in the right part, label above it
    sb_nm = nice_scale_bar_nm(hfw_nm, 0.2)
    sb_px = max(int(round(sb_nm / pixel_nm)), 2)
    x1 = width - pad * 2
    x0 = max(x1 - sb_px, text_w + pad)
    bh = max(2, bar_height // 8)
    y1 = bar_height - pad
    y0 = y1 - bh
    bar[y0:y1, x0:x1] = BAR_FOREGROUND
    label = format_length(sb_nm)
    ls = _fit_text(label, x1 - x0, max(y0 - 2 * pad, 4), thick)
    (lw, lh), _ = cv2.getTextSize(label, _FONT, ls, thick)
    lx = x0 + (x1 - x0 - lw) // 2
    cv2.putText(bar, label, (lx, y0 - pad), _FONT, ls, BAR_FOREGROUND, thick, cv2.LINE_AA)
    return bar
