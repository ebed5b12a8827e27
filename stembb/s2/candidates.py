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

import numpy as np

from stembb.boxes import anti_diagonal, proposal_pairs, stem_pairs
from stembb.s1.predict import Proposals

FEATURE_NAMES = ("n_sm", "n_sl", "median_prob_on_sm", "median_prob_other_sm", "median_prob_on_sl",
                 "median_prob_other_sl")
N_PAIR_FEATURES = len(FEATURE_NAMES)
BOX_COLUMNS = ("bb_x", "bb_y", "w") + FEATURE_NAMES + ("max_prob_on", "max_prob_other")


def _grouped_medians(keys: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Unique keys, their counts, and the median and the max of ``values`` per key
    (non-negative int keys; two argsorts, several times faster than a lexsort)."""
    rank = np.empty(len(values), dtype=np.int64)
    rank[np.argsort(values)] = np.arange(len(values))
    order = np.argsort(keys * len(values) + rank)  # one-to-one: ties of values get distinct ranks
    keys, values = keys[order], values[order]
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]][:len(keys)])
    counts = np.diff(np.r_[starts, len(keys)])
    median = (values[starts + (counts - 1) // 2] + values[starts + counts // 2]) / 2
    return keys[starts], counts, median, values[starts + counts - 1]


def pair_features(proposals: Proposals) -> dict[tuple[int, int], list[float]]:
    """``{pair: six features}`` for every pair covered by a proposal."""
    if not len(proposals):
        return {}
    ii, jj, on = anti_diagonal(proposals.bx, proposals.by, proposals.w)
    n = int(max(ii.max(), jj.max())) + 1
    pairs = np.unique((ii * n + jj)[on])
    table = np.zeros((len(pairs), N_PAIR_FEATURES))
    for source in (0, 1):
        pixels = np.flatnonzero(proposals.source == source)
        if not len(pixels):
            continue
        box = proposals.box[pixels]
        covered = on[box]  # each pixel proposal counts once per pair on its box's anti-diagonal
        rows = np.broadcast_to(pixels[:, None], covered.shape)[covered]
        keys = (ii[box] * n + jj[box])[covered]
        for k, values in enumerate((proposals.prob_on, proposals.prob_other)):
            uniq, counts, median, _ = _grouped_medians(keys, values[rows])
            at = np.searchsorted(pairs, uniq)
            table[at, source] = counts
            table[at, 2 + 2 * source + k] = median
    return {(int(p // n), int(p % n)): row for p, row in zip(pairs.tolist(), table.tolist())}


def box_table(proposals: Proposals) -> np.ndarray:
    """``(n, len(BOX_COLUMNS))`` float32: one row per distinct proposed box, in the
    proposals' order."""
    n = len(proposals)
    table = np.zeros((n, len(BOX_COLUMNS)), dtype=np.float32)
    table[:, 0], table[:, 1], table[:, 2] = proposals.bx, proposals.by, proposals.w
    for source in (0, 1):
        pixels = proposals.source == source
        box = proposals.box[pixels]
        table[:, 3 + source] = np.bincount(box, minlength=n)
        for k, values in enumerate((proposals.prob_on, proposals.prob_other)):
            uniq, _, median, peak = _grouped_medians(box, values[pixels])
            table[uniq, 5 + 2 * source + k] = median
            table[uniq, 9 + k] = np.maximum(table[uniq, 9 + k], peak)
    return table


def s2_row(stem_boxes, proposals: Proposals, with_features: bool) -> tuple[dict, bool]:
    """The S2 columns of one sequence, and whether every target stem is recoverable."""
    candidates = [tuple(map(int, p)) for p in proposal_pairs(proposals.bx, proposals.by, proposals.w)]
    cand_set = set(candidates)
    stems = [stem_pairs(b) for b in stem_boxes]
    recoverable = [s for s in stems if all(p in cand_set for p in s)]
    row = {"stem_bb_bps": candidates, "target_bps": sorted(p for s in recoverable for p in s),
           "stem_bb_boxes": box_table(proposals)}
    if with_features:
        row["stem_bb_bps_features"] = pair_features(proposals)
    return row, len(recoverable) == len(stems)
