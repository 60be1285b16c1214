"""Trial packing: total training images/s of 1, 2, 4, 8 concurrent trials on one device.

Plain processes (default): N copies of this script in ``--worker`` mode, each a real layerout
``Trainer`` (schedule "none") on synthetic data of the model's input shape, resident on the
device, with augmentation. Each worker builds its trainer and runs one warm-up epoch, says READY,
and waits; when all N are ready the parent releases them together, each trains one timed epoch of
``--steps`` steps and prints its numbers. So the timed windows overlap and start-up is excluded.

* total images/s (window) = all images / (last end - first start): what the device delivered
* sum of per-trial rates  = sum(images_i / train_time_i) (each trial's own clock)
* speed-up = total (window) at N / total at 1.

On CUDA every worker also prints its peak memory (``torch.cuda.max_memory_allocated``).

On a CPU this measures CPU contention, not GPU sharing: N processes share the same cores.
Threads per worker default to ``max(1, cores // N)`` (``--threads``), like Ray giving each
trial its CPUs; with 2 cores, 1 trial uses 2 threads and 2+ trials 1 thread each.

``--via-tune``: the same through ``tune_main.py`` (Ray Tune, a one-family "none" space on
synthetic data, N samples, ``--max-concurrent N``, ``--gpus-per-trial 1/N`` on CUDA,
``--cpus-per-trial cores/N`` on CPU). ``--fast-path`` sets the trials' ``fast_path`` (default auto:
CUDA graphs on CUDA; ``off`` measures eager trials). A trial's rate is taken from its epochs.csv rows after the
first epoch (warm-up); total = sum of trial rates, and the whole command's wall-clock is recorded.
Needs Ray importable; skipped with a note otherwise.

    python benchmarks/packing.py --device cpu
    python benchmarks/packing.py --device cuda --via-tune
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, OUT_DIR, environment, finish_environment, median, table, write_json  # noqa: E402

from layerout.fastpath import FAST_PATHS  # noqa: E402

DEFAULT_MODELS = ["mnist_shallow", "digits_cnn"]
TARGET_4X = 2.5  # target: 4 trials per GPU >= 2.5x one trial, for mnist_shallow and digits_cnn
DEFAULT_STEPS = {"cuda": {"mnist_shallow": 400, "digits_cnn": 1000},
                 "cpu": {"mnist_shallow": 16, "digits_cnn": 150}}


# ----------------------------------------------------------------------------- worker
def worker(args: argparse.Namespace) -> int:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from layerout.compute import synchronize
    from layerout.schedules import schedule_from_dict
    from layerout.trainer import Trainer, TrainConfig

    val_frac = 0.001
    size = math.ceil(args.steps * args.batch_size / (1 - val_frac)) + args.batch_size
    cfg = TrainConfig(model=args.model, dataset="synthetic", epochs=3, batch_size=args.batch_size,
                      device=args.device, val_frac=val_frac, augment=True, max_train_batches=args.steps,
                      synthetic_size=size, seed=args.seed, fast_path=args.fast_path)
    tr = Trainer(cfg, schedule_from_dict({"kind": "none"}), out_dir=None, verbose=False)
    dev = tr.device
    tr.train_epoch(0)  # warm-up
    synchronize(dev)
    print("READY", flush=True)
    if sys.stdin.readline().strip() != "GO":
        return 1
    before = tr.ledger.train_time_s
    t_start = time.time()
    tr.train_epoch(1)
    synchronize(dev)
    t_end = time.time()
    train_s = tr.ledger.train_time_s - before
    images = tr.steps_per_epoch * args.batch_size
    rec = {"images": images, "train_s": train_s, "t_start": t_start, "t_end": t_end,
           "images_per_s": images / train_s, "threads": torch.get_num_threads(), "pid": os.getpid()}
    if dev.type == "cuda":
        rec["peak_mem_mib"] = round(torch.cuda.max_memory_allocated(dev) / 2**20, 1)
    print("RESULT " + json.dumps(rec), flush=True)
    return 0


# ----------------------------------------------------------------------------- plain processes
def run_plain(model: str, n: int, steps: int, bs: int, device: str, threads: int, seed: int,
              timeout: float, fast_path: str = "auto") -> dict[str, Any]:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--model", model, "--steps", str(steps),
           "--batch-size", str(bs), "--device", device, "--threads", str(threads), "--fast-path", fast_path]
    procs = [subprocess.Popen(cmd + ["--seed", str(seed + i)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env, cwd=str(ROOT)) for i in range(n)]
    deadline = time.time() + timeout
    try:
        for p in procs:  # wait for every READY
            line = p.stdout.readline()
            if line.strip() != "READY":
                err = p.stderr.read() if p.poll() is not None else ""
                raise RuntimeError(f"worker {p.pid} did not get ready: {line.strip()!r} {err[-800:]}")
            if time.time() > deadline:
                raise TimeoutError("workers took too long to get ready")
        for p in procs:
            p.stdin.write("GO\n")
            p.stdin.flush()
        recs = []
        for p in procs:
            out, err = p.communicate(timeout=max(1.0, deadline - time.time()))
            lines = [ln for ln in out.splitlines() if ln.startswith("RESULT ")]
            if p.returncode != 0 or not lines:
                raise RuntimeError(f"worker {p.pid} failed (rc {p.returncode}): {err[-800:]}")
            recs.append(json.loads(lines[-1][len("RESULT "):]))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    images = sum(r["images"] for r in recs)
    window = max(r["t_end"] for r in recs) - min(r["t_start"] for r in recs)
    out = {"n": n, "threads_per_trial": threads, "images": images, "window_s": window,
           "total_images_per_s": images / window, "sum_of_rates": sum(r["images_per_s"] for r in recs),
           "per_trial_images_per_s": [round(r["images_per_s"], 1) for r in recs]}
    mems = [r["peak_mem_mib"] for r in recs if "peak_mem_mib" in r]
    if mems:
        out["peak_mem_mib_per_trial"] = max(mems)
    return out


# ----------------------------------------------------------------------------- through tune_main.py
def tune_available() -> str | None:
    """None if Ray (and tune_main.py's imports) can be used here, else why not."""
    try:
        import ray  # noqa: F401
        from ray import tune  # noqa: F401
    except Exception as e:  # noqa: BLE001
        return f"Ray not importable: {type(e).__name__}: {e}"
    return None


def run_tune(model: str, n: int, steps: int, bs: int, device: str, epochs: int, seed: int, cores: int,
             timeout: float, keep: str | None, fast_path: str = "auto") -> dict[str, Any]:
    import yaml

    size = math.ceil(steps * bs / 0.99) + bs
    space = {
        "name": f"packing-{model}-{n}",
        "description": "benchmarks/packing.py --via-tune: throughput of N concurrent unfrozen trials",
        "model": model, "dataset": "synthetic",
        "train": {"epochs": epochs, "batch_size": bs, "max_train_batches": steps, "synthetic_size": size,
                  "device": "cuda" if device.startswith("cuda") else "cpu", "augment": True, "val_frac": 0.01,
                  "fast_path": fast_path},
        "families": {"none": {}},
        "early_stopping": {"scheduler": "none"},
        "paper_configs": False, "num_samples": n, "max_concurrent": n, "seed": seed,
    }
    base = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="layerout-packing-"))
    base.mkdir(parents=True, exist_ok=True)
    space_file = base / f"packing-{model}-{n}.yaml"
    space_file.write_text(yaml.safe_dump(space, sort_keys=False))
    name = f"packing-{model}-{n}-{int(time.time())}"
    cmd = [sys.executable, str(ROOT / "tune_main.py"), "--space", str(space_file), "--storage", str(base),
           "--name", name, "--num-samples", str(n), "--max-concurrent", str(n), "--scheduler", "none",
           "--no-analysis"]
    if device.startswith("cuda"):
        cmd += ["--gpus-per-trial", f"{1.0 / n:.6g}", "--cpus-per-trial", f"{max(0.01, cores / n):.6g}"]
    else:
        cmd += ["--cpus-per-trial", f"{cores / n:.6g}"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=str(ROOT))
    wall = time.perf_counter() - t0
    out: dict[str, Any] = {"n": n, "command": " ".join(cmd), "wall_s": wall, "rc": proc.returncode}
    epochs_csv = base / name / "epochs.csv"
    if proc.returncode != 0 or not epochs_csv.is_file():
        out["error"] = (proc.stderr or proc.stdout)[-1500:]
        return out
    per_trial: dict[str, dict[int, float]] = {}
    with open(epochs_csv) as f:
        for row in csv.DictReader(f):
            per_trial.setdefault(row["trial_id"], {})[int(float(row["epoch"]))] = float(row["train_time_s"])
    rates = []
    for tid, ep in per_trial.items():
        last = max(ep)
        if last >= 2 and 1 in ep:
            rates.append((last - 1) * steps * bs / (ep[last] - ep[1]))
        elif last >= 1:
            rates.append(last * steps * bs / ep[last])
    out["trials"] = len(per_trial)
    out["per_trial_images_per_s"] = [round(r, 1) for r in rates]
    out["sum_of_rates"] = sum(rates)
    out["experiment_dir"] = str(base / name)
    return out


