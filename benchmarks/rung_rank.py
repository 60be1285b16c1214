"""Milliseconds per MOASHA decision at 100, 1,000 and 10,000 results recorded at a rung.

Three ways side by side on the same rungs and the same newcomers (interleaved per decision, so
load hits them alike): ``plain``, the rule before ``tuning.rungs`` (every result sorted into fronts
and the epsilon net over each front, for each starting objective: ``tuning.schedulers.pareto_order``;
skipped above ``--plain-max`` results, where one decision takes seconds to minutes);
``pure``, ``tuning.schedulers.rung_rank`` (the fast rule as a pure function: fronts peeled as far
as needed); ``scheduler``, what ``MOASHA.decide`` does (``RungTable.rank`` on the rung's kept
front levels, plus ``RungTable.add``). Two kinds of rung: ``uniform`` (random points in the unit
square: many small fronts) and ``tradeoff`` (points near the line x + y = 1, as accuracy against
compute saved tends to be: few large fronts, where the epsilon net decides more often).
Process CPU time and wall-clock are both recorded; the table has wall-clock medians and maxima.

    python benchmarks/rung_rank.py                 # about a minute on one core
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import OUT_DIR, environment, finish_environment, median, table, write_json  # noqa: E402

from tuning.rungs import RungTable  # noqa: E402
from tuning.schedulers import pareto_order, rung_rank  # noqa: E402


def plain_rule(new: np.ndarray, recorded: np.ndarray, rf: float) -> bool:
    rows = np.vstack([recorded, new])
    rank = min(pareto_order(rows, s).index(len(rows) - 1) for s in range(rows.shape[1]))
    return rank * rf < len(rows)


def rung(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    if kind == "uniform":
        return rng.random((n, 2))
    x = rng.random(n)
    return np.c_[x, 1 - x - 0.1 * rng.random(n)]


def timed(fn: Callable[[], Any]) -> tuple[float, float]:
    w0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w0, time.process_time() - c0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 10000])
    ap.add_argument("--decisions", type=int, default=40, help="newcomers ranked per size and kind")
    ap.add_argument("--plain-max", type=int, default=1000, help="largest rung the plain rule is timed on")
    ap.add_argument("--plain-decisions", type=int, default=3)
    ap.add_argument("--reduction-factor", type=float, default=3.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=str(OUT_DIR / "rung_rank.json"))
    args = ap.parse_args()
    env = environment("cpu")
    rf, rows, out = args.reduction_factor, [], []
    for kind in ("uniform", "tradeoff"):
        for n in args.sizes:
            rng = np.random.default_rng(args.seed)
            recorded = rung(kind, n, rng)
            newcomers = rung(kind, args.decisions, rng)
            times: dict[str, list[tuple[float, float]]] = {"pure": [], "scheduler": [], "plain": []}
            agree = 0
            for i, new in enumerate(newcomers):
                # each newcomer ranked against the same n recorded rows by every method (the
                # table is built again for each, not timed: adding the newcomer is part of a decision)
                table_ = RungTable(2, recorded)
                keep_pure: list[bool] = []
                times["pure"].append(timed(lambda: keep_pure.append(rung_rank(new, recorded, rf)[2])))

                def scheduler_decision() -> None:
                    table_.rank(new, rf)
                    table_.add(new)
                times["scheduler"].append(timed(scheduler_decision))
                if n <= args.plain_max and i < args.plain_decisions:
                    keep_plain: list[bool] = []
                    times["plain"].append(timed(lambda: keep_plain.append(plain_rule(new, recorded, rf))))
                    agree += keep_plain[0] == keep_pure[0]
            for method, ts in times.items():
                if not ts:
                    continue
                wall = [t[0] * 1000 for t in ts]
                cpu = [t[1] * 1000 for t in ts]
                rec = {"kind": kind, "recorded": n, "method": method, "decisions": len(ts),
                       "median_ms": median(wall), "max_ms": max(wall), "median_cpu_ms": median(cpu),
                       "runs_ms": wall}
                if method == "plain":
                    rec["same_decision_as_pure"] = f"{agree} of {len(ts)}"
                out.append(rec)
                rows.append([kind, n, method, len(ts), median(wall), max(wall), median(cpu)])
            print(f"  done: {kind} {n}", flush=True)
    finish_environment(env)
    print(table(rows, ["rung", "recorded", "method", "decisions", "median ms", "max ms", "median CPU ms"]))
    big = [r for r in out if r["method"] == "scheduler" and r["recorded"] == max(args.sizes)]
    print("\nTargets:\n" + "\n".join(
        f"  MOASHA decision <= 10 ms at {r['recorded']} results ({r['kind']}): median {r['median_ms']:.2f} ms, "
        f"max {r['max_ms']:.2f} ms -> {'met' if r['median_ms'] <= 10 else 'not met'}" for r in big))
    path = write_json(args.json, {"environment": env, "reduction_factor": rf, "results": out})
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
