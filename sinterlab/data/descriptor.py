"""Load and validate the descriptor CSV: one row per SEM image plus its process parameters.

Contract: column ``image`` (path relative to the CSV's folder), ``sample_id`` (optional; without
it every image is its own sample), optional ``slide``, and the process-parameter columns named by
``data.target``. Target values may be numbers (burst count) or names (a material grade); classes
follow the numeric order when every value is numeric.
"""

from __future__ import annotations

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

    @property
    def class_names(self) -> list[str]:
        return [f"{c} {self.unit}".strip() for c in self.classes]

    def as_dict(self) -> dict:
        out = {"name": self.name, "kind": self.kind, "unit": self.unit}
        if self.kind == "classification":
            out |= {"classes": list(self.classes), "class_names": self.class_names}
        return out


@dataclass
class Descriptor:
    """The validated table (absolute ``path`` column added) and the targets to predict."""

    csv: Path
    table: pd.DataFrame
    targets: list[Target]
    notes: list[str] = field(default_factory=list)

    def target_matrix(self) -> np.ndarray:
        """(n_images, n_targets) floats: class indices for classification, values otherwise."""
        columns = []
        for t in self.targets:
            if t.kind == "classification":
                index = {c: i for i, c in enumerate(t.classes)}
                columns.append(self.table[t.name].map(_as_text).map(index).to_numpy(float))
            else:
                columns.append(self.table[t.name].to_numpy(float))
        return np.stack(columns, axis=1)


def _as_text(value: object) -> str:
    """Class value as shown to people: 100.0 -> '100', 'C110' -> 'C110'."""
    if isinstance(value, (int, float, np.integer, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value)


def _ordered_classes(values: pd.Series) -> list[str]:
    numeric = pd.to_numeric(values, errors="coerce")
    unique = pd.unique(values)
    if numeric.notna().all():
        return [_as_text(v) for v in sorted(pd.unique(numeric))]
    return sorted(_as_text(v) for v in unique)


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
) -> Descriptor:
    """Read ``csv`` and check it; every problem is one ``SinterlabError`` naming row and fix."""
    csv = Path(csv).expanduser().resolve()
    if task not in ("classification", "regression"):
        raise SinterlabError(f"task={task!r} is unknown: use task=classification or "
                             "task=regression")
    if not csv.is_file():
        raise SinterlabError(f"{csv}: descriptor CSV not found; set data.descriptor=PATH "
                             "(or run `make demo` to generate the demo data)")
    try:
        table = pd.read_csv(csv)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as err:
        reason = " ".join(str(err).split())  # pandas' messages end with a newline
        raise SinterlabError(f"{csv}: not a readable CSV ({reason}); save it as UTF-8 CSV with "
                             "a header row") from err
    names = [target] if isinstance(target, str) else list(target)
    missing = [c for c in [image_column, *names] if c not in table.columns]
    if missing:
        raise SinterlabError(f"{csv}: missing column(s) {missing}; columns present are "
                             f"{list(table.columns)} (set data.target / data.image_column)")
    table = table.rename(columns={image_column: IMAGE})
    table[ROW] = table.index + 2  # line in the CSV, for error messages
    notes: list[str] = []
    if sample_column in table.columns:
        table = table.rename(columns={sample_column: SAMPLE})
    else:
        table[SAMPLE] = table[IMAGE]
        notes.append(f"no '{sample_column}' column: each image is its own sample")
    table[SAMPLE] = table[SAMPLE].astype(str)
    if slide_column in table.columns:
        table = table.rename(columns={slide_column: SLIDE})
        table[SLIDE] = table[SLIDE].astype(str)
    table[IMAGE] = table[IMAGE].astype(str)

    # compare resolved paths: 'images/a.tif' and './images/a.tif' are the same image
    resolved = pd.Series([str((csv.parent / p).resolve()) for p in table[IMAGE]], table.index)
    duplicated = table[IMAGE][resolved.duplicated()]
    if len(duplicated):
        row = int(duplicated.index[0]) + 2
        raise SinterlabError(f"{csv}:{row}: image {duplicated.iloc[0]!r} is listed twice; "
                             "keep one row per image")
    for name in names:
        empty = table[name].isna()
        if empty.any():
            row = int(empty.idxmax()) + 2
            raise SinterlabError(f"{csv}:{row}: no value in target column {name!r}; fill it "
                                 "or remove the row")

    primary = names[0]
    if classes is not None:
        wanted = {_as_text(c) for c in classes}
        present = set(table[primary].map(_as_text))
        absent = sorted(wanted - present)
        if absent:
            raise SinterlabError(f"{csv}: data.classes {absent} not found in column "
                                 f"{primary!r} (values present: {sorted(present)})")
        table = table[table[primary].map(_as_text).isin(wanted)].reset_index(drop=True)

    units = dict(units or {})
    targets = []
    for name in names:
        unit = str(units.get(name, ""))
        if task == "classification":
            found = _ordered_classes(table[name])
            if len(found) < 2:
                raise SinterlabError(f"{csv}: classification needs at least two classes in "
                                     f"{name!r}, found {found}; widen data.classes")
            targets.append(Target(name, task, tuple(found), unit))
        else:
            numeric = pd.to_numeric(table[name], errors="coerce")
            if numeric.isna().any():
                bad = int(numeric.isna().idxmax())
                raise SinterlabError(f"{csv}:{table[ROW][bad]}: {name!r} value "
                                     f"{table[name][bad]!r}"
                                     " is not a number; regression needs numbers (or use "
                                     "task=classification)")
            table[name] = numeric
            targets.append(Target(name, task, (), unit))

    table[PATH] = [str((csv.parent / p).resolve()) for p in table[IMAGE]]
    if check_files:
        for row, p in zip(table[ROW], table[PATH], strict=True):
            if not Path(p).is_file():
                raise SinterlabError(f"{csv}:{row}: image file {p} not found; fix the "
                                     "'image' path (relative to the CSV's folder)")
    return Descriptor(csv, table, targets, notes)
