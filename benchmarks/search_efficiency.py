"""Does the search work? Hypervolume found against epochs trained, per early-stopping scheduler and sampler.

Runs ``tune_main.py`` on a CPU task where freezing costs accuracy (``benchmarks/spaces/
search_efficiency.yaml``: digits with ``digits_tiny``, 8 epochs) for every combination of
``--scheduler`` (moasha, asha, none), ``--sampler`` (tpe, random) and seed, all at the same
``--num-samples``, one thread per trial, two trials at a time. Per search it records the
hypervolume of the final Pareto front against the fixed reference point (0, 0) (the tool's own
front: trials that trained the full budget), the epochs trained by all trials, and the
hypervolume history (``analysis.front.hypervolume_history``: the front so far after each trial
that ended, against the epochs trained so far).

Prints a table (median and range over seeds), the targets (median moasha hypervolume >= none's
with at most 70% of its epochs; above asha at equal epochs), writes JSON (every search, with its
history) and a plot of hypervolume against epochs trained (median over seeds, band = min..max).

    python benchmarks/search_efficiency.py                       # 3 x 2 x 5 searches, about 20 min on 2 cores
    python benchmarks/search_efficiency.py --seeds 0 1 --samplers tpe --num-samples 16   # a quick look
    python benchmarks/search_efficiency.py --report benchmarks/results/search-efficiency.json   # reprint

Searches are run seed by seed, all six combinations of a seed together, in an order that rotates
with the seed, so that load from other work on the machine spreads over all of them.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import OUT_DIR, ROOT, environment, finish_environment, median, table, write_json  # noqa: E402

SPACE = Path(__file__).resolve().parent / "spaces" / "search_efficiency.yaml"
SCHEDULERS = ("moasha", "asha", "none")
SAMPLERS = ("tpe", "random")


def run_one(space: Path, scheduler: str, sampler: str, seed: int, num_samples: int, storage: Path,
            logs: Path) -> dict[str, Any]:
    """One search through the command line; its front, epochs and hypervolume history."""
    from analysis.front import compute_front, hypervolume_history
    from analysis.results import load_experiment

    name = f"{scheduler}-{sampler}-s{seed}"
    cmd = [sys.executable, str(ROOT / "tune_main.py"), "--space", str(space), "--scheduler", scheduler,
           "--sampler", sampler, "--seed", str(seed), "--num-samples", str(num_samples), "--max-concurrent", "2",
           "--cpus-per-trial", "1", "--storage", str(storage), "--name", name, "--no-analysis"]
    t0 = time.time()
    with open(logs / f"{name}.log", "w") as log:
        proc = subprocess.run(cmd, cwd=str(ROOT), stdout=log, stderr=subprocess.STDOUT, text=True)
    wall = time.time() - t0
    if proc.returncode != 0:
        sys.exit(f"{name}: tune_main.py exited {proc.returncode}; see {logs / (name + '.log')}")
    exp = load_experiment(storage / name)
    front = compute_front(exp)
    hist = hypervolume_history(exp)
    meta = exp.meta
    t = exp.trials
    return {"scheduler": scheduler, "sampler": sampler, "seed": seed, "name": name,
            "hypervolume": front.hypervolume["(0, 0)"], "epochs_trained": int(t["epochs_done"].sum()),
            "epochs_budget": int(len(t) * (exp.epoch_budget or 0)), "trials": len(t),
            "stopped_early": int(t["stopped_early"].sum()), "front_size": len(front.front),
            "repeats": int(meta.get("repeats") or 0), "exhausted": bool(meta.get("exhausted")),
            "best_val_accuracy": float(t["val_accuracy"].max()),
            "max_compute_saved_on_front": float(front.front["compute_saved_frac"].max()),
            "wall_s": round(wall, 1),
            "history": {"epochs_trained": hist["epochs_trained"].tolist(), "hypervolume": hist["hypervolume"].tolist()}}


def hv_at(run: dict[str, Any], epochs: float) -> float:
    """The run's hypervolume once ``epochs`` epochs were trained (its final value past its end)."""
    hv = 0.0
    for e, h in zip(run["history"]["epochs_trained"], run["history"]["hypervolume"]):
        if e <= epochs + 1e-9:
            hv = h
    return hv


