"""Searches compared on a tabulated benchmark: every scheduler and sampler against the true front.

The table (``benchmarks/tabular/``, built by ``benchmarks/tabular/build.py``) holds every
configuration of a finite freezing space (digits + digits_tiny, 8 epochs) trained on 3 seeds,
every epoch's metrics. A search is replayed against it in about a second
(``benchmarks/tabular/replay.py``: the project's searcher and schedulers driven through Ray
Tune's calls by a simulated clock), so each method runs on many seeds, and the table's own front
(the oracle: every configuration trained to the end) is the limit.

Methods: ``--scheduler`` (moasha, asha, none) x ``--sampler`` (tpe, random, nsga2) as the tool
builds them; anchors on the same table and reference points: plain Optuna with each sampler and
no early stopping (``optuna:<sampler>``), and Syne Tune's MOASHA (``synetune:moasha``: its own
random proposals and rung rule; needs ``pip install -e .[bench]``), also with its non-dominated
sort read as ranks (``synetune:moasha-ranked``, see ``tabular.replay._rank_priority``). Measures per search, as
fractions of the oracle of its table seed: the hypervolume of the front (against (0, 0)), the
area it adds above the shorter-training curve (``analysis.curve.area_above_curve``), both against
epochs trained (median and interquartile range over seeds: the anytime plot), the epochs to reach
95% and 99% of the oracle's, and whether its verdict (freezing beats training less, and the best
margin within one validation image) is the oracle's.

    python benchmarks/tabular_search.py                     # 20 seeds x 14 methods, 64 trials each
    python benchmarks/tabular_search.py --quick             # 2 seeds, 24 trials: a look (and a test)
    python benchmarks/tabular_search.py --report benchmarks/results/tabular-search.json   # reprint
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import OUT_DIR, ROOT, environment, finish_environment, table, write_json  # noqa: E402

SCHEDULERS = ("moasha", "asha", "none")
SAMPLERS = ("tpe", "random", "nsga2")
ANCHORS = ("optuna", "synetune")
LEVELS = (0.95, 0.99)


def method_names(schedulers: list[str], samplers: list[str], anchors: list[str]) -> list[str]:
    names = [f"{s}+{p}" for p in samplers for s in schedulers]
    if "optuna" in anchors:
        names += [f"optuna:{p}" for p in samplers]
    if "synetune" in anchors:
        names += ["synetune:moasha", "synetune:moasha-ranked"]
    return names


def make_method(name: str, space: Any, num_samples: int, domains: dict[str, list[Any]]) -> Any:
    from tabular.replay import OptunaAnchor, ProjectMethod, SyneTuneMOASHA

    if name.startswith("optuna:"):
        return OptunaAnchor(space, name.split(":", 1)[1], num_samples)
    if name.startswith("synetune:"):
        return SyneTuneMOASHA(space, domains, space.seed, ranked=name.endswith("-ranked"))
    scheduler, sampler = name.split("+")
    return ProjectMethod(space, scheduler, sampler, num_samples, f"{name}-s{space.seed}")


def synetune_missing() -> str | None:
    try:
        import syne_tune.optimizer.schedulers.multiobjective.moasha  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - reported, the rest runs
        return f"{type(exc).__name__}: {exc}"
    return None


# ------------------------------------------------------------------------------ summaries
def step_values(run: dict[str, Any], key: str, grid: np.ndarray) -> np.ndarray:
    """The run's anytime ``key`` at each number of epochs of ``grid`` (0 before its first trial
    ended, its final value past its end)."""
    e = np.asarray(run["anytime"]["epochs_trained"], dtype=float)
    v = np.asarray([np.nan if x is None else x for x in run["anytime"][key]], dtype=float)
    idx = np.searchsorted(e, grid, side="right") - 1
    return np.where(idx >= 0, v[np.clip(idx, 0, None)], 0.0)


def quartiles(xs: list[float]) -> tuple[float, float, float]:
    a = np.asarray([x for x in xs if x is not None and not (isinstance(x, float) and math.isnan(x))], dtype=float)
    if not len(a):
        return math.nan, math.nan, math.nan
    # inf (never reached) sorts last, so a median of inf means most never did; no interpolation then
    q = np.percentile(a, [25, 50, 75], method="inverted_cdf" if np.isinf(a).any() else "linear")
    return float(q[1]), float(q[0]), float(q[2])


def fmt_q(xs: list[float], digits: int = 3, pct: bool = True) -> str:
    m, lo, hi = quartiles(xs)
    if math.isnan(m):
        return "n/a"
    f = (lambda v: "never" if math.isinf(v) else f"{100 * v:.1f}%") if pct else \
        (lambda v: "never" if math.isinf(v) else f"{v:.0f}")
    return f"{f(m)} [{f(lo)}–{f(hi)}]"


def at_epochs(runs: list[dict[str, Any]], key: str, epochs: float) -> float:
    """Median over seeds of the anytime ``key`` once ``epochs`` epochs were trained."""
    return float(np.nanmedian([step_values(r, key, np.array([epochs]))[0] for r in runs]))


def curve_reach(runs: list[dict[str, Any]], key: str, level: float) -> float:
    """Epochs at which the median over seeds of the anytime ``key`` first reaches ``level`` (inf:
    never; a search that ended counts with its final value)."""
    top = max(r["epochs_trained"] for r in runs)
    grid = np.arange(0, top + 1, dtype=float)
    med = np.nanmedian(np.array([step_values(r, key, grid) for r in runs]), axis=0)
    hit = np.flatnonzero(med >= level - 1e-12)
    return float(grid[hit[0]]) if len(hit) else math.inf


def summarize(runs: list[dict[str, Any]], names: list[str]) -> tuple[list[str], list[list[Any]]]:
    header = ["method", "seeds", "HV % of oracle", "gain % of oracle", "epochs trained", "epochs to 95% HV",
              "to 99% HV", "to 95% gain", "to 99% gain", "beats curve", "verdict = oracle's", "stopped",
              "distinct", "repeats"]
    rows = []
    for name in names:
        rs = [r for r in runs if r["method"] == name]
        if not rs:
            continue
        rows.append([name, len(rs), fmt_q([r["hv_frac"] for r in rs]), fmt_q([r["gain_frac"] for r in rs]),
                     fmt_q([r["epochs_trained"] for r in rs], pct=False),
                     *(fmt_q([r[f"epochs_to_{k}_{round(100 * lv)}"] for r in rs], pct=False)
                       for k in ("hv", "gain") for lv in LEVELS),
                     f"{sum(r['beats_curve'] for r in rs)}/{len(rs)}", f"{sum(r['verdict_same'] for r in rs)}/{len(rs)}",
                     float(np.median([r["stopped_early"] for r in rs])), float(np.median([r["distinct"] for r in rs])),
                     float(np.median([r["repeats"] for r in rs]))])
    return header, rows


def equal_epochs(runs: list[dict[str, Any]], names: list[str], marks: list[float]) -> tuple[list[str], list[list[Any]]]:
    """Median gain (and hypervolume) fraction of the oracle's once ``marks`` epochs were trained."""
    header = ["method"] + [f"at {m:g} epochs: gain (HV)" for m in marks]
    rows = []
    for name in names:
        rs = [r for r in runs if r["method"] == name]
        if rs:
            rows.append([name] + [f"{100 * at_epochs(rs, 'gain_frac', m):.1f}% ({100 * at_epochs(rs, 'hv_frac', m):.2f}%)"
                                  for m in marks])
    return header, rows


