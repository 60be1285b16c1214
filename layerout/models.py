"""Model registry (timm-style): name -> ModelSpec, each built-in model declaring its units.

The paper's networks (``mnist_shallow``, ``vgg16``, ``resnet110``) are built so their
parameter counts match the paper; ``digits_cnn`` is the small net of the embedded demo.
``python -m layerout.models [--json]`` lists them.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from layerout.checks import short
from layerout.errors import ArgumentParser, UserError, cli_main
from layerout.units import Unit, units_of


@dataclass
class ModelSpec:
    """How to build a registered model and what it expects."""

    name: str
    constructor: Callable[..., nn.Module]  # (num_classes, in_channels) -> nn.Module
    description: str
    input_size: int = 32
    default_dataset: str = "cifar10"
    in_channels: int = 3  # channels of the default dataset


MODELS: dict[str, ModelSpec] = {}


def register_model(
    fn: Callable[..., nn.Module] | None = None,
    *,
    name: str | None = None,
    description: str = "",
    input_size: int = 32,
    default_dataset: str = "cifar10",
    in_channels: int = 3,
):
    """Register a constructor ``(num_classes, in_channels) -> nn.Module``; bare or with options."""

    def deco(f: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        key = name or f.__name__
        doc = description or ((f.__doc__ or "").strip().splitlines() or [""])[0]
        MODELS[key] = ModelSpec(key, f, doc, input_size, default_dataset, in_channels)
        return f

    return deco(fn) if fn is not None else deco


def build_model(name: str, num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    """Build a registered model by name."""
    if name not in MODELS:
        raise UserError(f"unknown model {short(name)}; allowed: {', '.join(MODELS)}")
    return MODELS[name].constructor(num_classes=num_classes, in_channels=in_channels)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


class _ChildUnits(nn.Module):
    """Base for models whose units are exactly their top-level children with parameters."""

    def layerout_units(self) -> list[Unit]:
        return [Unit(n, (n,)) for n, m in self.named_children() if any(True for _ in m.parameters())]


def _he_init(model: nn.Module) -> None:
    """He init (fan_out, ReLU) for convs, BN weight 1 / bias 0, zero conv biases."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


# ---------------------------------------------------------------- MNIST shallow net
class MnistShallow(_ChildUnits):
    """The paper's MNIST net: 5 convs (no pooling) + 2 fc, 491,114 params for 10 classes, 32x32 input."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1):
        super().__init__()
        relu = lambda: nn.ReLU(inplace=True)  # noqa: E731
        self.conv1 = nn.Sequential(nn.Conv2d(in_channels, 32, 3), relu())  # 32 -> 30
        self.conv2 = nn.Sequential(nn.Conv2d(32, 64, 3, stride=2), relu())  # -> 14
        self.conv3 = nn.Sequential(nn.Conv2d(64, 128, 3), relu())  # -> 12
        self.conv4 = nn.Sequential(nn.Conv2d(128, 64, 3, stride=2), relu())  # -> 5
        self.conv5 = nn.Sequential(nn.Conv2d(64, 32, 3), relu())  # -> 3, 32*3*3 = 288
        self.fc1 = nn.Sequential(nn.Flatten(), nn.Linear(288, 1024), relu())
        self.fc2 = nn.Linear(1024, num_classes)
        for m in self.modules():  # the paper uses Xavier init (its public code never ran it)
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for m in self.children():
            x = m(x)
        return x


@register_model(description="paper's MNIST net: 5 conv + 2 fc, Xavier init, 32x32 input",
                default_dataset="mnist", in_channels=1)
def mnist_shallow(num_classes: int = 10, in_channels: int = 1) -> nn.Module:
    return MnistShallow(num_classes, in_channels)


# ---------------------------------------------------------------- VGG-16 (paper variant)
_VGG16 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


class VGG16(_ChildUnits):
    """VGG-16 with BN; the fully connected layers are 1x1 convs 512->4096->4096->classes (16 units).

    Each unit is a conv with its BN and ReLU; a max-pool belongs to the conv unit before it.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 3):
        super().__init__()
        c, i = in_channels, 0
        for v in _VGG16:
            if v == "M":
                getattr(self, f"conv{i}").append(nn.MaxPool2d(2))
                continue
            i += 1
            setattr(self, f"conv{i}", nn.Sequential(nn.Conv2d(c, v, 3, padding=1), nn.BatchNorm2d(v), nn.ReLU(inplace=True)))
            c = v
        self.pool = nn.AdaptiveAvgPool2d(1)  # identity at 32x32 input; lets other sizes work
        self.fc1 = nn.Sequential(nn.Conv2d(512, 4096, 1), nn.BatchNorm2d(4096), nn.ReLU(inplace=True))
        self.fc2 = nn.Sequential(nn.Conv2d(4096, 4096, 1), nn.BatchNorm2d(4096), nn.ReLU(inplace=True))
        self.fc3 = nn.Conv2d(4096, num_classes, 1)
        _he_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for m in self.children():
            x = m(x)
        return x.flatten(1)


