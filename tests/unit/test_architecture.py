"""The tree is the architecture: the import graph of ``rayfed/`` has no cycles, and
the lower layers import nothing above them (issue #14).

The graph is built from the AST of every module (function-level imports count
too: a lazy import is still a dependency), as ``shared/tools/import_cycles.py``
builds it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "rayfed"

# The bottom: values, errors and the stage protocol; they import no other rayfed module.
BOTTOM = {"rayfed.types", "rayfed.errors", "rayfed.stages"}
# Lower layers: each may import the bottom and its own package, nothing else.
LOWER_PACKAGES = ("rayfed.models", "rayfed.data", "rayfed.strategies")
# The pure modules of each feature: math and config sections, no orchestration.
PURE_FEATURE_MODULES = (
    "rayfed.privacy.accounting", "rayfed.privacy.clipping", "rayfed.privacy.noise",
    "rayfed.privacy.config", "rayfed.privacy.plan", "rayfed.privacy.user_level",
    "rayfed.privacy.sgm_rdp", "rayfed.privacy.noise_search", "rayfed.privacy.ghost_clipping",
    "rayfed.compression.codecs", "rayfed.compression.quantize", "rayfed.compression.config",
    "rayfed.secure_agg.packing", "rayfed.secure_agg.params", "rayfed.secure_agg.config",
    "rayfed.fl.rounds", "rayfed.fl.screening", "rayfed.fl.config", "rayfed.fl.report",
)
# What no lower or pure module may reach: the composition and orchestration layers.
ABOVE = ("rayfed.config", "rayfed.plan", "rayfed.launch", "rayfed.fl.orchestrator",
         "rayfed.fl.placement", "rayfed.fl.host", "rayfed.fl.collect", "rayfed.audit",
         "rayfed.tracking", "rayfed.runtime", "rayfed.job")


def _modules() -> dict[str, Path]:
    mods = {}
    for p in PACKAGE.rglob("*.py"):
        parts = list(p.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = p
    return mods


def import_graph() -> dict[str, set[str]]:
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for m, p in mods.items():
        pkg = m if p.name == "__init__.py" else m.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(p.read_text())):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                    base = ".".join(up + ([base] if base else []))
                names = [base] + [f"{base}.{a.name}" for a in node.names]
            for n in names:
                while n and n not in mods:
                    n = n.rsplit(".", 1)[0] if "." in n else ""
                # A package's __init__ re-exporting its children is not a dependency
                # of the design.
                if n and n != m and not (p.name == "__init__.py" and n.startswith(m + ".")):
                    graph[m].add(n)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_import_graph_has_no_cycles() -> None:
    assert cycles(import_graph()) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def _above(target: str) -> bool:
    return any(target == a or target.startswith(a + ".") for a in ABOVE)


def test_the_bottom_imports_no_other_rayfed_module() -> None:
    graph = import_graph()
    assert {m: sorted(graph[m]) for m in BOTTOM if graph[m] - BOTTOM} == {}


@pytest.mark.parametrize("package", LOWER_PACKAGES)
def test_lower_layers_import_only_the_bottom_and_themselves(package: str) -> None:
    graph = import_graph()
    bad = {m: sorted(t for t in deps if t not in BOTTOM and not t.startswith(package))
           for m, deps in graph.items() if m == package or m.startswith(package + ".")}
    assert {m: d for m, d in bad.items() if d} == {}


def test_pure_feature_modules_import_nothing_above_them() -> None:
    graph = import_graph()
    bad = {m: sorted(t for t in graph[m] if _above(t)) for m in PURE_FEATURE_MODULES}
    assert {m: d for m, d in bad.items() if d} == {}


def test_pure_modules_do_not_import_ray() -> None:
    for m in (*PURE_FEATURE_MODULES, *BOTTOM):
        path = _modules()[m]
        tree = ast.parse(path.read_text())
        imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import)
                    for a in n.names}
        imported |= {(n.module or "").split(".")[0] for n in ast.walk(tree)
                     if isinstance(n, ast.ImportFrom) and not n.level}
        assert "ray" not in imported, m


def test_ray_init_is_called_from_one_module() -> None:
    callers = sorted(str(p.relative_to(PACKAGE.parent)) for p in PACKAGE.rglob("*.py")
                     if "ray.init(" in p.read_text())
    assert len(callers) == 1, callers


# A job reads, checks and plans its config before Ray starts; torch (~0.8 s) is
# imported meanwhile in a background thread, overlapping ray.init (issue #18). So
# the config layer, the plan and the job's own modules must not import torch.
NO_TORCH = r"""
import sys
from hydra import compose, initialize_config_dir
import rayfed.config, rayfed.plan, rayfed.launch, rayfed.job, rayfed.runtime, rayfed.checks
from rayfed.config import register_configs, to_config
from rayfed.plan import resolve

register_configs()
with initialize_config_dir(config_dir=sys.argv[1], version_base="1.3"):
    cfg = to_config(compose("config", overrides=sys.argv[2:]))
resolve(cfg)
print(sorted(m for m in ("torch", "scipy.ndimage", "mlflow", "ray", "opacus")
             if m in sys.modules))
"""


@pytest.mark.parametrize("overrides", [[], ["dataset=mnist1d", "model=cnn1d"],
                                       ["compression=int8", "strategy=fedprox"]])
def test_config_and_plan_do_not_import_torch(overrides: list[str]) -> None:
    import subprocess
    import sys

    conf = str(PACKAGE.parent / "conf")
    out = subprocess.run([sys.executable, "-c", NO_TORCH, conf, *overrides], check=True,
                         capture_output=True, text=True, timeout=120).stdout
    assert out.strip().splitlines()[-1] == "[]"
