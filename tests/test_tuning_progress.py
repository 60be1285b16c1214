"""The driver's console lines (tuning/progress.py, tuning/nodes.py) for failures: trials that lose
their workers are reported once per node, named by address and short id, with what each trial does
next; a retried failure of the trial's own gets one line. Fake trials, a fake node table, actor
table, checkpoints and raylet ports; no Ray cluster (the two-node test in test_tune_main.py kills a
real node)."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
from ray.exceptions import ActorDiedError, RayTaskError

import tuning.nodes as nodes_mod
import tuning.progress as progress
from tuning.progress import TrialProgress

NODE_A, NODE_B = "a" * 56, "b" * 56


def _trial(tid: str, node: str, status: str = "RUNNING", epoch: int = 3, tmp=None):
    return SimpleNamespace(trial_id=tid, status=status, last_result={"epoch": epoch, "node_id": node},
                           config={"family": "prefix"}, path=str(tmp / f"trial_{tid}"), num_failures=1,
                           checkpoint_epoch=epoch, actor_node=None)


@pytest.fixture
def console(monkeypatch, capsys, tmp_path):
    errors: dict[str, BaseException] = {}
    nodes = {NODE_A: {"NodeID": NODE_A, "Alive": True, "NodeManagerAddress": "10.0.0.5"},
             NODE_B: {"NodeID": NODE_B, "Alive": True, "NodeManagerAddress": "10.0.0.6"}}
    gone: set[str] = set()  # nodes whose raylet port refuses connections
    monkeypatch.setattr(progress.internals, "last_trial_error", lambda t: errors.get(t.trial_id))
    monkeypatch.setattr(nodes_mod.internals, "checkpoint_epoch", lambda t: t.checkpoint_epoch)
    monkeypatch.setattr(nodes_mod.internals, "trial_node", lambda t: t.actor_node)
    monkeypatch.setattr(nodes_mod, "_nodes", lambda: {k: dict(v) for k, v in nodes.items()})
    monkeypatch.setattr(nodes_mod, "_raylet_gone", lambda info: info["NodeID"] in gone)
    deaths: list[float] = []
    monkeypatch.setattr(nodes_mod, "RAYLET_DEATHS", deaths)
    monkeypatch.setattr(nodes_mod, "DEAD_NODES", set())
    clock = [1000.0]
    monkeypatch.setattr(progress.time, "time", lambda: clock[0])
    (tmp_path / "ray.log").write_text("")
    return SimpleNamespace(errors=errors, nodes=nodes, clock=clock, tmp=tmp_path, gone=gone, deaths=deaths,
                           log=tmp_path / "ray.log", lines=lambda: capsys.readouterr().out.splitlines())


def test_trials_lost_on_a_dead_node_are_one_line(console):
    p = TrialProgress(num_samples=4, epochs=10, interval=0)
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
    assert console.lines() == []  # t3 ran there too: its line waits for it to fail (up to SETTLE_S)
    t2.checkpoint_epoch = None  # t3 fails too, with a checkpoint; t2 had none yet
    console.errors["t3"] = ActorDiedError()
    p.on_trial_recover(3, trials, t3)
    console.clock[0] += 2
    p.on_step_end(4, trials)
    p.on_experiment_end(trials)
    assert console.lines() == [f"node 10.0.0.5 (aaaaaaaa) died: trial t1 restarts from epoch 3 (its last checkpoint), "
                               f"trial t2 restarts from epoch 3 (its last checkpoint), trial t3 restarts from epoch 3 "
                               f"(its last checkpoint); details in {console.log}"]


def test_a_lost_worker_on_a_live_node_and_a_failure_of_the_trial(console):
    p = TrialProgress(num_samples=2, epochs=10, interval=0)
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
        f"node 10.0.0.6 (bbbbbbbb) lost a worker process: trial t1 restarts from epoch 3 (its last checkpoint); "
        f"details in {log}"]


def test_a_raylet_death_names_its_node_at_once_and_each_trial_s_next_step(console):
    """The cluster announces a raylet's death without naming the node; the driver probes the raylets'
    ports and knows the node before the node table says it is dead. A trial lost before its first
    result is placed by its actor (no checkpoint yet); one whose worker process outlived the node
    and finished there, and one still running there when Ray marked the node dead, are said so;
    one lost after the line gets a line of its own."""
    p = TrialProgress(num_samples=5, epochs=10, interval=0)
    early = _trial("t1", "", tmp=console.tmp)
    early.last_result, early.checkpoint_epoch, early.actor_node = {}, None, NODE_A  # no epoch reported yet
    ran, done, still, other = (_trial(i, NODE_A, tmp=console.tmp) for i in ("t2", "t3", "t4", "t5"))
    other.last_result["node_id"] = NODE_B
    trials = [early, ran, done, still, other]
    for t in trials[1:]:
        p.on_trial_result(0, trials, t, t.last_result)
    p.on_step_end(0, trials)  # the node table as it was; t1 placed by its actor
    console.gone.add(NODE_A)
    console.deaths.append(console.clock[0])  # "Raylet is terminated" (tuning.progress.ray_log_to)
    for t in (early, ran):
        console.errors[t.trial_id] = ActorDiedError()
        p.on_trial_recover(1, trials, t)
    done.status = "TERMINATED"  # its worker outlived the raylet long enough to finish
    p.on_trial_complete(1, trials, done)
    console.clock[0] += 0.5
    p.on_step_end(2, trials)  # probed at once: node A is gone; t4 still runs there
    assert [line.split("  ")[0] for line in console.lines()] == ["[1/5] trial t3"]
    console.clock[0] += 12
    p.on_step_end(3, trials)
    assert console.lines() == []  # t4 has not failed, and Ray has not marked the node dead yet
    console.nodes[NODE_A]["Alive"] = False  # Ray marks it dead, t4 still runs: 3 s more, then the line
    console.clock[0] += 2
    p.on_step_end(4, trials)
    assert console.lines() == []
    console.clock[0] += 3
    p.on_step_end(5, trials)
    assert console.lines() == [
        f"node 10.0.0.5 (aaaaaaaa) died: trial t1 restarts from the start (no checkpoint yet), trial t2 restarts from "
        f"epoch 3 (its last checkpoint), trial t3 finished there: its worker process outlived the node, trial t4 is "
        f"still running: its worker process outlived the node; details in {console.log}"]
    console.errors["t4"] = ActorDiedError()
    still.checkpoint_epoch = 7
    p.on_trial_error(4, trials, still)  # no restarts left
    p.on_experiment_end(trials)
    lines = console.lines()
    assert lines[0].startswith("[2/5] trial t4  prefix") and "FAILED after 3/10 epochs" in lines[0]
    assert lines[1:] == [f"node 10.0.0.5 (aaaaaaaa) died: trial t4 is not restarted (no restarts left, "
                         f"--max-failures); details in {console.log}"]


def test_status_of_a_search_from_trial_events(console):
    """Ray Tune's trial events as the driver gets them: the status line's counts at the interval,
    the repeats the searcher counts, trials stopped early and failed, and its last line."""
    p = TrialProgress(num_samples=4, epochs=5, scheduler="moasha", interval=10)
    repeats = [0]
    p.configure(repeats=lambda: repeats[0])
    a, b, c = (_trial(i, NODE_A, status="PENDING", epoch=0, tmp=console.tmp) for i in ("a", "b", "c"))
    a.last_result = b.last_result = c.last_result = {}
    trials = [a, b]
    p.on_step_end(0, trials)
    for t in (a, b):
        t.status = "RUNNING"
        p.on_trial_start(1, trials, t)
    console.clock[0] += 9
    p.on_step_end(2, trials)
    assert console.lines() == []  # not yet 10 s
    console.clock[0] += 1
    p.on_step_end(3, trials)
    assert console.lines() == ["[search] 0/4 trials finished, 2 running, 2 queued; epochs 0/20 planned; 10s elapsed, "
                               "time left known after the first epoch"]
    for t, epoch in ((a, 1), (b, 1), (a, 2)):
        t.last_result = {"epoch": epoch, "val_accuracy": 0.5}
        p.on_trial_result(4, trials, t, t.last_result)
    b.status = "TERMINATED"  # stopped by the scheduler after one epoch
    p.on_trial_complete(5, trials, b)
    repeats[0] = 2
    trials.append(c)
    c.status = "RUNNING"
    p.on_trial_start(6, trials, c)
    c.status, c.last_result = "ERROR", {"epoch": 0}
    p.on_trial_error(7, trials, c)
    console.clock[0] += 10
    p.on_step_end(8, trials)
    lines = console.lines()
    assert lines[0].startswith("[1/4] trial b  prefix") and "1/5 epochs (moasha stopped it)" in lines[0]
    assert lines[1].startswith("[2/4] trial c  prefix") and "FAILED after 0/5 epochs" in lines[1]
    # planned: a 5, b 1, c 0, the queued trial 5; 3 epochs in the 20 s since the first start: 8 more in 53 s
    assert lines[2:] == ["[search] 2/4 trials finished (1 stopped early, 1 failed), 1 running, 1 queued, 2 repeated "
                         "proposals not trained; epochs 3/11 planned; 20s elapsed, about 53s left"]
    p.on_experiment_end(trials)
    assert console.lines() == []  # its last status is the line just written


def test_a_resumed_search_counts_the_trials_it_finds(console):
    import pickle

    p = TrialProgress(num_samples=3, epochs=4, interval=5)
    p = pickle.loads(pickle.dumps(p))  # as --resume unpickles it from tuner.pkl
    done = _trial("a", NODE_A, status="TERMINATED", epoch=4, tmp=console.tmp)
    paused = _trial("b", NODE_A, status="PENDING", epoch=2, tmp=console.tmp)
    p.on_step_end(0, [done, paused])
    console.clock[0] += 5
    p.on_step_end(1, [done, paused])
    assert console.lines() == ["[search] 1/3 trials finished, 0 running, 2 queued; epochs 6/12 planned; 5s elapsed, "
                               "time left known after the first epoch"]


def test_a_shorter_training_trial_plans_its_own_epochs(console):
    """A reference point or a trial with budget_frac trains fewer epochs than the search's budget:
    the status plans its own epochs, and ending after them is not 'stopped early'."""
    p = TrialProgress(num_samples=2, epochs=6, interval=5)
    short = _trial("s", NODE_A, status="RUNNING", epoch=0, tmp=console.tmp)
    short.config = {"family": "none", "reference": "shorter-50%", "train": {"epochs": 3, "budget_epochs": 6}}
    resumed = _trial("r", NODE_A, status="TERMINATED", epoch=2, tmp=console.tmp)
    resumed.config = {"family": "none", "reference": "shorter-33%", "train": {"epochs": 2, "budget_epochs": 6}}
    p.on_step_end(0, [resumed])  # found by a resumed search, ended after its 2 epochs
    p.on_trial_start(1, [resumed, short], short)
    short.last_result = {"epoch": 3, "val_accuracy": 0.5}
    p.on_trial_result(2, [resumed, short], short, short.last_result)
    short.status = "TERMINATED"
    p.on_trial_complete(3, [resumed, short], short)
    console.clock[0] += 5
    p.on_step_end(4, [resumed, short])
    lines = console.lines()
    assert "3/3 epochs" in lines[0] and "stopped" not in lines[0]
    assert lines[-1].startswith("[search] 2/2 trials finished, 0 running, 0 queued; epochs 5/5 planned")


def test_a_user_error_is_one_line_and_trials_a_stopped_search_ended_never_ran(console):
    """A trial's user-error report prints its FAILED line at once (the search may stop it before Ray
    completes it); a trial the stop ended before it reported counts as never started."""
    p = TrialProgress(num_samples=6, epochs=1, interval=0)
    a, b = (_trial(i, NODE_A, epoch=0, tmp=console.tmp) for i in ("a", "b"))
    trials = [a, b]
    for t in trials:
        t.last_result = {}
        p.on_trial_start(0, trials, t)
    error = "dataset: d: train: batch 4/20 of epoch 1: item 700 has label 12, outside [0, 9] (num_classes = 10)"
    a.last_result = {"epoch": 0, "user_error": error}
    p.on_trial_result(1, trials, a, a.last_result)
    a.status = "TERMINATED"
    p.on_trial_complete(2, trials, a)  # its line is printed once
    b.status = "TERMINATED"  # ended by the search's stop before it reported anything
    p.on_experiment_end(trials)
    lines = console.lines()
    assert len(lines) == 1 and lines[0].startswith("[1/6] trial a  prefix") and lines[0].endswith(f"FAILED: {error}")
    st = p.display.job.status()
    assert (st.finished, st.failed, st.running, st.queued) == (1, 1, 0, 5)


def test_rays_list_of_trials_that_did_not_complete_goes_to_ray_log(tmp_path):
    import io
    import logging

    shown = io.StringIO()
    console = logging.StreamHandler(shown)  # as Ray's own console handler
    ray_logger = logging.getLogger("ray")
    ray_logger.addHandler(console)
    try:
        with progress.ray_log_to(tmp_path / "ray.log"):
            logging.getLogger("ray.tune.tune").error("Trials did not complete: %s", ["train_trial_a"])
            logging.getLogger("ray.tune.tune").error("something else")
    finally:
        ray_logger.removeHandler(console)
    assert shown.getvalue() == "something else\n"
    log = (tmp_path / "ray.log").read_text()
    assert "Trials did not complete: ['train_trial_a']" in log and "something else" in log