def summarize(runs: list[dict[str, Any]], samplers: list[str], schedulers: list[str]) -> tuple[list[list[Any]], dict]:
    rows, targets = [], {}
    for sp in samplers:
        by = {s: [r for r in runs if r["sampler"] == sp and r["scheduler"] == s] for s in schedulers}
        none_epochs = median(r["epochs_trained"] for r in by.get("none", [])) if "none" in by else None
        # equal epochs: what the cheaper of moasha and asha trained (median over seeds)
        eq = None
        if "moasha" in by and "asha" in by and by["moasha"] and by["asha"]:
            eq = min(median(r["epochs_trained"] for r in by["moasha"]), median(r["epochs_trained"] for r in by["asha"]))
        for s in schedulers:
            rs = by[s]
            if not rs:
                continue
            hv = [r["hypervolume"] for r in rs]
            ep = [r["epochs_trained"] for r in rs]
            at_eq = [hv_at(r, eq) for r in rs] if eq is not None else []
            rows.append([f"{s} / {sp}", len(rs), f"{median(hv):.4f}", f"{min(hv):.4f}", f"{max(hv):.4f}",
                         median(ep), min(ep), max(ep), 100 * median(ep) / none_epochs if none_epochs else None,
                         f"{median(at_eq):.4f}" if at_eq else None, median(r["stopped_early"] for r in rs),
                         median(r["repeats"] for r in rs), median(r["front_size"] for r in rs)])
        if all(k in by and by[k] for k in ("moasha", "none")):
            m_hv, n_hv = median(r["hypervolume"] for r in by["moasha"]), median(r["hypervolume"] for r in by["none"])
            m_ep = median(r["epochs_trained"] for r in by["moasha"])
            targets[f"{sp}: moasha hypervolume >= none's"] = (m_hv >= n_hv, f"{m_hv:.4f} vs {n_hv:.4f}")
            targets[f"{sp}: moasha epochs <= 70% of none's"] = (m_ep <= 0.7 * none_epochs,
                                                               f"{100 * m_ep / none_epochs:.0f}%")
            # noise: paired by seed (same seed: same sampler stream start and training seed)
            diffs = sorted(a["hypervolume"] - b["hypervolume"] for a in by["moasha"] for b in by["none"]
                           if a["seed"] == b["seed"])
            targets[f"{sp}: moasha - none hypervolume per seed"] = (None, ", ".join(f"{d:+.4f}" for d in diffs))
        if eq is not None:
            m_at = median(hv_at(r, eq) for r in by["moasha"])
            a_at = median(hv_at(r, eq) for r in by["asha"])
            targets[f"{sp}: moasha above asha at equal epochs ({eq:g})"] = (m_at > a_at, f"{m_at:.4f} vs {a_at:.4f}")
    return rows, targets


def report(runs: list[dict[str, Any]], samplers: list[str], schedulers: list[str]) -> tuple[list, list, dict]:
    """Print the table and the targets; returns (header, rows, targets)."""
    rows, targets = summarize(runs, samplers, schedulers)
    header = ["scheduler / sampler", "seeds", "HV median", "HV min", "HV max", "epochs median", "epochs min",
              "epochs max", "epochs % of none", "HV at equal epochs", "stopped", "repeats", "front"]
    print()
    print(table(rows, header))
    print()
    for what, (ok, value) in targets.items():
        print(f"{what}: {value}" + ("" if ok is None else f"  -> {'met' if ok else 'NOT met'}"))
    return header, rows, targets


