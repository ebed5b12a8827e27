"""Stem-box geometry, in one convention (docs/DESIGN.md, "Structures and boxes").

A stem box is given by its reference corner, the outermost pair ``(bx, by)``, and its
size ``w``: its pairs are ``(bx + k, by - k)`` for ``k < w``, the anti-diagonal of the
square with rows ``[bx, bx + w)`` and columns ``(by - w, by]``. Functions take parallel
int arrays ``bx, by, w`` (one entry per box) so they vectorize over many boxes; the
``Box`` tuple form ``((x0, y0), (w, w), kind)`` of ``stembb.structure`` has
``bx = x0`` and ``by = y0 + w - 1``.
"""
from __future__ import annotations

import numpy as np

from stembb.structure import CANONICAL_TABLE, STEM, base_codes


def anti_diagonal(bx: np.ndarray, by: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs on each box's anti-diagonal, padded to the largest size: ``(n, K)`` arrays
    of i, j and a validity mask (k < w)."""
    k = np.arange(max(int(np.max(w, initial=0)), 1))
    return bx[:, None] + k, by[:, None] - k, k < w[:, None]


def valid_boxes(bx: np.ndarray, by: np.ndarray, w: np.ndarray, seq: str) -> np.ndarray:
    """Boxes inside the sequence whose innermost pair has i < j and whose pairs are all canonical."""
    length = len(seq)
    inside = (bx >= 0) & (by < length) & (w >= 1) & (bx + w - 1 < by - w + 1)
    ii, jj, on = anti_diagonal(bx, by, np.where(inside, w, 0))
    codes = base_codes(seq)
    canonical = CANONICAL_TABLE[codes[np.clip(ii, 0, length - 1)], codes[np.clip(jj, 0, length - 1)]]
    return inside & (canonical | ~on).all(axis=1)


def proposal_pairs(bx: np.ndarray, by: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``(n, 2)`` unique pairs, sorted, lying on the anti-diagonals of the boxes."""
    if len(bx) == 0:
        return np.zeros((0, 2), dtype=np.int64)
    ii, jj, on = anti_diagonal(bx, by, w)
    return np.unique(np.stack([ii[on], jj[on]], axis=1), axis=0)


def stem_corners(boxes) -> np.ndarray:
    """``(n, 3)`` int array of (bx, by, w) for the stem boxes among ``Box`` tuples."""
    rows = [(x0, y0 + w - 1, w) for (x0, y0), (w, _), kind in boxes if kind == STEM]
    return np.array(rows, dtype=np.int64).reshape(-1, 3)


def stem_pairs(box) -> list[tuple[int, int]]:
    """The pairs on a ``Box`` tuple's anti-diagonal, outermost first."""
    (x0, y0), (w, _), _ = box
    return [(x0 + k, y0 + w - 1 - k) for k in range(w)]