def epoch_marks(settings: dict[str, Any], budget: int) -> list[float]:
    """Where to compare at equal epochs: a quarter, half and three quarters of every trial's budget."""
    whole = settings["num_samples"] * budget
    return [round(f * whole) for f in (0.25, 0.5, 0.75)] + [whole]


def targets(runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The issue's targets and the TPE-against-random comparison, with their measured distances."""
    by = {}
    for r in runs:
        by.setdefault(r["method"], []).append(r)
    out: dict[str, dict[str, Any]] = {}

    def med(name: str, key: str) -> float:
        return quartiles([r[key] for r in by.get(name, [])])[0]

    for ours_name in ("moasha+tpe", "moasha+random"):
        if ours_name not in by or "none+random" not in by:
            continue
        for k, what in (("hv", "hypervolume"), ("gain", "gain")):
            for lv in LEVELS:
                level = round(100 * lv)
                ours, base = med(ours_name, f"epochs_to_{k}_{level}"), med("none+random", f"epochs_to_{k}_{level}")
                ours_c = curve_reach(by[ours_name], f"{k}_frac", lv)
                base_c = curve_reach(by["none+random"], f"{k}_frac", lv)
                ratio = ours_c / base_c if math.isfinite(ours_c) and math.isfinite(base_c) and base_c > 0 else math.nan
                reached = (f"{sum(math.isfinite(r[f'epochs_to_{k}_{level}']) for r in by[ours_name])} vs "
                           f"{sum(math.isfinite(r[f'epochs_to_{k}_{level}']) for r in by['none+random'])} of the seeds")
                out[f"{ours_name} epochs to {level}% of the oracle's {what} <= 40% of none+random's"] = {
                    "met": (bool(ratio <= 0.4) if math.isfinite(ratio) else False) if ours_name == "moasha+tpe" else None,
                    "value": f"median curve {ours_c:g} vs {base_c:g} epochs"
                             + (f" ({100 * ratio:.0f}%)" if math.isfinite(ratio) else "")
                             + f"; per seed, median {ours:g} vs {base:g} (reached in {reached})"}
    for st in ("synetune:moasha", "synetune:moasha-ranked"):
        if "moasha+tpe" not in by or st not in by:
            continue
        eq = min(med("moasha+tpe", "epochs_trained"), med(st, "epochs_trained"))
        for k in ("hv_frac", "gain_frac"):
            ours, theirs = at_epochs(by["moasha+tpe"], k, eq), at_epochs(by[st], k, eq)
            out[f"moasha+tpe {k} >= {st}'s at equal epochs ({eq:g}), median"] = {
                "met": bool(ours >= theirs - 1e-12), "value": f"{100 * ours:.2f}% vs {100 * theirs:.2f}%"}
    for sched in ("moasha", "none", "asha"):
        a, b = by.get(f"{sched}+tpe"), by.get(f"{sched}+random")
        if not a or not b:
            continue
        pair = {r["seed"]: r for r in b}
        for k in ("hv_frac", "gain_frac"):
            d = [r[k] - pair[r["seed"]][k] for r in a if r["seed"] in pair and r[k] is not None
                 and pair[r["seed"]][k] is not None]
            m, lo, hi = quartiles(d)
            wins, losses = sum(x > 1e-9 for x in d), sum(x < -1e-9 for x in d)
            out[f"{sched}: tpe - random, final {k} per seed (median [IQR])"] = {
                "met": None, "value": f"{100 * m:+.2f} [{100 * lo:+.2f} – {100 * hi:+.2f}] points; tpe higher in {wins}, "
                                      f"lower in {losses}, equal in {len(d) - wins - losses} of {len(d)} seeds"}
    return out


def plot(runs: list[dict[str, Any]], names: list[str], samplers: list[str], path: Path, title: str) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    colors = {"moasha": "#d62728", "asha": "#1f77b4", "none": "#222222", "optuna": "#2ca02c", "synetune": "#9467bd",
              "synetune-ranked": "#8c564b"}
    fig = Figure(figsize=(5.0 * len(samplers), 8.0), dpi=120)
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, len(samplers), sharey="row", squeeze=False)
    top = max(r["epochs_trained"] for r in runs)
    grid = np.linspace(0, top, 400)
    for col, sp in enumerate(samplers):
        shown = [n for n in names if n.endswith(f"+{sp}") or n == f"optuna:{sp}" or n.startswith("synetune:")]
        for row, key in enumerate(("hv_frac", "gain_frac")):
            ax = axes[row][col]
            for n in shown:
                rs = [r for r in runs if r["method"] == n]
                if not rs:
                    continue
                vals = np.array([step_values(r, key, grid) for r in rs])
                if np.isnan(vals).all():
                    continue
                end = float(np.median([r["epochs_trained"] for r in rs]))
                keep = grid <= max(r["epochs_trained"] for r in rs)  # every search has ended there (final values)
                kind = ("synetune-ranked" if n.endswith("-ranked") else n.split(":")[0]) if ":" in n else n.split("+")[0]
                style = {"optuna": "--", "synetune": ":", "synetune-ranked": "-."}.get(kind, "-")
                q1, med, q3 = np.nanpercentile(vals, [25, 50, 75], axis=0)
                ax.fill_between(grid[keep], q1[keep], q3[keep], step="post", color=colors[kind], alpha=0.12, lw=0)
                ax.step(grid[keep], med[keep], where="post", color=colors[kind], ls=style, lw=1.8,
                        label=f"{n} (ends at {end:.0f})")
                at_end = med[np.searchsorted(grid, end, side="right") - 1]
                ax.plot([end], [at_end], "o", color=colors[kind], ms=4)  # the median search's end
            ax.axhline(1.0, color="#888888", lw=0.8)
            ax.grid(True, alpha=0.3)
            if row == 0:
                ax.set_title(f"sampler {sp}", fontsize=10)
                ax.legend(fontsize=7, loc="lower right")
            else:
                ax.set_xlabel("epochs trained (all trials ended so far)")
        axes[0][0].set_ylabel("hypervolume, fraction of the oracle's")
        axes[1][0].set_ylabel("area above the shorter-training curve,\nfraction of the oracle's")
    # the reference points alone give most of the hypervolume: show the top of the scale
    lo = float(np.nanmin([r["hv_frac"] for r in runs]))
    axes[0][0].set_ylim(max(0.0, min(0.98, lo) - 0.01), 1.002)
    fig.suptitle(f"{title}: median over seeds (dot: the median number of epochs a search trains), "
                 "band = interquartile range", fontsize=10)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight")
    return path


