"""Responses per sample: anything measured on a sample, aggregated over its rows (mean and
within-sample spread).

A response comes from a numeric descriptor column (``source: descriptor``, e.g. a sheet
resistance measured outside the microscope; blank cells allowed), from image measures
(``source: measures``: a finished training run's ``measures.csv`` or measures computed for the
descriptor's images: porosity and the others, one row per image with its ``sample_id``), or from
any other CSV with a sample column (``source: table`` with ``path`` and ``sample_column``, e.g.
a run's ``oof_samples.csv``, whose sample column is ``sample``: the model's out-of-fold
outputs). ``log: true`` models the response on a log10 scale (positive, multiplicative
quantities such as a resistance).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from sinterlab.data.descriptor import blank, read_table
from sinterlab.errors import SinterlabError

DESCRIPTOR, MEASURES, TABLE = "descriptor", "measures", "table"
SOURCES = (DESCRIPTOR, MEASURES, TABLE)


@dataclass(frozen=True)
class Response:
    """One response: where it is read from and the scale it is modelled on."""

    name: str
    source: str
    column: str
    unit: str = ""
    log: bool = False
    path: str = ""  # source: table
    sample_column: str = ""  # source: table; default data.sample_column

    def forward(self, values: np.ndarray) -> np.ndarray:
        """Measured values -> the scale the surrogate models."""
        return np.log10(values) if self.log else np.asarray(values, float)

    def inverse(self, values: np.ndarray) -> np.ndarray:
        """Modelled scale -> measured values."""
        return 10.0 ** np.asarray(values, float) if self.log else np.asarray(values, float)


def responses_from_config(cfg) -> list[Response]:
    """``responses`` (a mapping name -> {source, column, unit, log}) as :class:`Response`."""
    if not cfg:
        raise SinterlabError("responses is empty; name at least one, e.g. "
                             "responses.R.column=sheet_resistance_ohm_sq")
    out = []
    for name, entry in cfg.items():
        source = str(entry.get("source", DESCRIPTOR))
        if source not in SOURCES:
            raise SinterlabError(f"responses.{name}.source={source!r} is unknown; use one of "
                                 f"{list(SOURCES)}")
        path = str(entry.get("path") or "")
        if source == TABLE and not path:
            raise SinterlabError(f"responses.{name} has source: table but no path; set "
                                 f"responses.{name}.path=<a CSV with a sample column>")
        out.append(Response(str(name), source, str(entry.get("column") or name),
                            str(entry.get("unit") or ""), bool(entry.get("log", False)),
                            path, str(entry.get("sample_column") or "")))
    return out


def _numeric(csv: Path, table: pd.DataFrame, column: str) -> pd.Series:
    """``column`` as numbers; text in a cell is a one-line error naming the column and rows."""
    values = pd.to_numeric(table[column], errors="coerce")
    text = values.isna() & ~blank(table[column])
    if text.any():
        rows = [int(i) + 2 for i in np.flatnonzero(text.to_numpy())[:5]]
        shown = [str(v) for v in table[column][text].head(3)]
        raise SinterlabError(f"{csv}: column {column!r} has text {shown} in CSV row(s) {rows}; "
                             "write numbers only (leave a cell empty when not measured)")
    infinite = np.isinf(values.to_numpy(float))
    if infinite.any():
        rows = [int(i) + 2 for i in np.flatnonzero(infinite)[:5]]
        shown = [str(v) for v in table[column][infinite].head(3)]
        raise SinterlabError(f"{csv}: column {column!r} has infinite values {shown} in CSV "
                             f"row(s) {rows}; write finite numbers (leave a cell empty when not "
                             "measured)")
    return values


def _column(csv: Path, table: pd.DataFrame, column: str, key: str) -> None:
    if column not in table.columns:
        raise SinterlabError(f"{csv}: no column {column!r} (set by {key}); columns present are "
                             f"{list(table.columns)}")


def load_samples(descriptor: str | Path, parameters: list[str], responses: list[Response],
                 sample_column: str = "sample_id",
                 measures: str | Path | pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per sample: its parameters, and per response ``<name>`` (mean on the modelled
    scale), ``<name>_sd`` (within-sample spread on that scale) and ``<name>_n`` (values).
    ``measures``: a run's ``measures.csv`` or such a table already computed."""
    csv = Path(descriptor).expanduser().resolve()
    if not csv.is_file():
        raise SinterlabError(f"{csv}: descriptor CSV not found; set data.descriptor=PATH "
                             "(or run `make plan-demo` to generate the demo data)")
    table = read_table(csv)
    if sample_column not in table.columns:
        table[sample_column] = table.index.astype(str)  # every row its own sample
    for name in parameters:
        _column(csv, table, name, f"space.parameters.{name}")
        table[name] = _numeric(csv, table, name)
        if table[name].isna().any():
            rows = [int(i) + 2 for i in np.flatnonzero(table[name].isna().to_numpy())[:5]]
            raise SinterlabError(f"{csv}: column {name!r} is empty in CSV row(s) {rows}; every "
                                 "row needs its process parameters")
        spread = table.groupby(sample_column)[name].nunique()
        if (spread > 1).any():
            raise SinterlabError(f"{csv}: sample {spread.index[spread > 1][0]!r} has more than "
                                 f"one {name!r}; one sample is one setting of the parameters")
    samples = table.groupby(sample_column, sort=False)[parameters].first()
    tables = {DESCRIPTOR: (csv, table)}
    if isinstance(measures, pd.DataFrame):
        tables[MEASURES] = (csv, measures)
    elif any(r.source == MEASURES for r in responses):
        if not measures:
            raise SinterlabError("a response has source: measures but data.measures is not set; "
                                 "set data.measures=<training run>/measures.csv")
        path = Path(measures).expanduser().resolve()
        if not path.is_file():
            raise SinterlabError(f"{path}: measures CSV not found (data.measures); a training "
                                 "run with measures.enabled=true writes measures.csv")
        frame = read_table(path)
        _column(path, frame, sample_column, "data.sample_column")
        tables[MEASURES] = (path, frame)
    for response in responses:
        key, by = response.source, sample_column
        if response.source == TABLE:
            key, by = response.path, response.sample_column or sample_column
            if key not in tables:
                path = Path(key).expanduser().resolve()
                if not path.is_file():
                    raise SinterlabError(f"{path}: not found (responses.{response.name}.path)")
                tables[key] = (path, read_table(path))
            _column(tables[key][0], tables[key][1], by,
                    f"responses.{response.name}.sample_column")
        path, frame = tables[key]
        _column(path, frame, response.column, f"responses.{response.name}.column")
        values = _numeric(path, frame, response.column)
        if values.notna().sum() == 0:
            raise SinterlabError(f"{path}: column {response.column!r} (responses."
                                 f"{response.name}) has no values; measure some samples first "
                                 "or leave this response out")
        if response.log and (values <= 0).any():
            raise SinterlabError(f"{path}: column {response.column!r} has values <= 0, which "
                                 f"log: true cannot model; set responses.{response.name}.log="
                                 "false or fix the values")
        scaled = pd.Series(response.forward(values.to_numpy(float)), index=frame.index)
        per_sample = scaled.groupby(frame[by].astype(str))
        mean, sd, count = per_sample.mean(), per_sample.std(), per_sample.count()
        unknown = sorted(set(mean.index.astype(str)) - set(samples.index.astype(str)))
        if unknown:
            raise SinterlabError(f"{path}: sample(s) {unknown[:3]} are not in {csv.name}; "
                                 "use the measures.csv of a run on this descriptor")
        keys = samples.index.astype(str)
        samples[response.name] = mean.reindex(keys).to_numpy()
        samples[f"{response.name}_sd"] = sd.reindex(keys).to_numpy()
        samples[f"{response.name}_n"] = count.reindex(keys).fillna(0).to_numpy(int)
    samples.index = samples.index.astype(str)
    samples.index.name = sample_column
    return samples
