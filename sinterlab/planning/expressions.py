"""Plan expressions (``space.constraints``, ``space.cost.expression``) parsed, never evaluated.

A plan config is what labs send each other, so its expressions are data: Python's parser reads
one into a tree, and only the nodes listed here are computed, element-wise over the columns of
a frame. Names must be the space's parameters; the rest is numbers, arithmetic (``+ - * / // %
**``, unary ``-``), comparisons (chains too: ``50 <= burst_count <= 200``) and logic
(``and``/``or``/``not``, or pandas' ``&``/``|``/``~``). Attributes, calls, subscripts, ``@``
names, strings and everything else are refused with one line naming the expression; nothing
from the text is ever looked up outside the frame.
"""

from __future__ import annotations

import ast
import operator

import numpy as np
import pandas as pd

from sinterlab.errors import SinterlabError

_ARITHMETIC = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
               ast.Div: operator.truediv, ast.FloorDiv: operator.floordiv,
               ast.Mod: operator.mod, ast.Pow: operator.pow}
_LOGIC = {ast.BitAnd: np.logical_and, ast.BitOr: np.logical_or}
_COMPARE = {ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt,
            ast.GtE: operator.ge, ast.Eq: operator.eq, ast.NotEq: operator.ne}
#: a number that long is no design-space parameter; refusing it keeps ``10 ** 10 ** 10`` cheap
_MAX_LENGTH = 500


class _Refused(Exception):
    """A node outside the whitelist; its text says which."""


def _evaluate(node: ast.AST, columns: dict[str, np.ndarray]):
    if isinstance(node, ast.Expression):
        return _evaluate(node.body, columns)
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return float(node.value)
    if isinstance(node, ast.Name):
        if node.id not in columns:
            raise _Refused(f"{node.id!r} is not a parameter")
        return columns[node.id]
    if isinstance(node, ast.BinOp) and type(node.op) in _ARITHMETIC:
        left, right = _evaluate(node.left, columns), _evaluate(node.right, columns)
        if isinstance(node.op, ast.Pow) and np.max(np.abs(right)) > 64:
            raise _Refused("an exponent above 64")
        with np.errstate(all="ignore"):
            return _ARITHMETIC[type(node.op)](np.asarray(left, float), np.asarray(right, float))
    if isinstance(node, ast.BinOp) and type(node.op) in _LOGIC:
        return _LOGIC[type(node.op)](_boolean(node.left, columns), _boolean(node.right, columns))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        value = np.asarray(_evaluate(node.operand, columns), float)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not | ast.Invert):
        return np.logical_not(_boolean(node.operand, columns))
    if isinstance(node, ast.BoolOp):
        combine = np.logical_and if isinstance(node.op, ast.And) else np.logical_or
        values = [_boolean(v, columns) for v in node.values]
        result = values[0]
        for value in values[1:]:
            result = combine(result, value)
        return result
    if isinstance(node, ast.Compare) and all(type(op) in _COMPARE for op in node.ops):
        left = np.asarray(_evaluate(node.left, columns), float)
        result = None
        for op, comparator in zip(node.ops, node.comparators, strict=True):
            right = np.asarray(_evaluate(comparator, columns), float)
            step = _COMPARE[type(op)](left, right)
            result = step if result is None else np.logical_and(result, step)
            left = right
        return result
    raise _Refused(f"{ast.unparse(node)} ({type(node).__name__})")


def _boolean(node: ast.AST, columns: dict[str, np.ndarray]) -> np.ndarray:
    value = np.asarray(_evaluate(node, columns))
    if value.dtype != bool:
        raise _Refused(f"{ast.unparse(node)} is a number where a comparison belongs")
    return value


def evaluate(expression: str, frame: pd.DataFrame, key: str) -> np.ndarray:
    """``expression`` over the columns of ``frame``, one value per row; anything but parameter
    names, numbers, arithmetic, comparison and logic is a one-line refusal naming ``key``."""
    names = [str(c) for c in frame.columns]
    example = ("e.g. 'burst_count * duty_cycle <= 15000'" if "constraint" in key
               else "e.g. 'burst_count * 0.02'")
    if len(expression) > _MAX_LENGTH:
        raise SinterlabError(f"{key}={expression[:60]!r}... is longer than {_MAX_LENGTH} "
                             "characters; write a shorter expression")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as err:
        raise SinterlabError(f"{key}={expression!r} is not an expression ({err.msg}); write "
                             f"arithmetic and comparisons of the parameters {names}, "
                             f"{example}") from None
    columns = {name: frame[name].to_numpy(float) for name in names}
    try:
        value = _evaluate(tree, columns)
    except _Refused as err:
        raise SinterlabError(f"{key}={expression!r} is refused: {err}; only the parameters "
                             f"{names}, numbers, arithmetic (+ - * / ** %), comparisons and "
                             f"and/or/not are allowed, {example}") from None
    return np.broadcast_to(np.asarray(value), (len(frame),)).copy()
