"""The engine's walls, read from the source: pitrix.gotemplate imports nothing else of pitrix, the
runtime checks templates with it rather than with the agent, and the agent stays off the runtime."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import pitrix

PITRIX = Path(pitrix.__file__).resolve().parent


def pitrix_imports(package: str) -> dict[str, set[str]]:
    """For each module of ``pitrix/<package>``, the pitrix modules it imports (lazily too)."""
    found: dict[str, set[str]] = {}
    for path in sorted((PITRIX / package).rglob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module)
        found[str(path.relative_to(PITRIX))] = {n for n in names if n == "pitrix" or n.startswith("pitrix.")}
    assert found, package
    return found


def offenders(package: str, forbidden: tuple[str, ...]) -> list[str]:
    return sorted(
        f"{module} imports {name}"
        for module, names in pitrix_imports(package).items()
        for name in names
        if any(name == f or name.startswith(f + ".") for f in forbidden)
    )


def test_gotemplate_imports_only_itself() -> None:
    wrong = sorted(
        f"{module} imports {name}"
        for module, names in pitrix_imports("gotemplate").items()
        for name in names
        if not name.startswith("pitrix.gotemplate")
    )
    assert wrong == []


@pytest.mark.parametrize("package", ["runtime", "api", "metad", "providers", "store"])
def test_server_side_never_imports_the_agent(package: str) -> None:
    assert offenders(package, ("pitrix.agent",)) == []


def test_agent_never_imports_the_server_side() -> None:
    assert offenders("agent", ("pitrix.runtime", "pitrix.providers", "pitrix.api", "pitrix.store")) == []


def test_runtime_checks_templates_with_the_engine() -> None:
    assert "pitrix.gotemplate" in pitrix_imports("runtime")["runtime/spec.py"]
