"""Your own model and data without Ray: import paths, automatic units, the data-function contract,
the DataLoader path against the tensor path, image folders, the one-batch checks, and
``python -m layerout.train`` / ``python -m layerout.models --units`` on a module outside the package."""
from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest
import torch
import torchvision
from torch import nn
from torch.utils.data import Dataset, TensorDataset

from helpers import REPO, cli_env, read_csv, state_dicts_equal
from layerout import userland
from layerout.augment import AugmentConfig
from layerout.data import DatasetSplits, UserData, as_splits, load_data
from layerout.errors import UserError
from layerout.models import build_model
from layerout.preflight import check_model_and_data
from layerout.schedules import LayerOutSchedule, NoFreezeSchedule
from layerout.trainer import TrainConfig, Trainer
from layerout.units import Unit, auto_units, units_of
from usercode_fixture import write_module


def run_module(module, args, cwd):
    """``python -m module args`` in ``cwd`` (outside the repository), importing this checkout."""
    import subprocess
    import sys

    env = {**cli_env(), "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=240)


# ------------------------------------------------------------------------------ units
def test_automatic_units_of_torchvision_resnet18():
    m = torchvision.models.resnet18(weights=None, num_classes=10)  # weights=None: nothing downloaded
    units = units_of(m)
    blocks = [f"layer{s}.{b}" for s in (1, 2, 3, 4) for b in (0, 1)]
    assert units == [Unit("conv1", ("conv1", "bn1")), *[Unit(b, (b,)) for b in blocks], Unit("fc", ("fc",))]
    params = dict(m.named_parameters())
    owner = {n: [u.name for u in units if u.owns(n)] for n in params}
    assert all(len(o) == 1 for o in owner.values())  # every parameter in exactly one unit
    assert owner["bn1.weight"] == ["conv1"] and owner["layer3.1.bn2.bias"] == ["layer3.1"]
    import layerout  # the names a user groups units with are public

    assert layerout.Unit is Unit and layerout.units_of is units_of


def test_automatic_units_keep_declared_and_simple_models():
    for name in ("digits_cnn", "resnet20", "vgg16", "mnist_shallow"):  # declared; automatic ones agree here
        m = build_model(name)
        assert units_of(m) == m.layerout_units() == auto_units(m), name

    class Wrapper(nn.Module):  # one child: looked into
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.ReLU(), nn.Linear(8, 2))

    class Stages(nn.Module):  # a container of blocks: one unit per block
        def __init__(self):
            super().__init__()
            self.stem = nn.Linear(4, 8)
            self.blocks = nn.ModuleList(nn.Sequential(nn.Linear(8, 8), nn.ReLU()) for _ in range(3))
            self.head = nn.Linear(8, 2)

    assert auto_units(Wrapper()) == [Unit("net.0", ("net.0", "net.1")), Unit("net.3", ("net.3",))]
    assert [u.name for u in auto_units(Stages())] == ["stem", "blocks.0", "blocks.1", "blocks.2", "head"]


