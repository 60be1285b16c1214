"""The fingerprint of a seed-fixed search: every trial's config and its compute_saved_frac.

A refactoring that "changes no behaviour" must leave a seed-fixed search's trials exactly as they
were. This script runs ``tune_main.py`` with ``--scheduler none --max-concurrent 1`` (one trial at
a time, so the sampler sees results in the same order every run and the search is deterministic),
then records, per trial in suggestion order: family, paper configuration, the whole trial config
(training recipe and schedule dict), the schedule as it ran (drawn vectors, adaptive freeze
epochs), compute_saved_frac and val_accuracy. ``--compare OLD.json`` reports every difference.

    python benchmarks/search_fingerprint.py --json benchmarks/results/fingerprint-before.json
    python benchmarks/search_fingerprint.py --compare benchmarks/results/fingerprint-before.json

Exit status 1 when ``--compare`` finds a difference in configs or compute_saved_frac.
"""
from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, environment, finish_environment, write_json  # noqa: E402


def _value(x: Any) -> Any:
    if isinstance(x, float) and math.isnan(x):
        return None
    if hasattr(x, "item"):
        return x.item()
    return x


def fingerprint(space: str, seed: int, num_samples: int, storage: Path) -> list[dict[str, Any]]:
    import pandas as pd

    name = f"fp-{Path(space).stem}-{seed}"
    what = ["--space", space] if space.endswith((".yaml", ".yml")) else ["--preset", space]
    cmd = [sys.executable, str(ROOT / "tune_main.py"), *what, "--seed", str(seed),
           "--num-samples", str(num_samples), "--scheduler", "none", "--max-concurrent", "1",
           "--no-analysis", "--storage", str(storage), "--name", name]
    print("$ " + " ".join(cmd), flush=True)
    proc = subprocess.run(cmd, cwd=str(ROOT), text=True, capture_output=True)
    if proc.returncode != 0:
        sys.exit(f"search failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    trials = pd.read_csv(storage / name / "trials.csv", dtype={"trial_id": str, "policy": str})
    rows = []
    for _, r in trials.iterrows():
        config = {c: _value(r[c]) for c in trials.columns if c.startswith("config/")}
        rows.append({"family": _value(r["family"]), "paper_config": _value(r["paper_config"]) or "",
                     "config": config, "policy": json.loads(r["policy"]),
                     "compute_saved_frac": _value(r["compute_saved_frac"]),
                     "val_accuracy": _value(r["val_accuracy"])})
    return rows


def compare(old: dict[str, Any], new: dict[str, Any], renamed: dict[str, str]) -> tuple[list[str], list[str]]:
    """(differences that break "unchanged behaviour", other differences such as val_accuracy).
    ``renamed``: config columns renamed on purpose (old -> new), compared under the new name."""
    hard, soft = [], []
    for run, rows in old["runs"].items():  # run: "<space> seed <n>"
        other = new["runs"].get(run)
        if other is None:
            hard.append(f"{run}: not in the new run")
            continue
        if len(rows) != len(other):
            hard.append(f"{run}: {len(rows)} trials before, {len(other)} after")
        for i, (a, b) in enumerate(zip(rows, other)):
            a = {**a, "config": {renamed.get(k, k): v for k, v in a["config"].items()}}
            for key in ("family", "paper_config", "config", "policy"):
                if a[key] != b[key]:
                    hard.append(f"{run} trial {i}: {key} differs: {a[key]!r} vs {b[key]!r}")
            if a["compute_saved_frac"] != b["compute_saved_frac"]:
                hard.append(f"{run} trial {i}: compute_saved_frac {a['compute_saved_frac']!r} "
                            f"vs {b['compute_saved_frac']!r}")
            if a["val_accuracy"] != b["val_accuracy"]:
                soft.append(f"{run} trial {i}: val_accuracy {a['val_accuracy']} vs {b['val_accuracy']}")
    return hard, soft


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--spaces", nargs="+", default=["demo", "benchmarks/spaces/fingerprint.yaml"],
                    help="presets or space files (default: demo and benchmarks/spaces/fingerprint.yaml)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--num-samples", type=int, default=16)
    ap.add_argument("--json", help="write the fingerprint here")
    ap.add_argument("--compare", metavar="OLD_JSON", help="compare with a stored fingerprint")
    ap.add_argument("--renamed", nargs="*", default=[], metavar="OLD=NEW",
                    help="config columns renamed on purpose, e.g. config/adaptive.abs_threshold="
                         "config/adaptive.absolute_threshold (Optuna parameter names appear in Ray's configs)")
    args = ap.parse_args()
    env = environment("cpu")
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for space in args.spaces:
            for seed in args.seeds:
                runs[f"{space} seed {seed}"] = fingerprint(space, seed, args.num_samples, Path(tmp))
    finish_environment(env)
    doc = {"environment": env, "spaces": args.spaces, "num_samples": args.num_samples,
           "runs": runs}
    if args.json:
        write_json(args.json, doc)
        print(f"wrote {args.json}")
    n = sum(len(r) for r in runs.values())
    print(f"{n} trials: {', '.join(args.spaces)} x seeds {', '.join(map(str, args.seeds))}")
    if args.compare:
        old = json.loads(Path(args.compare).read_text())
        renamed = dict(r.split("=", 1) for r in args.renamed)
        hard, soft = compare(old, doc, renamed)
        for line in hard:
            print("DIFF " + line)
        for line in soft[:20]:
            print("note " + line)
        print(f"compared with {args.compare}: {len(hard)} differences in configs/compute_saved_frac, "
              f"{len(soft)} in val_accuracy (trials compared: {n})")
        return 1 if hard else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
