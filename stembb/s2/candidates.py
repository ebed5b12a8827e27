"""S2 data from S1 proposals (docs/DESIGN.md, "S1 -> S2 hand-off").

Candidate pairs are the pairs on the anti-diagonals of a sequence's decoded S1 boxes.
Each candidate gets six features, ``FEATURE_NAMES``: the number of softmax-size and of
scalar-size pixel proposals whose box covers it, and the medians, over those proposals,
of their ``prob_on_sm``, ``prob_other_sm``, ``prob_on_sl``, ``prob_other_sl`` (0 when
there are none).

Columns added to a row: ``stem_bb_bps`` (candidate pairs), ``target_bps`` (reference
pairs; with ``--include_all``, those of the recoverable stems) and
``stem_bb_bps_features`` (``{(i, j): [6 floats]}``). A target stem is recoverable when
all its pairs are candidates.

``stem_bb_boxes`` holds the distinct S1 boxes themselves, the tokens of the box
transformer (``stembb.s2.boxnet``): a ``(n, 11)`` float32 array with ``BOX_COLUMNS``
(reference corner, size, pixel-proposal counts, median and max probabilities).
"""
from __future__ import annotations

from itertools import chain

import numpy as np
import pandas as pd

from stembb.boxes import anti_diagonal, proposal_pairs, stem_pairs

FEATURE_NAMES = ("n_sm", "n_sl", "median_prob_on_sm", "median_prob_other_sm", "median_prob_on_sl",
                 "median_prob_other_sl")
N_PAIR_FEATURES = len(FEATURE_NAMES)
BOX_COLUMNS = ("bb_x", "bb_y", "w") + FEATURE_NAMES + ("max_prob_on", "max_prob_other")


def _grouped_medians(keys: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unique keys, their counts, and the median of ``values`` per key (one sort)."""
    order = np.lexsort((values, keys))
    keys, values = keys[order], values[order]
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    counts = np.diff(np.r_[starts, len(keys)])
    median = (values[starts + (counts - 1) // 2] + values[starts + counts // 2]) / 2
    return keys[starts], counts, median


def pair_features(proposals: pd.DataFrame) -> dict[tuple[int, int], list[float]]:
    """``{pair: six features}`` for every pair covered by a proposal."""
    if proposals.empty:
        return {}
    bx, by, w = (proposals[c].to_numpy(np.int64) for c in ("bb_x", "bb_y", "siz_x"))
    ii, jj, on = anti_diagonal(bx, by, w)
    n = int(max(ii.max(), jj.max())) + 1
    pairs = np.unique((ii * n + jj)[on])
    table = np.zeros((len(pairs), N_PAIR_FEATURES))
    for col, suffix in enumerate(("sm", "sl")):
        lengths = np.fromiter(map(len, proposals[f"prob_on_{suffix}"]), np.int64, len(proposals))
        box = np.repeat(np.arange(len(proposals)), lengths)  # one entry per pixel proposal
        if not len(box):
            continue
        covered = on[box]  # each pixel proposal counts once per pair on its box's anti-diagonal
        rows = np.broadcast_to(np.arange(len(box))[:, None], covered.shape)[covered]
        keys = (ii[box] * n + jj[box])[covered]
        for k, name in enumerate(("prob_on", "prob_other")):
            values = np.fromiter(chain.from_iterable(proposals[f"{name}_{suffix}"]), float, len(box))[rows]
            uniq, counts, median = _grouped_medians(keys, values)
            at = np.searchsorted(pairs, uniq)
            table[at, col] = counts
            table[at, 2 + 2 * col + k] = median
    return {(int(p // n), int(p % n)): row for p, row in zip(pairs.tolist(), table.tolist())}


def box_table(proposals: pd.DataFrame) -> np.ndarray:
    """``(n, len(BOX_COLUMNS))`` float32: one row per distinct proposed box, in the
    proposals' order."""
    n = len(proposals)
    table = np.zeros((n, len(BOX_COLUMNS)), dtype=np.float32)
    if not n:
        return table
    for k, c in enumerate(("bb_x", "bb_y", "siz_x")):
        table[:, k] = proposals[c].to_numpy()
    for col, suffix in enumerate(("sm", "sl")):
        lengths = np.fromiter(map(len, proposals[f"prob_on_{suffix}"]), np.int64, n)
        table[:, 3 + col] = lengths
        if not lengths.sum():
            continue
        box = np.repeat(np.arange(n), lengths)
        for k, name in enumerate(("prob_on", "prob_other")):
            values = np.fromiter(chain.from_iterable(proposals[f"{name}_{suffix}"]), float, len(box))
            uniq, _, median = _grouped_medians(box, values)
            table[uniq, 5 + 2 * col + k] = median
            peak = np.zeros(n)
            np.maximum.at(peak, box, values)
            table[:, 9 + k] = np.maximum(table[:, 9 + k], peak)
    return table


def s2_row(stem_boxes, proposals: pd.DataFrame, with_features: bool) -> tuple[dict, bool]:
    """The S2 columns of one sequence, and whether every target stem is recoverable."""
    candidates = [tuple(map(int, p)) for p in proposal_pairs(proposals)]
    cand_set = set(candidates)
    stems = [stem_pairs(b) for b in stem_boxes]
    recoverable = [s for s in stems if all(p in cand_set for p in s)]
    row = {"stem_bb_bps": candidates, "target_bps": sorted(p for s in recoverable for p in s),
           "stem_bb_boxes": box_table(proposals)}
    if with_features:
        row["stem_bb_bps_features"] = pair_features(proposals)
    return row, len(recoverable) == len(stems)
