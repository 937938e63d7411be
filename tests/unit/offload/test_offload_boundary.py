"""Ray stays at the edges: the cost model, policies and metrics never import it."""

from __future__ import annotations

import ast
from pathlib import Path

import rayfed.offload

PURE = ("types", "config", "profiles", "zoo", "tasks", "cost", "policies", "bounds", "records",
        "metrics", "report")
PACKAGE = Path(rayfed.offload.__file__).parent


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_pure_modules_import_neither_ray_nor_the_ray_modules():
    ray_modules = {"ray", "rayfed.offload.devices", "rayfed.offload.scheduler",
                   "rayfed.offload.runner", "rayfed.offload.job", "mlflow"}
    for name in PURE:
        bad = {m for m in imported_modules(PACKAGE / f"{name}.py")
               if m in ray_modules or m.startswith("ray.")}
        assert not bad, f"rayfed/offload/{name}.py imports {bad}"


def test_the_schema_imports_nothing_above_it_in_the_package():
    """config → types only: the cycle config → policies → cost → profiles → config
    must not come back."""
    inside = {m for m in imported_modules(PACKAGE / "config.py")
              if m.startswith("rayfed.offload")}
    assert inside == {"rayfed.offload.types"}
    assert not {m for m in imported_modules(PACKAGE / "types.py") if m.startswith("rayfed")}