def plot_title(settings: dict[str, Any]) -> str:
    return (f"tabulated digits_tiny, {settings['num_samples']} trials, {settings['concurrency']} at a time, "
            f"{len(settings['seeds'])} seeds")


def report(stored: dict[str, Any]) -> None:
    header, rows = summarize(stored["runs"], stored["settings"]["methods"])
    print()
    for seed, o in stored["oracles"].items():
        print(f"oracle, table seed {seed}: hypervolume {o['hypervolume']:.4f}, area above the curve {o['gain']:.5f}, "
              f"freezing beats training less: {'yes' if o['beats_curve'] else 'no'}"
              + (f" (best margin {100 * o['best_margin']:+.2f} points)" if o["beats_curve"] else ""))
    print()
    print(table(rows, header))
    print()
    eq_header, eq_rows = equal_epochs(stored["runs"], stored["settings"]["methods"], stored["settings"]["marks"])
    print(table(eq_rows, eq_header))
    print()
    for what, t in targets(stored["runs"]).items():
        print(f"{what}: {t['value']}" + ("" if t["met"] is None else f"  -> {'met' if t['met'] else 'NOT met'}"))
    if stored.get("synetune_error"):
        print(f"\nSyne Tune's MOASHA did not run: {stored['synetune_error']}")


