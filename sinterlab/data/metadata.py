"""What the microscope wrote about each image: pixel size, magnification, beam voltage, working
distance, detector, dwell time, acquisition date and instrument.

TIFF tags are read by tifffile's own vendor parsers (FEI/Thermo Fisher's INI tag, Zeiss
SmartSEM's CZ_SEM tag, ImageJ's scale); Hitachi and JEOL write a text file beside the image
(``<stem>.txt``), read with :mod:`configparser` (Hitachi's INI layout) or as JEOL's
``$KEY value`` lines. Descriptor columns of the same names fill or override what a file lacks.

A run uses one unit: every image's pixel size, or none (:func:`one_unit`); a pixel size that is
not a positive, finite number is never used, and ``pixel_size_problem`` says what was read and
from where; :func:`check_pixel_sizes` names unknown and outlying pixel sizes before any
resampling.
"""

from __future__ import annotations

import configparser
import math
import re
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import tifffile

from sinterlab.errors import SinterlabError

#: the per-image fields, in images.csv order; numbers in the units their names say
#: the metadata column of an image's pixel size (nm; None: unknown)
PIXEL_SIZE = "pixel_size_nm"
FIELDS = (PIXEL_SIZE, "magnification", "voltage_kv", "working_distance_mm", "detector",
          "dwell_us", "acquired", "instrument", "metadata_source")
NUMERIC = ("pixel_size_nm", "magnification", "voltage_kv", "working_distance_mm", "dwell_us")
#: why an image's pixel size is unknown or unusable (None when it is known), beside FIELDS
PROBLEM = "pixel_size_problem"

_LENGTH_NM = {"m": 1e9, "mm": 1e6, "um": 1e3, "µm": 1e3, "micron": 1e3, "nm": 1.0, "pm": 1e-3}


def _number(text) -> float | None:
    """The first number in ``text`` ('40.00 K X' -> 40000, '5.1 mm' -> 5.1), or None."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return float(text)
    match = re.search(r"[-+]?\d*\.?\d+(?:[eE][-+]?\d+)?", str(text))
    if not match:
        return None
    value = float(match.group())
    if re.search(r"\d\s*[kK]\s*[xX]?\s*$", str(text).strip()):
        value *= 1000
    return value


def _date(text: str | None, *formats: str) -> str | None:
    for fmt in formats:
        try:
            return datetime.strptime(str(text).strip(), fmt).date().isoformat()
        except (ValueError, TypeError):
            continue
    return None


def _as_read(value, factor: float):
    """``value`` times ``factor`` when it is a number (whatever its sign), the text when it is
    not one (to be named, never used), None when absent."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        return float(value) * factor
    except (TypeError, ValueError):
        return str(value)


def _fei(meta: dict) -> dict:
    scan, beam, stage = meta.get("Scan", {}), meta.get("Beam", {}), meta.get("Stage", {})
    magnification = (meta.get("EScan", {}) or {}).get("Mag") or \
        (meta.get("Image", {}) or {}).get("Magnification")
    return {"pixel_size_nm": _as_read(scan.get("PixelWidth"), 1e9),
            "magnification": _number(magnification) if magnification else None,
            "voltage_kv": float(beam["HV"]) / 1000 if beam.get("HV") else None,
            "working_distance_mm": (float(stage["WorkingDistance"]) * 1000
                                    if stage.get("WorkingDistance") else None),
            "detector": (meta.get("Detectors", {}) or {}).get("Name"),
            "dwell_us": float(scan["Dwelltime"]) * 1e6 if scan.get("Dwelltime") else None,
            "acquired": _date((meta.get("User", {}) or {}).get("Date"), "%m/%d/%Y", "%d.%m.%Y"),
            "instrument": (meta.get("System", {}) or {}).get("SystemType"),
            "metadata_source": "FEI/Thermo tag"}


def _zeiss(meta: dict) -> dict:
    def value(key: str):
        entry = meta.get(key)
        return entry[1] if isinstance(entry, tuple) and len(entry) > 1 else None

    def length_nm(key: str) -> float | None:
        entry = meta.get(key)
        if not (isinstance(entry, tuple) and len(entry) > 2):
            return None
        factor = _LENGTH_NM.get(str(entry[2]).strip())
        number = _number(entry[1])
        return number * factor if factor and number is not None else None

    wd = length_nm("ap_wd")
    return {"pixel_size_nm": length_nm("ap_pixel_size"),
            "magnification": _number(value("ap_mag")) if value("ap_mag") else None,
            "voltage_kv": _number(value("ap_actualkv")) if value("ap_actualkv") else None,
            "working_distance_mm": wd / 1e6 if wd else None,
            "detector": value("dp_detector_channel") or value("dp_detector_type"),
            "dwell_us": None,
            "acquired": _date(value("ap_date"), "%d %b %Y", "%d.%m.%Y"),
            "instrument": (f"Zeiss {value('sv_serial_number')}"
                           if value("sv_serial_number") else "Zeiss"),
            "metadata_source": "Zeiss CZ_SEM tag"}