def plot(runs: list[dict[str, Any]], samplers: list[str], schedulers: list[str], path: Path, title: str) -> Path:
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    colors = {"moasha": "#d62728", "asha": "#1f77b4", "none": "#222222"}
    fig = Figure(figsize=(5.2 * len(samplers), 4.4), dpi=130)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(samplers), sharey=True, squeeze=False)[0]
    top = max(r["epochs_trained"] for r in runs)
    grid = np.linspace(0, top, 300)
    for ax, sp in zip(axes, samplers):
        for s in schedulers:
            rs = [r for r in runs if r["sampler"] == sp and r["scheduler"] == s]
            if not rs:
                continue
            curves = np.array([[hv_at(r, e) for e in grid] for r in rs])
            end = median(r["epochs_trained"] for r in rs)
            keep = grid <= end
            med = np.median(curves, axis=0)
            ax.fill_between(grid[keep], curves.min(axis=0)[keep], curves.max(axis=0)[keep], step="post",
                            color=colors.get(s), alpha=0.15, lw=0)
            ax.step(grid[keep], med[keep], where="post", color=colors.get(s), lw=2,
                    label=f"{s}: median HV {median(r['hypervolume'] for r in rs):.3f} at {end:g} epochs")
            ax.plot([grid[keep][-1]], [med[keep][-1]], "o", color=colors.get(s))
        ax.set_title(f"sampler {sp} ({len({r['seed'] for r in runs})} seeds)", fontsize=10)
        ax.set_xlabel("epochs trained (all trials ended so far)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    axes[0].set_ylabel("hypervolume of the front so far, vs (0, 0)")
    fig.suptitle(f"{title}: median over seeds, band = min..max", fontsize=10)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight")
    return path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--space", default=str(SPACE), help="search space YAML (default: the benchmark's)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--num-samples", type=int, default=32)
    ap.add_argument("--schedulers", nargs="+", default=list(SCHEDULERS), choices=SCHEDULERS)
    ap.add_argument("--samplers", nargs="+", default=list(SAMPLERS), choices=("tpe", "random", "nsga2"))
    # untracked by default; record a run with --json/--plot benchmarks/results/search-efficiency.{json,png}
    ap.add_argument("--json", default=str(OUT_DIR / "search-efficiency.json"))
    ap.add_argument("--plot", default=str(OUT_DIR / "search-efficiency.png"))
    ap.add_argument("--keep", help="keep the experiment directories here (default: a temporary folder)")
    ap.add_argument("--report", metavar="JSON", help="print the table and targets of a stored run again, run nothing")
    return ap.parse_args(argv)


def main() -> None:
    args = parse_args()
    if args.report:
        stored = json.loads(Path(args.report).read_text())
        st = stored["settings"]
        report(stored["runs"], st["samplers"], st["schedulers"])
        return

    env = environment("cpu")
    storage = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="layerout-search-eff-"))
    storage.mkdir(parents=True, exist_ok=True)
    logs = storage / "logs"
    logs.mkdir(exist_ok=True)
    combos = [(s, p) for p in args.samplers for s in args.schedulers]
    runs: list[dict[str, Any]] = []
    t0 = time.time()
    for i, seed in enumerate(args.seeds):
        k = i % len(combos)
        for scheduler, sampler in combos[k:] + combos[:k]:  # rotate the order with the seed
            r = run_one(Path(args.space), scheduler, sampler, seed, args.num_samples, storage, logs)
            runs.append(r)
            print(f"{r['name']:<22} HV {r['hypervolume']:.4f}  epochs {r['epochs_trained']:>4}/{r['epochs_budget']}  "
                  f"stopped {r['stopped_early']:>2}  repeats {r['repeats']:>3}  front {r['front_size']:>2}  "
                  f"{r['wall_s']:.0f} s  (total {time.time() - t0:.0f} s)", flush=True)
    finish_environment(env)

    header, rows, targets = report(runs, args.samplers, args.schedulers)
    from search_spaces.space import load_space

    space = load_space(args.space)
    png = plot(runs, args.samplers, args.schedulers, Path(args.plot),
               f"{space.model} on {space.dataset}, {space.epochs} epochs, {args.num_samples} trials")
    out = write_json(args.json, {
        "benchmark": "search_efficiency", "environment": env,
        "settings": {"space": str(Path(args.space).resolve().relative_to(ROOT)) if Path(args.space).resolve().is_relative_to(ROOT)
                     else args.space, "seeds": args.seeds, "num_samples": args.num_samples,
                     "schedulers": args.schedulers, "samplers": args.samplers, "max_concurrent": 2,
                     "cpus_per_trial": 1, "reference_point": [0.0, 0.0]},
        "table": {"header": header, "rows": rows},
        "targets": {k: {"met": ok, "value": v} for k, (ok, v) in targets.items()},
        "runs": runs, "wall_s": round(time.time() - t0, 1)})
    print(f"\nwrote {out} and {png}; experiments in {storage}")


if __name__ == "__main__":
    main()
