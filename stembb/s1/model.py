"""The S1 network (``SimpleConvNet``), defined once for training, inference and S2 data.

Input ``(B, 4, L)`` one-hot; it is tiled into the ``(B, 8, L, L)`` pair image inside
the network. Output: a dict of per-pixel maps, each ``(B, C, L, L)``:
``stem_on`` (C=1, logit), ``location_x`` / ``location_y`` (C=12, logits),
``sm_size`` (C=11, logits), ``sl_size`` (C=1, the size in stacked pairs).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from stembb.s1.targets import LOCATION_CLASSES, SIZE_CLASSES


@dataclass
class S1Config:
    """Hyperparameters of ``SimpleConvNet`` (flags of the same name), stored in every S1
    checkpoint as a plain dict (``asdict``)."""

    num_filters: Sequence[int]  # conv layer widths
    filter_width: Sequence[int]  # conv kernel sizes, one per conv layer
    hid_shared: Sequence[int] = ()  # 1x1 shared layer widths
    hid_output: int = 20  # hidden width of each output head
    dropout: float = 0.0  # after each conv layer


CONFIG_KEYS = tuple(f.name for f in fields(S1Config))


def pair_image(x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
    """``(B, 4, L)`` -> ``(B, 8, L, L)``: channels [x[:, :, i], x[:, :, j]] at pixel (i, j).

    ``lengths`` ``(B,)``: pixels with i or j past a sequence's length are zeroed, so a
    sequence padded in a batch sees exactly what it sees alone (without it, row i of the
    padding would still carry the column base x[:, :, j])."""
    length = x.shape[-1]
    rows = x.unsqueeze(-1).expand(-1, -1, -1, length)
    cols = x.unsqueeze(-2).expand(-1, -1, length, -1)
    image = torch.cat([rows, cols], dim=1)
    if lengths is not None:
        inside = torch.arange(length, device=x.device) < lengths.to(x.device)[:, None]
        image = image * (inside[:, :, None] & inside[:, None, :]).unsqueeze(1).to(image.dtype)
    return image


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

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """``x`` ``(B, 4, L)`` one-hot, ``lengths`` ``(B,)`` when sequences are padded ->
        ``(B, C, L, L)`` maps per head (see ``pair_image``)."""
        left, right = self.padding
        h = self.trunk(F.pad(pair_image(x, lengths), (left, right, left, right)))
        size_h = self.size_hidden(h)
        return {"stem_on": self.stem_on(h), "location_x": self.location_x(h), "location_y": self.location_y(h),
                "sm_size": self.sm_size(size_h), "sl_size": self.sl_size(size_h)}


def build_model(config: dict) -> SimpleConvNet:
    """The network from a config dict (the hyperparameters every checkpoint stores)."""
    return SimpleConvNet(**asdict(S1Config(**{k: config[k] for k in CONFIG_KEYS})))


# The named networks docs/TRAINING.md, scripts/demo.sh, scripts/gpu_check.sh and bench/ refer to:
# "small" is the main job's (CPU), run_25 and run_32 the notebook's GPU runs.
NAMED_NETWORKS = {
    "tiny": S1Config([4, 4], [3, 3], [4], 4),
    "small": S1Config([32, 32, 32], [5, 5, 5], [32, 32], 16),
    "run_25": S1Config([128, 128], [9, 9], [50, 50, 50], 20),
    "run_32": S1Config([128, 128, 256, 256, 512, 512], [3, 3, 5, 5, 7, 7], [128, 128, 128, 256, 256, 256], 64),
}


def named_network(name: str) -> SimpleConvNet:
    """A fresh (randomly initialised) network of ``NAMED_NETWORKS[name]``."""
    return build_model(asdict(NAMED_NETWORKS[name]))


def network_flags(name: str) -> str:
    """A named network's architecture as the training script's flags, e.g.
    ``--num_filters 32 32 32 ...`` (dropout, a training choice, is left to the caller)."""
    config = asdict(NAMED_NETWORKS[name])
    return " ".join(f"--{k} " + (" ".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v))
                    for k, v in config.items() if k != "dropout")


if __name__ == "__main__":  # python -m stembb.s1.model small -> the flags, for shell scripts
    import sys
    print(network_flags(sys.argv[1]))
