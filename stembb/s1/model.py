"""The S1 networks, defined once for training, inference and S2 data: the notebook's
``SimpleConvNet`` and the deep ``DeepStemNet`` (residual dilated blocks that read the
grammar's own ensemble beside the pair image, and add a pair logit to the grammar's
pair score).

Input ``(B, 4, L)`` one-hot; it is tiled into the ``(B, 8, L, L)`` pair image inside
the network. Output: a dict of per-pixel maps, each ``(B, C, L, L)``:
``stem_on`` (C=1, logit), ``location_x`` / ``location_y`` (C=12, logits),
``sm_size`` (C=11, logits), ``sl_size`` (C=1, the size in stacked pairs); the deep
network adds ``pair`` (C=1, nats added to the score of pair (i, j), i < j) and
``pair_on`` (C=1, the logit that (i, j) is a pair, crossing ones too: its pair map).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Sequence

import numpy as np
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


def add_stem_box_heads(module: nn.Module, in_ch: int, hidden: int) -> None:
    """The notebook's five heads on ``module`` (1x1 convs over ``in_ch`` channels, one
    hidden layer of ``hidden`` each; the two size heads share theirs)."""
    module.stem_on = _head(in_ch, hidden, 1)
    module.location_x = _head(in_ch, hidden, LOCATION_CLASSES)
    module.location_y = _head(in_ch, hidden, LOCATION_CLASSES)
    module.size_hidden = nn.Sequential(nn.Conv2d(in_ch, hidden, 1), nn.ReLU())
    module.sm_size = nn.Conv2d(hidden, SIZE_CLASSES, 1)
    module.sl_size = nn.Conv2d(hidden, 1, 1)


def stem_box_outputs(module: nn.Module, h: torch.Tensor) -> dict[str, torch.Tensor]:
    """The five heads of ``add_stem_box_heads`` on features ``h`` ``(B, C, L, L)``."""
    size_h = module.size_hidden(h)
    return {"stem_on": module.stem_on(h), "location_x": module.location_x(h), "location_y": module.location_y(h),
            "sm_size": module.sm_size(size_h), "sl_size": module.sl_size(size_h)}


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
        add_stem_box_heads(self, in_ch, hid_output)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """``x`` ``(B, 4, L)`` one-hot, ``lengths`` ``(B,)`` when sequences are padded ->
        ``(B, C, L, L)`` maps per head (see ``pair_image``)."""
        left, right = self.padding
        return stem_box_outputs(self, self.trunk(F.pad(pair_image(x, lengths), (left, right, left, right))))


GRAMMAR_CHANNELS = 4  # pair probability, unpaired probability of i and of j, the decoded structure


def grammar_channels(length: int, pairs: np.ndarray, probs: np.ndarray, structure) -> np.ndarray:
    """``(4, L, L)`` float32 inputs from the grammar's ensemble: p(i, j) (both triangles),
    the probability that base i (rows) and base j (columns) is unpaired, and 1 at the
    pairs of its decoded structure (both triangles)."""
    out = np.zeros((GRAMMAR_CHANNELS, length, length), dtype=np.float32)
    i, j = pairs[:, 0], pairs[:, 1]
    out[0, i, j] = out[0, j, i] = probs
    unpaired = 1 - (np.bincount(i, probs, length) + np.bincount(j, probs, length))
    out[1] = unpaired[:, None]
    out[2] = unpaired[None, :]
    if len(structure):
        a, b = np.asarray(structure).T
        out[3, a, b] = out[3, b, a] = 1
    return out


@dataclass
class DeepS1Config:
    """Hyperparameters of ``DeepStemNet``, stored in its checkpoints (``asdict``)."""

    channels: int = 16
    dilations: Sequence[int] = (1, 2, 4, 8, 16, 1, 2, 4)  # one residual block (two 3x3 convs) each
    hid_output: int = 16
    grammar_inputs: bool = True  # read ``grammar_channels`` beside the pair image
    arch: str = "deep"

    @property
    def receptive_field(self) -> int:
        """Bases seen along each axis of the image by one output pixel."""
        return 1 + 4 * sum(self.dilations)


class ResidualBlock(nn.Module):
    """GroupNorm, ReLU, 3x3 conv of ``dilation``, twice, added to the input (the size is kept)."""

    def __init__(self, channels: int, dilation: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.GroupNorm(min(4, channels), channels), nn.ReLU(),
            nn.Conv2d(channels, channels, 3, padding=dilation, dilation=dilation),
            nn.GroupNorm(min(4, channels), channels), nn.ReLU(),
            nn.Conv2d(channels, channels, 3, padding=dilation, dilation=dilation))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.body(h)


class DeepStemNet(nn.Module):
    """A 1x1 stem over the pair image (and ``grammar_channels``), residual dilated
    blocks (``DeepS1Config.receptive_field`` bases), the notebook's heads and ``pair``.

    Normalisation is per example (GroupNorm), so a sequence folds the same alone or in a
    batch of one; the ``pair`` head's last layer starts at zero, so an untrained network
    leaves the grammar as it is.
    """

    def __init__(self, channels: int, dilations: Sequence[int], hid_output: int, grammar_inputs: bool,
                 arch: str = "deep"):
        super().__init__()
        self.config = DeepS1Config(channels, tuple(dilations), hid_output, grammar_inputs, arch)
        self.grammar_inputs = grammar_inputs
        self.stem = nn.Conv2d(8 + (GRAMMAR_CHANNELS if grammar_inputs else 0), channels, 1)
        self.blocks = nn.Sequential(*[ResidualBlock(channels, d) for d in dilations])
        self.trunk_out = nn.Sequential(nn.GroupNorm(min(4, channels), channels), nn.ReLU())
        add_stem_box_heads(self, channels, hid_output)
        self.pair = _head(channels, hid_output, 1)
        self.pair_on = _head(channels, hid_output, 1)
        nn.init.zeros_(self.pair[-1].weight)
        nn.init.zeros_(self.pair[-1].bias)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None,
                grammar: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """``x`` ``(B, 4, L)`` one-hot, ``grammar`` ``(B, 4, L, L)`` (``grammar_channels``;
        required when the network reads them) -> ``(B, C, L, L)`` maps per head."""
        image = pair_image(x, lengths)
        if self.grammar_inputs:
            if grammar is None:
                raise ValueError("this S1 network reads the grammar's ensemble: pass grammar=grammar_channels(...)")
            image = torch.cat([image, grammar.to(image.dtype)], dim=1)
        h = self.trunk_out(self.blocks(self.stem(image)))
        return stem_box_outputs(self, h) | {"pair": self.pair(h), "pair_on": self.pair_on(h)}


def build_model(config: dict) -> nn.Module:
    """The network from a config dict (the hyperparameters every checkpoint stores):
    ``DeepStemNet`` when its ``arch`` is ``deep``, else the notebook's ``SimpleConvNet``."""
    if config.get("arch") == "deep":
        return DeepStemNet(**asdict(DeepS1Config(**{f.name: config[f.name] for f in fields(DeepS1Config)})))
    return SimpleConvNet(**asdict(S1Config(**{k: config[k] for k in CONFIG_KEYS})))


# The named networks docs/TRAINING.md, scripts/demo.sh, scripts/gpu_check.sh and bench/ refer to:
# "small" is the main job's (CPU), run_25 and run_32 the notebook's GPU runs.
NAMED_NETWORKS = {
    "tiny": S1Config([4, 4], [3, 3], [4], 4),
    "small": S1Config([32, 32, 32], [5, 5, 5], [32, 32], 16),
    "run_25": S1Config([128, 128], [9, 9], [50, 50, 50], 20),
    "run_32": S1Config([128, 128, 256, 256, 512, 512], [3, 3, 5, 5, 7, 7], [128, 128, 128, 256, 256, 256], 64),
}
# The deep networks trained through the grammar's partition function (s2_training/train_s2_grammar.py --deep_s1).
DEEP_NETWORKS = {
    "deep16": DeepS1Config(),
    "deep16_plain": DeepS1Config(grammar_inputs=False),
    "deep32": DeepS1Config(channels=32, dilations=(1, 2, 4, 8, 16, 1, 2, 4, 8, 16), hid_output=32),
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
