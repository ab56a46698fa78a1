"""Load and validate the descriptor CSV: one row per SEM image plus its process parameters.

Contract: column ``image`` (path relative to the CSV's folder), ``sample_id`` (optional; without
it every image is its own sample), optional ``slide``, and the process-parameter columns named by
``data.target``. Target values may be numbers (burst count) or names (a material grade); classes
follow the numeric order when every value is numeric.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from sinterlab.errors import SinterlabError

#: columns the rest of the pipeline reads from ``Descriptor.table``
PATH, IMAGE, SAMPLE, SLIDE, ROW = "path", "image", "sample_id", "slide", "csv_row"


@dataclass(frozen=True)
class Target:
    """One process parameter to predict."""

    name: str
    kind: str  # classification | regression
    classes: tuple[str, ...] = ()  # class values as text, in class-index order
    unit: str = ""
    #: classes are levels of a quantity (numbers, or names given an order): errors have a size
    ordered: bool = False
    #: per class, the value errors are measured in: the number itself, or the level's rank
    values: tuple[float, ...] = ()

    @property
    def class_names(self) -> list[str]:
        return [f"{c} {self.unit}".strip() for c in self.classes]

    @property
    def error_unit(self) -> str:
        """What an ordered target's errors are counted in: its unit, or levels for names."""
        numeric = all(_is_number(c) for c in self.classes)
        return (self.unit or "") if numeric else "levels"

    def as_dict(self) -> dict:
        out = {"name": self.name, "kind": self.kind, "unit": self.unit}
        if self.kind == "classification":
            out |= {"classes": list(self.classes), "class_names": self.class_names,
                    "ordered": self.ordered}
            if self.ordered:
                out |= {"values": list(self.values), "error_unit": self.error_unit}
        return out


@dataclass
class Descriptor:
    """The validated table (absolute ``path`` column added) and the targets to predict."""

    csv: Path
    table: pd.DataFrame
    targets: list[Target]
    notes: list[str] = field(default_factory=list)
    #: what was normalised on the way in (e.g. spaces trimmed): logged and shown in the report
    warnings: list[str] = field(default_factory=list)

    def target_matrix(self) -> np.ndarray:
        """(n_images, n_targets) floats: class indices for classification, values otherwise."""
        columns = []
        for t in self.targets:
            if t.kind == "classification":
                index = {c: i for i, c in enumerate(t.classes)}
                columns.append(self.table[t.name].map(str_label).map(index).to_numpy(float))
            else:
                columns.append(self.table[t.name].to_numpy(float))
        return np.stack(columns, axis=1)


