"""The layers import downwards only (docs/architecture.md): a walk over every module's imports.

assets → stages → generation / db → domain; settings is the only reader of the environment.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "vidpipe_dagster"

# layer -> the vidpipe_dagster layers it must not import
FORBIDDEN = {
    "domain": {
        "db",
        "generation",
        "stages",
        "assets",
        "resources",
        "settings",
        "jobs",
        "automation",
        "definitions",
        "runner",
        "cli",
    },
    "db": {
        "generation",
        "stages",
        "assets",
        "resources",
        "jobs",
        "automation",
        "definitions",
        "runner",
        "cli",
    },
    "generation": {
        "db",
        "stages",
        "assets",
        "resources",
        "jobs",
        "automation",
        "definitions",
        "runner",
        "cli",
    },
    "stages": {"assets", "resources", "jobs", "automation", "definitions", "runner", "cli"},
    "resources": {"assets", "stages", "jobs", "automation", "definitions", "runner", "cli"},
    "jobs": {"assets", "automation", "definitions", "runner", "cli"},
    "automation": {"assets", "definitions", "runner", "cli"},
}
# third-party packages a layer must not import
FORBIDDEN_PACKAGES = {
    "domain": {"sqlalchemy", "google", "dagster", "alembic"},
    "generation": {"sqlalchemy", "dagster", "alembic"},
    "stages": {"dagster"},
    "assets": {"sqlalchemy"},
}


def _layer(path: Path) -> str:
    relative = path.relative_to(PACKAGE)
    return relative.parts[0].removesuffix(".py")


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


MODULES = sorted(p for p in PACKAGE.rglob("*.py") if "migrations" not in p.parts)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_down(path: Path) -> None:
    layer = _layer(path)
    problems = []
    for line, module in _imports(path):
        parts = module.split(".")
        if parts[0] == "vidpipe_dagster" and len(parts) > 1:
            if parts[1] in FORBIDDEN.get(layer, set()):
                problems.append(f"line {line}: {layer} imports {module}")
            # Dagster's side reads the data through stages; it knows projects only by their graph
            if (
                layer in ("assets", "resources")
                and parts[1] == "db"
                and module
                not in (
                    "vidpipe_dagster.db.project_graphs",
                    "vidpipe_dagster.db.session",
                    "vidpipe_dagster.db.media",
                )
            ):
                problems.append(f"line {line}: {layer} reads the database through {module}")
        elif parts[0] in FORBIDDEN_PACKAGES.get(layer, set()):
            problems.append(f"line {line}: {layer} imports {module}")
    assert not problems, "; ".join(problems)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_only_settings_reads_the_environment(path: Path) -> None:
    if path.name == "settings.py" or "testing" in path.parts:
        return  # the emulator is a separate program with its own command line
    source = path.read_text(encoding="utf-8")
    assert "os.environ.get(" not in source and "getenv(" not in source, path.name
