"""From pair probabilities to one valid secondary structure.

A maximum-total-gain dynamic program over candidate pairs. With probabilities it is
maximum expected accuracy: choosing pair (i, j) gains ``(gamma + 1) * p_ij - 1``, so a
pair is worth taking when p_ij > 1 / (gamma + 1) and larger gamma trades precision for
recall (docs/DESIGN.md, "Stage 2"). The result is nested, every base is in at
most one pair, hairpins enclose at least ``min_loop`` unpaired bases, and, given the
sequence, every pair is canonical (AU, GC, GU). The DP runs one anti-diagonal of the
L x L table at a time, vectorized over its cells and their split points.
"""
from __future__ import annotations

import numpy as np

from stembb.structure import canonical_pair_matrix


def pair_gain(length: int, pairs: np.ndarray, gains: np.ndarray, seq: str | None = None,
              min_loop: int = 3) -> np.ndarray:
    """``(L, L)`` gain of each candidate pair; -inf where the pair is not allowed, not a
    candidate, or does not pay (gain <= 0: never worth its bases)."""
    table = np.full((length, length), -np.inf)
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    if len(pairs):
        table[pairs[:, 0], pairs[:, 1]] = np.asarray(gains, dtype=float)
    i, j = np.indices((length, length))
    table[j - i <= min_loop] = -np.inf
    if seq is not None:
        table[~canonical_pair_matrix(seq)] = -np.inf
    table[table <= 0] = -np.inf
    return table


def decode_structure(length: int, pairs, probs, gamma: float = 1.0, seq: str | None = None,
                     min_loop: int = 3) -> list[tuple[int, int]]:
    """The nested structure of maximum expected accuracy among the candidate ``pairs``
    (``(n, 2)``, 0-based) with probabilities ``probs``: pair gain ``(gamma + 1) p - 1``."""
    gains = (gamma + 1.0) * np.asarray(probs, dtype=float) - 1.0
    return decode_gains(length, pairs, gains, seq, min_loop)


def decode_gains(length: int, pairs, gains, seq: str | None = None, min_loop: int = 3) -> list[tuple[int, int]]:
    """The nested structure of maximum total gain among the candidate ``pairs`` with
    ``gains`` (only positive gains are worth taking); sorted list of pairs."""
    gain = pair_gain(length, pairs, gains, seq, min_loop)
    if length < 2 or not np.isfinite(gain).any():
        return []
    best = np.zeros((length + 1, length + 1))  # best[i, j]: span i..j; zero when j <= i
    for d in range(1, length):
        i = np.arange(length - d)
        j = i + d
        value = np.maximum(best[i + 1, j], best[i, j - 1])
        value = np.maximum(value, best[i + 1, j - 1] + gain[i, j])
        if d >= 3:
            ks = i[:, None] + np.arange(1, d - 1)[None, :]
            value = np.maximum(value, (best[i[:, None], ks] + best[ks + 1, j[:, None]]).max(axis=1))
        best[i, j] = value
    return _traceback(best, gain, length)


def _traceback(best: np.ndarray, gain: np.ndarray, length: int) -> list[tuple[int, int]]:
    out = []
    stack = [(0, length - 1)]
    while stack:
        i, j = stack.pop()
        if j <= i or best[i, j] == 0:
            continue
        if best[i, j] == best[i + 1, j]:
            stack.append((i + 1, j))
        elif best[i, j] == best[i, j - 1]:
            stack.append((i, j - 1))
        elif best[i, j] == best[i + 1, j - 1] + gain[i, j]:
            out.append((i, j))
            stack.append((i + 1, j - 1))
        else:
            ks = np.arange(i + 1, j - 1)
            k = int(ks[np.argmax(best[i, ks] + best[ks + 1, j])])
            stack += [(i, k), (k + 1, j)]
    return sorted(out)
