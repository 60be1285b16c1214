"""The project's layout holds: the library and the analysis never import Ray, no two modules import
each other (directly or around a longer loop), nothing below the analysis imports it, and every schedule kind has exactly one
search-space family and the reverse."""
from __future__ import annotations

import ast
import json
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
        if (isinstance(node, ast.Assign) and isinstance(node.value, ast.Dict)
                and any(isinstance(t, ast.Name) and t.id == "_PUBLIC" for t in node.targets)):
            # a package's public names imported on first use (layerout.lazy): the modules it names
            found.update(v.value for v in node.value.values if isinstance(v, ast.Constant) and v.value in modules)
        elif isinstance(node, ast.Import):
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


def test_no_arrow_runs_back_up_to_the_analysis():
    """Nothing below the analysis imports it, anywhere in a file (inside functions too): the
    library, the search spaces and the Ray side (whose packages are what a cluster's workers get,
    ``tuning.cluster.TRIAL_PACKAGES``)."""
    modules = project_modules()
    graph = {m: imports_of(m, f, modules) for m, f in modules.items()}
    assert "analysis.pareto" in graph["analysis.front"]  # the graph sees the analysis's own imports
    upward = {m: sorted(w for w in graph[m] if w.split(".")[0] == "analysis")
              for m in graph if m.split(".")[0] in ("layerout", "search_spaces", "tuning")}
    assert {m: ws for m, ws in upward.items() if ws} == {}


def test_no_module_imports_another_modules_private_names():
    """What modules share is public; an underscore name stays in its module."""
    private = []
    for name, file in project_modules().items():
        for node in ast.walk(ast.parse(file.read_text(), str(file))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in PACKAGES:
                private += [f"{name}: {node.module}.{a.name}" for a in node.names if a.name.startswith("_")]
    assert private == []


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


# what a command line may have imported when it answers --help or a bad argument: torch and Ray take
# seconds to import, so they are loaded only when a search, a training run or an analysis starts
NOT_BEFORE_WORK = ("torch", "ray")
RUN_COMMAND = """
import atexit, json, runpy, sys
out, argv = sys.argv[1], sys.argv[2:]
atexit.register(lambda: open(out, "w").write(json.dumps(sorted({m.split(".")[0] for m in sys.modules}))))
sys.argv = [argv[0] if argv[0] != "-m" else argv[1], *argv[(2 if argv[0] == "-m" else 1):]]
if argv[0] == "-m":
    runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
else:
    runpy.run_path(argv[0], run_name="__main__")
"""


@pytest.mark.parametrize("argv, status, said", [
    (["tune_main.py", "--help"], 0, "usage: python tune_main.py"),
    (["tune_main.py", "--list-presets"], 0, "paper-cifar10-vgg16"),
    (["tune_main.py", "--num-samples", "0"], 2, "error: --num-samples: must be >= 1, got 0"),
    (["tune_main.py", "--sampler", "grid"], 2, "error: argument --sampler: invalid choice: 'grid'"),
    (["tune_main.py", "--resume", "somewhere", "--seed", "3"], 2, "error: --resume continues an experiment"),
    (["tune_main.py", "--preset", "nope"], 2, "error: unknown preset 'nope'; available: demo"),
    (["tune_main.py", "--space", "{tmp}/bad.yaml"], 2, "bad.yaml: not valid YAML"),
    (["tune_main.py", "--space", "{tmp}/keys.yaml"], 2, "keys.yaml: epoch: unknown key"),
    (["tune_main.py", "--space", "{tmp}/model.yaml"], 2, "model.yaml: model: unknown model 'resnet9'; allowed: "
                                                         "mnist_shallow, vgg16"),
    (["-m", "layerout.train", "--help"], 0, "usage: python -m layerout.train"),
    (["-m", "layerout.train", "--epochs", "x"], 2, "error: argument --epochs: invalid int value: 'x'"),
    (["-m", "analysis", "--help"], 0, "usage: python -m analysis"),
])
def test_help_and_bad_arguments_answer_without_importing_torch_or_ray(argv, status, said, tmp_path):
    """--help, --list-presets, a bad flag and a space file that is wrong before its model is built
    are answered before torch and Ray are imported (each takes seconds to import)."""
    (tmp_path / "bad.yaml").write_text("model: [digits_cnn\n")
    (tmp_path / "keys.yaml").write_text("model: digits_cnn\ndataset: digits\nepoch: 3\n")
    (tmp_path / "model.yaml").write_text("model: resnet9\ndataset: digits\n")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    out = tmp_path / "modules.json"
    proc = subprocess.run([sys.executable, "-c", RUN_COMMAND, str(out), *argv], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == status, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert said in (proc.stdout if status == 0 else proc.stderr), proc.stdout[-2000:] + proc.stderr[-2000:]
    if status:
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    loaded = json.loads(out.read_text())
    assert [m for m in NOT_BEFORE_WORK if m in loaded] == [], loaded
