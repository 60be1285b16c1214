"""Check a model and dataset once, before any training starts: the user's code fails here, in one line.

``check_model_and_data`` imports the user's model and data function, calls them, takes the units
(given, declared or automatic) and runs one forward and backward pass on two training samples.
Labels given as tensors or arrays are range-checked in full when the data is loaded
(``layerout.data``); of your ``Dataset``s it checks every label when the Dataset holds them as an
array attribute (``targets`` or ``labels``, as torchvision's do, without reading any item), else
the labels of up to ``LABEL_ITEMS`` items of each split, evenly spaced, within ``LABEL_SECONDS``
(:func:`check_dataset_labels`); a note says how many. Training checks every batch's labels as it
reads them (``layerout.data.checked_batches``).
Each problem is a :class:`UserError` ``<field>: <string>: <problem>``: an import error, a
callable returning the wrong thing, a forward pass that fails or returns the wrong shape, units
that do not fit the model or leave parameters out. The search runs it in the driver (through
``search_spaces.space``), ``python -m layerout.train`` before its run; the trainer runs
:func:`check_forward` on its own probe batch, so a trial fails the same way.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from layerout import userland
from layerout.data import (DATASETS, IMAGEFOLDER, DatasetSplits, base_dataset, check_labels, is_user_dataset,
                           load_data, sample_pair)
from layerout.errors import UserError
from layerout.models import build_model, is_user_model
from layerout.units import Unit, rest_parameters, unit_origin, units_of

LABEL_ITEMS = 2048  # of each of your Datasets without a label array: the items whose labels are read
LABEL_SECONDS = 10.0  # reading them stops after this long (items that decode images can be slow)
LABEL_ARRAYS = ("targets", "labels")  # attributes holding a Dataset's labels, one per item


@dataclass
class Checked:
    """What the check found: the units, where they came from, the data's classes and channels."""

    units: list[Unit]
    origin: str  # given | declared | automatic
    num_classes: int
    in_channels: int
    notes: list[str] = field(default_factory=list)  # one line each, for the user to read


def is_user_code(model: str, dataset: str) -> bool:
    """True when the model or the dataset is not built in (an import path, an object, an image folder)."""
    return is_user_model(model) or is_user_dataset(dataset) or dataset.startswith(IMAGEFOLDER)


def check_model_and_data(model: str, dataset: str, units: Any = None, val_frac: float = 0.1, seed: int = 0,
                         image_size: int | None = None) -> Checked:
    """See the module docstring. Built-in models on built-in datasets are only built (on the meta
    device: no memory, no init); anything else is built for real and run on one batch (CPU)."""
    if not is_user_code(model, dataset) and dataset in DATASETS:
        # a built-in pair needs no data loaded: the dataset's registration has its classes and channels
        kwargs = {"num_classes": DATASETS[dataset].classes, "in_channels": DATASETS[dataset].channels}
        try:
            with torch.device("meta"):
                m = build_model(model, **kwargs)
        except UserError:
            raise
        except Exception:  # noqa: BLE001 - some init may not work on meta tensors: build it for real
            m = build_model(model, **kwargs)
        found, origin = _units(m, model, units), unit_origin(m, units)
        return Checked(found, origin, notes=_cover(m, found, origin, model, units), **kwargs)

    for spec, role in ((model, "model"), (dataset, "dataset")):  # import errors first, in the space's order
        if userland.names_user_code(spec):
            userland.resolve(spec, role)
    if dataset in DATASETS:  # a user model on a built-in dataset: a probe batch of its shape
        x, y = torch.randn(2, *DATASETS[dataset].shape), torch.zeros(2, dtype=torch.int64)
        num_classes, in_channels = DATASETS[dataset].classes, DATASETS[dataset].channels
    else:
        data = load_data(dataset, device="cpu", val_frac=val_frac, seed=seed, image_size=image_size, workers=0)
        num_classes, in_channels = data.num_classes, data.in_channels
        try:
            x, y = data.head(2)
        except UserError:
            raise
        except Exception as e:  # noqa: BLE001 - its samples do not batch (default_collate)
            raise UserError(f"dataset: {dataset}: two training samples could not be batched "
                            f"({userland.one_line(e)})") from None
        if not isinstance(y, torch.Tensor) or y.is_floating_point() or y.ndim != 1:
            got = f"{y.dtype} of shape {tuple(y.shape)}" if isinstance(y, torch.Tensor) else type(y).__name__
            raise UserError(f"dataset: {dataset}: labels must be integer class indices, got {got}")
    labels_note = (check_dataset_labels(data, dataset) if dataset not in DATASETS and isinstance(data, DatasetSplits)
                   and is_user_dataset(dataset) else None)
    torch.manual_seed(seed)
    m = build_model(model, num_classes=num_classes, in_channels=in_channels)
    found = _units(m, model, units)
    origin = unit_origin(m, units)
    notes = _cover(m, found, origin, model, units) + ([labels_note] if labels_note else [])
    check_forward(m, x, y, num_classes, model, dataset)
    return Checked(found, origin, num_classes, in_channels, notes)


def label_positions(n: int, most: int) -> list[int]:
    """The items of a Dataset of ``n`` whose labels the check reads: all when ``n <= most``, else
    ``most`` evenly spaced ones, the first and the last included (errors at either end are common:
    a class appended last)."""
    if n <= most:
        return list(range(n))
    return sorted({int(i) for i in np.linspace(0, n - 1, max(2, most)).round()})


