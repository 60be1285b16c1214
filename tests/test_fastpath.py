"""The graph fast path's logic on CPU (layerout/fastpath.py).

CUDA graphs need a GPU, which CI does not have; what can fail without one is tested here: the
hand-written SGD update inside the graph against torch.optim.SGD, and the whole graph path
(warm-up steps, static buffers, the lr tensor, the per-mask LRU cache, mixing with eager steps)
in ``emulate`` mode, where "replay" runs the captured step eagerly. The trainer must end with the
same weights, masks and FLOP accounting as the eager path, and frozen units must stay bit-identical.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from layerout.errors import UserError
from layerout.fastpath import StepRunner, graph_support, sgd_update
from layerout.freezer import split_param_groups
from layerout.schedules import schedule_from_dict
from layerout.trainer import TrainConfig, Trainer


def _units_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 3))


def _unit_params(model):
    return [list(model[0].parameters()), list(model[2].parameters()), list(model[4].parameters())]


def test_sgd_update_is_torch_sgd_with_per_group_lrs_and_frozen_units():
    x, y = torch.randn(16, 6, generator=torch.Generator().manual_seed(1)), torch.arange(16) % 3
    models = [_units_model(), _units_model()]
    opts = []
    lrs = [0.1, 0.05, 0.2]
    for m in models:
        opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
        groups = split_param_groups(opt, _unit_params(m))
        for g, lr in zip(groups, lrs):
            g["lr"] = lr
        opts.append(opt)
    neg_lr = torch.tensor([-lr for lr in lrs])
    frozen_before = None
    for step in range(8):
        if step == 3:  # freeze unit 1 in both, as the Freezer does
            for m in models:
                for p in _unit_params(m)[1]:
                    p.requires_grad_(False)
                    p.grad = None
            frozen_before = ([p.clone() for p in _unit_params(models[1])[1]],
                             [opts[1].state[p]["momentum_buffer"].clone() for p in _unit_params(models[1])[1]])
        for i, (m, opt) in enumerate(zip(models, opts)):
            loss = nn.functional.cross_entropy(m(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if i == 1 and step > 0:  # step 0 creates the momentum buffers, as the graph path's warm-up does
                sgd_update(opt, neg_lr)
            else:
                opt.step()
    for a, b in zip(models[0].parameters(), models[1].parameters()):
        torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-7)
    for a, b in zip(opts[0].state.values(), opts[1].state.values()):
        torch.testing.assert_close(b["momentum_buffer"], a["momentum_buffer"], rtol=1e-6, atol=1e-7)
    params, bufs = frozen_before
    for p, p0, b0 in zip(_unit_params(models[1])[1], params, bufs):
        assert torch.equal(p, p0), "a frozen unit's weights changed under sgd_update"
        assert torch.equal(opts[1].state[p]["momentum_buffer"], b0), "a frozen unit's momentum buffer changed"
    # the lr is read from the tensor: changing it changes the next update
    before = [p.clone() for p in models[1].parameters()]
    neg_lr.zero_()
    loss = nn.functional.cross_entropy(models[1](x), y)
    opts[1].zero_grad(set_to_none=True)
    loss.backward()
    sgd_update(opts[1], neg_lr)
    assert all(torch.equal(a, b) for a, b in zip(before, models[1].parameters()))


def test_sgd_update_refuses_missing_momentum_buffer():
    m = _units_model()
    opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
    nn.functional.cross_entropy(m(torch.randn(4, 6)), torch.zeros(4, dtype=torch.long)).backward()
    with pytest.raises(RuntimeError, match="no momentum buffer"):
        sgd_update(opt, torch.tensor([-0.1]))


def test_graph_support_reasons():
    m = _units_model()
    assert "CUDA" in graph_support(torch.optim.SGD(m.parameters(), lr=0.1), torch.device("cpu"))
    assert "SGD only" in graph_support(torch.optim.Adam(m.parameters()), torch.device("cuda"))
    assert "nesterov" in graph_support(torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9, nesterov=True),
                                       torch.device("cuda"))
    assert graph_support(torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9), torch.device("cuda")) is None


def test_runner_warms_up_captures_and_recaptures_evicted_masks():
    model = _units_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    runner = StepRunner(model, opt, nn.functional.cross_entropy, torch.device("cpu"), mode="emulate",
                        warmup=2, max_graphs=1)
    x, y = torch.randn(8, 6), torch.arange(8) % 3
    a, b = (False, False, False), (True, False, False)
    log = []
    for mask, steps in ((a, 4), (b, 3), (a, 2)):
        for p in _unit_params(model)[0]:
            p.requires_grad_(not mask[0])
            if mask[0]:
                p.grad = None
        for _ in range(steps):
            runner.step(x, y, mask)
            log.append((runner.captures, runner.replays))
    # a: 2 warm-up steps, capture+replay, replay; b: 2 warm-ups, capture (evicts a);
    # a again: already warmed up, captured at once; a smaller batch runs eagerly
    assert log == [(0, 0), (0, 0), (1, 1), (1, 2), (1, 2), (1, 2), (2, 3), (3, 4), (3, 5)]
    assert list(runner.graphs) == [a]
    runner.step(x[:5], y[:5], a)
    assert (runner.captures, runner.replays) == (3, 5)


def _trainer(digits, schedule, emulate: bool, max_graphs=8, **cfg):
    # One intra-op thread for every run compared here, whatever the machine: the eager and graph
    # runs take different code paths, and with 2 threads some CPUs round them apart by 4.5e-5 in one
    # epoch (an Intel Xeon, 2026-12-07; 1.2e-7 with 1 thread), within reach of the tolerances below
    conf = TrainConfig(**{"model": "digits_cnn", "dataset": "digits", "epochs": 4, "batch_size": 64,
                          "weight_decay": 1e-3, "lr_milestones": [3], "seed": 0, "threads": 1, **cfg})
    tr = Trainer(conf, schedule_from_dict(schedule), verbose=False, data=digits)
    if emulate:
        tr.runner = tr.make_runner("emulate", warmup=2, max_graphs=max_graphs)
    return tr


SCHEDULES = {
    "layerout_random_epoch": {"kind": "layerout", "v": [0.5, 0.5, 0.5], "v_mode": "random_epoch"},
    "freezeout": {"kind": "freezeout", "t0": 0.5, "scale": "linear", "scale_lr": True},  # mask and lrs per step
    "adaptive": {"kind": "adaptive", "check_every": 1, "threshold_mode": "percentile", "threshold": 90.0},
}


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_emulated_graph_path_trains_like_eager(digits, name):
    runs = {}
    for emulate in (False, True):
        tr = _trainer(digits, SCHEDULES[name], emulate, max_graphs=1 if name == "layerout_random_epoch" else 8)
        tr.fit()
        runs[emulate] = tr
    eager, graph = runs[False], runs[True]
    # the graph path really ran: captures, replays, and the epoch's last smaller batch eagerly
    assert len(graph.data.train_x) % 64 != 0
    assert graph.runner.captures >= 1 and graph.runner.replays >= 2 * graph.steps_per_epoch
    masks = [h["frozen_units"] for h in graph.history]
    assert masks == [h["frozen_units"] for h in eager.history]
    if name != "freezeout":
        assert len(set(masks)) >= 2, masks  # the test means something: masks changed
    if name == "layerout_random_epoch":  # a cache of one graph: every new mask captured, one kept
        assert len(graph.runner.graphs) == 1 and graph.runner.captures == len(set(masks))
    for key in ("compute_saved_frac", "params_frozen_frac", "compute_spent_gflop"):
        assert graph.history[-1][key] == eager.history[-1][key], key
    for a, b in zip(graph.history, eager.history):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
    # The hand-written SGD update rounds differently from torch's foreach SGD (1e-7 per step); four
    # epochs of training grow that to a few 1e-5 on some CPUs. A stale-input bug is 1e-2 off.
    for (k, a), b in zip(eager.model.state_dict().items(), graph.model.state_dict().values()):
        torch.testing.assert_close(b, a, rtol=1e-3, atol=2e-4, msg=k)


def test_emulated_graph_path_keeps_frozen_units_bit_identical(digits):
    tr = _trainer(digits, {"kind": "prefix", "k": 2, "start_epoch": 1}, emulate=True, epochs=3)
    snaps = []

    def snap(metrics, t):
        snaps.append([p.detach().clone() for ps in t.freezer.params[:2] for p in ps]
                     + [t.optimizer.state[p]["momentum_buffer"].clone() for ps in t.freezer.params[:2] for p in ps])

    tr.callbacks.append(snap)
    tr.fit()
    assert [h["frozen_units"] for h in tr.history] == ["000", "110", "110"]
    assert tr.runner.replays > 0
    assert all(torch.equal(a, b) for a, b in zip(snaps[0], snaps[2])), "frozen prefix changed under replays"
    head = tr.freezer.params[2]
    assert not torch.equal(head[0], copy.deepcopy(_trainer(digits, {"kind": "none"}, False).freezer.params[2][0]))


def test_cudagraph_on_cpu_falls_back_to_eager_with_one_line(digits, capsys):
    tr = Trainer(TrainConfig(model="digits_cnn", dataset="digits", epochs=1, max_train_batches=2,
                             fast_path="cudagraph", device="cpu"), schedule_from_dict({"kind": "none"}),
                 verbose=False, data=digits)
    assert tr.runner.mode == "eager"
    assert "fast path cudagraph off: CUDA graphs need a CUDA device, not cpu" in capsys.readouterr().out
    tr.fit()
    assert tr.runner.captures == 0


def test_fast_path_auto_is_the_default_and_quiet_where_graphs_cannot_run(digits, capsys):
    assert TrainConfig(model="digits_cnn", dataset="digits").fast_path == "auto"
    tr = Trainer(TrainConfig(model="digits_cnn", dataset="digits", epochs=1, max_train_batches=2, device="cpu"),
                 schedule_from_dict({"kind": "none"}), verbose=False, data=digits)
    assert tr.runner.mode == "eager" and "CUDA graphs need a CUDA device" in tr.runner.off_reason
    tr.fit()
    assert "fast path" not in capsys.readouterr().out


def _stale_replays(monkeypatch):
    """A broken graph path: replays copy the first batch in, then replay it for ever."""
    replay, filled = StepRunner._replay, set()

    def stale_replay(self, g, x, y):
        if id(self) in filled:
            x, y = self._static_x, self._static_y
        filled.add(id(self))
        return replay(self, g, x, y)

    monkeypatch.setattr(StepRunner, "_replay", stale_replay)


def test_self_check_turns_a_wrong_graph_path_off_and_keeps_the_eager_result(digits, monkeypatch, capsys):
    # one epoch: two eager digits_cnn runs 2e-7 apart (rounding) jumped to 3e-4 in one step of epoch 2
    eager = _trainer(digits, {"kind": "none"}, emulate=False, epochs=1)
    eager.fit()
    _stale_replays(monkeypatch)
    graph = _trainer(digits, {"kind": "none"}, emulate=True, epochs=1)
    graph.fit()
    runner = graph.runner
    assert runner.mode == "eager" and runner.replays == 2 and runner.checked  # capture's replay, the checked one
    assert runner.off_reason.startswith("self-check failed: a replayed step differs from the same step run eagerly")
    assert "fast path cudagraph off: self-check failed" in capsys.readouterr().out
    # the stale replay's result was thrown away: the run is the eager run up to rounding
    for (k, a), b in zip(eager.model.state_dict().items(), graph.model.state_dict().values()):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5, msg=k)


def test_self_check_passes_a_model_with_dropout():
    """Both runs of the self-check must draw the same random numbers."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 32), nn.ReLU(), nn.Dropout(0.5), nn.Linear(32, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    acc = torch.zeros(())
    runner = StepRunner(model, opt, nn.functional.cross_entropy, torch.device("cpu"), mode="emulate", warmup=1,
                        after_backward=lambda mask: acc.add_(model[0].weight.grad.norm()), accumulators=[acc])
    gen = torch.Generator().manual_seed(1)
    for _ in range(4):
        runner.step(torch.randn(16, 6, generator=gen), torch.randint(0, 3, (16,), generator=gen), (False,))
    assert runner.checked and runner.mode == "emulate" and runner.off_reason is None
    assert runner.replays == 3