# ----------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N (default cpu)")
    ap.add_argument("--models", default=",".join(DEFAULT_MODELS), help="comma list (default mnist_shallow,digits_cnn)")
    ap.add_argument("--concurrency", default="1,2,4,8", help="numbers of concurrent trials (default 1,2,4,8)")
    ap.add_argument("--batch-size", type=int, default=128, help="batch (default 128)")
    ap.add_argument("--steps", type=int, default=None,
                    help="timed steps per trial (default: cuda mnist_shallow 400 / digits_cnn 1000; "
                         "cpu 16 / 150)")
    ap.add_argument("--repeats", type=int, default=3, help="repeats of each N; medians reported (default 3)")
    ap.add_argument("--threads", default="auto", help="torch threads per trial: auto = max(1, cores // N), or a number")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--fast-path", default="auto", choices=FAST_PATHS,
                    help="the trials' TrainConfig.fast_path (default auto: CUDA graphs on CUDA)")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds allowed per measurement")
    ap.add_argument("--via-tune", action="store_true", help="also run the same through tune_main.py (needs Ray)")
    ap.add_argument("--tune-epochs", type=int, default=3, help="epochs per trial through Tune (first is warm-up)")
    ap.add_argument("--tune-dir", default=None, help="keep Tune experiments here (default: a temp dir)")
    ap.add_argument("--json", default=None, help="output (default runs/benchmarks/packing-<device>.json)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--model", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        args.threads = int(args.threads) if args.threads != "auto" else None
        return args
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    args.concurrency = [int(c) for c in args.concurrency.split(",") if c.strip()]
    dev = "cuda" if args.device.startswith("cuda") else "cpu"
    if args.json is None:
        args.json = str(OUT_DIR / f"packing-{dev}.json")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        return worker(args)
    dev = "cuda" if args.device.startswith("cuda") else "cpu"
    if dev == "cuda":
        import torch

        if not torch.cuda.is_available():
            print(f"--device {args.device}: no CUDA GPU here; use --device cpu", file=sys.stderr)
            return 2
    cores = os.cpu_count() or 1
    env = environment(args.device)
    payload: dict[str, Any] = {"benchmark": "packing", "environment": env,
                               "settings": {k: v for k, v in vars(args).items() if k not in ("json", "worker", "model")},
                               "models": {}}
    if dev == "cpu":
        payload["note"] = (f"CPU run: the {cores} cores are shared by all trials, so this measures CPU contention, "
                           "not GPU packing")
    for model in args.models:
        steps = args.steps or DEFAULT_STEPS[dev].get(model, 100)
        res: dict[str, Any] = {"steps": steps, "batch_size": args.batch_size, "plain": [], "tune": []}
        payload["models"][model] = res
        runs: dict[int, list[dict[str, Any]]] = {n: [] for n in args.concurrency}
        for r in range(args.repeats):
            for n in (args.concurrency if r % 2 == 0 else args.concurrency[::-1]):
                threads = max(1, cores // n) if args.threads == "auto" else int(args.threads)
                print(f"[{model}] {n} concurrent trial(s), {threads} thread(s) each, {steps} steps x batch "
                      f"{args.batch_size}, repeat {r + 1}/{args.repeats}", flush=True)
                try:
                    runs[n].append(run_plain(model, n, steps, args.batch_size, args.device, threads,
                                             args.seed, args.timeout, args.fast_path))
                except Exception as e:  # noqa: BLE001
                    print(f"  failed: {e}", flush=True)
                    runs[n].append({"n": n, "error": str(e)[-1000:]})
        one = median(x["total_images_per_s"] for x in runs[args.concurrency[0]] if "error" not in x) \
            if 1 in args.concurrency and args.concurrency[0] == 1 else None
        for n in args.concurrency:
            ok = [x for x in runs[n] if "error" not in x]
            agg = {"n": n, "repeats": runs[n],
                   "threads_per_trial": ok[0]["threads_per_trial"] if ok else None,
                   "total_images_per_s": median(x["total_images_per_s"] for x in ok),
                   "sum_of_rates": median(x["sum_of_rates"] for x in ok),
                   "per_trial_images_per_s": median(x["sum_of_rates"] / n for x in ok)}
            mems = [x["peak_mem_mib_per_trial"] for x in ok if "peak_mem_mib_per_trial" in x]
            if mems:
                agg["peak_mem_mib_per_trial"] = max(mems)
            if one and agg["total_images_per_s"]:
                agg["speedup_vs_1"] = agg["total_images_per_s"] / one
            res["plain"].append(agg)
        if args.via_tune:
            why = tune_available()
            if why:
                res["tune_skipped"] = why
                print(f"[{model}] --via-tune skipped: {why}")
            else:
                for n in args.concurrency:
                    print(f"[{model}] through tune_main.py: {n} concurrent trial(s)", flush=True)
                    try:
                        res["tune"].append(run_tune(model, n, steps, args.batch_size, args.device, args.tune_epochs,
                                                    args.seed, cores, args.timeout, args.tune_dir, args.fast_path))
                    except Exception as e:  # noqa: BLE001
                        res["tune"].append({"n": n, "error": f"{type(e).__name__}: {str(e)[-1000:]}"})
                t1 = next((x.get("sum_of_rates") for x in res["tune"] if x["n"] == 1), None)
                for x in res["tune"]:
                    if t1 and x.get("sum_of_rates"):
                        x["speedup_vs_1"] = x["sum_of_rates"] / t1
        finish_environment(env)
        write_json(args.json, payload)
    # target: 4 per GPU >= 2.5x one
    checks = []
    for model, res in payload["models"].items():
        four = next((x for x in res["plain"] if x["n"] == 4), None)
        if four is not None and model in DEFAULT_MODELS:
            checks.append({"model": model, "what": f"4 trials / 1 trial, total images/s ({dev}, plain processes)",
                           "target": TARGET_4X, "value": four.get("speedup_vs_1"),
                           "met": (four.get("speedup_vs_1") or 0) >= TARGET_4X,
                           "applies": dev == "cuda"})
    payload["targets"] = checks
    finish_environment(env)
    path = write_json(args.json, payload)

    print(f"\n== packing benchmark: {env['device_name']}  torch {env['torch']}  {env['date']}  "
          f"load {env.get('loadavg_start')} -> {env.get('loadavg_end')}")
    if payload.get("note"):
        print(payload["note"])
    for model, res in payload["models"].items():
        print(f"\n{model}, batch {res['batch_size']}, {res['steps']} timed steps per trial "
              f"(medians of {args.repeats} repeats):")
        rows = [[x["n"], x["threads_per_trial"], x["total_images_per_s"], x["sum_of_rates"],
                 x["per_trial_images_per_s"], x.get("speedup_vs_1"), x.get("peak_mem_mib_per_trial")]
                for x in res["plain"]]
        print(table(rows, ["trials", "threads/trial", "total img/s (window)", "sum of trial rates",
                           "per trial img/s", "speed-up vs 1", "peak MiB/trial"]))
        if res["tune"]:
            print("through tune_main.py:")
            print(table([[x["n"], x.get("sum_of_rates"), x.get("speedup_vs_1"), x.get("wall_s"),
                          "ok" if "error" not in x else "error"] for x in res["tune"]],
                        ["trials", "sum of trial rates", "speed-up vs 1", "command wall s", "status"]))
            for x in res["tune"]:
                if "error" in x:
                    print(f"  N={x['n']}: {x['error'][-400:]}")
        elif res.get("tune_skipped"):
            print(f"through tune_main.py: skipped ({res['tune_skipped']})")
    if checks:
        print("\nTarget (on a GPU): 4 trials >= 2.5x one trial")
        print(table([[c["model"], c["value"], c["target"], ("yes" if c["met"] else "NO") if c["applies"]
                      else "n/a on CPU"] for c in checks], ["model", "4 vs 1", "target", "met"]))
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