@register_model(description="paper's VGG-16 with BN, fc layers as 1x1 convs, He init")
def vgg16(num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    return VGG16(num_classes, in_channels)


# ---------------------------------------------------------------- CIFAR ResNets
class PadShortcut(nn.Module):
    """Option A shortcut (He et al. 2016): stride subsampling + zero-padded channels, no parameters."""

    def __init__(self, stride: int, extra_channels: int):
        super().__init__()
        self.stride, self.extra = stride, extra_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        lo = self.extra // 2
        return F.pad(x, (0, 0, 0, 0, lo, self.extra - lo))


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Identity() if stride == 1 and cin == cout else PadShortcut(stride, cout - cin)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x), inplace=True)


class CifarResNet(nn.Module):
    """CIFAR ResNet-(6n+2): 3 stages x n basic blocks, 16/32/64 channels; units stem, blocks, fc."""

    def __init__(self, n: int, num_classes: int = 10, in_channels: int = 3):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU(inplace=True))
        cin, stages = 16, []
        for s, cout in enumerate((16, 32, 64)):
            blocks = []
            for b in range(n):
                blocks.append(BasicBlock(cin, cout, 2 if (s > 0 and b == 0) else 1))
                cin = cout
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.fc = nn.Linear(64, num_classes)  # PyTorch default init, as torchvision's ResNets
        _he_init(self)

    def layerout_units(self) -> list[Unit]:
        blocks = [f"layer{s}.{b}" for s in (1, 2, 3) for b in range(len(getattr(self, f"layer{s}")))]
        return [Unit(n, (n,)) for n in ["stem", *blocks, "fc"]]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(self.layer2(self.layer1(self.stem(x))))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


@register_model(description="CIFAR ResNet-20 (3x3 blocks, option A shortcuts), He init")
def resnet20(num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    return CifarResNet(3, num_classes, in_channels)


@register_model(description="CIFAR ResNet-56 (3x9 blocks, option A shortcuts), He init")
def resnet56(num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    return CifarResNet(9, num_classes, in_channels)


@register_model(description="paper's CIFAR ResNet-110 (3x18 blocks, option A shortcuts), He init")
def resnet110(num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    return CifarResNet(18, num_classes, in_channels)


# ---------------------------------------------------------------- digits demo net
class PoolTo(nn.AdaptiveAvgPool2d):
    """``AdaptiveAvgPool2d`` that passes an input already of the output size through untouched.

    The pool is then the identity (each window is one element), but PyTorch still runs it and its
    backward: 10-20% of a digits_cnn training step on CPU (measured 2026-11-29, batch 64)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = (self.output_size, self.output_size) if isinstance(self.output_size, int) else tuple(self.output_size)
        return x if tuple(x.shape[-2:]) == size else super().forward(x)


class DigitsCNN(_ChildUnits):
    """Small CNN for 8x8 digits, 3 units: conv, strided conv, linear head."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1):
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(in_channels, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(inplace=True))
        self.conv2 = nn.Sequential(nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.BatchNorm2d(64), nn.ReLU(inplace=True))
        # the pool is the identity at 8x8 input (4x4 after conv2) and lets other sizes work
        self.head = nn.Sequential(PoolTo(4), nn.Flatten(), nn.Linear(64 * 16, num_classes))
        _he_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv2(self.conv1(x)))


@register_model(description="small CNN for 8x8 digits (embedded demo), 3 units, He init",
                input_size=8, default_dataset="digits", in_channels=1)
def digits_cnn(num_classes: int = 10, in_channels: int = 1) -> nn.Module:
    return DigitsCNN(num_classes, in_channels)


# ---------------------------------------------------------------- command line
def describe(num_classes: int = 10) -> list[dict]:
    """One dict per registered model: name, params, units, and the spec's fields."""
    rows = []
    for spec in MODELS.values():
        m = spec.constructor(num_classes=num_classes, in_channels=spec.in_channels)
        units = units_of(m)
        rows.append({"name": spec.name, "params": count_params(m), "units": [u.name for u in units],
                     "num_units": len(units), "description": spec.description,
                     "input_size": spec.input_size, "default_dataset": spec.default_dataset,
                     "in_channels": spec.in_channels})
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = ArgumentParser(prog="python -m layerout.models", description="List the built-in models.")
    ap.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    ap.add_argument("--num-classes", type=int, default=10)
    args = ap.parse_args(argv)
    rows = describe(args.num_classes)
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"{'name':<14} {'params':>12} {'units':>5}  description")
    for r in rows:
        print(f"{r['name']:<14} {r['params']:>12,} {r['num_units']:>5}  {r['description']}")


if __name__ == "__main__":
    cli_main(main)
