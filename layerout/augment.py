"""Batched, on-device augmentation: per-sample random crop, horizontal flip, random erasing.

Every random draw comes from the ``torch.Generator`` passed in (on the batch's device),
so an epoch's augmentation is reproducible from (seed, epoch) alone. Whole batches are
transformed with tensor ops: no Python loop over samples, no PIL.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass
class AugmentConfig:
    """What to apply to each training batch (the data module sets per-dataset defaults)."""

    crop_pad: int = 0  # pad by this many pixels, then crop back to the original size at a random offset
    flip: bool = False  # horizontal flip with probability 1/2
    random_erasing: bool = False  # Zhong et al. 2020: erase one random box with probability erasing_p
    erasing_p: float = 0.5
    pad_value: tuple[float, ...] | None = None  # per-channel padding value (None: 0); the data module
    # sets it to the normalized value of a black pixel, as padding before normalization would give

    @property
    def active(self) -> bool:
        return self.crop_pad > 0 or self.flip or self.random_erasing


def _rand(n: int, gen: torch.Generator, device: torch.device) -> torch.Tensor:
    return torch.rand(n, generator=gen, device=device)


def random_crop(x: torch.Tensor, gen: torch.Generator, pad: int,
                pad_value: tuple[float, ...] | None = None) -> torch.Tensor:
    """Pad each image by ``pad`` and crop it back at a per-sample random offset in [0, 2*pad]."""
    n, c, h, w = x.shape
    padded = x.new_zeros(n, c, h + 2 * pad, w + 2 * pad)
    if pad_value is not None:
        padded += torch.as_tensor(pad_value, dtype=x.dtype, device=x.device).view(1, c, 1, 1)
    padded[:, :, pad:pad + h, pad:pad + w] = x
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen, device=x.device)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen, device=x.device)
    rows = dy[:, None] + torch.arange(h, device=x.device)  # (n, h)
    cols = dx[:, None] + torch.arange(w, device=x.device)  # (n, w)
    idx = torch.arange(n, device=x.device)[:, None, None]
    # channels-last view so the advanced indices are adjacent: result (n, h, w, c)
    return padded.permute(0, 2, 3, 1)[idx, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2).contiguous()


def random_flip(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Flip each image left-right with probability 1/2."""
    flip = _rand(x.shape[0], gen, x.device) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(3), x)


def random_erase(x: torch.Tensor, gen: torch.Generator, p: float = 0.5,
                 scale: tuple[float, float] = (0.02, 0.33), ratio: tuple[float, float] = (0.3, 3.3),
                 tries: int = 10) -> torch.Tensor:
    """Zero one random box per image (with probability p), area ``scale`` and aspect ``ratio``.

    Hand-written because torchvision's RandomErasing draws ONE box per call, i.e. the same
    box for a whole batch; here every sample gets its own. Like torchvision, a box is drawn
    up to ``tries`` times until it fits; a sample whose draws all fail is left as is.
    """
    n, _, h, w = x.shape
    dev = x.device
    area = (scale[0] + (scale[1] - scale[0]) * torch.rand(n, tries, generator=gen, device=dev)) * (h * w)
    lo, hi = math.log(ratio[0]), math.log(ratio[1])
    r = torch.exp(lo + (hi - lo) * torch.rand(n, tries, generator=gen, device=dev))
    bh = torch.sqrt(area * r).round().long()
    bw = torch.sqrt(area / r).round().long()
    ok = (bh < h) & (bw < w)
    first = ok.int().argmax(1, keepdim=True)  # first try that fits (0 if none, masked below)
    bh, bw = bh.gather(1, first).squeeze(1), bw.gather(1, first).squeeze(1)
    top = (torch.rand(n, generator=gen, device=dev) * (h - bh + 1)).long()
    left = (torch.rand(n, generator=gen, device=dev) * (w - bw + 1)).long()
    apply = ok.any(1) & (_rand(n, gen, dev) < p)
    ys = torch.arange(h, device=dev)[None, :]
    xs = torch.arange(w, device=dev)[None, :]
    in_y = (ys >= top[:, None]) & (ys < (top + bh)[:, None])  # (n, h)
    in_x = (xs >= left[:, None]) & (xs < (left + bw)[:, None])  # (n, w)
    box = in_y[:, :, None] & in_x[:, None, :] & apply[:, None, None]
    return x.masked_fill(box[:, None], 0.0)


def augment_batch(x: torch.Tensor, gen: torch.Generator, cfg: AugmentConfig | None) -> torch.Tensor:
    """Apply crop, flip, erasing (in this order) to a batch (N, C, H, W) on its device."""
    if cfg is None or not cfg.active:
        return x
    if cfg.crop_pad > 0:
        x = random_crop(x, gen, cfg.crop_pad, cfg.pad_value)
    if cfg.flip:
        x = random_flip(x, gen)
    if cfg.random_erasing:
        x = random_erase(x, gen, cfg.erasing_p)
    return x
