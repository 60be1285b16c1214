"""Model registry (timm-style): name -> ModelSpec, each built-in model declaring its units.

The paper's networks (``mnist_shallow``, ``vgg16``, ``resnet110``) are built so their
parameter counts match the paper; ``digits_cnn`` is the small net of the embedded demo.
``build_model`` also takes an import path to your own model (``my_pkg.nets:build``, see
``layerout.userland``). ``python -m layerout.models [--json]`` lists the built-in models;
``python -m layerout.models --units MODEL`` shows a model's units with their parameters and FLOPs.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from layerout import userland
from layerout.checks import check_int, short
from layerout.choices import BUILTIN_MODELS
from layerout.errors import ArgumentParser, UserError, cli_main
from layerout.units import Unit, unit_origin, unit_param_counts, units_of


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
    """Build a registered model by name, or your own by import path (``my_pkg.nets:build``)."""
    if name in MODELS:
        return MODELS[name].constructor(num_classes=num_classes, in_channels=in_channels)
    if is_user_model(name):
        return userland.model_from(userland.resolve(name, "model"), name, num_classes, in_channels)
    raise UserError(f"unknown model {short(name)}; allowed: {', '.join(MODELS)}, or an import path to your own "
                    "like my_pkg.nets:build")


def is_user_model(name: str) -> bool:
    """True for an import path or a model object registered by name (not a built-in model)."""
    return name not in MODELS and userland.names_user_code(name)


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

    def __init__(self, num_classes: int = 10, in_channels: int = 1, widths: tuple[int, int] = (32, 64)):
        super().__init__()
        w1, w2 = widths
        self.conv1 = nn.Sequential(nn.Conv2d(in_channels, w1, 3, padding=1), nn.BatchNorm2d(w1), nn.ReLU(inplace=True))
        self.conv2 = nn.Sequential(nn.Conv2d(w1, w2, 3, stride=2, padding=1), nn.BatchNorm2d(w2), nn.ReLU(inplace=True))
        # the pool is the identity at 8x8 input (4x4 after conv2) and lets other sizes work
        self.head = nn.Sequential(PoolTo(4), nn.Flatten(), nn.Linear(w2 * 16, num_classes))
        _he_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv2(self.conv1(x)))


@register_model(description="small CNN for 8x8 digits (embedded demo), 3 units, He init",
                input_size=8, default_dataset="digits", in_channels=1)
def digits_cnn(num_classes: int = 10, in_channels: int = 1) -> nn.Module:
    return DigitsCNN(num_classes, in_channels)


@register_model(description="digits_cnn at 4/8 channels (the search benchmark: freezing costs accuracy), 3 units",
                input_size=8, default_dataset="digits", in_channels=1)
def digits_tiny(num_classes: int = 10, in_channels: int = 1) -> nn.Module:
    """digits_cnn at 4 and 8 channels, for the search benchmark: random features of so few channels
    are poor, so freezing a unit costs accuracy and a search faces a real trade-off (digits_cnn's
    random 32/64-channel features alone reach about 97% on digits)."""
    return DigitsCNN(num_classes, in_channels, widths=(4, 8))


if tuple(MODELS) != BUILTIN_MODELS:  # the command lines offer layerout.choices' list before importing this module
    raise RuntimeError(f"layerout.choices.BUILTIN_MODELS {BUILTIN_MODELS} does not match the registered models "
                       f"{tuple(MODELS)}: update it")


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


def unit_rows(model: nn.Module, units: list[Unit], probe: torch.Tensor | None) -> list[dict]:
    """Per unit: name, module prefixes, parameters and forward FLOPs per sample (None without a probe batch)."""
    from layerout.compute import forward_flops

    flops = forward_flops(model, probe) if probe is not None else None
    n = len(probe) if probe is not None else 1
    rows = []
    for u, params in zip(units, unit_param_counts(model, units)):
        # a module's count includes its children's: sum the prefixes' own counts
        f = None if flops is None else sum(flops.get(p, 0) for p in u.prefixes) / n
        rows.append({"name": u.name, "prefixes": list(u.prefixes), "params": params, "forward_flops": f})
    return rows


def show_units(spec: str, dataset: str | None, input_shape: str | None, num_classes: int,
               as_json: bool, image_size: int | None = None) -> None:
    """``--units``: the units of a built-in or user model, with parameters and FLOPs per sample.
    ``image_size``: an image folder's images resized to it, as ``train.image_size`` does in a search
    (the FLOPs of a conv net grow with the image's area)."""
    from layerout.compute import step_flops
    from layerout.data import IMAGEFOLDER
    from layerout.units import unit_parameters

    if image_size is not None:
        check_int("--image-size", image_size, 1)
        if not (dataset or "").startswith(IMAGEFOLDER):
            raise UserError(f"--image-size: resizes the images of --dataset {IMAGEFOLDER}PATH only (a space's "
                            "train.image_size); other data comes at its own size, or give --input-shape C,H,W")
    userland.add_code_paths([os.getcwd()])
    probe = labels = None
    in_channels = MODELS[spec].in_channels if spec in MODELS else 3
    if dataset:
        from layerout.data import load_data

        data = load_data(dataset, device="cpu", seed=0, image_size=image_size)
        probe, labels = data.head(2)
        num_classes, in_channels = data.num_classes, data.in_channels
    elif input_shape:
        try:
            shape = tuple(int(v) for v in input_shape.split(","))
            assert shape and all(v > 0 for v in shape)
        except (ValueError, AssertionError):
            raise UserError(f"--input-shape: expected sizes of one sample like 3,32,32 or 13, "
                            f"got {input_shape!r}") from None
        probe, in_channels = torch.randn(2, *shape), shape[0]
    elif spec in MODELS:
        s = MODELS[spec]
        probe, in_channels = torch.randn(2, s.in_channels, s.input_size, s.input_size), s.in_channels
    model = build_model(spec, num_classes=num_classes, in_channels=in_channels)
    try:
        units = units_of(model)
    except ValueError as e:
        raise UserError(f"{spec}: units: {e}") from None
    try:
        rows = unit_rows(model, units, probe)
        step = None
        if probe is not None:
            y = labels if labels is not None else torch.zeros(len(probe), dtype=torch.int64)
            step = step_flops(model, unit_parameters(model, units), (False,) * len(units), probe, y) / len(probe)
    except Exception as e:  # noqa: BLE001 - the user's forward failed on the probe batch
        raise UserError(f"{spec}: forward on a batch of shape {tuple(probe.shape)} failed "
                        f"({userland.one_line(e)})") from None
    origin = unit_origin(model)
    if as_json:
        print(json.dumps({"model": spec, "units_from": origin, "params": count_params(model),
                          "train_step_flops_per_sample": step, "units": rows}, indent=2))
        return
    print(f"{spec}: {len(units)} units ({origin}), {count_params(model):,} parameters"
          + (f", input {tuple(probe.shape[1:])}" if probe is not None else ""))
    print(f"{'unit':<24} {'params':>12} {'fwd MFLOP/sample':>17}  modules")
    for r in rows:
        f = "n/a" if r["forward_flops"] is None else f"{r['forward_flops'] / 1e6:.3f}"
        print(f"{r['name']:<24} {r['params']:>12,} {f:>17}  {' + '.join(r['prefixes'])}")
    rest = count_params(model) - sum(r["params"] for r in rows)
    if rest:
        print(f"{'(in no unit: always trained)':<24} {rest:>12,}")
    if step is not None:
        print(f"one training step, nothing frozen: {step / 1e6:.3f} MFLOP per sample (forward + backward)")
    else:
        print("FLOPs: give --dataset or --input-shape to count them")


def main(argv: list[str] | None = None) -> None:
    ap = ArgumentParser(prog="python -m layerout.models",
                        description="List the built-in models, or show one model's units (--units).")
    ap.add_argument("--json", action="store_true", help="print JSON instead of a table")
    ap.add_argument("--num-classes", type=int, default=10)
    ap.add_argument("--units", metavar="MODEL", help="a built-in model or an import path (my_pkg.nets:build): "
                                                      "its units with parameters and forward FLOPs per sample")
    ap.add_argument("--dataset", help="with --units: take the input (and classes) from this dataset")
    ap.add_argument("--input-shape", metavar="C,H,W", help="with --units: one sample's shape, e.g. 3,32,32 or 13")
    ap.add_argument("--image-size", type=int, metavar="N",
                    help="with --dataset imagefolder:PATH: the size its images are resized and cropped to, as the "
                         "space's train.image_size (default 64)")
    args = ap.parse_args(argv)
    if args.units:
        show_units(args.units, args.dataset, args.input_shape, args.num_classes, args.json, args.image_size)
        return
    rows = describe(args.num_classes)
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"{'name':<14} {'params':>12} {'units':>5}  description")
    for r in rows:
        print(f"{r['name']:<14} {r['params']:>12,} {r['num_units']:>5}  {r['description']}")


if __name__ == "__main__":
    cli_main(main)
