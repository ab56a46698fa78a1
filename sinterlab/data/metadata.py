"""What the microscope wrote about each image: pixel size, magnification, beam voltage, working
distance, detector, dwell time, acquisition date and instrument.

TIFF tags are read by tifffile's own vendor parsers (FEI/Thermo Fisher's INI tag, Zeiss
SmartSEM's CZ_SEM tag, ImageJ's scale); Hitachi and JEOL write a text file beside the image
(``<stem>.txt``), read with :mod:`configparser` (Hitachi's INI layout) or as JEOL's
``$KEY value`` lines. Descriptor columns of the same names fill or override what a file lacks.
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
FIELDS = ("pixel_size_nm", "magnification", "voltage_kv", "working_distance_mm", "detector",
          "dwell_us", "acquired", "instrument", "metadata_source")
NUMERIC = ("pixel_size_nm", "magnification", "voltage_kv", "working_distance_mm", "dwell_us")

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


def _fei(meta: dict) -> dict:
    scan, beam, stage = meta.get("Scan", {}), meta.get("Beam", {}), meta.get("Stage", {})
    width = scan.get("PixelWidth")
    magnification = (meta.get("EScan", {}) or {}).get("Mag") or \
        (meta.get("Image", {}) or {}).get("Magnification")
    return {"pixel_size_nm": float(width) * 1e9 if width else None,
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


def read_metadata(path: str | Path) -> dict:
    """The imaging settings recorded for the image at ``path`` (every field of FIELDS, None
    where nothing says). A sidecar that cannot be read is an error naming it."""
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
    return {field: found.get(field) for field in FIELDS}


def image_metadata(paths: list[str], table: pd.DataFrame | None = None,
                   csv: Path | None = None) -> pd.DataFrame:
    """One row per image of ``paths``: what its files say, filled or overridden by the
    descriptor ``table``'s columns of the same names (numbers checked: positive, finite)."""
    frame = pd.DataFrame([read_metadata(p) for p in paths], columns=list(FIELDS))
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
        frame.loc[filled, "metadata_source"] = frame.loc[filled, "metadata_source"].map(
            lambda s: "descriptor" if s is None or pd.isna(s) else f"{s} + descriptor")
    return frame