def str_label(value: object) -> str:
    """A class value as text, the spelling of ``Target.classes``: 100.0 -> '100',
    'C110' -> 'C110'."""
    if isinstance(value, (int, float, np.integer, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value)


def _is_number(text: str) -> bool:
    return bool(pd.notna(pd.to_numeric(pd.Series([text]), errors="coerce")[0]))


def _order(csv: Path, name: str, found: list[str], order) -> tuple[list[str], bool]:
    """The classes in their order and whether they are ordered: numbers are, in numeric order,
    unless ``order`` is false; names are when ``order`` lists every one of them."""
    numeric = all(_is_number(c) for c in found)
    if order is None:
        return found, numeric
    if order is False:
        return found, False
    wanted = [str_label(c).strip() for c in order]
    if sorted(wanted) != sorted(found):
        missing, extra = sorted(set(found) - set(wanted)), sorted(set(wanted) - set(found))
        raise SinterlabError(f"{csv}: data.order.{name} {wanted} does not match the classes of "
                             f"{name!r} {found} (missing {missing}, not in the data {extra}); "
                             "list each class once, lowest level first")
    return wanted, True


def _natural_key(text: str) -> tuple:
    """'50 BC' < '100 BC' < 'C9' < 'C10': digit runs compare as numbers."""
    return tuple((0, float(part), "") if part[:1].isdigit() else (1, 0.0, part)
                 for part in re.split(r"(\d+(?:\.\d+)?)", text) if part)


def _ordered_classes(values: pd.Series) -> list[str]:
    """Numbers in numeric order; names in natural order (so '50 BC' precedes '100 BC')."""
    numeric = pd.to_numeric(values, errors="coerce")
    if numeric.notna().all():
        return [str_label(v) for v in sorted(pd.unique(numeric))]
    return sorted({str_label(v) for v in pd.unique(values)}, key=_natural_key)


def blank(column: pd.Series) -> pd.Series:
    """Cells that are empty or only spaces."""
    return column.isna() | (column.astype(str).str.strip() == "")


def _rows(csv: Path, table: pd.DataFrame, mask: pd.Series, limit: int = 5) -> str:
    """'rows 3, 7 and 2 more' for the rows where ``mask`` holds (CSV line numbers)."""
    lines = [str(r) for r in table[ROW][mask]]
    more = f" and {len(lines) - limit} more" if len(lines) > limit else ""
    return f"{csv}:{','.join(lines[:limit])}{more}"


def _check_numeric_target(csv: Path, table: pd.DataFrame, name: str) -> None:
    """A column of numbers with a few stray texts ('150 BC') must not become text classes, and
    an infinity ('inf', '1e999') is no parameter value."""
    numeric = pd.to_numeric(table[name], errors="coerce")
    stray = numeric.isna() & table[name].notna()
    if stray.any() and numeric.notna().sum() > stray.sum():
        values = sorted({str(v) for v in table[name][stray]})[:5]
        raise SinterlabError(
            f"{_rows(csv, table, stray)}: {name!r} values {values} are not numbers while "
            f"{int(numeric.notna().sum())} others are; write plain numbers (units belong in "
            f"data.units) so they are not read as extra classes")
    infinite = pd.Series(np.isinf(numeric.to_numpy(float)), table.index)
    if infinite.any():
        values = sorted({str(v) for v in table[name][infinite]})[:5]
        raise SinterlabError(f"{_rows(csv, table, infinite)}: {name!r} values {values} are "
                             "infinite; write the finite value or remove the row")


def _normalise_labels(csv: Path, table: pd.DataFrame, name: str) -> str | None:
    """Trim spaces around text labels (a warning, returned) and refuse labels that differ only
    by case ('low' and 'Low'): both would silently become separate classes."""
    text = table[name].map(lambda v: v if pd.isna(v) else str_label(v))
    trimmed = text.map(lambda v: v.strip() if isinstance(v, str) else v)
    changed = (text != trimmed) & text.notna()
    warning = None
    if changed.any():
        table[name] = table[name].where(~changed, trimmed)
        warning = (f"{_rows(csv, table, changed)}: spaces trimmed around {int(changed.sum())} "
                   f"{name!r} value(s) (e.g. {text[changed].iloc[0]!r} read as "
                   f"{trimmed[changed].iloc[0]!r})")
    spellings = trimmed.dropna().groupby(trimmed.dropna().str.casefold()).unique()
    clash = spellings[spellings.map(len) > 1]
    if len(clash):
        variants = sorted(clash.iloc[0])
        common = trimmed[trimmed.isin(variants)].value_counts().index[0]
        rows = trimmed.isin(variants) & (trimmed != common)  # the rarer spellings
        raise SinterlabError(
            f"{_rows(csv, table, rows)}: {name!r} values {variants} differ only by case; "
            "spell each class one way (they would be read as separate classes)")
    return warning


def _check_one_label_per_sample(csv: Path, table: pd.DataFrame, name: str) -> None:
    """A sample (one sintered spot) has one value of each process parameter; a sample_id reused
    under two values is a typo that grouped splits would turn into a contradiction."""
    values = table[name].map(str_label)
    per_sample = values.groupby(table[SAMPLE]).nunique()
    mixed = per_sample[per_sample > 1]
    if len(mixed):
        sample = mixed.index[0]
        mine = table[SAMPLE] == sample
        found = sorted(set(values[mine]), key=_natural_key)
        more = f" ({len(mixed) - 1} more samples like it)" if len(mixed) > 1 else ""
        raise SinterlabError(
            f"{_rows(csv, table, mine)}: sample {sample!r} has {name!r} values {found}; a "
            f"sample has one value of each parameter: fix the sample_id or the value{more}")


def read_table(csv: Path) -> pd.DataFrame:
    """Read a descriptor CSV; a wrong delimiter, an empty file or no rows is a one-line error."""
    try:
        table = pd.read_csv(csv)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as err:
        reason = " ".join(str(err).split()) or "empty file"  # pandas' messages end with "\n"
        raise SinterlabError(f"{csv}: not a readable CSV ({reason}); save it as UTF-8 CSV with "
                             "a header row") from err
    if len(table.columns) == 1:
        header = str(table.columns[0])
        for delimiter, name in ((";", "semicolons"), ("\t", "tabs"), ("|", "bars")):
            if delimiter in header:
                raise SinterlabError(
                    f"{csv}: columns are separated by {name}, not commas (header "
                    f"{header[:60]!r}); save it as comma-separated CSV (e.g. in Excel: "
                    "'CSV UTF-8 (Comma delimited)')")
    if table.empty:
        raise SinterlabError(f"{csv}: the descriptor has a header but no image rows; add one "
                             "row per image")
    return table


def load_descriptor(
    csv: str | Path,
    target: str | list[str],
    task: str,
    classes: list | None = None,
    image_column: str = IMAGE,
    sample_column: str = SAMPLE,
    slide_column: str = SLIDE,
    units: dict | None = None,
    check_files: bool = True,
    order: dict | None = None,
) -> Descriptor:
    """Read ``csv`` and check it; every problem is one ``SinterlabError`` naming row and fix."""
    csv = Path(csv).expanduser().resolve()
    _check_task_and_file(csv, task)
    table = read_table(csv)
    names = [target] if isinstance(target, str) else list(target)
    table = _image_rows(csv, table, names, image_column)
    has_samples = sample_column in table.columns
    table, notes = _sample_and_slide(csv, table, sample_column, slide_column)
    table[IMAGE] = table[IMAGE].astype(str)
    _check_images_listed_once(csv, table)
    warnings = _check_target_columns(csv, table, names, has_samples)
    table = _keep_classes(csv, table, names[0], classes)
    units, order = dict(units or {}), dict(order or {})
    _check_order_names(names, task, order)
    targets = [_target(csv, table, name, task, str(units.get(name, "")), order.get(name))
               for name in names]
    _add_paths(csv, table, check_files)
    return Descriptor(csv, table, targets, notes, warnings)


def _check_task_and_file(csv: Path, task: str) -> None:
    """The task is one sinterlab knows and the descriptor CSV exists."""
    if task not in ("classification", "regression"):
        raise SinterlabError(f"task={task!r} is unknown: use task=classification or "
                             "task=regression")
    if not csv.is_file():
        raise SinterlabError(f"{csv}: descriptor CSV not found; set data.descriptor=PATH "
                             "(or run `make demo` to generate the demo data)")


def _image_rows(csv: Path, table: pd.DataFrame, names: list[str],
                image_column: str) -> pd.DataFrame:
    """The table with its image column named ``image`` and each row's CSV line (``csv_row``);
    a missing image or target column, or an empty image cell, is refused."""
    missing = [c for c in [image_column, *names] if c not in table.columns]
    if missing:
        raise SinterlabError(f"{csv}: missing column(s) {missing}; columns present are "
                             f"{list(table.columns)} (set data.target / data.image_column)")
    table = table.rename(columns={image_column: IMAGE})
    table[ROW] = table.index + 2  # line in the CSV, for error messages
    empty_images = blank(table[IMAGE])
    if empty_images.any():
        raise SinterlabError(f"{_rows(csv, table, empty_images)}: empty '{image_column}' cell; "
                             "give the image path (relative to the CSV's folder) or remove the "
                             "row")
    return table


def _sample_and_slide(csv: Path, table: pd.DataFrame, sample_column: str,
                      slide_column: str) -> tuple[pd.DataFrame, list[str]]:
    """The table with ``sample_id`` (as text; each image its own sample without the column)
    and ``slide`` (as text, blank cells empty) named so, and the notes on what was assumed;
    an empty sample cell is refused."""
    notes: list[str] = []
    if sample_column in table.columns:
        table = table.rename(columns={sample_column: SAMPLE})
        empty = blank(table[SAMPLE])
        if empty.any():
            raise SinterlabError(
                f"{_rows(csv, table, empty)}: empty '{sample_column}' cell; name the sample "
                "every image was taken from (or drop the column: each image is then its own "
                "sample)")
    else:
        table[SAMPLE] = table[IMAGE]
        notes.append(f"no '{sample_column}' column: each image is its own sample")
    table[SAMPLE] = table[SAMPLE].astype(str)
    if slide_column in table.columns:
        table = table.rename(columns={slide_column: SLIDE})
        table[SLIDE] = table[SLIDE].map(lambda v: "" if pd.isna(v) else str_label(v))
    return table, notes


def _check_images_listed_once(csv: Path, table: pd.DataFrame) -> None:
    """No image listed twice; paths compare resolved ('images/a.tif' and './images/a.tif' are
    the same image)."""
    resolved = pd.Series([str((csv.parent / p).resolve()) for p in table[IMAGE]], table.index)
    duplicated = table[IMAGE][resolved.duplicated()]
    if len(duplicated):
        row = int(duplicated.index[0]) + 2
        raise SinterlabError(f"{csv}:{row}: image {duplicated.iloc[0]!r} is listed twice; "
                             "keep one row per image")


def _check_target_columns(csv: Path, table: pd.DataFrame, names: list[str],
                          has_samples: bool) -> list[str]:
    """Check every target column (no blank cell, one spelling per class, numbers that are
    numbers, one value per sample where samples are named), trimming spaces around labels in
    place; returns the warnings of what was trimmed."""
    warnings: list[str] = []
    for name in names:
        empty = blank(table[name])
        if empty.any():
            raise SinterlabError(f"{_rows(csv, table, empty)}: no value in target column "
                                 f"{name!r}; fill it or remove the row")
        warnings += [w for w in [_normalise_labels(csv, table, name)] if w]
        _check_numeric_target(csv, table, name)
        if has_samples:
            _check_one_label_per_sample(csv, table, name)
    return warnings


def _keep_classes(csv: Path, table: pd.DataFrame, primary: str,
                  classes: list | None) -> pd.DataFrame:
    """The rows whose ``primary`` target is one of ``classes`` (``data.classes``; None: every
    row); a class absent from the data is refused."""
    if classes is None:
        return table
    wanted = {str_label(c) for c in classes}
    present = set(table[primary].map(str_label))
    absent = sorted(wanted - present)
    if absent:
        raise SinterlabError(f"{csv}: data.classes {absent} not found in column "
                             f"{primary!r} (values present: {sorted(present)})")
    return table[table[primary].map(str_label).isin(wanted)].reset_index(drop=True)


def _check_order_names(names: list[str], task: str, order: dict) -> None:
    """``data.order`` names targets only, and only for classification."""
    unknown = sorted(set(order) - set(names))
    if unknown:
        raise SinterlabError(f"data.order names {unknown}, which are not targets "
                             f"(data.target={names}); remove them from data.order")
    if order and task != "classification":
        raise SinterlabError(f"data.order is for classification targets; a regression target "
                             f"is a number already: remove data.order.{next(iter(order))}")


def _target(csv: Path, table: pd.DataFrame, name: str, task: str, unit: str,
            order) -> Target:
    """Target ``name`` of ``task``: a classification target's classes in their order, or a
    regression target's column made numeric (in place)."""
    if task == "classification":
        return _class_target(csv, table, name, unit, order)
    return _value_target(csv, table, name, unit)


def _class_target(csv: Path, table: pd.DataFrame, name: str, unit: str, order) -> Target:
    """A classification target: at least two classes, in their order (``order``: the
    ``data.order`` entry of ``name``, or None), with each class's value where ordered."""
    found = _ordered_classes(table[name])
    if len(found) < 2:
        raise SinterlabError(f"{csv}: classification needs at least two classes in "
                             f"{name!r}, found {found}; widen data.classes")
    classes, ordered = _order(csv, name, found, order)
    values = tuple(float(c) if all(_is_number(k) for k in classes) else float(i)
                   for i, c in enumerate(classes)) if ordered else ()
    return Target(name, "classification", tuple(classes), unit, ordered, values)


def _value_target(csv: Path, table: pd.DataFrame, name: str, unit: str) -> Target:
    """A regression target: its column, every cell a number, made numeric in place."""
    numeric = pd.to_numeric(table[name], errors="coerce")
    if numeric.isna().any():
        bad = numeric.isna()
        values = sorted({str(v) for v in table[name][bad]})[:5]
        raise SinterlabError(f"{_rows(csv, table, bad)}: {name!r} values {values} are "
                             "not numbers; regression needs numbers (or use "
                             "task=classification)")
    table[name] = numeric
    return Target(name, "regression", (), unit)


def _add_paths(csv: Path, table: pd.DataFrame, check_files: bool) -> None:
    """Add each image's absolute ``path`` (relative to the CSV's folder) in place; with
    ``check_files``, an image file that is not there is refused."""
    table[PATH] = [str((csv.parent / p).resolve()) for p in table[IMAGE]]
    if check_files:
        for row, image, p in zip(table[ROW], table[IMAGE], table[PATH], strict=True):
            if not Path(p).is_file():
                raise SinterlabError(f"{csv}:{row}: image file {p} not found; fix the "
                                     "'image' path (relative to the CSV's folder)"
                                     + backslash_hint(image))


def backslash_hint(path: str) -> str:
    """A Windows path ('images\\a.tif') names no file here: say so."""
    return ("; it holds backslashes: write paths with forward slashes ('images/a.tif')"
            if "\\" in str(path) else "")


def extra_input_matrix(table: pd.DataFrame, csv: Path, names: list[str],
                       targets: list[str] | None = None, fix: str = "") -> np.ndarray:
    """(n_rows, len(names)) float32: the numeric descriptor columns ``names``
    (``data.extra_inputs``) that the models read beside each image's embedding. Refused, one
    line each, naming rows and fix: a column that is absent, one that is a target (it would
    give the answer away), a blank cell, a text or an infinite value. ``fix``: how to give a
    missing column (predict)."""
    names = [str(n) for n in names]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise SinterlabError(f"data.extra_inputs names {twice} more than once; list each "
                             "column once")
    given = sorted(set(names) & set(targets or []))
    if given:
        raise SinterlabError(f"data.extra_inputs {given} is the target itself (data.target="
                             f"{list(targets)}): it would give the answer away; remove it "
                             "from data.extra_inputs")
    reserved = sorted(set(names) & {IMAGE, SAMPLE, SLIDE, PATH, ROW})
    missing = [n for n in names if n not in table.columns or n in reserved]
    if missing:
        present = [c for c in table.columns if c not in (PATH, ROW)]
        raise SinterlabError(f"{csv}: data.extra_inputs column(s) {missing} not found (columns "
                             f"present are {present}); "
                             + (fix or "fix data.extra_inputs or add the column"))
    columns = []
    for name in names:
        empty = blank(table[name])
        if empty.any():
            raise SinterlabError(f"{_rows(csv, table, empty)}: no value in extra input column "
                                 f"{name!r} ({int(empty.sum())} rows); fill it or remove the "
                                 "rows (the models need every image's value)")
        numeric = pd.to_numeric(table[name], errors="coerce")
        text = numeric.isna()
        if text.any():
            values = sorted({str(v) for v in table[name][text]})[:5]
            raise SinterlabError(f"{_rows(csv, table, text)}: extra input column {name!r} "
                                 f"holds text {values}; extra inputs must be plain numbers "
                                 "(units belong in the column name)")
        infinite = pd.Series(np.isinf(numeric.to_numpy(float)), table.index)
        if infinite.any():
            raise SinterlabError(f"{_rows(csv, table, infinite)}: extra input column {name!r} "
                                 "holds infinite values; write the finite value or remove the "
                                 "row")
        columns.append(numeric.to_numpy(np.float32))
    return np.stack(columns, axis=1) if columns else np.zeros((len(table), 0), np.float32)
