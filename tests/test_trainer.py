"""The Trainer end to end on digits: resume is bit-identical to a straight run, and the unfrozen
baseline learns."""
from __future__ import annotations

import json

from helpers import METRIC_COLUMNS, TIMING, read_csv, state_dicts_equal
from layerout.schedules import LayerOutSchedule, NoFreezeSchedule
from layerout.trainer import TrainConfig, Trainer

def test_resume_is_bit_identical_to_straight_run(tmp_path):
    def cfg():
        return TrainConfig(model="digits_cnn", dataset="digits", epochs=5, max_train_batches=4, seed=0)

    def sched():
        return LayerOutSchedule(v=[0.5, 0.5, 0.5])

    straight = Trainer(cfg(), sched(), out_dir=tmp_path / "a", verbose=False)
    straight.fit()
    cut = Trainer(cfg(), sched(), out_dir=tmp_path / "b", verbose=False,
                  callbacks=[lambda m, tr: m["epoch"] >= 2])
    cut.fit()
    assert cut.epoch == 2 and len(read_csv(tmp_path / "b" / "epochs.csv")) == 2
    assert not json.loads((tmp_path / "b" / "summary.json").read_text())["finished"]
    resumed = Trainer.resume(tmp_path / "b", verbose=False)
    assert resumed.epoch == 2
    resumed.fit()
    masks = [h["frozen_units"] for h in resumed.history]
    assert any("1" in m for m in masks[2:]), masks  # freezing happens after the interruption
    assert state_dicts_equal(straight.model.state_dict(), resumed.model.state_dict())
    sa, sb = straight.optimizer.state_dict()["state"], resumed.optimizer.state_dict()["state"]
    assert sa.keys() == sb.keys() and all(state_dicts_equal(sa[k], sb[k]) for k in sa)
    ra, rb = read_csv(tmp_path / "a" / "epochs.csv"), read_csv(tmp_path / "b" / "epochs.csv")
    assert len(ra) == len(rb) == 5
    assert list(ra[0]) == list(rb[0]) and list(ra[0])[:len(METRIC_COLUMNS)] == METRIC_COLUMNS
    for x, y in zip(ra, rb):
        assert {k: v for k, v in x.items() if k not in TIMING} == {k: v for k, v in y.items() if k not in TIMING}


# ------------------------------------------------------------------------------ baseline accuracy
def test_unfrozen_baseline_learns_digits(digits):
    cfg = TrainConfig(model="digits_cnn", dataset="digits", epochs=8, lr=0.05, batch_size=64, augment=False)
    final = Trainer(cfg, NoFreezeSchedule(), verbose=False, data=digits).fit()
    assert final["val_accuracy"] > 0.9 and final["test_accuracy"] > 0.9
    assert final["compute_saved_frac"] == 0.0 and final["params_frozen_frac"] == 0.0
    assert final["compute_spent_gflop"] > 0
