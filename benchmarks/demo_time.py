"""Wall-clock of `make demo`'s search on this machine.

`make demo` = (create .venv and install, a no-op once done) + `python tune_main.py --preset demo`.
This script times the second part: it runs ``tune_main.py --preset demo`` as a subprocess,
streams its output with elapsed-time stamps, and writes the wall-clock, exit status, the
experiment directory and the machine to JSON. Results go to a temporary ``--storage`` (removed
afterwards unless ``--keep``), so the repository's ./results is left alone. Arguments after
``--`` are passed to tune_main.py (e.g. ``-- --num-samples 8``).

    python benchmarks/demo_time.py
    python benchmarks/demo_time.py --repeats 3 -- --seed 1
"""
from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, OUT_DIR, environment, finish_environment, median, write_json  # noqa: E402


def run_once(storage: Path, name: str, extra: list[str], timeout: float, quiet: bool) -> dict[str, Any]:
    cmd = [sys.executable, "-u", str(ROOT / "tune_main.py"), "--preset", "demo", "--storage", str(storage),
           "--name", name, *extra]
    print("$ " + " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=str(ROOT),
                            bufsize=1)
    tail: list[str] = []
    first_result: list[float] = []

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            el = time.perf_counter() - t0
            if not first_result and re.search(r"\[\s*1/\d+\] trial", line):
                first_result.append(el)
            tail.append(line.rstrip("\n"))
            del tail[:-60]
            if not quiet:
                print(f"[{el:7.1f}s] {line}", end="", flush=True)

    th = threading.Thread(target=pump, daemon=True)
    th.start()
    try:
        rc = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        rc = proc.wait()
        tail.append(f"(killed after {timeout:g} s)")
    th.join(timeout=10)
    wall = time.perf_counter() - t0
    exp_dir = storage / name
    files = sorted(p.name for p in exp_dir.iterdir()) if exp_dir.is_dir() else []
    n_trials = None
    trials_csv = exp_dir / "trials.csv"
    if trials_csv.is_file():
        n_trials = max(0, len(trials_csv.read_text().splitlines()) - 1)
    return {"command": " ".join(cmd), "rc": rc, "wall_s": round(wall, 1),
            "first_trial_reported_s": round(first_result[0], 1) if first_result else None,
            "trials_in_trials_csv": n_trials, "files": files, "output_tail": tail[-25:]}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1:]
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=1, help="runs; the median wall-clock is reported (default 1)")
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds before a run is killed (default 1800)")
    ap.add_argument("--keep", default=None, help="keep the experiments in this folder (default: a temp dir, removed)")
    ap.add_argument("--quiet", action="store_true", help="do not stream tune_main.py's output")
    ap.add_argument("--json", default=str(OUT_DIR / "demo-time.json"),
                    help="output (default runs/benchmarks/demo-time.json)")
    args = ap.parse_args(argv)
    env = environment("cpu")  # the demo preset trains on CPU
    storage = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="layerout-demo-time-"))
    storage.mkdir(parents=True, exist_ok=True)
    runs = []
    try:
        for r in range(args.repeats):
            name = f"demo-time-{time.strftime('%Y%m%d-%H%M%S')}-{r}"
            runs.append(run_once(storage, name, extra, args.timeout, args.quiet))
            print(f"run {r + 1}/{args.repeats}: rc {runs[-1]['rc']}, {runs[-1]['wall_s']} s", flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(storage, ignore_errors=True)
    finish_environment(env)
    ok = [x["wall_s"] for x in runs if x["rc"] == 0]
    payload = {"benchmark": "demo_time", "environment": env, "extra_args": extra, "runs": runs,
               "median_wall_s": median(ok), "all_succeeded": len(ok) == len(runs)}
    path = write_json(args.json, payload)
    print(f"\n== make demo's search: median wall-clock {payload['median_wall_s']} s over {len(ok)} successful "
          f"run(s) of {len(runs)} on {env['device_name']} (load {env['loadavg_start']} -> {env.get('loadavg_end')})")
    if not payload["all_succeeded"]:
        print("some runs FAILED; see output_tail in the JSON", file=sys.stderr)
    print(f"wrote {path}")
    return 0 if payload["all_succeeded"] else 1


if __name__ == "__main__":
    sys.exit(main())
