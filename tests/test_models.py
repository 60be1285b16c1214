"""Model registry: the paper's parameter counts, unit layouts, forward shapes, user-model units."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from layerout.errors import UserError
from layerout.models import MODELS, build_model, count_params
from layerout.units import Unit, rest_parameters, unit_modules, unit_param_counts, unit_parameters, units_of

ROOT = Path(__file__).resolve().parents[1]


def test_mnist_shallow_matches_paper():
    m = build_model("mnist_shallow", num_classes=10, in_channels=1)
    assert count_params(m) == 491_114
    units = units_of(m)
    assert [u.name for u in units] == ["conv1", "conv2", "conv3", "conv4", "conv5", "fc1", "fc2"]
    assert sum(unit_param_counts(m, units)) == 491_114
    assert m(torch.randn(2, 1, 32, 32)).shape == (2, 10)


def test_vgg16_matches_paper():
    m = build_model("vgg16", num_classes=10)
    n = count_params(m)
    assert n == 33_663_050
    assert abs(n - 33.64e6) / 33.64e6 < 0.005
    units = units_of(m)
    assert len(units) == 16
    assert sum(unit_param_counts(m, units)) == n and rest_parameters(m, units) == []
    # each conv unit carries its BatchNorm (so a frozen unit's BN can be put in eval mode)
    assert any(isinstance(x, nn.BatchNorm2d) for x in unit_modules(m, units)[0])
    assert m(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_resnet110_units_and_params():
    m = build_model("resnet110", num_classes=100)
    assert count_params(build_model("resnet110")) == 1_727_962  # README's figure; the paper says 1.7 M
    units = units_of(m)
    assert len(units) == 56 and units[0].name == "stem" and units[-1].name == "fc"
    assert sum(unit_param_counts(m, units)) == count_params(m)
    assert m(torch.randn(2, 3, 32, 32)).shape == (2, 100)


@pytest.mark.parametrize("name,units,params", [("resnet20", 11, 269_722), ("resnet56", 29, 853_018)])
def test_small_resnets(name, units, params):
    m = build_model(name)
    assert count_params(m) == params  # README's figures (He et al. 2016 say 0.27 M and 0.85 M)
    assert len(units_of(m)) == units
    assert sum(unit_param_counts(m, units_of(m))) == params
    assert m(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_digits_cnn_three_units_and_in_channels():
    m = build_model("digits_cnn", num_classes=10, in_channels=1)
    assert [u.name for u in units_of(m)] == ["conv1", "conv2", "head"]
    assert m(torch.randn(4, 1, 8, 8)).shape == (4, 10)
    m3 = build_model("digits_cnn", num_classes=7, in_channels=3)
    assert m3(torch.randn(4, 3, 8, 8)).shape == (4, 7)


def test_digits_tiny_is_digits_cnn_at_4_and_8_channels():
    m = build_model("digits_tiny", num_classes=10, in_channels=1)
    assert [u.name for u in units_of(m)] == ["conv1", "conv2", "head"]
    assert count_params(m) == 1_650 and count_params(build_model("digits_cnn", in_channels=1)) == 29_258
    assert (m.conv1[0].out_channels, m.conv2[0].out_channels, m.head[2].in_features) == (4, 8, 128)
    assert m(torch.randn(4, 1, 8, 8)).shape == (4, 10)


def test_unknown_model_lists_allowed():
    with pytest.raises(UserError) as e:
        build_model("resnet9000")
    assert "resnet9000" in str(e.value) and all(n in str(e.value) for n in MODELS)


class UserNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8))
        self.act = nn.ReLU()
        self.head = nn.Linear(8, 2)
        self.scale = nn.Parameter(torch.ones(1))  # top-level parameter: in no unit, always trains


def test_units_default_to_top_level_children_with_params():
    m = UserNet()
    units = units_of(m)
    assert units == [Unit("body", ("body",)), Unit("head", ("head",))]  # 'act' owns nothing
    assert unit_param_counts(m, units) == [4 * 8 + 8 + 8 * 8 + 8, 8 * 2 + 2]
    assert rest_parameters(m, units) == [m.scale]


def test_units_from_prefixes():
    m = UserNet()
    units = units_of(m, ["body.0", "body.2", "head"])
    ps = unit_parameters(m, units)
    assert ps[0] == [m.body[0].weight, m.body[0].bias] and ps[1] == [m.body[2].weight, m.body[2].bias]
    assert unit_modules(m, units)[0] == [m.body[0]]
    seq = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Conv2d(2, 2, 3))
    assert [u.name for u in units_of(seq)] == ["0", "2"]
    assert unit_param_counts(seq, units_of(seq, ["0", "2"])) == [20, 38]
    # a prefix matches whole name components only: "body.0" must not capture "body.0x"
    assert not Unit("b", ("body.0",)).owns("body.01.weight")


def test_bad_prefix_and_overlap_errors():
    m = UserNet()
    with pytest.raises(ValueError, match=r"'bdy'.*top-level modules are: body, act, head"):
        units_of(m, ["bdy", "head"])
    with pytest.raises(ValueError, match="'act' matches no parameter"):
        units_of(m, ["act"])
    with pytest.raises(ValueError, match=r"overlap.*body\.0\.weight"):
        units_of(m, ["body", "body.0"])


def test_cli_json_lists_models():
    out = subprocess.run([sys.executable, "-m", "layerout.models", "--json"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    rows = {r["name"]: r for r in json.loads(out)}
    assert set(rows) == set(MODELS)
    assert rows["mnist_shallow"]["params"] == 491_114 and len(rows["mnist_shallow"]["units"]) == 7
    assert rows["vgg16"]["params"] == 33_663_050 and len(rows["vgg16"]["units"]) == 16
    assert len(rows["resnet110"]["units"]) == 56 and len(rows["digits_cnn"]["units"]) == 3


def test_digits_cnn_pool_passes_4x4_through_and_pools_other_sizes():
    from layerout.models import PoolTo

    pool = PoolTo(4)
    x = torch.randn(2, 3, 4, 4)
    assert pool(x) is x
    big = torch.randn(2, 3, 8, 8)
    assert torch.equal(pool(big), torch.nn.AdaptiveAvgPool2d(4)(big))
    model = build_model("digits_cnn", num_classes=10, in_channels=1)
    assert model(torch.randn(2, 1, 12, 12)).shape == (2, 10)  # other input sizes still work
