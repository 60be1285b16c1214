"""Micro-benchmarks behind the findings in RESULTS.md (CPU; each one isolates a single cause).

* ``pool``     digits_cnn (the demo's network): a training step as built, next to the same model
               with its ``AdaptiveAvgPool2d(4)`` - the identity at the 8x8 input (4x4 after conv2) -
               replaced by ``nn.Identity`` (outputs checked to be bit-identical first), and that plus
               an input with channels-last strides (the demo trains without augmentation, so its
               batches keep plain NCHW strides; see ``strides``).
* ``threads``  a digits_cnn / mnist_shallow training step in a fresh process with 1 or 2 torch
               threads, with OpenMP's default wait policy or ``OMP_WAIT_POLICY=PASSIVE``, while
               ``--background-load`` busy-looping processes compete for the cores (0 and N).
* ``strides``  mnist_shallow and digits_cnn (1 input channel): the same batch as a plain NCHW-contiguous tensor
               and with the strides ``layerout.augment.random_crop`` produces (channels-last-like;
               with C = 1 both layouts count as contiguous, and oneDNN picks different kernels).
* ``loss-accum``  the trainer's per-step on-device loss accumulation
               (``loss_sum += loss.detach() * n``) next to ``loss_sum.add_(loss.detach(), alpha=n)``.

Steps are interleaved between the compared cases, medians over ``--repeats`` are reported
(process CPU time and wall-clock per step).

    python benchmarks/micro.py --which pool,strides,loss-accum,threads --threads 1
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, OUT_DIR, environment, finish_environment, table, write_json  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from layerout.models import build_model  # noqa: E402

WHICH = ("pool", "threads", "strides", "loss-accum")


def _sgd(model: torch.nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)


def interleaved(cases: dict[str, Callable[[], None]], steps: int, repeats: int, warmup: int = 3) -> dict[str, Any]:
    """Median per-call (cpu ms, wall ms) of each case, cases interleaved per repeat (ABBA)."""
    names = list(cases)
    res: dict[str, list[tuple[float, float]]] = {n: [] for n in names}
    for f in cases.values():
        for _ in range(warmup):
            f()
    for r in range(repeats):
        for n in (names if r % 2 == 0 else names[::-1]):
            f = cases[n]
            c0, t0 = time.process_time(), time.perf_counter()
            for _ in range(steps):
                f()
            res[n].append(((time.process_time() - c0) / steps * 1e3, (time.perf_counter() - t0) / steps * 1e3))
    return {n: {"cpu_ms": statistics.median(c for c, _ in v), "wall_ms": statistics.median(w for _, w in v),
                "wall_ms_all": [round(w, 3) for _, w in v]} for n, v in res.items()}


def bench_pool(steps: int, repeats: int) -> dict[str, Any]:
    torch.manual_seed(0)
    a = build_model("digits_cnn", 10, 1)
    b = build_model("digits_cnn", 10, 1)
    b.load_state_dict(a.state_dict())
    b.head[0] = torch.nn.Identity()
    x = torch.randn(64, 1, 8, 8)
    y = torch.randint(0, 10, (64,))
    with torch.no_grad():
        a.eval(), b.eval()
        same = bool(torch.equal(a(x), b(x)))
        a.train(), b.train()
    oa, ob = _sgd(a), _sgd(b)

    def step(m, o):
        def f():
            loss = F.cross_entropy(m(x), y)
            o.zero_grad(set_to_none=True)
            loss.backward()
            o.step()
        return f

    c = build_model("digits_cnn", 10, 1)
    c.load_state_dict(a.state_dict())
    c.head[0] = torch.nn.Identity()
    oc = _sgd(c)
    xs = x.as_strided(x.shape, (64, 1, 8, 1))  # channels-last strides: same memory for C = 1 (see strides)

    def step_cl(m, o):
        def f():
            loss = F.cross_entropy(m(xs), y)
            o.zero_grad(set_to_none=True)
            loss.backward()
            o.step()
        return f

    out = interleaved({"as built (AdaptiveAvgPool2d(4))": step(a, oa), "pool -> Identity": step(b, ob),
                       "pool -> Identity, channels-last input strides": step_cl(c, oc)}, steps, repeats)
    return {"batch": 64, "outputs_bit_identical": same, "cases": out}


def bench_strides(steps: int, repeats: int) -> dict[str, Any]:
    from layerout.augment import AugmentConfig, augment_batch

    out: dict[str, Any] = {}
    for model, bs, size, n in (("mnist_shallow", 128, 32, steps), ("digits_cnn", 64, 8, steps * 10)):
        torch.manual_seed(0)
        m = build_model(model, 10, 1)
        o = _sgd(m)
        x = torch.randn(bs, 1, size, size)
        y = torch.randint(0, 10, (bs,))
        xa = augment_batch(x, torch.Generator().manual_seed(0), AugmentConfig(crop_pad=4, flip=True))
        # the same memory and values as x, with xa's strides (with C = 1 only the channel stride differs)
        xs = x.as_strided(x.shape, xa.stride())
        assert torch.equal(xs, x)

        def step(inp):
            def f():
                loss = F.cross_entropy(m(inp), y)
                o.zero_grad(set_to_none=True)
                loss.backward()
                o.step()
            return f

        out[model] = {"batch": bs, "augment_output_strides": list(xa.stride()),
                      "cases": interleaved({f"NCHW strides {tuple(x.stride())}": step(x),
                                            f"augment's strides {tuple(xs.stride())}": step(xs)}, n, repeats)}
    return out


def bench_loss_accum(steps: int, repeats: int) -> dict[str, Any]:
    acc = torch.zeros(())
    loss = torch.tensor(2.3, requires_grad=True) * 1.0

    def mul_add():
        nonlocal acc
        acc += loss.detach() * 64

    def add_alpha():
        acc.add_(loss.detach(), alpha=64)

    out = interleaved({"loss_sum += loss.detach() * n": mul_add,
                       "loss_sum.add_(loss.detach(), alpha=n)": add_alpha}, steps * 100, repeats)
    for v in out.values():
        v["us_per_step"] = v.pop("wall_ms") * 1e3
        v.pop("cpu_ms"), v.pop("wall_ms_all")
    return {"cases": out}


# ---------------------------------------------------------------- threads (subprocesses)
def _child(model: str, steps: int, repeats: int) -> None:
    torch.manual_seed(0)
    bs = 64 if model == "digits_cnn" else 128
    size = 8 if model == "digits_cnn" else 32
    m = build_model(model, 10, 1)
    o = _sgd(m)
    x = torch.randn(bs, 1, size, size)
    y = torch.randint(0, 10, (bs,))

    def f():
        loss = F.cross_entropy(m(x), y)
        o.zero_grad(set_to_none=True)
        loss.backward()
        o.step()

    r = interleaved({"step": f}, steps, repeats)["step"]
    r["threads"] = torch.get_num_threads()
    print("RESULT " + json.dumps(r), flush=True)


def _burner() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def bench_threads(steps: int, repeats: int, background: int) -> dict[str, Any]:
    configs = [("2 threads, default OpenMP wait", 2, None), ("2 threads, OMP_WAIT_POLICY=PASSIVE", 2, "PASSIVE"),
               ("1 thread", 1, None)]
    out: dict[str, Any] = {}
    for load in sorted({0, background}):
        burners = [_burner() for _ in range(load)]
        try:
            time.sleep(0.5 if load else 0)
            for model in ("digits_cnn", "mnist_shallow"):
                for name, threads, policy in configs:
                    env = {**os.environ, "OMP_NUM_THREADS": str(threads),
                           "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
                    env.pop("OMP_WAIT_POLICY", None)
                    if policy:
                        env["OMP_WAIT_POLICY"] = policy
                    n = steps if model == "digits_cnn" else max(2, steps // 10)
                    p = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", model,
                                        "--steps", str(n), "--repeats", str(repeats)],
                                       capture_output=True, text=True, env=env, timeout=600)
                    line = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")]
                    rec = json.loads(line[-1][7:]) if line else {"error": p.stderr[-500:]}
                    out.setdefault(f"background load {load}", {}).setdefault(model, {})[name] = rec
        finally:
            for b in burners:
                b.kill()
                b.wait()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--which", default=",".join(WHICH), help=f"comma list of {','.join(WHICH)}")
    ap.add_argument("--steps", type=int, default=20, help="calls per repeat (default 20)")
    ap.add_argument("--repeats", type=int, default=9, help="repeats; medians reported (default 9)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads for pool/strides (default torch's)")
    ap.add_argument("--background-load", type=int, default=1,
                    help="busy-looping processes during 'threads' (default 1; it also runs with 0)")
    ap.add_argument("--json", default=str(OUT_DIR / "micro-cpu.json"))
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        _child(args.child, args.steps, args.repeats)
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    which = [w.strip() for w in args.which.split(",") if w.strip()]
    env = environment("cpu")
    payload: dict[str, Any] = {"benchmark": "micro", "environment": env, "settings": vars(args), "results": {}}
    for w in which:
        print(f"[{w}] ...", flush=True)
        if w == "pool":
            payload["results"][w] = bench_pool(args.steps, args.repeats)
        elif w == "strides":
            payload["results"][w] = bench_strides(max(2, args.steps // 4), args.repeats)
        elif w == "loss-accum":
            payload["results"][w] = bench_loss_accum(args.steps, args.repeats)
        elif w == "threads":
            payload["results"][w] = bench_threads(args.steps, args.repeats, args.background_load)
        else:
            ap.error(f"unknown micro-benchmark {w!r}; allowed: {', '.join(WHICH)}")
        finish_environment(env)
        write_json(args.json, payload)
    print(f"\n== micro-benchmarks: {env['device_name']}  torch {env['torch']}  {env['date']}  "
          f"load {env['loadavg_start']} -> {env.get('loadavg_end')}")
    for w, res in payload["results"].items():
        print(f"\n{w}:")
        if w == "threads":
            rows = [[load, model, name, r.get("wall_ms"), r.get("cpu_ms")]
                    for load, models in res.items() for model, cases in models.items() for name, r in cases.items()]
            print(table(rows, ["", "model", "threads", "wall ms/step", "CPU ms/step"]))
        elif w == "loss-accum":
            print(table([[n, r["us_per_step"]] for n, r in res["cases"].items()], ["per step", "us"]))
        elif w == "strides":
            print(table([[model, n, r["wall_ms"], r["cpu_ms"]] for model, m in res.items()
                         for n, r in m["cases"].items()], ["model", "input", "wall ms/step", "CPU ms/step"]))
        else:
            extra = {k: v for k, v in res.items() if k != "cases"}
            print(table([[n, r["wall_ms"], r["cpu_ms"]] for n, r in res["cases"].items()],
                        ["case", "wall ms/step", "CPU ms/step"]) + f"\n{extra}")
    print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
