"""Policy files: round trip, one-line errors for bad files, atomic saves, and Policy.attach in a
user's plain training loop."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from helpers import BAD, check_epoch, good_policy, hand_loop
from layerout.errors import UserError
from layerout.policy import Policy, load_policy, save_policy
from layerout.schedules import schedule_from_dict

@pytest.mark.parametrize("schedule", [
    {}, {"kind": "none"}, {"kind": "freezeout", "t0": 0.7, "scale": "squared", "scale_lr": True, "warmup_epochs": 1},
    {"kind": "prefix", "k": 2, "start_epoch": 1},
    {"kind": "adaptive", "check_every": 2, "threshold_mode": "absolute", "threshold": 0.1,
     "min_trainable_units": 1, "freeze_epochs": [2, None, None]},
], ids=["layerout", "none", "freezeout", "prefix", "adaptive"])
def test_policy_round_trip(tmp_path, schedule):
    d = good_policy()
    if schedule:
        d["schedule"] = schedule
    path = save_policy(Policy.from_dict(d), tmp_path / "sub" / "p.json")
    assert json.loads(path.read_text()) == d  # plain JSON on disk
    assert load_policy(path).to_dict() == d
    save_policy(d, tmp_path / "q.json")
    assert load_policy(tmp_path / "q.json").to_dict() == d
    assert schedule_from_dict(d["schedule"]).to_dict() == d["schedule"]





@pytest.mark.parametrize("name", [n for n in BAD if n != "other_units"])
def test_load_policy_bad_input(tmp_path, name):
    text, needles = BAD[name]
    p = tmp_path / f"{name}.json"
    p.write_text(text)
    with pytest.raises(UserError) as exc:
        load_policy(p)
    msg = str(exc.value)
    assert "\n" not in msg and msg.startswith(str(p))
    for n in needles:
        assert n in msg, (n, msg)
    assert p.read_text() == text  # loading never touches the file


def test_save_policy_refuses_bad_and_keeps_old_file(tmp_path):
    p = save_policy(good_policy(), tmp_path / "p.json")
    before = p.read_text()
    bad = good_policy(v=[0.5, 2.0, 0.1])
    with pytest.raises(UserError, match=r"schedule.v\[1\]"):
        save_policy(bad, p)
    assert p.read_text() == before




# ------------------------------------------------------------------------------ Policy.attach in a plain loop
class UserNet(nn.Module):
    """A user's model with no declared units: its units are the top-level children with parameters."""

    def __init__(self, names=("body", "mid", "head")):
        super().__init__()
        torch.manual_seed(0)
        setattr(self, names[0], nn.Sequential(nn.Linear(6, 12), nn.ReLU()))
        self.act = nn.Tanh()  # no parameters: not a unit
        self._names = names
        if len(names) == 3:
            setattr(self, names[1], nn.Linear(12, 12))
        setattr(self, names[-1], nn.Linear(12, 4))

    def forward(self, x):
        for n in self._names[:-1]:
            x = self.act(getattr(self, n)(x))
        return getattr(self, self._names[-1])(x)


@pytest.mark.parametrize("schedule", [
    {"kind": "layerout", "v": [0.6, 0.6, 0.3], "v_mode": "manual", "warmup_epochs": 1, "keep_last_trainable": False,
     "seed": 5},
    {"kind": "prefix", "k": 2, "start_epoch": 2},
], ids=["layerout", "prefix"])
def test_policy_attach_in_plain_loop(tmp_path, schedule):
    epochs = 8
    pol = Policy(model="user-net", units=["body", "mid", "head"], schedule=schedule, provenance={"epochs": epochs})
    path = save_policy(pol, tmp_path / "user.json")
    model = UserNet()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-3)
    freezer = load_policy(path).attach(model, opt)
    assert [u.name for u in freezer.units] == ["body", "mid", "head"]
    # what the schedule says, computed independently of the attached freezer
    want = schedule_from_dict(schedule).bind(3, epochs, 0, seed=0)
    seen = []

    def check(epoch, state, before, after):
        assert state.frozen == want.state(epoch).frozen
        check_epoch(before, after, state.frozen, f"epoch {epoch}")
        seen.append(state.mask_str)

    hand_loop(model, freezer, opt, epochs, 3, check=check)
    assert seen[0] == "000" and any("1" in m for m in seen), seen


def test_policy_attach_to_model_with_other_units(tmp_path):
    path = save_policy(Policy(model="user-net", units=["body", "mid", "head"], schedule={"kind": "none"}),
                       tmp_path / "p.json")
    pol = load_policy(path)
    model = UserNet(names=("body", "middle", "head"))
    with pytest.raises(UserError) as exc:
        pol.attach(model, torch.optim.SGD(model.parameters(), lr=0.1))
    assert str(exc.value).startswith(f"{path}: units: unit 1 is 'mid' in the policy but 'middle' in the model")
    small = UserNet(names=("body", "head"))
    with pytest.raises(UserError) as exc:
        pol.attach(small, torch.optim.SGD(small.parameters(), lr=0.1))
    assert "has 3 units but the model has 2" in str(exc.value) and "body, head" in str(exc.value)
    assert str(exc.value).startswith(f"{path}: ")
    fo = save_policy(Policy(model="user-net", units=["body", "mid", "head"],
                            schedule={"kind": "freezeout", "t0": 0.5}), tmp_path / "fo.json")
    model = UserNet()
    with pytest.raises(UserError, match=rf"^{fo}: the 'freezeout' schedule changes within epochs"):
        load_policy(fo).attach(model, torch.optim.SGD(model.parameters(), lr=0.1))
