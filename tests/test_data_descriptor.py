"""Descriptor CSV: loading, class order and subsets, and one-line errors naming CSV and row."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from sinterlab.data.descriptor import IMAGE, PATH, ROW, SAMPLE, SLIDE, load_descriptor
from sinterlab.errors import SinterlabError


def write(tmp_path: Path, text: str, images: list[str] | None = None,
          name: str = "descriptor.csv") -> Path:
    """Write the CSV ``text`` and a tiny PNG for every image it names (or for ``images``)."""
    csv = tmp_path / name
    csv.write_text(text.strip() + "\n")
    lines = text.strip().splitlines()
    column = lines[0].split(",").index("image") if "image" in lines[0].split(",") else 0
    for entry in images if images is not None else [ln.split(",")[column] for ln in lines[1:]]:
        path = tmp_path / entry
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), np.full((8, 8), 128, np.uint8))
    return csv


VALID = """
image,sample_id,slide,burst_count,duty_cycle,power_w
images/a1.png,s1-100,1,100,50,1.1
images/a2.png,s1-100,1,100,50,1.1
images/b1.png,s1-250,1,250,50,1.1
images/c1.png,s2-50,2,50,70,1.1
images/c2.png,s2-50,2,50,70,1.1
"""


def expect_error(csv: Path, match: str, *args, **kwargs) -> str:
    """Call load_descriptor, expect a one-line SinterlabError naming the CSV and ``match``."""
    with pytest.raises(SinterlabError, match=match) as info:
        load_descriptor(csv, *args, **kwargs)
    message = str(info.value)
    assert "\n" not in message, message
    assert str(csv.resolve()) in message, message
    return message


# ----------------------------------------------------------------------------- loading
def test_valid_descriptor_loads(tmp_path):
    csv = write(tmp_path, VALID)
    d = load_descriptor(csv, "burst_count", "classification", units={"burst_count": "BC"})
    assert d.csv == csv.resolve()
    assert len(d.table) == 5 and d.notes == []
    assert list(d.table[ROW]) == [2, 3, 4, 5, 6]
    assert all(Path(p).is_file() and Path(p).is_absolute() for p in d.table[PATH])
    assert d.table[PATH][0] == str((tmp_path / "images/a1.png").resolve())
    assert list(d.table[SAMPLE]) == ["s1-100", "s1-100", "s1-250", "s2-50", "s2-50"]
    assert list(d.table[SLIDE]) == ["1", "1", "1", "2", "2"]
    [target] = d.targets
    assert target.classes == ("50", "100", "250")  # numeric order, not text order
    assert target.class_names == ["50 BC", "100 BC", "250 BC"]
    np.testing.assert_array_equal(d.target_matrix()[:, 0], [1, 1, 2, 0, 0])


def test_multi_target_and_regression(tmp_path):
    csv = write(tmp_path, VALID)
    d = load_descriptor(csv, ["burst_count", "duty_cycle"], "regression")
    assert [t.name for t in d.targets] == ["burst_count", "duty_cycle"]
    assert all(t.kind == "regression" and t.classes == () for t in d.targets)
    np.testing.assert_array_equal(d.target_matrix(),
                                  [[100, 50], [100, 50], [250, 50], [50, 70], [50, 70]])


def test_numeric_classes_are_ordered_numerically(tmp_path):
    csv = write(tmp_path, """
image,sample_id,burst_count
i/1.png,a,250
i/2.png,b,50
i/3.png,c,1000
i/4.png,d,100
i/5.png,e,50.0
""")
    d = load_descriptor(csv, "burst_count", "classification")
    assert d.targets[0].classes == ("50", "100", "250", "1000")
    np.testing.assert_array_equal(d.target_matrix()[:, 0], [2, 0, 3, 1, 0])


def test_names_as_classes(tmp_path):
    csv = write(tmp_path, """