def test_declared_units_as_a_mapping():
    class Declares(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.c = nn.Linear(2, 2), nn.Linear(2, 2), nn.Linear(2, 2)

        def layerout_units(self):
            return {"front": ["a", "b"], "back": "c"}

    assert units_of(Declares()) == [Unit("front", ("a", "b")), Unit("back", ("c",))]  # declared units win
    assert [u.name for u in auto_units(Declares())] == ["a", "b", "c"]


# ------------------------------------------------------------------------------ import paths
def test_import_paths_resolve_from_code_paths_only(tmp_path):
    with pytest.raises(UserError, match=r"^model: uc_paths:FixtureNet: cannot import uc_paths \(no module named"):
        build_model("uc_paths:FixtureNet")
    userland.add_code_paths([write_module(tmp_path / "code", "uc_paths")])
    m = build_model("uc_paths:FixtureNet", num_classes=7, in_channels=3)
    assert m(torch.randn(2, 3, 8, 8)).shape == (2, 7)
    assert str(tmp_path / "code") in userland.code_paths()
    assert userland.module_location("uc_paths:FixtureNet") == str((tmp_path / "code" / "uc_paths.py").resolve())
    assert userland.module_location("torchvision.models:resnet18") is None  # installed: never shipped
    tv = build_model("torchvision.models:resnet18", num_classes=5)  # **kwargs: gets num_classes
    assert tv.fc.out_features == 5
    with pytest.raises(UserError, match=r"^model: uc_paths:nothing: uc_paths has no attribute 'nothing'$"):
        build_model("uc_paths:nothing")
    with pytest.raises(UserError, match=r"^model: uc_paths:not_a_model: returned int, not a torch.nn.Module$"):
        build_model("uc_paths:not_a_model")


def test_objects_by_name_or_by_value():
    from layerout.models import DigitsCNN

    assert userland.register_object(DigitsCNN) == "layerout.models:DigitsCNN"  # importable: by name
    name = userland.register_object(lambda: nn.Linear(3, 2))
    assert name.startswith("test_user_code:") and userland.registered(name)
    assert isinstance(build_model(name), nn.Linear)


# ------------------------------------------------------------------------------ the data contract
def test_data_function_returns_are_checked(tmp_path):
    x, y = np.random.default_rng(0).normal(size=(20, 5)), np.arange(20) % 3
    d = as_splits((x, y, x[:4], y[:4], 3), "mine", val_frac=0.25)
    assert (len(d.train_x), len(d.val_x), len(d.test_x)) == (15, 5, 4)
    assert d.train_x.dtype == torch.float32 and d.in_channels == 5 and d.num_classes == 3
    cases = {
        "a string": ("nope", "dataset: mine: returned str; a data function returns UserData"),
        "labels out of range": (UserData((x, y + 1), (x, y), 3), "dataset: mine: train: labels must be within [0, 2]"),
        "float labels": (UserData((x, y * 0.5), (x, y), 3), "dataset: mine: train: labels must be a 1-D array of"),
        "lengths": (UserData((x, y[:5]), (x, y), 3), "dataset: mine: train: 20 inputs but 5 labels"),
        "classes": (UserData((x, y), (x, y), 1), "dataset: mine: num_classes must be an integer >= 2, got 1"),
        "shapes": (UserData((x, y), (x[:, :4], y), 3), "dataset: mine: the splits' samples differ in shape"),
    }
    for what, (ret, msg) in cases.items():
        with pytest.raises(UserError) as e:
            as_splits(ret, "mine")
        assert str(e.value).startswith(msg), (what, str(e.value))


class Noisy(Dataset):
    """Digits with per-sample random noise drawn in the loader's workers (their torch RNG)."""

    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i] + 0.01 * torch.randn(self.x[i].shape), int(self.y[i])


def test_dataloader_path_matches_tensor_path(digits):
    aug = AugmentConfig(crop_pad=1, flip=True)
    tensors = dataclasses.replace(digits, augment=aug)
    loader = DatasetSplits(train=TensorDataset(digits.train_x, digits.train_y),
                           val=TensorDataset(digits.val_x, digits.val_y),
                           test=TensorDataset(digits.test_x, digits.test_y), num_classes=10, in_channels=1,
                           image_size=8, name="digits", workers=2, augment=aug)
    runs = {}
    for name, data in (("tensors", tensors), ("loader", loader)):
        cfg = TrainConfig(model="digits_cnn", dataset="digits", epochs=3, seed=5, max_train_batches=8)
        tr = Trainer(cfg, LayerOutSchedule(v=[0.6, 0.5, 0.3]), data=data, verbose=False)
        tr.fit()
        runs[name] = tr
    a, b = runs["tensors"], runs["loader"]
    assert [h["frozen_units"] for h in a.history] == [h["frozen_units"] for h in b.history]
    assert any("1" in h["frozen_units"] for h in a.history)
    assert a.flops.per_sample == b.flops.per_sample
    assert [h["compute_saved_frac"] for h in a.history] == [h["compute_saved_frac"] for h in b.history]
    for k, v in a.model.state_dict().items():
        assert torch.allclose(v.float(), b.model.state_dict()[k].float(), atol=1e-6), k
    assert [h["val_accuracy"] for h in a.history] == pytest.approx([h["val_accuracy"] for h in b.history])


