"""trials.csv / epochs.csv from stored per-trial results (layerout/experiment.py), and the repair
of checkpoint names before a resume (tuning/repair.py)."""
from __future__ import annotations

import json
import math
from pathlib import Path

from analysis.front import compute_front
from analysis.results import experiment_from_tables
from layerout.experiment import TrialRecord, build_tables, epochs_of, parse_result_lines
from layerout.metrics import METRICS


def _line(epoch: int, acc: float, saved: float, **kw) -> dict:
    m = {k: 0.5 for k in METRICS}
    m.update(epoch=epoch, val_accuracy=acc, compute_saved_frac=saved, test_accuracy=math.nan, lr=0.05,
             frozen_units="010", synthetic=False, **kw)
    return m


def _trial(tid, n, family="layerout", paper="", epochs_list=None, acc=0.9, saved=0.2, status="TERMINATED",
           error=None, number=0):
    cfg = {"family": family, "paper_config": paper, "optuna_trial": number,
           "train": {"model": "digits_cnn", "epochs": 3, "lr_milestones": [2]},
           "schedule": {"kind": family}}
    rows = [_line(e, acc, saved) for e in (epochs_list or range(1, n + 1))]
    return TrialRecord(trial_id=tid, status=status, config=cfg, rows=rows, error=error)


def test_tables_mark_stopped_errors_and_paper_configs():
    trials = [
        _trial("b", 1, saved=0.5, number=1),                         # ASHA stopped after 1 epoch
        _trial("a", 3, family="none", paper="baseline", acc=0.95, saved=0.0, number=0),
        _trial("c", 2, status="ERROR", error="Traceback...\nRuntimeError: boom", number=2),
        _trial("d", 3, epochs_list=[1, 2, 2, 3], number=3),        # restarted from its epoch-1 checkpoint
    ]
    t, e = build_tables(trials, epochs_budget=3)
    assert t["trial_id"].tolist() == ["a", "b", "c", "d"]  # in the order they were suggested
    assert t["stopped_early"].tolist() == [False, True, False, False]
    assert t["status"].tolist() == ["TERMINATED", "TERMINATED", "ERROR", "TERMINATED"]
    assert t["paper_config"].tolist() == ["baseline", "", "", ""]
    assert t["epochs_done"].tolist() == [3, 1, 2, 3]
    assert t.loc[2, "error"] == "RuntimeError: boom"
    for m in [*METRICS, "lr", "frozen_units", "policy", "config/train/model", "config/schedule/kind"]:
        assert m in t.columns
    assert json.loads(t.loc[0, "config/train/lr_milestones"]) == [2]
    assert json.loads(t.loc[0, "policy"]) == {"kind": "none"}
    assert len(e) == 3 + 1 + 2 + 3 and e[e.trial_id == "d"]["epoch"].tolist() == [1, 2, 3]
    exp = experiment_from_tables({"epochs": 3}, t, e, Path("x"))
    front = compute_front(exp).front
    assert sorted(front["trial_id"]) == ["a", "d"]  # stopped and errored trials never enter the front


def test_tables_say_which_node_ran_each_epoch_and_where_a_moved_trial_ended(tmp_path):
    """A trial restarted on another node after its node died: epochs.csv names each epoch's node (the
    later report of a repeated epoch wins), trials.csv the node of the last epoch; read back as text."""
    from layerout.experiment import read_table, tables_csv

    a, b = "0a" * 28, "1234" * 14  # Ray node ids: 56 hex digits (b: digits only, must stay text)
    t = _trial("d", 0, epochs_list=[1, 2, 2, 3])
    for row, (node, ip) in zip(t.rows, [(a, "10.0.0.5"), (a, "10.0.0.5"), (b, "10.0.0.6"), (b, "10.0.0.6")]):
        row.update(node_id=node, node_ip=ip)
    trials, epochs = build_tables([t, _trial("e", 3, number=1)], epochs_budget=3)
    trials_text, epochs_text = tables_csv(trials, epochs)
    (tmp_path / "trials.csv").write_text(trials_text)
    (tmp_path / "epochs.csv").write_text(epochs_text)
    trials = read_table(tmp_path / "trials.csv", ["trial_id"])
    epochs = read_table(tmp_path / "epochs.csv", ["trial_id"])
    assert list(epochs.columns[-2:]) == ["node_id", "node_ip"]
    d = epochs[epochs.trial_id == "d"]
    assert d["node_id"].tolist() == [a, b, b] and d["node_ip"].tolist() == ["10.0.0.5", "10.0.0.6", "10.0.0.6"]
    assert trials.loc[0, "node_id"] == b and trials.loc[0, "node_ip"] == "10.0.0.6"
    assert trials[["node_id", "node_ip"]].iloc[1].isna().all()  # results from before the columns: empty