def write_compact_json(path: str, payload: dict[str, Any]) -> Path:
    """``_common.write_json``, with every list of numbers on one line (the anytime curves would
    otherwise take one line per number)."""
    out = write_json(path, payload)
    text = re.sub(r"\[\s+([^\[\]{}\"]*?)\s+\]", lambda m: "[" + " ".join(m.group(1).split()) + "]", out.read_text())
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, out)
    return out


# ------------------------------------------------------------------------------ main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--table", default=None, help="the table (default: benchmarks/tabular/table.csv.gz)")
    ap.add_argument("--seeds", type=int, nargs="+", default=list(range(20)))
    ap.add_argument("--num-samples", type=int, default=64, help="trials per search, the reference points included")
    ap.add_argument("--concurrency", type=int, default=4, help="trials running at once in the simulated search")
    ap.add_argument("--schedulers", nargs="+", default=list(SCHEDULERS), choices=SCHEDULERS)
    ap.add_argument("--samplers", nargs="+", default=list(SAMPLERS), choices=SAMPLERS)
    ap.add_argument("--anchors", nargs="*", default=list(ANCHORS), choices=ANCHORS)
    ap.add_argument("--quick", action="store_true", help="seeds 0 and 1, 24 trials: a look, and the test")
    ap.add_argument("--json", default=str(OUT_DIR / "tabular-search.json"))
    ap.add_argument("--plot", help=f"default {OUT_DIR / 'tabular-search.png'}; with --report: draw it again there")
    ap.add_argument("--report", metavar="JSON", help="print the tables of a stored run again, run nothing")
    args = ap.parse_args(argv)
    if args.quick:
        args.seeds, args.num_samples = [0, 1], 24
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.report:
        stored = json.loads(Path(args.report).read_text())
        report(stored)
        if args.plot:
            st = stored["settings"]
            samplers = [p for p in SAMPLERS if any(m.endswith(f"+{p}") for m in st["methods"])]
            print(plot(stored["runs"], st["methods"], samplers, Path(args.plot), plot_title(st)))
        return
    args.plot = args.plot or str(OUT_DIR / "tabular-search.png")
    import optuna

    from tabular.measures import oracle, summarize_run
    from tabular.replay import replay
    from tabular.table import TABLE, grid_domains, grid_space, load_table

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    env = environment("cpu")
    t0 = time.time()
    tbl = load_table(args.table or TABLE)
    anchors = list(args.anchors)
    st_error = synetune_missing() if "synetune" in anchors else None
    if st_error:
        anchors.remove("synetune")
        print(f"warning: Syne Tune's MOASHA left out ({st_error}); install it with pip install -e .[bench]",
              file=sys.stderr)
    names = method_names(args.schedulers, args.samplers, anchors)
    oracles = {s: oracle(tbl, s) for s in tbl.seeds}
    domains = grid_domains(tbl.space)
    runs: list[dict[str, Any]] = []
    for i, seed in enumerate(args.seeds):
        space = grid_space(tbl.space, seed=seed)
        k = i % len(names)
        for name in names[k:] + names[:k]:  # the order rotates with the seed (the global RNG Syne Tune uses)
            try:
                rep = replay(tbl, make_method(name, space, args.num_samples, domains), name, seed, args.num_samples,
                             args.concurrency)
            except Exception:
                traceback.print_exc()
                sys.exit(f"error: {name}, seed {seed}: the replay failed (traceback above)")
            r = summarize_run(rep, tbl, oracles, LEVELS)
            runs.append(r)
            print(f"{name:<18} seed {seed:>2}: HV {100 * r['hv_frac']:6.2f}% gain "
                  + (f"{100 * r['gain_frac']:6.1f}%" if r["gain_frac"] == r["gain_frac"] else "   n/a")
                  + f" of the oracle's, {r['epochs_trained']:>4} epochs, {r['trials']} trials, "
                  f"{r['stopped_early']} stopped, {r['repeats']} repeats ({time.time() - t0:.0f} s)", flush=True)
    finish_environment(env)
    stored = {"benchmark": "tabular_search", "environment": env,
              "settings": {"table": str(Path(args.table or TABLE).resolve().relative_to(ROOT))
                           if Path(args.table or TABLE).resolve().is_relative_to(ROOT) else args.table,
                           "seeds": args.seeds, "num_samples": args.num_samples, "concurrency": args.concurrency,
                           "methods": names, "levels": list(LEVELS), "table_seeds": tbl.seeds,
                           "reference_point": [0.0, 0.0], "val_images": tbl.val_images},
              "oracles": {str(s): {"hypervolume": o.hypervolume, "gain": o.gain, "beats_curve": o.verdict.beats,
                                   "best_margin": o.verdict.margin, "front_size": o.front_size}
                          for s, o in oracles.items()},
              "synetune_error": st_error, "runs": runs, "targets": targets(runs), "wall_s": round(time.time() - t0, 1)}
    stored["settings"]["marks"] = epoch_marks(stored["settings"], tbl.budget)
    stored["table"] = dict(zip(("header", "rows"), summarize(runs, names)))
    report(stored)
    png = plot(runs, names, args.samplers, Path(args.plot), plot_title(stored["settings"]))
    out = write_compact_json(args.json, stored)
    print(f"\nwrote {out} and {png} ({time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main()
