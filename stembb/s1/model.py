"""The S1 network (``SimpleConvNet``), defined once for training, inference and S2 data.

Input ``(B, 4, L)`` one-hot; it is tiled into the ``(B, 8, L, L)`` pair image inside
the network. Output: a dict of per-pixel maps, each ``(B, C, L, L)``:
``stem_on`` (C=1, logit), ``location_x`` / ``location_y`` (C=12, logits),
``sm_size`` (C=11, logits), ``sl_size`` (C=1, the size in stacked pairs).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from stembb.s1.targets import LOCATION_CLASSES, SIZE_CLASSES

CONFIG_KEYS = ("num_filters", "filter_width", "hid_shared", "hid_output", "dropout")


def pair_image(x: torch.Tensor) -> torch.Tensor:
    """``(B, 4, L)`` -> ``(B, 8, L, L)``: channels [x[:, :, i], x[:, :, j]] at pixel (i, j)."""
    length = x.shape[-1]
    rows = x.unsqueeze(-1).expand(-1, -1, -1, length)
    cols = x.unsqueeze(-2).expand(-1, -1, length, -1)
    return torch.cat([rows, cols], dim=1)


def _head(in_ch: int, hidden: int, out_ch: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_ch, hidden, 1), nn.ReLU(), nn.Conv2d(hidden, out_ch, 1))


class SimpleConvNet(nn.Module):
    """2D convs (BatchNorm, ReLU, dropout), 1x1 shared layers, one small head per output.

    The input is zero-padded once by the total context ``sum(fw - 1)`` (split left/right)
    and every conv is unpadded, so the output stays L x L.
    """

    def __init__(self, num_filters: Sequence[int], filter_width: Sequence[int],
                 hid_shared: Sequence[int], hid_output: int, dropout: float = 0.0):
        super().__init__()
        if len(num_filters) != len(filter_width):
            raise ValueError(f"--num_filters has {len(num_filters)} values but --filter_width has {len(filter_width)}")
        context = sum(w - 1 for w in filter_width)
        self.padding = (context // 2, context - context // 2)
        layers: list[nn.Module] = []
        in_ch = 8
        for nf, fw in zip(num_filters, filter_width):
            layers += [nn.Conv2d(in_ch, nf, fw), nn.BatchNorm2d(nf), nn.ReLU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            in_ch = nf
        for width in hid_shared:
            layers += [nn.Conv2d(in_ch, width, 1), nn.ReLU()]
            in_ch = width
        self.trunk = nn.Sequential(*layers)
        self.stem_on = _head(in_ch, hid_output, 1)
        self.location_x = _head(in_ch, hid_output, LOCATION_CLASSES)
        self.location_y = _head(in_ch, hid_output, LOCATION_CLASSES)
        self.size_hidden = nn.Sequential(nn.Conv2d(in_ch, hid_output, 1), nn.ReLU())
        self.sm_size = nn.Conv2d(hid_output, SIZE_CLASSES, 1)
        self.sl_size = nn.Conv2d(hid_output, 1, 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        left, right = self.padding
        h = self.trunk(F.pad(pair_image(x), (left, right, left, right)))
        size_h = self.size_hidden(h)
        return {"stem_on": self.stem_on(h), "location_x": self.location_x(h), "location_y": self.location_y(h),
                "sm_size": self.sm_size(size_h), "sl_size": self.sl_size(size_h)}


def build_model(config: dict) -> SimpleConvNet:
    """The network from a config dict (the hyperparameters every checkpoint stores)."""
    return SimpleConvNet(**{k: config[k] for k in CONFIG_KEYS})
