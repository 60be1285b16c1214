"""The driver's console lines (tuning/progress.py) for failures: trials that lose their workers are
reported once per node, a retried failure of the trial's own gets one line. Fake trials and a fake
node table; no Ray cluster (the two-node test in test_tune_main.py kills a real node)."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
from ray.exceptions import ActorDiedError, RayTaskError

import tuning.progress as progress
from tuning.progress import TrialProgress

NODE_A, NODE_B = "a" * 56, "b" * 56


def _trial(tid: str, node: str, status: str = "RUNNING", epoch: int = 3, tmp=None):
    return SimpleNamespace(trial_id=tid, status=status, last_result={"epoch": epoch, "node_id": node},
                           config={"family": "prefix"}, path=str(tmp / f"trial_{tid}"), num_failures=1)


@pytest.fixture
def console(monkeypatch, capsys, tmp_path):
    errors: dict[str, BaseException] = {}
    nodes = {NODE_A: {"NodeID": NODE_A, "Alive": True, "NodeManagerAddress": "10.0.0.5"},
             NODE_B: {"NodeID": NODE_B, "Alive": True, "NodeManagerAddress": "10.0.0.6"}}
    monkeypatch.setattr(progress.internals, "last_trial_error", lambda t: errors.get(t.trial_id))
    monkeypatch.setattr(progress, "_nodes", lambda: {k: dict(v) for k, v in nodes.items()})
    monkeypatch.setattr(progress, "RAYLET_DEATHS", [])
    monkeypatch.setattr(progress, "DEAD_NODES", set())
    clock = [1000.0]
    monkeypatch.setattr(progress.time, "time", lambda: clock[0])
    (tmp_path / "ray.log").write_text("")
    return SimpleNamespace(errors=errors, nodes=nodes, clock=clock, tmp=tmp_path,
                           lines=lambda: capsys.readouterr().out.splitlines())


def test_trials_lost_on_a_dead_node_are_one_line(console):
    p = TrialProgress(num_samples=4, epochs=10)
    t1, t2, t3 = (_trial(i, NODE_A, tmp=console.tmp) for i in ("t1", "t2", "t3"))
    t4 = _trial("t4", NODE_B, tmp=console.tmp)
    trials = [t1, t2, t3, t4]
    p.on_step_end(0, trials)  # the node table as it was
    for t in (t1, t2):
        console.errors[t.trial_id] = ActorDiedError()
        p.on_trial_recover(1, trials, t)
    console.nodes[NODE_A]["Alive"] = False
    console.clock[0] += 2.5
    p.on_step_end(2, trials)
    # t3 was running there too; it has not failed yet, but the node is gone
    assert console.lines() == [f"node 10.0.0.5 (aaaaaaaa) died: trials t1, t2, t3 ran there; they restart from "
                               f"their last checkpoints (details in {console.tmp / 'ray.log'})"]
    console.errors["t3"] = ActorDiedError()
    p.on_trial_recover(3, trials, t3)
    console.clock[0] += 10
    p.on_step_end(4, trials)
    p.on_experiment_end(trials)
    assert console.lines() == [f"node 10.0.0.5 (aaaaaaaa) died: trial t3 ran there; it restarts from its last "
                               f"checkpoint (details in {console.tmp / 'ray.log'})"]


def test_a_lost_worker_on_a_live_node_and_a_failure_of_the_trial(console):
    p = TrialProgress(num_samples=2, epochs=10)
    t1, t2 = _trial("t1", NODE_B, tmp=console.tmp), _trial("t2", NODE_A, tmp=console.tmp)
    p.on_step_end(0, [t1, t2])
    console.errors["t1"] = ActorDiedError()
    p.on_trial_recover(1, [t1, t2], t1)
    console.errors["t2"] = RayTaskError("train_trial", "Traceback ...", ValueError("boom"))
    p.on_trial_recover(1, [t1, t2], t2)
    console.clock[0] += 3.5  # the group's window: node B is still up
    p.on_step_end(2, [t1, t2])
    log = console.tmp / "ray.log"
    assert console.lines() == [
        f"trial t2 failed (ValueError: boom; details in {log}); it restarts from its last checkpoint (epoch 3), "
        "attempt 2",
        f"node 10.0.0.6 (bbbbbbbb) lost a worker process: trial t1 ran there; it restarts from its last checkpoint "
        f"(details in {log})"]