def _label_array(ds: Any) -> tuple[str, torch.Tensor] | None:
    """(attribute, labels) of a Dataset that holds one integer label per item in ``targets`` or
    ``labels`` and applies no ``target_transform`` to them; None otherwise."""
    if getattr(ds, "target_transform", None) is not None:
        return None
    for name in LABEL_ARRAYS:
        value = getattr(ds, name, None)
        if value is None or isinstance(value, (str, bytes)):
            continue
        try:
            labels = torch.as_tensor(value)
        except (TypeError, ValueError, RuntimeError):
            continue
        if labels.ndim == 1 and len(labels) == len(ds) and not labels.is_floating_point() \
                and labels.dtype != torch.bool and not labels.is_complex():
            return name, labels
    return None


def _label_of(item_label: Any, where: str, index: int) -> int:
    try:
        y = torch.as_tensor(item_label)
    except (TypeError, ValueError, RuntimeError):
        y = None
    if y is None or y.ndim != 0 or y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        got = f"{y.dtype} of shape {tuple(y.shape)}" if y is not None else type(item_label).__name__
        raise UserError(f"{where}: item {index}: labels must be integer class indices, got {got}")
    return int(y)


def check_dataset_labels(data: DatasetSplits, dataset: str) -> str:
    """Range-check the labels of your Datasets (train as you gave it, val if you gave one, test):
    all of them from a label array (``_label_array``), else those of the items
    ``label_positions(len, LABEL_ITEMS)`` read within ``LABEL_SECONDS`` in all. A UserError naming
    the first item whose label is outside [0, num_classes); else the note saying what was checked."""
    nc = data.num_classes
    splits = {"train": base_dataset(data.train), "val": base_dataset(data.val), "test": base_dataset(data.test)}
    if splits["val"] is splits["train"]:  # the validation share held out of train: checked with it
        del splits["val"]
    deadline = time.monotonic() + LABEL_SECONDS
    parts, partial = [], False
    for split, ds in splits.items():
        where, n = f"dataset: {dataset}: {split}", len(ds)
        found = _label_array(ds)
        if found is not None:
            name, labels = found
            bad = ((labels < 0) | (labels >= nc)).nonzero().flatten()
            # the item itself decides (its __getitem__ may map the array); an array it contradicts is not used
            first = int(bad[0]) if len(bad) else None
            if first is None or not 0 <= _label_of(sample_pair(ds, first, where)[1], where, first) < nc:
                check_labels(labels, nc, where, lambda j: j)
                parts.append(f"all {n:,} of {split} (its {name})")
                continue
        read: list[int] = []
        values: list[int] = []
        for i in label_positions(n, LABEL_ITEMS):
            if read and time.monotonic() > deadline:
                break
            values.append(_label_of(sample_pair(ds, i, where)[1], where, i))
            read.append(i)
        check_labels(torch.tensor(values, dtype=torch.int64), nc, where, lambda j: read[j])
        partial = partial or len(read) < n
        parts.append(f"all {n:,} of {split}" if len(read) == n else f"{len(read):,} of the {n:,} of {split}")
    return (f"labels checked before training: {', '.join(parts)}: all within [0, {nc - 1}]"
            + ("; the others are checked as training reads them" if partial else ""))


def _cover(m: nn.Module, found: list[Unit], origin: str, model: str, units: Any) -> list[str]:
    """Given or declared units must hold every parameter (an error otherwise); automatic ones
    cannot hold the model's own parameters: a note says which always train."""
    rest = [n for n, p in m.named_parameters() if any(p is q for q in rest_parameters(m, found))]
    if rest and origin != "automatic":
        raise UserError(f"units: {_where(model, units)}: parameters in no unit: {_names(rest)}; every parameter "
                        "must belong to a unit (add its module to one)")
    return [f"parameters in no unit (always trained): {_names(rest)}"] if rest else []


def _where(model: str, units: Any) -> str:
    return "the given units" if units is not None else f"{model}'s layerout_units()"


def _names(names: list[str], most: int = 4) -> str:
    return ", ".join(names[:most]) + (f" and {len(names) - most} more" if len(names) > most else "")


def _units(m: nn.Module, model: str, units: Any) -> list[Unit]:
    try:
        found = units_of(m, units)
    except ValueError as e:
        raise UserError(f"units: {_where(model, units)}: {e}") from None
    except Exception as e:  # noqa: BLE001 - the model's own layerout_units() failed
        raise UserError(f"units: {_where(model, units)}: {userland.one_line(e)}") from None
    if not found:
        raise UserError(f"units: {model}: has no parameters to freeze")
    return found


def check_forward(model: nn.Module, x: torch.Tensor, y: torch.Tensor, num_classes: int, spec: str,
                  dataset: str) -> None:
    """One training-mode forward and backward on ``(x, y)``; the output must be (batch, num_classes).
    A UserError naming the model and the problem otherwise. Weights, gradients, BatchNorm
    statistics and modes are left as they were."""
    state = {k: v.clone() for k, v in model.state_dict().items()}
    grads = [p.grad for p in model.parameters()]
    was_training = model.training
    shape = tuple(x.shape)
    try:
        model.train()
        out = model(x)
        if not isinstance(out, torch.Tensor):
            raise UserError(f"model: {spec}: returned {type(out).__name__} for a batch of {dataset}, not a tensor "
                            "of class scores")
        if tuple(out.shape) != (len(x), num_classes):
            raise UserError(f"model: {spec}: output shape {tuple(out.shape)} for input {shape} from {dataset}; "
                            f"expected ({len(x)}, {num_classes}) (batch, num_classes)")
        nn.functional.cross_entropy(out, y).backward()
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001 - the user's forward or backward failed
        raise UserError(f"model: {spec}: forward on a batch of {dataset} (input shape {shape}) failed "
                        f"({userland.one_line(e)})") from None
    finally:
        with torch.no_grad():
            model.load_state_dict(state)
        for p, g in zip(model.parameters(), grads):
            p.grad = g
        model.train(was_training)