def test_dataloader_batches_repeat_after_a_resume(digits, tmp_path):
    def splits():  # noise drawn in 2 worker processes, seeded from (seed, epoch)
        return DatasetSplits(train=Noisy(digits.train_x, digits.train_y), val=TensorDataset(digits.val_x, digits.val_y),
                             test=TensorDataset(digits.test_x, digits.test_y), num_classes=10, in_channels=1,
                             image_size=8, name="noisy", workers=2)

    straight = splits()
    seen = [list(straight.train_batches(100, epoch, 3, False, "cpu")) for epoch in range(3)]
    resumed = list(splits().train_batches(100, 2, 3, False, "cpu"))  # a new process would start at epoch 2
    assert len(resumed) == len(seen[2]) == 13
    assert all(torch.equal(x0, x1) and torch.equal(y0, y1) for (x0, y0), (x1, y1) in zip(seen[2], resumed))
    assert not torch.equal(seen[1][0][0], seen[2][0][0])

    def cfg():
        return TrainConfig(model="digits_cnn", dataset="noisy", epochs=4, seed=1, max_train_batches=5)

    full = Trainer(cfg(), LayerOutSchedule(v=[0.5, 0.5, 0.5]), data=splits(), verbose=False)
    full.fit()
    cut = Trainer(cfg(), LayerOutSchedule(v=[0.5, 0.5, 0.5]), data=splits(), verbose=False, out_dir=tmp_path / "c",
                  callbacks=[lambda m, tr: m["epoch"] >= 2])
    cut.fit()
    again = Trainer.resume(tmp_path / "c", verbose=False, data=splits())
    again.fit()
    assert state_dicts_equal(full.model.state_dict(), again.model.state_dict())


def _png_folder(root, size=12):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", 6), ("test", 2)):
        for c, cls in enumerate(("cat", "dog")):
            d = root / split / cls
            d.mkdir(parents=True)
            for i in range(n):
                img = rng.integers(0, 100, (size + i, size, 3), dtype=np.uint8) + 100 * c
                Image.fromarray(img.astype(np.uint8)).save(d / f"{i}.png")


def test_image_folder(tmp_path):
    _png_folder(tmp_path / "pets")
    d = load_data(f"imagefolder:{tmp_path / 'pets'}", val_frac=0.25, seed=0, image_size=8)
    assert isinstance(d, DatasetSplits) and d.num_classes == 2 and d.in_channels == 3
    assert (len(d.train), len(d.val), len(d.test)) == (9, 3, 4)
    x, y = d.head(4)
    assert x.shape == (4, 3, 8, 8) and y.dtype == torch.int64
    assert d.augment.crop_pad == 1 and d.augment.flip
    cfg = TrainConfig(model="digits_cnn", dataset=f"imagefolder:{tmp_path / 'pets'}", epochs=2, batch_size=4,
                      image_size=8, data_workers=0)
    final = Trainer(cfg, NoFreezeSchedule(), verbose=False).fit()
    assert final["epoch"] == 2 and final["test_accuracy"] is not None
    (tmp_path / "pets" / "test" / "bird").mkdir()
    shutil.copy(tmp_path / "pets" / "test" / "cat" / "0.png", tmp_path / "pets" / "test" / "bird" / "0.png")
    with pytest.raises(UserError, match=r"test: its class folders \(bird, cat, dog\) differ from train/'s \(cat, dog\)"):
        load_data(f"imagefolder:{tmp_path / 'pets'}")
    with pytest.raises(UserError, match=r"^dataset: imagefolder:.*nowhere: no folder .*nowhere/train"):
        load_data(f"imagefolder:{tmp_path / 'nowhere'}")


