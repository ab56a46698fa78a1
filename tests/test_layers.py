"""Imports go one way, from the data flow's start to the commands: a module may import from its
own layer and the layers before it, never from a later one (type hints under TYPE_CHECKING
excepted: they run nothing)."""

from __future__ import annotations

import ast
from pathlib import Path

import sinterlab

#: first to last; one layer per entry (a package of sinterlab, or a top-level module)
LAYERS = [("errors", "typed", "atomic", "console", "runs", "threads", "manifest", "config_schema"),
          ("synth",), ("data",), ("features", "measures"), ("models",), ("evaluation",),
          ("run_config", "predict"), ("explain",), ("study",), ("planning",), ("cli",)]
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}
PACKAGE = Path(sinterlab.__file__).parent


def layer_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def runtime_imports(tree: ast.Module) -> list[ast.ImportFrom | ast.Import]:
    """Every import statement except those under ``if TYPE_CHECKING:``."""
    skipped = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
               and getattr(node.test, "id", None) == "TYPE_CHECKING"
               for n in ast.walk(node)}
    return [n for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom)
            and id(n) not in skipped]


def upward_imports(root: Path) -> list[str]:
    found = []
    for path in sorted(root.rglob("*.py")):
        module = ".".join(("sinterlab", *path.relative_to(root).with_suffix("").parts))
        source = layer_of(module.removesuffix(".__init__"))
        for node in runtime_imports(ast.parse(path.read_text(encoding="utf-8"))):
            names = [node.module] if isinstance(node, ast.ImportFrom) else [
                a.name for a in node.names]
            for name in names:
                if not (name or "").startswith("sinterlab."):
                    continue
                target = layer_of(name)
                if RANK[target] > RANK[source]:
                    found.append(f"{path.relative_to(root)}:{node.lineno}: {source} imports "
                                 f"{name} ({target} comes later)")
    return found


def test_every_module_belongs_to_a_layer():
    names = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir()
             if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").is_file()}
    assert names <= set(RANK), f"add {sorted(names - set(RANK))} to LAYERS"


def test_imports_go_one_way():
    assert upward_imports(PACKAGE) == []


def test_the_check_finds_an_import_against_the_order(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "bad.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "from sinterlab.features.cache import CacheEntry\n"  # later layer: wrong
        "from sinterlab.errors import SinterlabError\n"  # earlier layer: fine
        "if TYPE_CHECKING:\n    from sinterlab.study.datamodule import SEMDataModule\n")
    assert upward_imports(tmp_path) == [
        "data/bad.py:2: data imports sinterlab.features.cache (features comes later)"]
