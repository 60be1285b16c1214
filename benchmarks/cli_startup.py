"""How long the command lines take to answer ``--help``, ``--list-presets`` and bad input.

Each command runs as a user types it, in a fresh interpreter (a subprocess), from one or more
checkouts (``--root DIR``, repeatable; default this one: give another checkout, e.g. an export of
an older commit, to compare), interleaved within every repeat so that load hits them alike. The
table has the median wall-clock per command and checkout, the ratio to the first checkout, and
which of torch, Ray and pandas the command imported (``python -X importtime``).

    python benchmarks/cli_startup.py --repeats 5
    git archive main | tar -x -C /tmp/main-copy && python benchmarks/cli_startup.py --root . --root /tmp/main-copy
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import OUT_DIR, ROOT, environment, finish_environment, median, table, write_json  # noqa: E402

HEAVY = ("torch", "ray", "pandas")
# (name, arguments after the interpreter, the exit status it should end with)
COMMANDS = [
    ("tune_main --help", ["tune_main.py", "--help"], 0),
    ("tune_main --list-presets", ["tune_main.py", "--list-presets"], 0),
    ("tune_main bad flag", ["tune_main.py", "--num-samples", "0"], 2),
    ("tune_main unknown preset", ["tune_main.py", "--preset", "nope"], 2),
    ("tune_main space not YAML", ["tune_main.py", "--space", "{bad}"], 2),
    ("layerout.train --help", ["-m", "layerout.train", "--help"], 0),
    ("analysis --help", ["-m", "analysis", "--help"], 0),
]


def run(root: Path, args: list[str], bad_space: Path, importtime: bool = False) -> tuple[float, int, str]:
    """(wall-clock seconds, exit status, stderr) of ``python args`` in checkout ``root``."""
    argv = [sys.executable, *(["-X", "importtime"] if importtime else []),
            *[str(bad_space) if a == "{bad}" else a for a in args]]
    env = {**os.environ, "PYTHONPATH": str(root)}  # this checkout's packages, not the installed ones
    t0 = time.perf_counter()
    proc = subprocess.run(argv, cwd=root, env=env, capture_output=True, text=True, timeout=300)
    return time.perf_counter() - t0, proc.returncode, proc.stderr


def imported(stderr: str) -> list[str]:
    """The heavy packages ``-X importtime`` says were imported."""
    names = {line.rsplit("|", 1)[-1].strip() for line in stderr.splitlines() if line.startswith("import time:")}
    return [h for h in HEAVY if h in names]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", action="append", type=Path, help="a checkout to time (repeatable; default: this one)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", default=str(OUT_DIR / "cli_startup.json"))
    args = ap.parse_args()
    roots = [r.resolve() for r in (args.root or [ROOT])]
    env = environment("cpu")
    with tempfile.TemporaryDirectory() as tmp:
        bad = Path(tmp) / "bad.yaml"
        bad.write_text("model: [digits_cnn\n")
        times: dict[tuple[str, str], list[float]] = {}
        status: dict[tuple[str, str], set[int]] = {}
        heavy: dict[tuple[str, str], list[str]] = {}
        for root in roots:  # what each command imports, once (importtime slows it: not timed)
            for name, cmd, _ in COMMANDS:
                heavy[(str(root), name)] = imported(run(root, cmd, bad, importtime=True)[2])
        for rep in range(args.repeats):
            order = roots if rep % 2 == 0 else roots[::-1]  # ABBA: drift hits every checkout alike
            for name, cmd, _ in COMMANDS:
                for root in order:
                    wall, rc, _ = run(root, cmd, bad)
                    times.setdefault((str(root), name), []).append(wall)
                    status.setdefault((str(root), name), set()).add(rc)
    finish_environment(env)
    rows, out = [], []
    for name, _, want in COMMANDS:
        first = median(times[(str(roots[0]), name)])
        for root in roots:
            key = (str(root), name)
            med = median(times[key])
            rows.append([name, str(root), med, med / first if first else None,
                         ",".join(str(s) for s in sorted(status[key])), " ".join(heavy[key]) or "-"])
            out.append({"command": name, "root": str(root), "median_s": med, "runs_s": times[key],
                        "exit_status": sorted(status[key]), "expected_status": want, "imports": heavy[key]})
    print(table(rows, ["command", "checkout", "median s", "ratio to first", "exit", "imports"]))
    path = write_json(args.json, {"environment": env, "repeats": args.repeats, "results": out})
    print(f"\nwrote {path}")
    bad_status = [r for r in out if r["exit_status"] != [r["expected_status"]]]
    for r in bad_status:
        print(f"note: {r['command']} in {r['root']} exited {r['exit_status']}, not {r['expected_status']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