# ------------------------------------------------------------------------------ the Trainer on objects
def test_trainer_on_your_own_objects():
    from sklearn.datasets import load_wine

    w = load_wine()
    x = (w.data - w.data.mean(0)) / w.data.std(0)
    data = UserData(train=(x[:140], w.target[:140]), test=(x[140:], w.target[140:]), num_classes=3)

    def mlp(in_channels, num_classes):
        return nn.Sequential(nn.Linear(in_channels, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(),
                             nn.Linear(32, num_classes))

    cfg = TrainConfig(model="wine_mlp", dataset="wine", epochs=5, batch_size=16, lr=0.05)
    tr = Trainer(cfg, LayerOutSchedule(v=[0.5, 0.5, 0.0]), model=mlp, data=data, verbose=False)
    assert [u.name for u in tr.units] == ["0", "2", "4"] and tr.units_origin == "automatic"
    final = tr.fit()
    assert final["val_accuracy"] > 0.8 and 0 < final["compute_saved_frac"] < 1
    with pytest.raises(UserError, match=r"^model: wine_mlp: output shape \(2, 4\) for input \(2, 13\)"):
        Trainer(cfg, NoFreezeSchedule(), model=lambda in_channels: nn.Linear(in_channels, 4), data=data,
                verbose=False)


# ------------------------------------------------------------------------------ the one-batch check
def test_preflight_checks(tmp_path):
    userland.add_code_paths([write_module(tmp_path / "code", "uc_pre")])
    ok = check_model_and_data("uc_pre:FixtureNet", "uc_pre:digits")
    assert [u.name for u in ok.units] == ["stem", "body", "head"] and ok.origin == "automatic"
    assert check_model_and_data("uc_pre:FixtureNet", "uc_pre:digits_as_tuple").num_classes == 10
    assert check_model_and_data("uc_pre:FixtureNet", "digits").in_channels == 1  # a user model, built-in data
    cases = [
        (("uc_pre:WrongHead", "uc_pre:digits"), "model: uc_pre:WrongHead: forward on a batch of uc_pre:digits "
                                                "(input shape (2, 1, 8, 8)) failed (RuntimeError: mat1 and mat2"),
        (("uc_pre:FixtureNet", "uc_pre:not_data"), "dataset: uc_pre:not_data: returned str"),
        (("uc_pre:FixtureNet", "uc_pre:digits", ["stem", "head"]),
         "units: the given units: parameters in no unit: bn.weight, bn.bias, body.1.weight, body.1.bias; every "
         "parameter must belong to a unit"),
        (("uc_pre:FixtureNet", "uc_pre:digits", ["stem", "nope"]), "units: the given units: unit prefix 'nope' "
                                                                    "matches no parameter of FixtureNet"),
        (("digits_cnn", "digits", ["conv1", "head"]),  # a built-in model too
         "units: the given units: parameters in no unit: conv2.0.weight, conv2.0.bias, conv2.1.weight, "
         "conv2.1.bias; every parameter must belong to a unit"),
    ]
    for args, msg in cases:
        with pytest.raises(UserError) as e:
            check_model_and_data(*args)
        assert str(e.value).startswith(msg) and "\n" not in str(e.value), str(e.value)


# ------------------------------------------------------------------------------ user errors inside training
def _fixture(tmp_path, name):
    import importlib

    userland.add_code_paths([write_module(tmp_path / "code", name)])
    return importlib.import_module(name)


def test_a_bad_label_deep_in_a_dataset_names_its_item_and_batch(tmp_path):
    from layerout.data import epoch_generator

    mod = _fixture(tmp_path, "uc_label")
    cfg = TrainConfig(model="digits_cnn", dataset="mine", epochs=1, batch_size=64, seed=0, augment=False)

    def fails_with(data):
        with pytest.raises(UserError) as e:
            Trainer(cfg, NoFreezeSchedule(), data=data, verbose=False).fit()
        return str(e.value)

    # an item of the training share, read at position 300 of the first epoch's order: batch 300 // 64 + 1
    data = as_splits(mod.digits_items(), "mine", val_frac=0.1, seed=0)
    order = torch.randperm(data.n_train, generator=epoch_generator(0, 0)).tolist()
    bad = data.train.indices[order[300]]  # the index in the user's own Dataset, not in the training share
    data.train.dataset.y[bad] = 12
    assert fails_with(data) == (f"dataset: mine: train: batch 5/{-(-data.n_train // 64)} of epoch 1: item {bad} has "
                                "label 12, outside [0, 9] (num_classes = 10)")
    # an item of the validation share held out of train: found when the epoch is evaluated
    data = as_splits(mod.digits_items(), "mine", val_frac=0.1, seed=0)
    bad = data.val.indices[7]
    data.val.dataset.y[bad] = -1
    assert fails_with(data) == (f"dataset: mine: train (held out for validation): batch 1/1 of the evaluation: item "
                                f"{bad} has label -1, outside [0, 9] (num_classes = 10)")

    class Unreadable(mod.DigitsItems):
        def __getitem__(self, i):
            if i == bad:
                raise OSError("truncated file")
            return super().__getitem__(i)

    # an item that cannot be read, in a DataLoader worker process: named by its index all the same
    d = mod.digits_items()
    data = as_splits(mod.UserData(Unreadable(d.train.x, d.train.y), d.test, 10), "mine", val_frac=0.1, seed=0,
                     workers=2)
    bad = data.train.indices[order[70]]
    assert fails_with(data) == (f"dataset: mine: train: batch 2/{-(-data.n_train // 64)} of epoch 1: reading item "
                                f"{bad} failed (OSError: truncated file)")


class OddBatch(nn.Module):
    """Fails on a batch of 7 in training; in eval mode on batches of more than ``eval_most``."""

    def __init__(self, num_classes=10, in_channels=1, eval_most=None):
        super().__init__()
        self.eval_most = eval_most
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(64 * in_channels, 16), nn.ReLU())
        self.head = nn.Linear(16, num_classes)

    def forward(self, x):
        if len(x) == 7 or (self.eval_most is not None and not self.training and len(x) > self.eval_most):
            raise RuntimeError("odd batch")
        return self.head(self.body(x))