def _imagej(tif: tifffile.TiffFile) -> dict:
    unit = str((tif.imagej_metadata or {}).get("unit", "")).replace("\\u00B5", "µ")
    factor = _LENGTH_NM.get(unit)
    resolution = tif.pages[0].tags.get("XResolution")
    if not factor or resolution is None:
        return {}
    numerator, denominator = resolution.value
    if not numerator:
        return {}
    return {"pixel_size_nm": factor * denominator / numerator, "metadata_source": "ImageJ scale"}


def _hitachi(path: Path) -> dict:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.read_string(path.read_text(encoding="utf-8", errors="replace"))
    section = parser["SemImageFile"]
    wd_um = _number(section.get("WorkingDistance", ""))
    volts = _number(section.get("AcceleratingVoltage", ""))
    return {"pixel_size_nm": _number(section.get("PixelSize", "")),
            "magnification": _number(section.get("Magnification", "")),
            "voltage_kv": volts / 1000 if volts else None,
            "working_distance_mm": wd_um / 1000 if wd_um else None,
            "detector": section.get("SignalName"),
            "acquired": _date(section.get("Date"), "%Y/%m/%d", "%Y-%m-%d"),
            "instrument": section.get("InstructName"),
            "metadata_source": "Hitachi sidecar"}


def _jeol(path: Path) -> dict:
    entries = {}
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        match = re.match(r"\$+(\w+)\s+(.*)", line.strip())
        if match:
            entries[match.group(1).upper()] = match.group(2).strip()
    if "CM_MAG" not in entries and "SM_MICRON_BAR" not in entries:
        raise ValueError("no $CM_MAG or $SM_MICRON_BAR line")
    pixel = None
    bar, marker = _number(entries.get("SM_MICRON_BAR")), entries.get("SM_MICRON_MARKER", "")
    unit = re.sub(r"[\d.\s]", "", marker)
    if bar and _number(marker) and unit in _LENGTH_NM:
        pixel = _number(marker) * _LENGTH_NM[unit] / bar
    return {"pixel_size_nm": pixel, "magnification": _number(entries.get("CM_MAG")),
            "voltage_kv": _number(entries.get("CM_ACCEL_VOLT")),
            "working_distance_mm": _number(entries.get("SM_WD")),
            "detector": entries.get("CM_SIGNAL"),
            "acquired": _date(entries.get("CM_DATE"), "%Y/%m/%d", "%Y-%m-%d"),
            "instrument": entries.get("CM_INSTRUMENT"), "metadata_source": "JEOL sidecar"}


def _usable_pixel(found: dict) -> dict:
    """``found`` with a pixel size that is not a positive, finite number set to None, and
    ``PROBLEM`` saying why the pixel size is unknown: the value read and where it came from."""
    value, source = found.get("pixel_size_nm"), found.get("metadata_source")
    problem = None
    if value is None:
        problem = ("pixel size unknown (no instrument metadata in the file or a sidecar)"
                   if source is None else f"pixel size unknown (its {source} has none)")
    elif isinstance(value, str):
        problem = f"pixel size {value!r} in its {source} is not a number"
    elif not math.isfinite(value) or value <= 0:
        problem = f"pixel size {value:g} nm in its {source} is not a positive, finite number"
    return found | {"pixel_size_nm": None if problem else value, PROBLEM: problem}


def read_metadata(path: str | Path) -> dict:
    """The imaging settings recorded for the image at ``path`` (every field of FIELDS, None
    where nothing says, and ``PROBLEM``). A sidecar that cannot be read is an error naming
    it."""
    path = Path(path)
    found: dict = {}
    if path.suffix.lower() in (".tif", ".tiff"):
        try:
            with tifffile.TiffFile(path) as tif:
                if tif.is_fei and tif.fei_metadata:
                    found = _fei(tif.fei_metadata)
                elif tif.is_sem and tif.sem_metadata:
                    found = _zeiss(tif.sem_metadata)
                elif tif.is_imagej:
                    found = _imagej(tif)
        except (tifffile.TiffFileError, OSError, ValueError, KeyError, TypeError):
            found = {}  # OpenCV decides whether the image itself is readable
    sidecar = path.with_suffix(".txt")
    if not found and sidecar.is_file():
        text = sidecar.read_text(encoding="utf-8", errors="replace")
        try:
            found = _hitachi(sidecar) if "[SemImageFile]" in text else _jeol(sidecar)
        except (configparser.Error, KeyError, ValueError) as err:
            raise SinterlabError(
                f"{sidecar}: instrument sidecar not understood ({type(err).__name__}: "
                f"{' '.join(str(err).split())[:120]}); fix or remove it, or give the pixel size "
                "in a pixel_size_nm column of the descriptor") from None
    return _usable_pixel({field: found.get(field) for field in FIELDS})


