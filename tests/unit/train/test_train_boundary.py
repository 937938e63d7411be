"""Ray stays at the edges of rayfed.train: only the Ray Train module imports it."""

from __future__ import annotations

import ast
from pathlib import Path

import rayfed.train

PACKAGE = Path(rayfed.train.__file__).parent
PURE = ("loop", "precision", "private", "trace", "workload", "config")


def module_level_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in tree.body:  # module level only: lazy imports inside functions are allowed
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_only_ddp_imports_ray():
    for name in PURE:
        bad = {m for m in module_level_imports(PACKAGE / f"{name}.py")
               if m == "ray" or m.startswith("ray.") or m in ("rayfed.train.ddp", "mlflow")}
        assert not bad, f"rayfed/train/{name}.py imports {bad}"
    assert "ray.train" in module_level_imports(PACKAGE / "ddp.py")
    participant = PACKAGE.parent / "fl" / "participant.py"
    assert not {m for m in module_level_imports(participant)
                if m.startswith("ray") and not m.startswith("rayfed")}