def test_a_failure_of_your_model_during_training_names_the_step(digits, monkeypatch):
    x, y = digits.train_x, digits.train_y
    data = UserData(train=(x[:135], y[:135]), val=(x[135:200], y[135:200]), test=(x[200:300], y[200:300]),
                    num_classes=10)  # 135 training samples: batches of 64, 64 and 7
    cfg = TrainConfig(model="odd", dataset="mine", epochs=2, batch_size=64, augment=False)
    with pytest.raises(UserError) as e:
        Trainer(cfg, NoFreezeSchedule(), model=OddBatch, data=data, verbose=False).fit()
    assert str(e.value) == ("model: odd: training step 3/3 of epoch 1 failed on input shape (7, 1, 8, 8) "
                            "(RuntimeError: odd batch)")
    cfg = dataclasses.replace(cfg, batch_size=45)
    with pytest.raises(UserError) as e:
        Trainer(cfg, NoFreezeSchedule(), model=lambda: OddBatch(eval_most=2), data=data, verbose=False).fit()
    assert str(e.value) == "model: odd: evaluating the val split after epoch 1 failed (RuntimeError: odd batch)"
    with pytest.raises(UserError) as e:  # failing in eval mode at all: before training, on the probe batch
        Trainer(cfg, NoFreezeSchedule(), model=lambda: OddBatch(eval_most=0), data=data, verbose=False)
    assert str(e.value) == ("model: odd: counting its FLOPs in eval mode failed on input shape (2, 1, 8, 8) "
                            "(RuntimeError: odd batch)")
    # the built-in model on built-in data: a failure there is the tool's own, raised as it was (a search retries it)
    from layerout.fastpath import StepRunner

    def broken(self, *a, **k):
        raise RuntimeError("a bug of ours")

    monkeypatch.setattr(StepRunner, "step", broken)
    with pytest.raises(RuntimeError, match="a bug of ours") as e:
        Trainer(TrainConfig(model="digits_cnn", dataset="digits", epochs=1), NoFreezeSchedule(), data=digits,
                verbose=False).fit()
    assert not isinstance(e.value, UserError)


