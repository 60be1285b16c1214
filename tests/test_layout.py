"""The project's layout holds: the library and the analysis never import Ray, no two modules import
each other (directly or around a longer loop), and every schedule kind has exactly one
search-space family and the reverse."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import REPO
from layerout.schedules import SCHEDULES
from search_spaces.families import FAMILY_SPACES, check_registries

PACKAGES = ("layerout", "search_spaces", "tuning", "analysis")
RAY_FREE = ("layerout", "search_spaces", "analysis")


def project_modules() -> dict[str, Path]:
    """Module name -> file, for every module of the project's packages plus tune_main."""
    out = {"tune_main": REPO / "tune_main.py"}
    for pkg in PACKAGES:
        for f in sorted((REPO / pkg).rglob("*.py")):
            parts = list(f.relative_to(REPO).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = f
    return out


def imports_of(name: str, file: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules ``name`` imports anywhere in its file (inside functions too).
    ``from a.b import c`` counts as importing ``a.b.c`` when that is a module, else ``a.b``."""
    found: set[str] = set()
    package = name if file.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(file.read_text(), str(file))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name in modules)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            for a in node.names:
                sub = f"{base}.{a.name}"
                if sub in modules:
                    found.add(sub)
                elif base in modules:
                    found.add(base)
    found.discard(name)
    return found


def test_library_search_spaces_and_analysis_never_import_ray():
    mods = [m for m in project_modules() if m.split(".")[0] in RAY_FREE and not m.endswith("__main__")]
    code = ("import importlib, sys\n"
            f"for m in {mods!r}:\n    importlib.import_module(m)\n"
            "bad = sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.'))\n"
            "assert not bad, bad[:5]\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_no_two_modules_import_each_other():
    modules = project_modules()
    graph = {m: imports_of(m, f, modules) for m, f in modules.items()}
    assert "tuning.search" in graph["tuning"] and "layerout.schedules.base" in graph["layerout.schedules.prefix"]
    # Tarjan's strongly connected components: any component with two or more modules is a cycle
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 5000))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    assert cycles == [], f"modules that import each other: {cycles}"


def test_every_schedule_kind_has_one_search_family_and_the_reverse():
    assert set(SCHEDULES) == set(FAMILY_SPACES)
    for kind in SCHEDULES:
        assert SCHEDULES[kind].kind == kind and FAMILY_SPACES[kind].kind == kind
    assert list(SCHEDULES) == list(FAMILY_SPACES)  # the same order in --help, errors and docs


def test_a_schedule_without_a_search_family_is_refused(monkeypatch):
    class Orphan(SCHEDULES["prefix"]):
        kind = "orphan"

    monkeypatch.setitem(SCHEDULES, "orphan", Orphan)
    with pytest.raises(ImportError, match=r"without a search-space family: \['orphan'\]"):
        check_registries()
