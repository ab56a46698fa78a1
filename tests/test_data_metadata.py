"""Instrument metadata as each vendor writes it: FEI/Thermo and Zeiss TIFF tags, ImageJ's scale,
Hitachi and JEOL sidecars; descriptor columns fill or override them."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import tifffile

from sinterlab.data.metadata import (
    PROBLEM,
    check_pixel_sizes,
    image_metadata,
    one_unit,
    pixel_size_outliers,
    read_metadata,
)
from sinterlab.errors import SinterlabError

FEI = ("[User]\r\nDate=05/14/2024\r\nTime=10:12:31 AM\r\n[System]\r\nSystemType=Helios G4 UC\r\n"
       "[Beam]\r\nHV=5000\r\n[Scan]\r\nPixelWidth=2.5e-09\r\nPixelHeight=2.5e-09\r\n"
       "Dwelltime=3e-06\r\n[Stage]\r\nWorkingDistance=0.0041\r\n[Detectors]\r\nName=TLD\r\n"
       "[EScan]\r\nMag=50000\r\n")
ZEISS = ("0\r\nAP_PIXEL_SIZE\r\nImage Pixel Size = 2.791 nm\r\nAP_MAG\r\nMag = 40.00 K X\r\n"
         "AP_WD\r\nWD = 5.1 mm\r\nAP_ACTUALKV\r\nEHT = 3.00 kV\r\nDP_DETECTOR_CHANNEL\r\n"
         "Signal A = InLens\r\nAP_DATE\r\nDate :20 Nov 2024\r\nSV_SERIAL_NUMBER\r\n"
         "Serial No. = 4711\r\n")
HITACHI = ("[SemImageFile]\nInstructName=S-4800\nDate=2024/03/01\nPixelSize=4.96094\n"
           "Magnification=25000\nAcceleratingVoltage=5000 Volt\nWorkingDistance=8100 um\n"
           "SignalName=SE(U)\n")
JEOL = ("$CM_FORMAT JEOL/SEM\n$CM_INSTRUMENT JSM-7800F\n$CM_MAG 20000\n$CM_ACCEL_VOLT 5.00\n"
        "$SM_WD 10.0\n$CM_SIGNAL SEI\n$CM_DATE 2024/03/01\n$$SM_MICRON_BAR 200\n"
        "$$SM_MICRON_MARKER 1um\n")


def image(path, dtype=np.uint8, **kwargs):
    tifffile.imwrite(path, np.zeros((32, 32), dtype), **kwargs)
    return path


def test_fei_tag(tmp_path):
    meta = read_metadata(image(tmp_path / "a.tif", np.uint16,
                               extratags=[(34682, "s", 0, FEI, True)]))
    assert meta["pixel_size_nm"] == pytest.approx(2.5)
    assert meta["magnification"] == 50000 and meta["voltage_kv"] == pytest.approx(5.0)
    assert meta["working_distance_mm"] == pytest.approx(4.1)
    assert meta["dwell_us"] == pytest.approx(3.0) and meta["detector"] == "TLD"
    assert meta["acquired"] == "2024-05-14" and meta["instrument"] == "Helios G4 UC"
    assert meta["metadata_source"] == "FEI/Thermo tag"


def test_zeiss_tag(tmp_path):
    meta = read_metadata(image(tmp_path / "a.tif", extratags=[(34118, "s", 0, ZEISS, True)]))
    assert meta["pixel_size_nm"] == pytest.approx(2.791)
    assert meta["magnification"] == pytest.approx(40000)
    assert meta["working_distance_mm"] == pytest.approx(5.1)
    assert meta["voltage_kv"] == pytest.approx(3.0) and meta["detector"] == "InLens"
    assert meta["acquired"] == "2024-11-20" and meta["instrument"] == "Zeiss 4711"


def test_imagej_scale(tmp_path):
    meta = read_metadata(image(tmp_path / "a.tif", imagej=True, resolution=(400, 400),
                               metadata={"unit": "um"}))
    assert meta["pixel_size_nm"] == pytest.approx(2.5)
    assert meta["metadata_source"] == "ImageJ scale"


@pytest.mark.parametrize("text, pixel, magnification, source", [
    (HITACHI, 4.96094, 25000, "Hitachi sidecar"), (JEOL, 5.0, 20000, "JEOL sidecar")])
def test_sidecars(tmp_path, text, pixel, magnification, source):
    path = image(tmp_path / "a.tif")
    (tmp_path / "a.txt").write_text(text)
    meta = read_metadata(path)
    assert meta["pixel_size_nm"] == pytest.approx(pixel)
    assert meta["magnification"] == magnification and meta["metadata_source"] == source
    assert meta["voltage_kv"] == pytest.approx(5.0) and meta["acquired"] == "2024-03-01"


def test_a_sidecar_that_does_not_parse_is_named(tmp_path):
    path = image(tmp_path / "a.tif")
    (tmp_path / "a.txt").write_text("notes from the microscope session\n")
    with pytest.raises(SinterlabError, match=r"a.txt: instrument sidecar not understood"):
        read_metadata(path)


def test_descriptor_columns_fill_and_override_and_are_checked(tmp_path):
    paths = [image(tmp_path / "fei.tif", extratags=[(34682, "s", 0, FEI, True)]),
             image(tmp_path / "plain.tif")]
    table = pd.DataFrame({"pixel_size_nm": [np.nan, 4.0], "magnification": [20000, np.nan]})
    frame = image_metadata([str(p) for p in paths], table, tmp_path / "d.csv")
    assert frame["pixel_size_nm"].tolist() == pytest.approx([2.5, 4.0])
    assert frame["magnification"].tolist()[0] == 20000
    assert frame["metadata_source"].tolist() == ["FEI/Thermo tag + descriptor", "descriptor"]
    for bad in (0, -3, "2 nm", np.inf):
        table = pd.DataFrame({"pixel_size_nm": [bad, 4.0]})
        with pytest.raises(SinterlabError, match=r"d.csv:2: pixel_size_nm .* not a positive"):
            image_metadata([str(p) for p in paths], table, tmp_path / "d.csv")


def fei_with(tmp_path, name: str, pixel_width: str):
    """A TIFF whose FEI tag says ``PixelWidth=pixel_width`` (metres, as the instrument writes)."""
    return image(tmp_path / name, extratags=[
        (34682, "s", 0, FEI.replace("PixelWidth=2.5e-09", f"PixelWidth={pixel_width}"), True)])


@pytest.mark.parametrize("width, said", [
    ("-2.5e-09", "pixel size -2.5 nm in its FEI/Thermo tag is not a positive, finite number"),
    ("0", "pixel size 0 nm in its FEI/Thermo tag is not a positive, finite number"),
    ("inf", "pixel size inf nm in its FEI/Thermo tag is not a positive, finite number"),
    ("nan", "pixel size nan nm in its FEI/Thermo tag is not a positive, finite number"),
    ("n/a", "pixel size 'n/a' in its FEI/Thermo tag is not a number")])
def test_an_impossible_pixel_size_is_never_used_and_says_what_was_read(tmp_path, width, said):
    path = fei_with(tmp_path, "a.tif", width)
    meta = read_metadata(path)
    assert meta["pixel_size_nm"] is None and meta[PROBLEM] == said
    assert meta["magnification"] == 50000  # the rest of the tag is still read
    # a descriptor value overrides it, and the problem is gone
    frame = image_metadata([str(path)], pd.DataFrame({"pixel_size_nm": [3.0]}), tmp_path / "d")
    assert frame["pixel_size_nm"].tolist() == [3.0] and frame[PROBLEM].isna().all()


def test_an_unknown_pixel_size_says_why(tmp_path):
    assert read_metadata(image(tmp_path / "plain.tif"))[PROBLEM] == (
        "pixel size unknown (no instrument metadata in the file or a sidecar)")
    no_width = FEI.replace("PixelWidth=2.5e-09\r\n", "")
    meta = read_metadata(image(tmp_path / "b.tif", extratags=[(34682, "s", 0, no_width, True)]))
    assert meta[PROBLEM] == "pixel size unknown (its FEI/Thermo tag has none)"
    assert read_metadata(image(tmp_path / "c.tif", extratags=[(34682, "s", 0, FEI, True)]))[
        PROBLEM] is None


def test_one_unit_per_run():
    assert one_unit([2.5, 4.0]) == [2.5, 4.0]
    assert one_unit([2.5, None, np.nan]) == [None, None, None]
    assert one_unit([]) == []


def test_pixel_size_outliers_against_the_median():
    median, outlying = pixel_size_outliers([4.0, 4.0, 3.5, 1e6, None, 1.0], 3)
    assert median == 4.0  # of the five known values
    assert outlying.tolist() == [False, False, False, True, False, True]  # 4/1 > 3 too
    assert pixel_size_outliers([2.0, 4.0], 3)[1].tolist() == [False, False]  # within 3x
    assert not pixel_size_outliers([4.0, 1e6], None)[1].any()  # null: no check
    assert pixel_size_outliers([None, None], 3)[0] is None


def metadata(*pixels, source="FEI/Thermo tag") -> pd.DataFrame:
    return pd.DataFrame({"pixel_size_nm": list(pixels),
                         "metadata_source": [source if p is not None else None for p in pixels],
                         PROBLEM: [None if p is not None else "pixel size unknown (no "
                                   "instrument metadata in the file or a sidecar)"
                                   for p in pixels]})


def test_some_images_without_a_pixel_size_warn_or_refuse():
    names = ["a.tif", "b.png", "c.tif", "d.png"]
    mixed = metadata(4.0, None, 4.0, None)
    warned = check_pixel_sizes(names, mixed, {"pixel_size_nm": None}, "d.csv")
    assert len(warned) == 1
    assert warned[0].startswith("b.png: pixel size unknown (no instrument metadata")
    assert "2 of 4 images have no usable pixel size (b.png, d.png)" in warned[0]
    assert "measures are in px" in warned[0] and "pixel_size_nm column in d.csv" in warned[0]
    for target in ("auto", 4.0):
        with pytest.raises(SinterlabError, match=r"2 of 4 images .*\(b.png, d.png\): give a "
                           r"pixel_size_nm column in d.csv"):
            check_pixel_sizes(names, mixed, {"pixel_size_nm": target}, "d.csv")
    # none tagged: pixels for all, nothing to say; all tagged alike: nothing either
    assert check_pixel_sizes(names, metadata(*[None] * 4), {}, "d.csv") == []
    assert check_pixel_sizes(names, metadata(*[4.0] * 4), {"pixel_size_nm": "auto",
                                                          "outlier_factor": 3}, "d.csv") == []


def test_a_pixel_size_far_from_the_median_is_named_before_resampling():
    names = ["a.tif", "b.tif", "c.tif", "wrong.tif"]
    frame = metadata(4.0, 4.0, 3.5, 1e6)
    scale = {"pixel_size_nm": "auto", "outlier_factor": 3}
    with pytest.raises(SinterlabError) as refused:
        check_pixel_sizes(names, frame, scale, "d.csv")
    said = str(refused.value)
    assert "pixel size of 1 of 4 images differs from the run's median 4 nm" in said
    assert "outlier_factor=3: wrong.tif 1e+06 nm (FEI/Thermo tag)" in said
    assert "pixel_size_nm column of d.csv (it overrides the file)" in said
    assert "\n" not in said and "a.tif" not in said
    warned = check_pixel_sizes(names, frame, scale | {"pixel_size_nm": None}, "d.csv")
    assert len(warned) == 1 and "wrong.tif 1e+06 nm" in warned[0]
    assert check_pixel_sizes(names, frame, scale | {"outlier_factor": None}, "d.csv") == []
    with pytest.raises(SinterlabError, match=r"outlier_factor=0.5: use a number above 1"):
        check_pixel_sizes(names, frame, scale | {"outlier_factor": 0.5}, "d.csv")