def test_the_check_before_training_reads_a_datasets_labels(tmp_path, monkeypatch):
    from layerout import preflight

    mod = _fixture(tmp_path, "uc_labels")
    cases = {"ok": mod.digits_items(), "last": mod.digits_items(bad_at=1399),
             "targets": mod.digits_items(kind=mod.DigitsWithTargets),
             "bad_target": mod.digits_items(bad_at=900, kind=mod.DigitsWithTargets)}
    names = {k: userland.register_object(lambda d=d: d, f"uc_labels_{k}") for k, d in cases.items()}
    # every item of a Dataset of 1,400 read (two used to be): the last one's label is out of range
    ok = check_model_and_data("uc_labels:FixtureNet", names["ok"])
    assert ok.notes == ["labels checked before training: all 1,400 of train, all 397 of test: all within [0, 9]"]
    with pytest.raises(UserError) as e:
        check_model_and_data("uc_labels:FixtureNet", names["last"])
    assert str(e.value) == "dataset: uc_labels_last: train: item 1399 has label 12, outside [0, 9] (num_classes = 10)"
    # a label array: every label checked without reading the items (the first two only, for the forward check)
    got = check_model_and_data("uc_labels:FixtureNet", names["targets"])
    assert got.notes == ["labels checked before training: all 1,400 of train (its targets), all 397 of test (its "
                         "targets): all within [0, 9]"]
    assert cases["targets"].train.reads <= 3 and cases["targets"].test.reads == 0
    with pytest.raises(UserError, match=r"^dataset: uc_labels_bad_target: train: item 900 has label 12, outside"):
        check_model_and_data("uc_labels:FixtureNet", names["bad_target"])
    # a large Dataset: LABEL_ITEMS of it, evenly spaced, first and last included
    monkeypatch.setattr(preflight, "LABEL_ITEMS", 50)
    assert preflight.label_positions(1400, 50)[:3] == [0, 29, 57] and preflight.label_positions(1400, 50)[-1] == 1399
    assert check_model_and_data("uc_labels:FixtureNet", names["ok"]).notes == [
        "labels checked before training: 50 of the 1,400 of train, 50 of the 397 of test: all within [0, 9]; the "
        "others are checked as training reads them"]


# ------------------------------------------------------------------------------ command lines
def _in_process(main, argv, capsys):
    """A command line's ``main`` run here as ``python -m`` would: (exit status, stdout, stderr)."""
    from layerout.errors import cli_main

    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        cli_main(main, [str(a) for a in argv])
    out = capsys.readouterr()
    return e.value.code, out.out, out.err


def test_train_cli_on_a_module_outside_the_package(tmp_path, monkeypatch, capsys):
    from layerout.train import main

    code = write_module(tmp_path / "code", "uc_cli")
    out = tmp_path / "run"
    p = run_module("layerout.train", ["--model", "uc_cli:FixtureNet", "--dataset", "uc_cli:digits", "--epochs", "2",
                                      "--schedule", "layerout", "--freeze-prob", "0.9,0.1,0.0", "--out", out,
                                      "--quiet"], cwd=code)  # found in the current directory
    assert p.returncode == 0, p.stderr[-2000:]
    rows = read_csv(out / "epochs.csv")
    assert len(rows) == 2 and {r["frozen_units"] for r in rows} <= {"000", "100", "010", "110"}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["units"] == ["stem", "body", "head"]
    assert summary["policy"]["provenance"]["code_paths"][0] == str(code.resolve())
    assert summary["config"]["model"] == "uc_cli:FixtureNet"
    # its policy replays from another directory: the code is found through the policy's code_paths
    monkeypatch.chdir(tmp_path)
    rc, _, err = _in_process(main, ["--policy", out / "summary.json", "--out", tmp_path / "again", "--quiet"], capsys)
    assert rc == 0, err
    assert [r["frozen_units"] for r in read_csv(tmp_path / "again" / "epochs.csv")] == [r["frozen_units"] for r in rows]

    rc, _, err = _in_process(main, ["--model", "uc_cli:WrongHead", "--dataset", "uc_cli:digits", "--out",
                                    tmp_path / "bad"], capsys)
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith("error: model: uc_cli:WrongHead: forward on a batch of uc_cli:digits") and "mat1 and mat2" in err
    assert not (tmp_path / "bad" / "checkpoint.pt").exists()
    rc, _, err = _in_process(main, ["--model", "uc_nope:Net", "--dataset", "digits", "--out", tmp_path / "m"], capsys)
    assert rc == 2 and err.startswith("error: model: uc_nope:Net: cannot import uc_nope") and err.count("\n") == 1