def test_fast_path_config_is_validated():
    with pytest.raises(UserError, match=r"train\.fast_path: must be one of auto, off, cudagraph, got 'graphs'"):
        TrainConfig(model="digits_cnn", dataset="digits", fast_path="graphs")


def _fastpath_check():
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "fastpath_check.py"
    spec = importlib.util.spec_from_file_location("fastpath_check", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("broken", [False, True])
def test_gpu_check_script_passes_the_emulated_path_and_catches_stale_inputs(tmp_path, monkeypatch, broken):
    """benchmarks/fastpath_check.py is what a GPU session runs first; on CPU it runs emulated. It must
    pass the real graph path's logic and fail one that replays without copying the new batch in."""
    check = _fastpath_check()
    if broken:
        _stale_replays(monkeypatch)
    out = tmp_path / "check.json"
    rc = check.main(["--device", "cpu", "--emulate", "--models", "digits_cnn", "--schedules", "none,prefix",
                     "--steps", "5", "--batch-size", "32", "--epochs", "3", "--json", str(out)])
    rows = json.loads(out.read_text())["rows"]
    assert [r["schedule"] for r in rows] == ["none", "prefix"]
    assert all(r["replays"] > 0 for r in rows)
    if broken:  # the graph path's own self-check catches it and turns the graph path off
        assert rc == 1 and all("graph path did not run (mode eager, 1 captures, self-check failed"
                               in " ".join(r["problems"]) for r in rows), rows
    else:
        assert rc == 0 and all(r["ok"] for r in rows), rows


def test_graph_path_times_against_a_calibrated_steady_step(digits):
    """With graphs, unfrozen epochs include warm-up steps and captures: the time reference must be
    the calibrated steady step, not those epochs (eager runs keep using their unfrozen epochs)."""
    graph = _trainer(digits, {"kind": "none"}, emulate=True, epochs=2)
    graph.fit()
    ledger = graph.ledger
    assert ledger.reference == "calibration" and ledger.calibration_step_s > 0
    assert ledger.unfrozen_step_s == ledger.calibration_step_s
    assert graph.history[-1]["time_saved_frac"] == pytest.approx(
        1 - ledger.train_clock_s / (ledger.steps * ledger.calibration_step_s))  # both on the run's clock
    eager = _trainer(digits, {"kind": "none"}, emulate=False, epochs=2)
    eager.fit()
    assert eager.ledger.reference == "epochs" and eager.ledger.calibration_step_s is None
    assert eager.ledger.unfrozen_step_s == sorted(eager.ledger.unfrozen_step_times)[0] * 0.5 + \
        sorted(eager.ledger.unfrozen_step_times)[1] * 0.5
