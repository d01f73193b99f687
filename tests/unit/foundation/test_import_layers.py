"""The layers of ``cbserver`` point one way (issue 12, DESIGN.md rules 2 and 9).

Reads every module under ``cbserver/`` with :mod:`ast` (nothing is imported) and checks:

- no module under ``cbserver/billing/`` imports ``cbserver.db``: the domain declares the store
  interfaces it needs and ``db/`` implements them;
- ``psycopg2`` is imported only under ``cbserver/db/`` (the development cluster helper in
  ``cbserver/devtools/`` drives ``pg_ctl`` and needs no driver);
- ``cbserver/`` has no import cycle between its modules, counting imports inside functions,
  nor between its layers (its sub-packages and top-level modules);
- developer tooling lives in ``cbserver/devtools/``, and the product does not reach it, even
  through other modules; only the CLI and its ``commands/`` may import it.

Imports under ``if TYPE_CHECKING:`` are left out: they never run.
"""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
PACKAGE = ROOT / "cbserver"

# Where the driver may be imported.
DRIVER_PACKAGES = ("cbserver.db",)

# Modules that may import developer tooling: the CLI's subcommands run it on demand.
DEVTOOLS_USERS = ("cbserver.cli", "cbserver.commands", "cbserver.devtools")

# The developer tools by module name (a private PostgreSQL cluster, the demo's sipp carrier).
DEVTOOLS = ("pgcluster", "democarrier")


def module_name(path: Path) -> str:
    """Return the dotted name of the module at ``path`` under the repository root."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(test: ast.expr) -> bool:
    """Tell whether an ``if`` test is ``TYPE_CHECKING`` or ``typing.TYPE_CHECKING``."""
    if isinstance(test, ast.Name):
        return test.id == "TYPE_CHECKING"
    return isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"


def _walk_runtime(node: ast.AST):
    """Yield every node under ``node`` except those in an ``if TYPE_CHECKING:`` body."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child.test):
            for other in child.orelse:
                yield other
                yield from _walk_runtime(other)
            continue
        yield child
        yield from _walk_runtime(child)


def imported_names(path: Path) -> set[str]:
    """Return the absolute dotted names that the module at ``path`` imports at run time.

    ``from a.b import c`` yields ``a.b`` and ``a.b.c`` (``c`` may be a submodule); relative
    imports are resolved against the module's package.
    """
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in _walk_runtime(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names if alias.name != "*")
    return found


def all_modules() -> dict[str, Path]:
    """Map every module name under ``cbserver/`` to its file."""
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def internal_graph() -> dict[str, set[str]]:
    """Return the module graph of ``cbserver``: each module to the modules it imports."""
    modules = all_modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = set()
        for imported in imported_names(path):
            if imported in modules and imported != name:
                targets.add(imported)
        graph[name] = targets
    return graph


def _under(name: str, packages) -> bool:
    """Tell whether module ``name`` is one of ``packages`` or inside one of them."""
    if isinstance(packages, str):
        packages = (packages,)
    return any(name == p or name.startswith(p + ".") for p in packages)


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Return the strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            advanced = False
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                    advanced = True
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(sorted(component))
    return components


def test_billing_does_not_import_db():
    offenders = sorted(
        f"{name} -> {target}"
        for name, path in all_modules().items() if _under(name, "cbserver.billing")
        for target in imported_names(path) if _under(target, "cbserver.db")
    )
    assert offenders == []


def test_psycopg2_is_imported_only_by_db():
    offenders = sorted(
        name for name, path in all_modules().items()
        if not _under(name, DRIVER_PACKAGES)
        and any(_under(target, "psycopg2") for target in imported_names(path))
    )
    assert offenders == []


def test_database_errors_tuple_is_used_only_by_db():
    offenders = sorted(
        name for name, path in all_modules().items()
        if not _under(name, "cbserver.db") and "DATABASE_ERRORS" in path.read_text()
    )
    assert offenders == []


def test_no_import_cycle():
    assert strongly_connected(internal_graph()) == []


def layer_of(name: str) -> str:
    """The layer a module belongs to: its sub-package of ``cbserver`` (``cbserver.billing``),
    or the module itself when it sits directly in ``cbserver`` (``cbserver.config``)."""
    return ".".join(name.split(".")[:2])


def test_no_import_cycle_between_layers():
    # Modules may avoid a cycle while their packages do not: billing.catalog -> db.catalog_store
    # -> billing.validation is no module cycle, yet billing and db then depend on each other.
    layers: dict[str, set[str]] = {}
    for name, targets in internal_graph().items():
        layers.setdefault(layer_of(name), set()).update(
            layer_of(t) for t in targets if layer_of(t) != layer_of(name))
    for targets in list(layers.values()):
        for target in targets:
            layers.setdefault(target, set())
    assert strongly_connected(layers) == []


def test_developer_tooling_lives_in_devtools():
    misplaced = sorted(name for name in all_modules()
                       if name.rpartition(".")[2] in DEVTOOLS and not _under(name, "cbserver.devtools"))
    assert misplaced == []


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    """Every module ``start`` imports, directly or through others."""
    seen: set[str] = set()
    todo = [start]
    while todo:
        for target in graph[todo.pop()]:
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


def test_product_does_not_import_devtools():
    graph = internal_graph()
    offenders = sorted(
        f"{name} -> {target}"
        for name in graph if not _under(name, DEVTOOLS_USERS)
        for target in reachable(graph, name) if _under(target, "cbserver.devtools")
    )
    assert offenders == []


def test_the_graph_reader_sees_relative_and_function_level_imports(tmp_path):
    # The checks above are only as good as the reader: it must resolve relative imports,
    # see imports inside functions and skip TYPE_CHECKING blocks.
    pkg = tmp_path / "cbserver" / "pkg"
    pkg.mkdir(parents=True)
    source = pkg / "mod.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "from . import sibling\n"
        "from ..other import thing\n"
        "if TYPE_CHECKING:\n"
        "    import hidden\n"
        "def f():\n"
        "    import inner\n"
    )
    global ROOT
    saved = ROOT
    ROOT = tmp_path
    try:
        names = imported_names(source)
    finally:
        ROOT = saved
    assert {"cbserver.pkg", "cbserver.pkg.sibling", "cbserver.other", "cbserver.other.thing",
            "inner"} <= names
    assert "hidden" not in names


def test_the_cycle_finder_reports_every_module_of_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert strongly_connected(graph) == [["a", "b", "c"]]