image,sample_id,grade
i/1.png,a,C110
i/2.png,b,C101
i/3.png,c,C110
""")
    d = load_descriptor(csv, "grade", "classification")
    assert d.targets[0].classes == ("C101", "C110")
    np.testing.assert_array_equal(d.target_matrix()[:, 0], [1, 0, 1])


def test_class_subset_filters_rows(tmp_path):
    csv = write(tmp_path, VALID)
    d = load_descriptor(csv, "burst_count", "classification", classes=[250, "100"])
    assert d.targets[0].classes == ("100", "250")
    assert list(d.table[IMAGE]) == ["images/a1.png", "images/a2.png", "images/b1.png"]
    assert list(d.table[ROW]) == [2, 3, 4]  # rows still point into the CSV
    np.testing.assert_array_equal(d.target_matrix()[:, 0], [0, 0, 1])


def test_one_class_subset_is_an_error(tmp_path):
    csv = write(tmp_path, VALID)
    expect_error(csv, "at least two classes", "burst_count", "classification", classes=[100])


def test_classes_not_present_is_an_error(tmp_path):
    csv = write(tmp_path, VALID)
    message = expect_error(csv, "data.classes", "burst_count", "classification",
                           classes=[100, 175])
    assert "175" in message


def test_no_sample_column_makes_each_image_a_sample(tmp_path):
    csv = write(tmp_path, """
image,burst_count
i/1.png,100
i/2.png,250
i/3.png,100
""")
    d = load_descriptor(csv, "burst_count", "classification")
    assert list(d.table[SAMPLE]) == list(d.table[IMAGE])
    assert any("each image is its own sample" in note for note in d.notes)
    assert SLIDE not in d.table.columns


def test_renamed_columns(tmp_path):
    csv = write(tmp_path, """
file,spot,bc
i/1.png,x,100
i/2.png,y,250
""", images=["i/1.png", "i/2.png"])
    d = load_descriptor(csv, "bc", "classification", image_column="file", sample_column="spot")
    assert list(d.table[IMAGE]) == ["i/1.png", "i/2.png"]
    assert list(d.table[SAMPLE]) == ["x", "y"]


# ----------------------------------------------------------------------------- errors
def test_missing_column_is_named(tmp_path):
    csv = write(tmp_path, VALID)
    message = expect_error(csv, "missing column", "exposure_ms", "classification")
    assert "exposure_ms" in message
    bad = write(tmp_path, "path,burst_count\ni/1.png,100\n", images=["i/1.png"], name="b.csv")
    assert "'image'" in expect_error(bad, "missing column", "burst_count", "classification")


def test_missing_image_file_names_file_and_row(tmp_path):
    csv = write(tmp_path, VALID, images=["images/a1.png", "images/a2.png", "images/c1.png",
                                         "images/c2.png"])
    message = expect_error(csv, "b1.png", "burst_count", "classification")
    assert f"{csv.resolve()}:4:" in message and "not found" in message
    # check_files=False skips the check (prediction on a descriptor without all files)
    assert len(load_descriptor(csv, "burst_count", "classification", check_files=False).table)


def test_duplicate_image_rows(tmp_path):
    csv = write(tmp_path, VALID + "images/b1.png,s1-250,1,250,50,1.1\n")
    message = expect_error(csv, "listed twice", "burst_count", "classification")
    assert "b1.png" in message and f"{csv.resolve()}:7:" in message


def test_same_image_spelled_twice(tmp_path):
    csv = write(tmp_path, VALID + "./images/../images/b1.png,s9,1,250,50,1.1\n",
                images=["images/a1.png", "images/a2.png", "images/b1.png", "images/c1.png",
                        "images/c2.png"])
    message = expect_error(csv, "listed twice", "burst_count", "classification")
    assert f"{csv.resolve()}:7:" in message


def test_nan_target(tmp_path):
    csv = write(tmp_path, VALID.replace("images/b1.png,s1-250,1,250", "images/b1.png,s1-250,1,"))
    message = expect_error(csv, "no value in target column 'burst_count'", "burst_count",
                           "classification")
    assert f"{csv.resolve()}:4:" in message


def test_regression_on_names(tmp_path):
    csv = write(tmp_path, """
