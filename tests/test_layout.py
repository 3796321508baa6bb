"""The package's layout: three wings whose imports only point down, and a light core.

The core is every module directly under ``hesslab/``; ``hesslab.storage`` may use the core;
``hesslab.experiments`` may use the core and storage; ``hesslab.book`` may use all of them.
Imports are read from the source (function-level imports included), so a lazy import
that points up fails too.
"""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "hesslab"

#: wing -> the wings it must not import
FORBIDDEN = {
    "core": ("hesslab.storage", "hesslab.experiments", "hesslab.book"),
    "storage": ("hesslab.experiments", "hesslab.book"),
    "experiments": ("hesslab.book",),
    "book": (),
}


def _wing(path: Path) -> str:
    parts = path.relative_to(PACKAGE).parts
    return parts[0] if len(parts) > 1 else "core"


def _imports(source: str, module: str, is_package: bool = False) -> list[tuple[int, str]]:
    """``(line, dotted module)`` of every import in ``source`` of ``module``, relative ones resolved."""
    package = module if is_package else module.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            out += [(node.lineno, f"{base}.{alias.name}" if base else alias.name) for alias in node.names]
    return out


def _module_imports(path: Path) -> list[tuple[int, str]]:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    if parts[-1] == "__init__":
        return _imports(path.read_text(), ".".join(("hesslab",) + parts[:-1]), is_package=True)
    return _imports(path.read_text(), ".".join(("hesslab",) + parts))


MODULES = sorted(p for p in PACKAGE.rglob("*.py") if p.name != "__main__.py")


def test_the_three_wings_are_folders():
    top = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert {"storage", "experiments", "book"} <= top
    assert _wing(PACKAGE / "slq.py") == "core" and _wing(PACKAGE / "book" / "runner.py") == "book"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_down_only(path):
    forbidden = FORBIDDEN[_wing(path)]
    upward = [f"line {line}: {name}" for line, name in _module_imports(path)
              if any(name == f or name.startswith(f + ".") for f in forbidden)]
    assert not upward, f"{path.relative_to(PACKAGE)} ({_wing(path)}) imports from a wing above it: {upward}"


def test_the_import_checker_sees_lazy_and_relative_imports():
    """The check above can fail: function-level and relative imports are resolved and seen."""
    lazy = _imports("def f():\n    from hesslab.book import plotting\n", "hesslab.slq")
    relative = _imports("from ..book.plotting import x\nfrom . import cache\n", "hesslab.storage.cached")
    assert ("hesslab.book.plotting" in [n for _, n in lazy])
    assert [n for _, n in relative] == ["hesslab.book.plotting.x", "hesslab.storage.cache"]


def test_import_hesslab_loads_neither_the_book_nor_the_experiments_toolchain():
    heavy = ["matplotlib", "seaborn", "papermill", "jupyter_book", "ipywidgets", "nbformat", "transformers",
             "sklearn", "hesslab.storage", "hesslab.experiments", "hesslab.book"]
    code = ("import sys, hesslab; "
            f"print(','.join(m for m in {heavy!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "", f"import hesslab loaded: {out.stdout.strip()}"


def test_public_face_is_the_core():
    import hesslab

    modules = {name: getattr(hesslab, name).__module__ for name in hesslab.__all__ if name != "__version__"}
    outside = {name: m for name, m in modules.items() if m.count(".") != 1}
    assert not outside, f"hesslab exports names from outside the core: {outside}"
