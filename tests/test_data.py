"""Data splits, batched augmentation, reproducible batches, and torchvision files read offline."""
import pickle
import struct
import tarfile

import numpy as np
import pytest
import torch
import torchvision
from sklearn.datasets import load_digits

from layerout.augment import AugmentConfig, augment_batch, random_crop
from layerout.data import iterate_batches, load_data
from layerout.errors import UserError


def _rows(splits, *xs):
    """Images back in digits' integer units (0..16), as sorted tuples (a multiset)."""
    mean, std = torch.tensor(splits.mean).view(1, -1, 1, 1), torch.tensor(splits.std).view(1, -1, 1, 1)
    out = []
    for x in xs:
        out += [tuple(r) for r in ((x * std + mean) * 16).round().long().flatten(1).tolist()]
    return sorted(out)


def test_digits_splits():
    d0 = load_data("digits", seed=0)
    d1 = load_data("digits", seed=1)
    assert (len(d0.train_x), len(d0.val_x), len(d0.test_x)) == (1294, 144, 359)
    assert d0.train_x.shape[1:] == (1, 8, 8) and d0.num_classes == 10 and d0.in_channels == 1
    assert d0.train_y.dtype == torch.int64 and not d0.synthetic and not d0.augment.active
    # train + val + test is exactly the dataset (as a multiset of images): the splits are disjoint
    allrows = sorted(tuple(r) for r in load_digits().data.astype(int).tolist())
    assert _rows(d0, d0.train_x, d0.val_x, d0.test_x) == allrows
    # the validation split follows the seed, the test split does not
    assert _rows(d0, d0.val_x) != _rows(d1, d1.val_x)
    assert _rows(d0, d0.test_x) == _rows(d1, d1.test_x)
    assert torch.equal(d0.test_y, d1.test_y)
    # normalized with the training split's statistics
    assert abs(d0.train_x.mean().item()) < 1e-4 and abs(d0.train_x.std().item() - 1) < 1e-2


def test_bad_names_and_val_frac():
    with pytest.raises(UserError, match="allowed: digits, mnist, cifar10, cifar100, synthetic"):
        load_data("imagenet")
    for bad in (0.0, 0.6):
        with pytest.raises(UserError, match="val_frac"):
            load_data("digits", val_frac=bad)


def test_synthetic_is_marked():
    d = load_data("synthetic", synthetic_shape=(3, 16, 16), synthetic_size=100)
    assert d.synthetic and d.train_x.shape[1:] == (3, 16, 16) and len(d.train_x) + len(d.val_x) == 100


def test_crop_matches_hand_made_shift():
    x = torch.arange(1, 16 * 25 + 1, dtype=torch.float32).view(16, 1, 5, 5)
    pad = 2
    out = augment_batch(x, torch.Generator().manual_seed(3), AugmentConfig(crop_pad=pad))
    assert out.shape == x.shape
    # hand-made: the same draws from an identically seeded generator, applied sample by sample
    g = torch.Generator().manual_seed(3)
    dy = torch.randint(0, 2 * pad + 1, (16,), generator=g)
    dx = torch.randint(0, 2 * pad + 1, (16,), generator=g)
    padded = torch.nn.functional.pad(x, (pad,) * 4)
    for i in range(16):
        assert torch.equal(out[i], padded[i, :, dy[i]:dy[i] + 5, dx[i]:dx[i] + 5])
    assert len(set(zip(dy.tolist(), dx.tolist()))) > 1 and ((dy != pad) | (dx != pad)).any()
    # a one-pixel shift by hand: offset (0, 0) moves the image down-right, zeros enter top-left
    one = torch.arange(1.0, 10.0).view(1, 1, 3, 3)
    shifted = torch.tensor([[0, 0, 0], [0, 1, 2], [0, 4, 5]], dtype=torch.float32)
    g = torch.Generator()
    for s in range(100):  # find a seed whose draw is offset (0, 0)
        g.manual_seed(s)  # random_crop draws dy, then dx
        if torch.randint(0, 3, (1,), generator=g).item() == 0 and torch.randint(0, 3, (1,), generator=g).item() == 0:
            assert torch.equal(random_crop(one, g.manual_seed(s), 1)[0, 0], shifted)
            break
    else:
        pytest.fail("no seed drew offset (0, 0)")