image,sample_id,grade
i/1.png,a,1.5
i/2.png,b,C101
""")
    message = expect_error(csv, "are not numbers", "grade", "regression")
    assert "'C101'" in message and f"{csv.resolve()}:3:" in message


def test_unknown_task_and_missing_csv(tmp_path):
    csv = write(tmp_path, VALID)
    with pytest.raises(SinterlabError, match="task='ranking'"):
        load_descriptor(csv, "burst_count", "ranking")
    expect_error(tmp_path / "absent.csv", "descriptor CSV not found", "burst_count",
                 "classification")


def test_malformed_csv_is_a_one_line_error(tmp_path):
    csv = tmp_path / "broken.csv"
    csv.write_text("image,burst_count\ni/1.png,100\ni/2.png,250,7,8\n")
    expect_error(csv, "not a readable CSV", "burst_count", "classification")


def test_a_stray_unit_among_numbers_is_an_error_naming_rows(tmp_path):
    csv = write(tmp_path, """
image,sample_id,burst_count
i/1.png,a,50
i/2.png,b,150 BC
i/3.png,c,250
i/4.png,d,150
""")
    message = expect_error(csv, "not numbers", "burst_count", "classification")
    assert f"{csv.resolve()}:3:" in message and "'150 BC'" in message and "data.units" in message


def test_named_classes_with_numbers_sort_naturally(tmp_path):
    csv = write(tmp_path, """
image,sample_id,burst_count
i/1.png,a,100 BC
i/2.png,b,50 BC
i/3.png,c,250 BC
""")
    d = load_descriptor(csv, "burst_count", "classification")
    assert d.targets[0].classes == ("50 BC", "100 BC", "250 BC")


@pytest.mark.parametrize("column", ["image", "sample_id"])
def test_empty_image_or_sample_cell_is_an_error(tmp_path, column):
    text = VALID.replace("images/b1.png,s1-250", "images/b1.png," if column == "sample_id"
                         else ",s1-250")
    csv = write(tmp_path, text, images=["images/a1.png", "images/a2.png", "images/b1.png",
                                        "images/c1.png", "images/c2.png"])
    message = expect_error(csv, f"empty '{column}' cell", "burst_count", "classification")
    assert f"{csv.resolve()}:4:" in message


def test_wrong_delimiter_and_no_rows(tmp_path):
    csv = write(tmp_path, VALID.replace(",", ";"), images=[])
    assert "semicolons" in expect_error(csv, "separated by", "burst_count", "classification")
    header = tmp_path / "header.csv"
    header.write_text("image,sample_id,burst_count\n")
    expect_error(header, "no image rows", "burst_count", "regression")


def test_numbers_are_ordered_and_names_are_ordered_when_told(tmp_path):
    rows = [("a.tif", "s1", "high", 250), ("b.tif", "s2", "low", 50), ("c.tif", "s3", "mid", 150)]
    csv = tmp_path / "d.csv"
    pd.DataFrame(rows, columns=["image", "sample_id", "grade", "bc"]).to_csv(csv, index=False)
    numbers = load_descriptor(csv, "bc", "classification", check_files=False).targets[0]
    assert numbers.ordered and numbers.values == (50.0, 150.0, 250.0)
    names = load_descriptor(csv, "grade", "classification", check_files=False).targets[0]
    assert not names.ordered and names.classes == ("high", "low", "mid")
    told = load_descriptor(csv, "grade", "classification", check_files=False,
                           order={"grade": ["low", "mid", "high"]}).targets[0]
    assert told.ordered and told.classes == ("low", "mid", "high") and told.error_unit == "levels"
    assert told.values == (0.0, 1.0, 2.0)
    off = load_descriptor(csv, "bc", "classification", check_files=False,
                          order={"bc": False}).targets[0]
    assert not off.ordered
    with pytest.raises(SinterlabError, match=r"data.order.grade \['low', 'high'\] does not match"):
        load_descriptor(csv, "grade", "classification", check_files=False,
                        order={"grade": ["low", "high"]})
    with pytest.raises(SinterlabError, match="data.order is for classification targets"):
        load_descriptor(csv, "bc", "regression", check_files=False, order={"bc": [50, 150, 250]})
    with pytest.raises(SinterlabError, match=r"data.order names \['gradee'\]"):
        load_descriptor(csv, "grade", "classification", check_files=False,
                        order={"gradee": ["low", "mid", "high"]})