def test_models_cli_shows_units_with_params_and_flops(tmp_path, monkeypatch, capsys):
    from layerout.models import main

    monkeypatch.chdir(write_module(tmp_path / "code", "uc_units"))
    rc, out, err = _in_process(main, ["--units", "uc_units:FixtureNet", "--dataset", "uc_units:digits", "--json"],
                               capsys)
    assert rc == 0, err
    doc = json.loads(out)
    assert doc["units_from"] == "automatic" and [r["name"] for r in doc["units"]] == ["stem", "body", "head"]
    assert doc["units"][0]["prefixes"] == ["stem", "bn"]
    assert [r["params"] for r in doc["units"]] == [8 * 9 + 8 + 16, 16 * 8 * 9 + 16, 256 * 10 + 10]
    # forward FLOPs per sample: 2 x multiply-adds of each conv / linear
    assert [r["forward_flops"] for r in doc["units"]] == [2 * 8 * 9 * 64, 2 * 16 * 8 * 9 * 16, 2 * 256 * 10]
    assert doc["train_step_flops_per_sample"] > sum(r["forward_flops"] for r in doc["units"])
    rc, out, _ = _in_process(main, ["--units", "uc_units:FixtureNet", "--input-shape", "1,8,8"], capsys)
    assert rc == 0 and "3 units (automatic)" in out and "stem + bn" in out


POOL_NET = '''
from torch import nn


class PoolNet(nn.Module):
    def __init__(self, num_classes=2, in_channels=3):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 4, 3, padding=1)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, num_classes))

    def forward(self, x):
        return self.head(self.conv(x))
'''


def test_models_cli_counts_flops_at_the_image_size_of_an_image_folder(tmp_path, monkeypatch, capsys):
    from layerout.models import main

    _png_folder(tmp_path / "pets")
    (tmp_path / "uc_pool.py").write_text(POOL_NET)
    monkeypatch.chdir(tmp_path)
    conv = {}
    for size in (None, 8, 16):
        rc, out, err = _in_process(main, ["--units", "uc_pool:PoolNet", "--dataset", f"imagefolder:{tmp_path / 'pets'}",
                                          "--json", *(["--image-size", size] if size else [])], capsys)
        assert rc == 0, err
        conv[size] = json.loads(out)["units"][0]["forward_flops"]
    # a 3x3 conv, 3 -> 4 channels: 2 * 4 * 3 * 9 FLOPs per output pixel; the images at 64 px unless told
    assert conv == {None: 2 * 4 * 3 * 9 * 64 * 64, 8: 2 * 4 * 3 * 9 * 8 * 8, 16: 2 * 4 * 3 * 9 * 16 * 16}
    rc, _, err = _in_process(main, ["--units", "uc_pool:PoolNet", "--dataset", "digits", "--image-size", "16"], capsys)
    assert rc == 2 and err.startswith("error: --image-size: resizes the images of --dataset imagefolder:PATH only")
    assert err.count("\n") == 1
    rc, _, err = _in_process(main, ["--units", "uc_pool:PoolNet", "--dataset", f"imagefolder:{tmp_path / 'pets'}",
                                    "--image-size", "0"], capsys)
    assert rc == 2 and err.startswith("error: --image-size: must be") and err.count("\n") == 1
def test_a_space_beside_its_module_records_each_code_folder_once(tmp_path, monkeypatch):
    """Run from the space file's folder (as the examples are), the folder is both the space's and the
    current one: experiment.json's code.paths names it once."""
    from search_spaces.space import load_space
    from tuning.usercode import code_info

    folder = write_module(tmp_path / "proj", "uc_once")
    (folder / "once.yaml").write_text("model: uc_once:FixtureNet\ndataset: uc_once:digits\n"
                                      "train: {epochs: 2, device: cpu}\nfamilies: {prefix: {}}\n")
    monkeypatch.chdir(folder)
    space = load_space("once.yaml")
    assert space.code_paths == [str(folder.resolve())]
    assert code_info(space.model, space.dataset, [*space.code_paths, *space.code_paths], {})["paths"] == \
        [str(folder.resolve())]
