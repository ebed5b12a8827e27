"""S1 input encoding and per-pixel targets (docs/DESIGN.md, "Stage 1").

Shapes: ``L`` is the sequence length; maps are ``(L, L)`` with row i = 5' base, column
j = 3' base. Targets are built box by box with array slices, never pixel by pixel.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from stembb.structure import PSEUDOKNOT, STEM, Box, base_codes

LOCATION_CLASSES = 12  # offsets 0..10 exact, 11 = "more than 10"
SIZE_CLASSES = 11      # sizes 1..10 -> 0..9, 10 = "more than 10"


def one_hot(seq: str) -> np.ndarray:
    """``(4, L)`` float32 one-hot of A, C, G, T/U; N (or any other letter) is all zeros.

    The network tiles it into the ``(8, L, L)`` pair image: pixel (i, j) carries
    [onehot(seq[i]), onehot(seq[j])].
    """
    idx = base_codes(seq)
    out = np.zeros((4, len(seq)), dtype=np.float32)
    known = idx < 4
    out[idx[known], np.nonzero(known)[0]] = 1.0
    return out


def location_class(offset: np.ndarray) -> np.ndarray:
    return np.minimum(offset, LOCATION_CLASSES - 1)


def size_class(size: int) -> int:
    return min(size, SIZE_CLASSES) - 1


def stem_targets(length: int, boxes: Sequence[Box], local_unmask_offset: int) -> dict[str, np.ndarray]:
    """Per-pixel S1 targets of one example, each ``(L, L)``.

    - ``stem_on`` float32: 1 inside any stem box.
    - ``location_x`` / ``location_y`` int64: class of i - x0 and of (y0+w-1) - j.
    - ``sm_size`` int64: size class; ``sl_size`` float32: the size w.
    - ``unmasked`` bool: inside a local-structure box other than a pseudoknot box,
      grown by ``local_unmask_offset`` pixels per side (clipped), and i < j. Elsewhere the on/off loss is weighted by
      ``--mask``.
    - ``in_stem`` bool: where the location and size heads are trained.
    Outside stem boxes the class targets are 0 and unused.
    """
    stem_on = np.zeros((length, length), dtype=np.float32)
    loc_x = np.zeros((length, length), dtype=np.int64)
    loc_y = np.zeros((length, length), dtype=np.int64)
    sm_size = np.zeros((length, length), dtype=np.int64)
    sl_size = np.zeros((length, length), dtype=np.float32)
    grown = np.zeros((length, length), dtype=bool)
    d = local_unmask_offset
    for (x0, y0), (wx, wy), kind in boxes:
        if kind != PSEUDOKNOT:  # a pseudoknot box spans distant stems: not local structure
            grown[max(x0 - d, 0):x0 + wx + d, max(y0 - d, 0):y0 + wy + d] = True
        if kind != STEM:
            continue
        rows, cols = slice(x0, x0 + wx), slice(y0, y0 + wy)
        stem_on[rows, cols] = 1.0
        loc_x[rows, cols] = location_class(np.arange(wx))[:, None]
        loc_y[rows, cols] = location_class(wy - 1 - np.arange(wy))[None, :]
        sm_size[rows, cols] = size_class(wx)
        sl_size[rows, cols] = wx
    upper = np.triu(np.ones((length, length), dtype=bool), k=1)
    return {"stem_on": stem_on, "location_x": loc_x, "location_y": loc_y, "sm_size": sm_size,
            "sl_size": sl_size, "unmasked": grown & upper, "in_stem": stem_on > 0}


# Packed targets: what the loader moves between processes and to the device, 5 bytes per
# pixel instead of 35. Channel 0 holds flag bits, channels 1-4 the class maps and size.
PACKED_CHANNELS = 5
VALID_BIT, UNMASKED_BIT, STEM_BIT = 1, 2, 4
MAX_PACKED_SIZE = 255  # sl_size is clamped to a uint8; no RNA stem has 255 stacked pairs


def pack_targets(targets: dict[str, np.ndarray]) -> np.ndarray:
    """``stem_targets`` of one example -> ``(5, L, L)`` uint8 (every pixel valid)."""
    length = targets["stem_on"].shape[0]
    out = np.empty((PACKED_CHANNELS, length, length), dtype=np.uint8)
    # bool viewed as uint8 keeps the arithmetic in uint8 (no int64 temporaries)
    np.add(UNMASKED_BIT * targets["unmasked"].view(np.uint8), STEM_BIT * targets["in_stem"].view(np.uint8), out=out[0])
    out[0] += VALID_BIT
    out[1], out[2], out[3] = targets["location_x"], targets["location_y"], targets["sm_size"]
    np.minimum(targets["sl_size"], MAX_PACKED_SIZE, out=out[4], casting="unsafe")
    return out


def unpack_targets(packed):
    """``(B, 5, L, L)`` uint8 torch tensor (on any device) -> the targets dict the losses
    use: ``valid``, ``unmasked``, ``in_stem`` bool; ``stem_on``, ``sl_size`` float32;
    ``location_x``, ``location_y``, ``sm_size`` int64. Padding pixels have flags 0."""
    flags = packed[:, 0]
    in_stem = (flags & STEM_BIT) > 0
    return {"valid": (flags & VALID_BIT) > 0, "unmasked": (flags & UNMASKED_BIT) > 0, "in_stem": in_stem,
            "stem_on": in_stem.float(), "location_x": packed[:, 1].long(), "location_y": packed[:, 2].long(),
            "sm_size": packed[:, 3].long(), "sl_size": packed[:, 4].float()}
