"""Where the benchmarks write: ``make bench`` and the benchmark scripts put their JSON in the untracked
``runs/benchmarks/`` unless ``--json`` names a file, so running one never rewrites a recorded result
in ``benchmarks/results/``. Their argument parsing only: nothing is measured here."""
from __future__ import annotations

import importlib.util
import json
import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "runs" / "benchmarks"


def _script(name: str):
    sys.path.insert(0, str(ROOT / "benchmarks"))  # the scripts import their _common module
    try:
        spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "benchmarks" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))


def _make_bench_args() -> list[str]:
    """The arguments ``make bench`` gives benchmarks/trainer.py (its recipe in the Makefile)."""
    lines = (ROOT / "Makefile").read_text().splitlines()
    recipe = lines[lines.index(next(line for line in lines if line.startswith("bench:"))) + 1]
    words = shlex.split(recipe)
    return words[words.index("benchmarks/trainer.py") + 1:]


def test_make_bench_writes_untracked_output():
    args = _make_bench_args()
    assert "--json" not in args
    trainer = _script("trainer")
    out = Path(trainer.parse_args(args).json)
    assert out == OUT / "trainer-cpu-quick.json"
    assert "runs/" in (ROOT / ".gitignore").read_text().splitlines()  # untracked
    assert Path(trainer.parse_args([*args, "--json", "benchmarks/results/x.json"]).json) == Path(
        "benchmarks/results/x.json")


def test_search_efficiency_defaults_to_runs_benchmarks():
    args = _script("search_efficiency").parse_args([])
    assert Path(args.json).parent == OUT and Path(args.plot).parent == OUT


def test_the_trainer_report_speaks_of_targets(capsys):
    trainer = _script("trainer")
    trainer.print_report(json.loads((ROOT / "benchmarks" / "results" / "trainer-cpu-quick.json").read_text()))
    out = capsys.readouterr().out
    assert "\nTargets:\n" in out and "issue" not in out.lower()
