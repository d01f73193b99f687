"""The house rule "every module, class and public function has a short docstring", where the
linter's docstring rules (``D1`` in pyproject.toml) do not look: they skip a class whose name
starts with ``_``, a class defined inside a function, and, in a module with ``__all__``, every
name ``__all__`` does not list. This test reads the source (``ast``) and asks for a docstring on
every module and every class of the product and the benchmarks, and on every public function
of the product (a benchmark's functions are exempt, as in pyproject.toml), wherever it stands.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
PRODUCT = ("cbserver", "twisted")
BENCHMARKS = ("bench",)


def _public(name: str) -> bool:
    return not name.startswith("_")


def missing(path: Path, functions: bool) -> list[str]:
    """``path:line what`` of each definition of ``path`` that needs a docstring and has none.

    A function needs one when it is public and so is every class around it, and it is not
    inside another function (a helper of one function); ``__init__`` and the other dunder
    methods are exempt, as the linter's D105/D107 are ignored.
    """
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out = [] if ast.get_docstring(tree) else [f"{path}:1 module"]

    def visit(node, public: bool, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef):
                if not ast.get_docstring(child):
                    out.append(f"{path}:{child.lineno} class {child.name}")
                visit(child, public and _public(child.name), in_function)
            elif isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                if (functions and public and not in_function and _public(child.name)
                        and not ast.get_docstring(child)):
                    out.append(f"{path}:{child.lineno} def {child.name}")
                visit(child, public, True)

    visit(tree, True, False)
    return out


def _files(*folders: str) -> list[Path]:
    return sorted(p for f in folders for p in (ROOT / f).rglob("*.py"))


def test_every_module_class_and_public_function_has_a_docstring():
    found = [m for p in _files(*PRODUCT) for m in missing(p, functions=True)]
    found += [m for p in _files(*BENCHMARKS) for m in missing(p, functions=False)]
    assert found == []


def test_the_reader_sees_what_the_linter_skips(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text('"""A module."""\n__all__ = ["f"]\n\n'
                      'def f():\n    """Listed."""\n    class Inner:\n        pass\n\n'
                      'def g():\n    pass\n\n'
                      'class _Hidden:\n    def run(self):\n        pass\n\n'
                      'class Shown:\n    """Public."""\n    def run(self):\n        pass\n'
                      '    def __repr__(self):\n        return ""\n'
                      '    def _own(self):\n        pass\n')
    assert [m.split(" ", 1)[1] for m in missing(sample, functions=True)] == [
        "class Inner", "def g", "class _Hidden", "def run"]
    assert [m.split(" ", 1)[1] for m in missing(sample, functions=False)] == [
        "class Inner", "class _Hidden"]
    sample.write_text("x = 1\n")
    assert [m.split(" ", 1)[1] for m in missing(sample, functions=True)] == ["module"]
