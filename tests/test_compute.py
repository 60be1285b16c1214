"""FLOP accounting: step_flops against hand counts, and the trainer's compute_saved_frac."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from layerout.compute import FlopCache, step_flops
from layerout.models import MODELS, ModelSpec
from layerout.schedules import FreezeState, LayerOutSchedule
from layerout.trainer import TrainConfig, Trainer
from layerout.units import unit_parameters, units_of

A, B, C, N = 5, 7, 3, 4


def _two_layer():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(A, B), nn.ReLU(), nn.Linear(B, C))
    return model, unit_parameters(model, units_of(model))


def _hand_two_layer(mask, n=N, a=A, b=B, c=C):
    fwd = 2 * n * a * b + 2 * n * b * c
    return {
        (False, False): fwd + 2 * n * b * c + 2 * n * b * c + 2 * n * a * b,  # grad W2, grad h, grad W1
        (True, False): fwd + 2 * n * b * c,  # grad W2 only: nothing before unit 1 needs a gradient
        (False, True): fwd + 2 * n * b * c + 2 * n * a * b,  # grad h (to reach unit 0) + grad W1
    }[tuple(mask)]


@pytest.mark.parametrize("mask", [(False, False), (True, False), (False, True)])
def test_step_flops_two_layer_hand_count(mask):
    model, params = _two_layer()
    x, y = torch.randn(N, A), torch.randint(0, C, (N,))
    rg = [p.requires_grad for p in model.parameters()]
    assert step_flops(model, params, mask, x, y) == _hand_two_layer(mask)
    assert [p.requires_grad for p in model.parameters()] == rg and all(p.grad is None for p in model.parameters())
    assert model.training
    cache = FlopCache(model, params, x, y)
    assert cache(mask) == _hand_two_layer(mask) / N


def test_step_flops_refuses_all_frozen():
    model, params = _two_layer()
    with pytest.raises(ValueError, match="every unit"):
        step_flops(model, params, (True, True), torch.randn(N, A), torch.randint(0, C, (N,)))
    with pytest.raises(ValueError, match="every unit"):
        FreezeState(frozen=(True, True))


def _mlp2(num_classes=10, in_channels=1):
    return nn.Sequential(nn.Flatten(), nn.Linear(64 * in_channels, 12), nn.ReLU(), nn.Linear(12, num_classes))


@pytest.fixture
def mlp2_model(monkeypatch):
    monkeypatch.setitem(MODELS, "_test_mlp2", ModelSpec("_test_mlp2", _mlp2, "test", 8, "digits", 1))
    return "_test_mlp2"


def test_trainer_compute_saved_frac_matches_hand_count(digits, mlp2_model):
    epochs, batches, bs = 6, 3, 64
    cfg = TrainConfig(model=mlp2_model, dataset="digits", epochs=epochs, max_train_batches=batches, batch_size=bs,
                      seed=1)
    sched = LayerOutSchedule(v=[0.5, 0.5])
    trainer = Trainer(cfg, sched, verbose=False, data=digits)
    assert [u.name for u in trainer.units] == ["1", "3"]
    hist = []
    trainer.callbacks.append(lambda m, tr: hist.append(m))
    trainer.fit()
    masks = [tuple(c == "1" for c in m["frozen_units"]) for m in hist]
    assert masks == [sched.state(e).frozen for e in range(epochs)]
    assert len({m for m in masks if any(m)}) == 2, masks  # both one-unit masks occur
    n = batches * bs  # samples per epoch (full batches)
    per = {m: _hand_two_layer(m, n=1, a=64, b=12, c=10) for m in masks + [(False, False)]}
    spent = unfrozen = 0.0
    for e, m in enumerate(masks):
        spent += n * per[m]
        unfrozen += n * per[(False, False)]
        assert hist[e]["compute_saved_frac"] == pytest.approx(1 - spent / unfrozen, rel=1e-12, abs=1e-12)
        assert hist[e]["compute_spent_gflop"] == pytest.approx(spent / 1e9, rel=1e-12)
    assert hist[-1]["compute_saved_frac"] > 0
