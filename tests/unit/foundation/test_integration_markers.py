"""Every integration test module says so: ``pytestmark`` names ``pytest.mark.integration``.

``pytest -m "not integration"`` then runs exactly the tests that need no PostgreSQL, sockets
or external programs; a module that forgot its marker would slip into that quick run.
"""

from __future__ import annotations

import ast
from pathlib import Path

INTEGRATION = Path(__file__).resolve().parents[2] / "integration"


def _declares_integration(path: Path) -> bool:
    """Does the module assign ``pytestmark`` at top level with ``pytest.mark.integration`` in it?"""
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "pytestmark"
                                                for t in node.targets):
            return any(ast.unparse(n) == "pytest.mark.integration" for n in ast.walk(node.value))
    return False


def test_every_integration_module_carries_the_integration_marker():
    modules = sorted(INTEGRATION.rglob("test_*.py"))
    assert len(modules) > 30  # the directory was found and walked
    unmarked = [str(p.relative_to(INTEGRATION)) for p in modules if not _declares_integration(p)]
    assert unmarked == []
