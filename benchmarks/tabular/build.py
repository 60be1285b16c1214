"""Build the tabulated benchmark's table: every configuration of the grid space, trained on each
seed with the project's ``Trainer`` (one torch thread per run), every epoch's metrics stored.

Resumable: each finished run is appended to ``WORK/runs.jsonl`` at once (one JSON line, flushed
and synced), a restart skips the runs already there, and the table (``table.csv.gz``, gzip
without a timestamp so the same runs give the same bytes) and its record (``table.json``: the
space, the grid, the seeds, how long it took, where it ran) are written when every run is in.
Run it in the background on a shared machine::

    nice -n 10 python benchmarks/tabular/build.py --workers 1 > runs/tabular-build.log 2>&1 &
    python benchmarks/tabular/build.py --only 6 --work /tmp/x --out /tmp/x/t.csv.gz   # a look: 6 runs
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # benchmarks/: _common and the tabular package
from _common import ROOT, environment, finish_environment, write_json  # noqa: E402
from tabular.table import GRID, KEY_COLUMNS, METRICS, SPACE, TABLE, all_configs, grid_space, table_key  # noqa: E402

SEEDS = (0, 1, 2)


def train_one(job: tuple[int, dict[str, Any], int]) -> dict[str, Any]:
    """One run: configuration ``config`` (a trial config) on table seed ``seed``; its epochs."""
    import torch

    from layerout.schedules import schedule_from_dict
    from layerout.trainer import TrainConfig, Trainer

    torch.set_num_threads(1)
    config_id, config, seed = job
    epochs: list[dict[str, Any]] = []
    t0, c0 = time.perf_counter(), time.process_time()
    trainer = Trainer(TrainConfig(**{**config["train"], "seed": seed}), schedule_from_dict(config["schedule"]),
                      out_dir=None, verbose=False, callbacks=[lambda m, _t: epochs.append(m)])
    trainer.fit()
    return {"config_id": config_id, "seed": seed, "key": table_key(config, trainer.cfg.budget_epochs or
                                                                     trainer.cfg.epochs),
            "family": config["family"], "schedule": json.dumps(config["schedule"], sort_keys=True),
            "run_epochs": int(config["train"]["epochs"]),
            "epochs": [{"epoch": int(m["epoch"]), **{k: m.get(k) for k in METRICS}} for m in epochs],
            "wall_s": round(time.perf_counter() - t0, 3), "cpu_s": round(time.process_time() - c0, 3)}


def read_done(path: Path) -> dict[tuple[int, int], dict[str, Any]]:
    """The runs already in ``runs.jsonl`` by (config_id, seed); a torn last line is ignored."""
    done: dict[tuple[int, int], dict[str, Any]] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                r = json.loads(line)
            except ValueError:
                continue
            done[int(r["config_id"]), int(r["seed"])] = r
    return done


def assemble(runs: list[dict[str, Any]], out: Path) -> Path:
    """The table file from the runs: one row per run and epoch, 6 significant digits."""
    import pandas as pd

    rows = [{"config_id": r["config_id"], "family": r["family"], "schedule": r["schedule"],
             "run_epochs": r["run_epochs"], "seed": r["seed"], **e} for r in runs for e in r["epochs"]]
    df = pd.DataFrame(rows, columns=[*KEY_COLUMNS, *METRICS]).sort_values(["config_id", "seed", "epoch"])
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    df.to_csv(tmp, index=False, float_format="%.6g", compression={"method": "gzip", "mtime": 0})
    os.replace(tmp, out)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    ap.add_argument("--workers", type=int, default=1, help="processes training at once, one torch thread each")
    ap.add_argument("--work", default=str(ROOT / "runs" / "tabular-build"), help="folder of runs.jsonl (resume)")
    ap.add_argument("--out", default=str(TABLE))
    ap.add_argument("--only", type=int, help="build only the first N runs (a look, or a test)")
    args = ap.parse_args(argv)

    env = environment("cpu")
    space = grid_space()
    configs = all_configs(space)
    jobs = [(i, c, s) for s in args.seeds for i, c in enumerate(configs)]  # seed by seed: a partial table is useful
    if args.only:
        jobs = jobs[:args.only]
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    log_path = work / "runs.jsonl"
    done = read_done(log_path)
    keys = {i: table_key(c, space.epochs) for i, c in enumerate(configs)}
    stale = [k for k, r in done.items() if keys.get(k[0]) != r["key"]]
    if stale:
        sys.exit(f"error: {log_path}: {len(stale)} run(s) were made for another space or grid "
                 "(configuration ids no longer match); use another --work")
    todo = [j for j in jobs if (j[0], j[2]) not in done]
    print(f"{len(configs)} configurations x {len(args.seeds)} seeds: {len(jobs)} runs, {len(jobs) - len(todo)} "
          f"already in {log_path}, {len(todo)} to train with {args.workers} worker(s)", flush=True)
    t0 = time.time()
    if todo:
        import contextlib
        import multiprocessing as mp

        # one worker: in this process (one interpreter, one import of torch); more: a pool of processes
        pool = mp.get_context("spawn").Pool(args.workers) if args.workers > 1 else None
        runs_in = pool.imap_unordered(train_one, todo) if pool else map(train_one, todo)
        with open(log_path, "a") as log, (pool or contextlib.nullcontext()):
            for n, r in enumerate(runs_in, 1):
                log.write(json.dumps(r) + "\n")
                log.flush()
                os.fsync(log.fileno())
                done[r["config_id"], r["seed"]] = r
                if n % 25 == 0 or n == len(todo):
                    rate = (time.time() - t0) / n
                    print(f"  {n}/{len(todo)} runs, {time.time() - t0:.0f} s, about {rate * (len(todo) - n):.0f} s "
                          f"left", flush=True)
    finish_environment(env)
    if todo:  # every invocation's wall-clock, so a resumed build still says how long it took in all
        with open(work / "invocations.jsonl", "a") as inv:
            inv.write(json.dumps({"date": env["date"], "runs": len(todo), "wall_s": round(time.time() - t0, 1)}) + "\n")
    invocations = [json.loads(x) for x in (work / "invocations.jsonl").read_text().splitlines()] \
        if (work / "invocations.jsonl").is_file() else []
    runs = [done[j[0], j[2]] for j in jobs]
    out = assemble(runs, Path(args.out))
    meta = {"space": str(SPACE.relative_to(ROOT)), "grid": GRID, "seeds": args.seeds, "configurations": len(configs),
            "runs": len(runs), "threads_per_run": 1, "workers": args.workers,
            "run_cpu_s_total": round(sum(r["cpu_s"] for r in runs), 1),
            "run_wall_s_median": sorted(r["wall_s"] for r in runs)[len(runs) // 2],
            "build_wall_s": round(sum(i["wall_s"] for i in invocations), 1), "invocations": invocations,
            "environment": env}
    write_json(Path(args.out).with_name(Path(args.out).name.split(".")[0] + ".json"), meta)
    print(f"wrote {out} ({out.stat().st_size / 1e3:.0f} kB): {len(runs)} runs", flush=True)


if __name__ == "__main__":
    main()