def test_result_lines_skip_a_cut_line_and_later_reports_win():
    text = json.dumps({"epoch": 1, "val_accuracy": 0.1}) + "\n" + json.dumps({"epoch": 1, "val_accuracy": 0.2}) \
        + "\n" + '{"epoch": 2, "val_acc'
    rows, bad = parse_result_lines(text)
    assert bad == 1
    rows = epochs_of(rows)
    assert [(r["epoch"], r["val_accuracy"]) for r in rows] == [(1, 0.2)]


def test_repair_gives_a_resumed_trial_the_checkpoint_its_saved_state_names(tmp_path):
    """A driver killed between Ray's state save (naming checkpoint_000001) and the deletion of that
    checkpoint (after checkpoint_000002 arrived): the newer one takes the expected name."""
    from tuning.repair import RAY_SEEN_MARKER, repair_checkpoint_refs

    def entry(tid, status, ckpt, epoch):
        blob = (b"\x80\x05junk" + ckpt.encode() + b"more").hex()
        return [json.dumps({"trial_id": tid, "status": status}),
                json.dumps({"last_result": {"epoch": epoch},
                            "checkpoint_manager": {"_type": "CLOUDPICKLE_FALLBACK", "value": blob}})]

    for tid, names in (("a", ["checkpoint_000002"]), ("b", ["checkpoint_000002"]), ("c", ["checkpoint_000001"])):
        for n in names:
            (tmp_path / f"trial_{tid}" / n).mkdir(parents=True)
            (tmp_path / f"trial_{tid}" / n / "checkpoint.pt").write_text(tid)
    state = {"trial_data": [entry("a", "RUNNING", "checkpoint_000001", 2),
                            entry("b", "TERMINATED", "checkpoint_000001", 2),   # finished: left alone
                            entry("c", "RUNNING", "checkpoint_000001", 2)]}     # intact: not moved
    (tmp_path / "experiment_state-2026-01-01_00-00-00.json").write_text("{}")
    (tmp_path / "experiment_state-2026-01-01_00-00-10.json").write_text(json.dumps(state))
    lines = repair_checkpoint_refs(str(tmp_path))
    assert len(lines) == 1 and "trial a" in lines[0]
    a = tmp_path / "trial_a"
    assert sorted(p.name for p in a.iterdir()) == ["checkpoint_000001"]
    assert json.loads((a / "checkpoint_000001" / RAY_SEEN_MARKER).read_text()) == {"epoch": 2}
    assert (tmp_path / "trial_b" / "checkpoint_000002").is_dir()
    assert not (tmp_path / "trial_b" / "checkpoint_000002" / RAY_SEEN_MARKER).exists()  # finished: left alone
    # intact, but Ray may not have recorded every epoch its checkpoint holds: the note says which it did
    assert json.loads((tmp_path / "trial_c" / "checkpoint_000001" / RAY_SEEN_MARKER).read_text()) == {"epoch": 2}
    assert repair_checkpoint_refs(str(tmp_path)) == []  # idempotent


def test_repair_clears_the_scratch_of_a_trial_the_saved_state_does_not_know(tmp_path):
    """A trial that started after Ray's last state save (the driver was killed within seconds of it):
    the resumed search runs a new trial in its place, so nothing else would clear its scratch."""
    from tuning.repair import SCRATCH, repair_checkpoint_refs

    state = {"trial_data": [[json.dumps({"trial_id": "a", "status": "RUNNING"}),
                             json.dumps({"last_result": {"epoch": 1}})]]}
    (tmp_path / "experiment_state-2026-01-01_00-00-10.json").write_text(json.dumps(state))
    for tid in ("a", "orphan"):
        (tmp_path / f"trial_{tid}" / SCRATCH).mkdir(parents=True)
        (tmp_path / f"trial_{tid}" / SCRATCH / "checkpoint.pt").write_text(tid)
    (tmp_path / "trial_orphan" / "checkpoint_000000").mkdir()
    lines = repair_checkpoint_refs(str(tmp_path))
    assert lines == ["trial_orphan: started after Ray's last saved state, so the resumed search does not know it; "
                     "its scratch folder is removed"]
    assert sorted(p.name for p in (tmp_path / "trial_orphan").iterdir()) == ["checkpoint_000000"]
    assert (tmp_path / "trial_a" / SCRATCH / "checkpoint.pt").is_file()  # known: its next attempt clears it
    assert repair_checkpoint_refs(str(tmp_path)) == []
