"""Reproducible batches: every order and draw comes from ``epoch_generator(seed, epoch)``, so a
resumed run sees the same batches (``BatchIterator`` over tensors; ``layerout.loaders`` over
Datasets), and the validation split is held out by the run's seed (``val_split``)."""
from __future__ import annotations

from typing import Iterator

import numpy as np
import torch

from layerout.augment import AugmentConfig, augment_batch
from layerout.errors import UserError


def val_split(n: int, val_frac: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(train indices, validation indices): a permutation fixed by ``seed``."""
    perm = torch.from_numpy(np.random.default_rng(seed).permutation(n))
    n_val = max(1, int(round(n * val_frac)))
    return perm[n_val:].sort().values, perm[:n_val].sort().values


def epoch_generator(seed: int, epoch: int, device: str | torch.device = "cpu") -> torch.Generator:
    """A generator seeded from (seed, epoch) only, so an epoch replays after a resume without saved RNG state."""
    state = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(epoch), 0x1A7E]).generate_state(2, np.uint32)
    g = torch.Generator(device=torch.device(device))
    g.manual_seed(int(state[0]) << 31 | int(state[1]) >> 1)
    return g


class BatchIterator:
    """Shuffled (optionally augmented) mini-batches of (x, y) for one epoch.

    All randomness comes from ``epoch_generator(seed, epoch)`` on the batch device; nothing
    synchronizes with the host per batch. ``device`` moves batches there (for splits that
    stayed on CPU); by default batches stay on the tensors' device.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, epoch: int = 0, seed: int = 0,
                 shuffle: bool = True, augment: AugmentConfig | None = None, drop_last: bool = False,
                 device: str | torch.device | None = None):
        if batch_size < 1:
            raise UserError(f"batch_size must be >= 1, got {batch_size}")
        self.x, self.y, self.batch_size = x, y, batch_size
        self.epoch, self.seed, self.shuffle, self.augment, self.drop_last = epoch, seed, shuffle, augment, drop_last
        self.device = torch.device(device) if device is not None else x.device

    def __len__(self) -> int:
        n = len(self.x)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        gen = epoch_generator(self.seed, self.epoch, self.device)
        n = len(self.x)
        order = torch.randperm(n, generator=gen, device=self.device).to(self.x.device) if self.shuffle else None
        for b in range(len(self)):
            sl = slice(b * self.batch_size, min(n, (b + 1) * self.batch_size))
            if order is None:
                xb, yb = self.x[sl], self.y[sl]
            else:
                xb, yb = self.x[order[sl]], self.y[order[sl]]
            xb = xb.to(self.device, non_blocking=True)
            yb = yb.to(self.device, non_blocking=True)
            yield augment_batch(xb, gen, self.augment), yb


def iterate_batches(x: torch.Tensor, y: torch.Tensor, batch_size: int, epoch: int = 0, seed: int = 0,
                    shuffle: bool = True, augment: AugmentConfig | None = None, drop_last: bool = False,
                    device: str | torch.device | None = None) -> BatchIterator:
    """Batches of one epoch, reproducible from (seed, epoch); see ``BatchIterator``."""
    return BatchIterator(x, y, batch_size, epoch, seed, shuffle, augment, drop_last, device)
