"""Reading what a run folder holds as typed records: strict types (``"no"`` is no boolean, ``5``
no path), unknown fields refused by name, and the first problem as one line naming the file and
the field. A run folder is data: these readers build records of names and numbers, never objects
named by the text they read.
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

import pydantic

from sinterlab.errors import SinterlabError

T = TypeVar("T")

#: the configuration of every record read from a run folder
STRICT = pydantic.ConfigDict(strict=True, extra="forbid")

#: for a file read for one field (a version) whose other fields another record types
STRICT_IGNORING_REST = pydantic.ConfigDict(strict=True, extra="ignore")

_ADAPTERS: dict[Any, pydantic.TypeAdapter] = {}


def adapter(kind: Any) -> pydantic.TypeAdapter:
    """One cached :class:`pydantic.TypeAdapter` per record type."""
    if kind not in _ADAPTERS:
        _ADAPTERS[kind] = pydantic.TypeAdapter(kind)
    return _ADAPTERS[kind]


#: the names pydantic gives the members of a union in an error's location
_TYPE_TAGS = {"int", "float", "str", "bool", "none", "list", "dict", "tuple"}


def _field(loc: tuple) -> tuple[str, bool]:
    """The field's dotted name, and whether a union member's tag was dropped from it."""
    parts = [str(p) for p in loc if not (isinstance(p, str) and (
        "[" in p or p.lower() in _TYPE_TAGS))]
    return ".".join(parts) or "the top level", len(parts) < len(loc)


def problem(err: pydantic.ValidationError) -> str:
    """The first problem of ``err`` as ``field 'a.b' missing`` or ``field 'a.b': why (got x)``."""
    first = err.errors(include_url=False)[0]
    where, union = _field(first["loc"])
    if first["type"] == "missing":
        return f"field '{where}' missing"
    if first["type"] in ("extra_forbidden", "unexpected_keyword_argument"):
        return f"field '{where}' is not one this sinterlab knows"
    shown = repr(first.get("input"))
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    if union:  # every member refused it: name them all
        said = sorted({e["msg"].lower().removeprefix("input should be ")
                       for e in err.errors(include_url=False)
                       if _field(e["loc"])[0] == where})
        return f"field '{where}': input should be {' or '.join(said)} (got {shown})"
    return f"field '{where}': {first['msg'].lower()} (got {shown})"


def from_json(kind: type[T], text: str | bytes, source: Any, fix: str) -> T:
    """JSON ``text`` as ``kind`` (arrays become tuples where the type says so); the first
    problem is one line naming ``source``, the field and ``fix``."""
    try:
        return adapter(kind).validate_json(text, strict=True)
    except pydantic.ValidationError as err:
        raise SinterlabError(f"{source}: {problem(err)}; {fix}") from None


def from_data(kind: type[T], data: Any, source: Any, fix: str) -> T:
    """Plain data (JSON or YAML values) as ``kind``, as :func:`from_json` reads it."""
    return from_json(kind, json.dumps(data, default=str), source, fix)