def image_metadata(paths: list[str], table: pd.DataFrame | None = None,
                   csv: Path | None = None) -> pd.DataFrame:
    """One row per image of ``paths``: what its files say, filled or overridden by the
    descriptor ``table``'s columns of the same names (numbers checked: positive, finite)."""
    frame = pd.DataFrame([read_metadata(p) for p in paths], columns=[*FIELDS, PROBLEM])
    if table is None:
        return frame
    for field in FIELDS[:-1]:
        if field not in table.columns:
            continue
        given = table[field].reset_index(drop=True)
        if field in NUMERIC:
            numbers = pd.to_numeric(given, errors="coerce")
            bad = (given.notna() & ~numbers.between(0, math.inf, inclusive="neither")) | \
                np.isinf(numbers.fillna(0))
            if bad.any():
                row = int(bad.idxmax()) + 2
                raise SinterlabError(
                    f"{csv}:{row}: {field} {given[bad].iloc[0]} is not a positive number; "
                    f"write it in the units its name says ({field.rsplit('_', 1)[-1]}), or "
                    "leave the cell empty to use the image's own metadata")
            given = numbers
        filled = given.notna()
        frame.loc[filled, field] = given[filled].to_numpy()
        if field == "pixel_size_nm":
            frame.loc[filled, PROBLEM] = None
        frame.loc[filled, "metadata_source"] = frame.loc[filled, "metadata_source"].map(
            lambda s: "descriptor" if s is None or pd.isna(s) else f"{s} + descriptor")
    return frame


def one_unit(pixel_sizes) -> list[float | None]:
    """One unit per run: every image's pixel size when all are known, else None for every
    image (lengths in pixels for all, never µm beside px)."""
    values = [None if v is None or pd.isna(v) else float(v) for v in pixel_sizes]
    return values if all(v is not None for v in values) else [None] * len(values)


def pixel_size_outliers(pixel_nm, factor: float | None) -> tuple[float | None, np.ndarray]:
    """The median of the known pixel sizes and, per image, whether its pixel size differs from
    that median by more than ``factor`` either way (unknown ones never do; ``factor`` None:
    none)."""
    values = pd.to_numeric(pd.Series(list(pixel_nm), dtype=object), errors="coerce")
    values = values.to_numpy(float)
    known = np.isfinite(values)
    if not known.any():
        return None, np.zeros(len(values), bool)
    median = float(np.median(values[known]))
    if factor is None:
        return median, np.zeros(len(values), bool)
    ratio = np.where(known, np.maximum(values / median, median / values), 1.0)
    return median, ratio > float(factor)


def _listed(names, limit: int = 5) -> str:
    names = [str(n) for n in names]
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit
                                       else "")


def check_pixel_sizes(names, metadata: pd.DataFrame, scale_cfg, csv) -> list[str]:
    """Whether the pixel sizes of ``metadata`` (one row per image, named by ``names``) serve
    ``preprocess.scale``, before any resampling. With a target scale (auto or a number) every
    image needs a usable pixel size, none differing from the median by more than
    ``outlier_factor``: else a one-line refusal naming them and the fix. Without one, the same
    findings are warnings (returned): a run with some images without a pixel size measures all
    in pixels."""
    scale_cfg = scale_cfg or {}
    target, factor = scale_cfg.get("pixel_size_nm"), scale_cfg.get("outlier_factor")
    if factor is not None and (isinstance(factor, bool) or not isinstance(factor, (int, float))
                               or not math.isfinite(factor) or factor <= 1):
        raise SinterlabError(f"preprocess.scale.outlier_factor={factor!r}: use a number above 1 "
                             "(how far a pixel size may lie from the run's median), or null "
                             "to not check")
    names = [str(n) for n in names]
    pixel = pd.to_numeric(metadata["pixel_size_nm"], errors="coerce").to_numpy(float)
    unknown = np.flatnonzero(~np.isfinite(pixel))
    fix = f"give a pixel_size_nm column in {csv} (a value there overrides the file)"
    if len(unknown):
        first = unknown[0]
        said = (f"{names[first]}: {metadata[PROBLEM].iloc[first]}; {len(unknown)} of "
                f"{len(names)} images have no usable pixel size "
                f"({_listed([names[i] for i in unknown])})")
        if target is not None:
            raise SinterlabError(f"{said}: {fix}, or set preprocess.scale.pixel_size_nm=null "
                                 "to keep pixels as read")
        if len(unknown) < len(names):  # some known, some not: one unit for all
            return [f"{said}, the other {len(names) - len(unknown)} have one: every image's "
                    f"measures are in px (one unit per run); {fix} to measure in µm"]
        return []
    median, outlying = pixel_size_outliers(pixel, factor)
    if not outlying.any():
        return []
    sources = metadata["metadata_source"].to_numpy()
    said = (f"{csv}: pixel size of {int(outlying.sum())} of {len(names)} images differs from "
            f"the run's median {median:g} nm by more than preprocess.scale.outlier_factor="
            f"{factor:g}: " + _listed([f"{names[i]} {pixel[i]:g} nm ({sources[i]})"
                                        for i in np.flatnonzero(outlying)], 3))
    fix = (f"give the right value in a pixel_size_nm column of {csv} (it overrides the file), "
           "or raise preprocess.scale.outlier_factor if it is right")
    if target is not None:
        raise SinterlabError(f"{said}; {fix}")
    return [f"{said}; their measures' lengths use it: {fix}"]