def test_crop_pad_value():
    x = torch.ones(8, 2, 4, 4)
    out = random_crop(x, torch.Generator().manual_seed(0), 4, pad_value=(-1.0, -2.0))
    assert set(out[:, 0].unique().tolist()) <= {1.0, -1.0} and set(out[:, 1].unique().tolist()) <= {1.0, -2.0}


def test_flip_flips_some_samples():
    x = torch.randn(64, 3, 4, 4)
    out = augment_batch(x, torch.Generator().manual_seed(0), AugmentConfig(flip=True))
    flipped = [torch.equal(o, xi.flip(-1)) for o, xi in zip(out, x)]
    kept = [torch.equal(o, xi) for o, xi in zip(out, x)]
    assert all(f or k for f, k in zip(flipped, kept))
    assert 10 < sum(flipped) < 54


def test_erasing_zeroes_one_box_per_sample():
    x = torch.ones(64, 3, 16, 16)
    out = augment_batch(x, torch.Generator().manual_seed(0), AugmentConfig(random_erasing=True, erasing_p=1.0))
    zero = out == 0
    assert torch.equal(zero, zero[:, :1].expand_as(zero))  # the same box in every channel
    zero = zero[:, 0]
    boxes = set()
    for z in zero:
        rows, cols = z.any(1), z.any(0)
        assert torch.equal(z, rows[:, None] & cols[None, :])  # a rectangle
        frac = z.float().mean().item()
        assert frac == 0 or 0.01 <= frac <= 0.40
        boxes.add((tuple(rows.nonzero().flatten().tolist()), tuple(cols.nonzero().flatten().tolist())))
    assert (zero.flatten(1).any(1)).float().mean() > 0.8  # almost every sample erased at p = 1
    assert len(boxes) > 10  # per-sample boxes, not one box for the batch


def test_iterate_batches_reproducible():
    x = torch.randn(50, 3, 8, 8)
    y = torch.arange(50)
    cfg = AugmentConfig(crop_pad=2, flip=True, random_erasing=True)
    a = list(iterate_batches(x, y, 16, epoch=3, seed=7, augment=cfg))
    b = list(iterate_batches(x, y, 16, epoch=3, seed=7, augment=cfg))
    c = list(iterate_batches(x, y, 16, epoch=4, seed=7, augment=cfg))
    assert len(a) == 4 and [len(t[1]) for t in a] == [16, 16, 16, 2]
    assert all(torch.equal(p[0], q[0]) and torch.equal(p[1], q[1]) for p, q in zip(a, b))
    assert not torch.equal(torch.cat([t[1] for t in a]), torch.cat([t[1] for t in c]))
    assert torch.equal(torch.cat([t[1] for t in a]).sort().values, y)  # every sample once
    assert len(list(iterate_batches(x, y, 16, drop_last=True))) == 3
    plain = list(iterate_batches(x, y, 16, shuffle=False))
    assert torch.equal(plain[0][0], x[:16])


# ---------------------------------------------------------------- torchvision files, offline
def _write_idx(path, arr: np.ndarray):
    """Write an array in the MNIST idx format (big-endian header, unsigned bytes)."""
    magic = 0x0800 | arr.ndim
    path.write_bytes(struct.pack(">I", magic) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes())


