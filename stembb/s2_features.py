"""S2 data from S1 proposals (DESIGN.md, "S2 data").

Candidate pairs are the pairs on the anti-diagonals of a sequence's decoded S1 boxes.
Each candidate gets six features, ``FEATURE_NAMES``: the number of softmax-size and of
scalar-size pixel proposals whose box covers it, and the medians, over those proposals,
of their ``prob_on_sm``, ``prob_other_sm``, ``prob_on_sl``, ``prob_other_sl`` (0 when
there are none).

Columns added to a row: ``stem_bb_bps`` (candidate pairs), ``target_bps`` (reference
pairs; with ``--include_all``, those of the recoverable stems) and
``stem_bb_bps_features`` (``{(i, j): [6 floats]}``). A target stem is recoverable when
all its pairs are candidates.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from stembb.predict import anti_diagonal, proposal_pairs
from stembb.structure import stem_pairs

FEATURE_NAMES = ("n_sm", "n_sl", "median_prob_on_sm", "median_prob_other_sm", "median_prob_on_sl",
                 "median_prob_other_sl")


def pair_features(proposals: pd.DataFrame) -> dict[tuple[int, int], list[float]]:
    """``{pair: six features}`` for every pair covered by a proposal."""
    if proposals.empty:
        return {}
    bx, by, w = (proposals[c].to_numpy(np.int64) for c in ("bb_x", "bb_y", "siz_x"))
    ii, jj, on = anti_diagonal(bx, by, w)
    columns = {}
    for suffix in ("sm", "sl"):
        lengths = proposals[f"prob_on_{suffix}"].map(len).to_numpy()
        box = np.repeat(np.arange(len(proposals)), lengths)  # one entry per pixel proposal
        p_on = np.concatenate([np.asarray(v, float) for v in proposals[f"prob_on_{suffix}"]] + [np.zeros(0)])
        p_other = np.concatenate([np.asarray(v, float) for v in proposals[f"prob_other_{suffix}"]] + [np.zeros(0)])
        # each pixel proposal counts once for every pair on its box's anti-diagonal
        covered = on[box]
        rows = np.broadcast_to(np.arange(len(box))[:, None], covered.shape)[covered]
        frame = pd.DataFrame({"i": ii[box][covered], "j": jj[box][covered], "on": p_on[rows], "other": p_other[rows]})
        agg = frame.groupby(["i", "j"]).agg(n=("on", "size"), on=("on", "median"), other=("other", "median"))
        columns[suffix] = agg
    table = columns["sm"].add_suffix("_sm").join(columns["sl"].add_suffix("_sl"), how="outer").fillna(0.0)
    table = table[["n_sm", "n_sl", "on_sm", "other_sm", "on_sl", "other_sl"]]
    return {(int(i), int(j)): [float(v) for v in vals] for (i, j), vals in zip(table.index, table.to_numpy())}


def s2_row(stem_boxes, proposals: pd.DataFrame, with_features: bool) -> tuple[dict, bool]:
    """The S2 columns of one sequence, and whether every target stem is recoverable."""
    candidates = [tuple(map(int, p)) for p in proposal_pairs(proposals)]
    cand_set = set(candidates)
    stems = [stem_pairs(b) for b in stem_boxes]
    recoverable = [s for s in stems if all(p in cand_set for p in s)]
    row = {"stem_bb_bps": candidates, "target_bps": sorted(p for s in recoverable for p in s)}
    if with_features:
        row["stem_bb_bps_features"] = pair_features(proposals)
    return row, len(recoverable) == len(stems)
