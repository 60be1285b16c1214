"""The Freezer: a frozen unit's weights and momentum are untouched and it gets no weight decay, in a
hand-written loop and through the Trainer; BatchNorm modes of frozen units."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from helpers import MaskList, check_epoch, hand_loop, snapshot
from layerout.freezer import Freezer
from layerout.schedules import LayerOutSchedule, schedule_from_dict
from layerout.trainer import TrainConfig, Trainer
from layerout.units import units_of


def _tiny():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 4))


@pytest.mark.parametrize("set_to_none", [True, False])
def test_freezer_hand_loop_frozen_unit_untouched_momentum_kept_no_decay(set_to_none):
    """Also with zero_grad(set_to_none=False): a frozen unit must not keep a zero gradient, or SGD
    would still apply weight decay and momentum to it."""
    model = _tiny()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=0.05)
    units = units_of(model)
    assert [u.name for u in units] == ["0", "2", "4"]
    masks = [(0, 0, 0), (1, 0, 0), (0, 1, 1), (1, 1, 0), (0, 0, 0)]
    freezer = Freezer(model, opt, units, MaskList(masks).bind(3, len(masks), 4))
    seen = []

    def check(epoch, state, before, after):
        assert state.frozen == tuple(bool(f) for f in masks[epoch])
        for i, f in enumerate(state.frozen):
            assert all(p.requires_grad != f for p in freezer.params[i])
        check_epoch(before, after, state.frozen, f"epoch {epoch}")
        seen.append(state.mask_str)

    hand_loop(model, freezer, opt, len(masks), 4, check=check, set_to_none=set_to_none)
    assert seen == ["000", "100", "011", "110", "000"]


def test_freezer_thawed_unit_resumes_its_momentum():
    """A unit frozen for an epoch keeps its momentum buffer and uses it on its first step after thawing."""
    model = _tiny()
    lr, mom, wd = 0.1, 0.9, 0.05
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=mom, weight_decay=wd)
    freezer = Freezer(model, opt, units_of(model), MaskList([(0, 0, 0), (1, 0, 0), (0, 0, 0)]).bind(3, 3, 3))
    hand_loop(model, freezer, opt, 2, 3)  # epoch 0 trains everything, epoch 1 freezes unit 0
    w = freezer.params[0][0]
    buf_old = opt.state[w]["momentum_buffer"].clone()
    p_old = w.detach().clone()
    model.train()
    freezer.on_epoch_start(2)
    x, y = torch.randn(8, 6), torch.randint(0, 4, (8,))
    opt.zero_grad(set_to_none=True)
    nn.functional.cross_entropy(model(x), y).backward()
    g = w.grad.clone()
    opt.step()
    want_buf = mom * buf_old + (g + wd * p_old)
    assert torch.allclose(opt.state[w]["momentum_buffer"], want_buf, rtol=1e-5, atol=1e-7)
    assert torch.allclose(w.detach(), p_old - lr * want_buf, rtol=1e-5, atol=1e-7)
    # a momentum restarted from zero would give a different step
    assert not torch.allclose(want_buf, g + wd * p_old, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("bn_frozen, stats_move", [("eval", False), ("train", True)])
def test_freezer_batchnorm_mode_of_frozen_units(bn_frozen, stats_move):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8)), nn.ReLU(), nn.Linear(8, 4))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    freezer = Freezer(model, opt, units_of(model), MaskList([(1, 0), (0, 0)]).bind(2, 2, 3), bn_frozen=bn_frozen)
    bn = model[0][1]
    stats = []

    def check(epoch, state, before, after):
        stats.append((bn.running_mean.clone(), bn.training))

    start = bn.running_mean.clone()
    hand_loop(model, freezer, opt, 1, 3, check=check)
    assert (not torch.equal(start, stats[0][0])) == stats_move
    assert bn.training == (bn_frozen == "train")
    model.train()
    freezer.on_epoch_start(1)
    assert bn.training  # a thawed unit's BatchNorm trains again


# ------------------------------------------------------------------------------ Freezer through the Trainer
def test_trainer_layerout_frozen_units_bit_identical(digits):
    cfg = TrainConfig(model="digits_cnn", dataset="digits", epochs=5, max_train_batches=3, weight_decay=0.01,
                      augment=False, seed=0)
    sched = LayerOutSchedule(v=[0.5, 0.5, 0.5])
    trainer = Trainer(cfg, sched, verbose=False, data=digits)
    snaps = [snapshot(trainer.freezer.params, trainer.optimizer)]
    masks = []

    def cb(metrics, tr):
        snaps.append(snapshot(tr.freezer.params, tr.optimizer))
        masks.append(tuple(c == "1" for c in metrics["frozen_units"]))

    trainer.callbacks.append(cb)
    trainer.fit()
    assert masks == [sched.state(e).frozen for e in range(5)]
    assert sum(any(m) for m in masks) >= 2, masks  # the test means something: units were frozen
    for e, m in enumerate(masks):
        check_epoch(snaps[e], snaps[e + 1], m, f"epoch {e} mask {m}")


def test_trainer_prefix_frozen_units_bit_identical(digits):
    cfg = TrainConfig(model="digits_cnn", dataset="digits", epochs=3, max_train_batches=3, weight_decay=0.01)
    trainer = Trainer(cfg, schedule_from_dict({"kind": "prefix", "k": 2, "start_epoch": 1}), verbose=False,
                      data=digits)
    snaps = [snapshot(trainer.freezer.params, trainer.optimizer)]
    trainer.callbacks.append(lambda m, tr: snaps.append(snapshot(tr.freezer.params, tr.optimizer)))
    rows = [trainer.fit()]
    assert [h["frozen_units"] for h in trainer.history] == ["000", "110", "110"]
    for e, m in enumerate([(0, 0, 0), (1, 1, 0), (1, 1, 0)]):
        check_epoch(snaps[e], snaps[e + 1], m, f"epoch {e}")
    # the paper's figure: mean over epochs of frozen parameters / all parameters
    counts = [sum(p.numel() for p in ps) for ps in trainer.freezer.params]
    want = (0 + 2 * (counts[0] + counts[1]) / sum(counts)) / 3
    assert rows[0]["params_frozen_frac"] == pytest.approx(want, rel=1e-12)
    assert rows[0]["compute_saved_frac"] > 0