def test_mnist_from_idx_files(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    tr_x, te_x = rng.integers(1, 256, (20, 28, 28), dtype=np.uint8), rng.integers(1, 256, (5, 28, 28), dtype=np.uint8)
    _write_idx(raw / "train-images-idx3-ubyte", tr_x)
    _write_idx(raw / "train-labels-idx1-ubyte", np.arange(20, dtype=np.uint8) % 10)
    _write_idx(raw / "t10k-images-idx3-ubyte", te_x)
    _write_idx(raw / "t10k-labels-idx1-ubyte", np.array([3, 1, 4, 1, 5], dtype=np.uint8))
    d = load_data("mnist", data_dir=tmp_path, download=False, val_frac=0.1)
    assert (len(d.train_x), len(d.val_x), len(d.test_x)) == (18, 2, 5)
    assert d.test_x.shape == (5, 1, 32, 32) and d.test_y.tolist() == [3, 1, 4, 1, 5]
    img = d.test_x * d.std[0] + d.mean[0]
    assert torch.allclose(img[:, 0, 2:30, 2:30], torch.from_numpy(te_x).float() / 255, atol=1e-5)
    assert img[:, :, :2].abs().max() < 1e-5  # padded 28 -> 32 with black
    assert d.augment.crop_pad == 4 and not d.augment.flip


def _write_cifar(folder, rng):
    folder.mkdir(parents=True)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (4, 3072), dtype=np.uint8)  # rows are R, G, B planes of 32x32
        batches[name] = data
        with open(folder / name, "wb") as f:
            pickle.dump({"data": data, "labels": [0, 1, 2, 9], "batch_label": name}, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"c{i}" for i in range(10)]}, f)
    return batches


@pytest.fixture
def no_md5(monkeypatch):
    # torchvision checks the md5 of the real CIFAR files (the batches in _check_integrity and
    # batches.meta through cifar.check_integrity); our tiny stand-ins cannot match, so skip it.
    monkeypatch.setattr(torchvision.datasets.CIFAR10, "_check_integrity", lambda self: True)
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *a, **k: True)


def test_cifar10_from_pickled_batches(tmp_path, no_md5):
    batches = _write_cifar(tmp_path / "cifar-10-batches-py", np.random.default_rng(0))
    d = load_data("cifar10", data_dir=tmp_path, download=False, val_frac=0.1, seed=0)
    assert (len(d.train_x), len(d.val_x), len(d.test_x)) == (18, 2, 4)
    assert d.train_x.shape[1:] == (3, 32, 32) and d.num_classes == 10 and d.test_y.tolist() == [0, 1, 2, 9]
    mean, std = torch.tensor(d.mean).view(1, 3, 1, 1), torch.tensor(d.std).view(1, 3, 1, 1)
    want = torch.from_numpy(batches["test_batch"]).float().view(4, 3, 32, 32) / 255  # NCHW, channel order kept
    assert torch.allclose(d.test_x * std + mean, want, atol=1e-5)
    assert d.augment.crop_pad == 4 and d.augment.flip

    # the archive alone (as a user would drop it in --data-dir) is unpacked and read offline
    other = tmp_path / "other"
    other.mkdir()
    with tarfile.open(other / "cifar-10-python.tar.gz", "w:gz") as t:
        t.add(tmp_path / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    d2 = load_data("cifar10", data_dir=other, download=False)
    assert torch.equal(d2.test_x, d.test_x)


@pytest.mark.parametrize("name,files", [
    ("cifar10", ["cifar-10-python.tar.gz", "cifar-10-batches-py/", "data_batch_1..5", "test_batch"]),
    ("cifar100", ["cifar-100-python.tar.gz", "cifar-100-python/"]),
    ("mnist", ["MNIST/raw/", "train-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]),
])
def test_missing_files_offline(tmp_path, name, files):
    with pytest.raises(UserError) as e:
        load_data(name, data_dir=tmp_path / "none", download=False)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{name}: ") and str(tmp_path / "none") in msg
    assert all(f in msg for f in files)


def test_download_failure_is_one_line(tmp_path, monkeypatch):
    from urllib.error import URLError

    def offline(*a, **k):
        raise URLError("[Errno -2] Name or service not known")

    # stands in for a machine without network: the download itself fails
    monkeypatch.setattr(torchvision.datasets.cifar, "download_and_extract_archive", offline)
    with pytest.raises(UserError) as e:
        load_data("cifar10", data_dir=tmp_path, download=True)
    msg = str(e.value)
    assert "\n" not in msg and "could not be downloaded" in msg and f"into {tmp_path}," in msg
    assert "network access" in msg and "URLError" in msg
