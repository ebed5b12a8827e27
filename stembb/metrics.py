"""Metrics: S1 stem-box sensitivity per sequence, and base-pair precision/recall/F1.

Stems and proposals are compared by reference corner ``(bb_x, bb_y)`` (the outermost
pair) and size ``w``.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np

from stembb.boxes import anti_diagonal, proposal_pairs
from stembb.s1.predict import Proposals


def s1_sequence_metrics(stems: np.ndarray, proposals: Proposals) -> dict[str, float]:
    """Sensitivity of one sequence's proposals against its target stems ``(n, 3)``.

    - ``bb_identical``: share of target stems with an identical proposal;
    - ``bb_overlap``: share with an identical, a local shift (all four numbers within 1)
      or any overlapping proposal;
    - ``bp``: share of target pairs on the anti-diagonal of some proposal;
    - ``proposals_per_stem``: proposals / target stems;
    - ``bp_precision``: share of proposed pairs that are target pairs.
    """
    n_stems = len(stems)
    px, py, pw = proposals.bx, proposals.by, proposals.w
    tx, ty, tw = (stems[:, k, None] for k in range(3))
    identical = (tx == px) & (ty == py) & (tw == pw)
    shift = (np.abs(tx - px) <= 1) & (np.abs(ty - py) <= 1) & (np.abs(tw - pw) <= 1)
    # squares: rows [x, x + w), columns [y - w + 1, y + 1)
    overlap = (tx < px + pw) & (px < tx + tw) & (ty - tw < py) & (py - pw < ty)
    ti, tj, ton = anti_diagonal(stems[:, 0], stems[:, 1], stems[:, 2])
    target_pairs = {(int(a), int(b)) for a, b in zip(ti[ton], tj[ton])}
    proposed = {(int(a), int(b)) for a, b in proposal_pairs(px, py, pw)}
    hit = len(target_pairs & proposed)
    nan = float("nan")
    return {
        "bb_identical": identical.any(axis=1).mean() if n_stems else nan,
        "bb_overlap": (identical | shift | overlap).any(axis=1).mean() if n_stems else nan,
        "bp": hit / len(target_pairs) if target_pairs else nan,
        "proposals_per_stem": len(proposals) / n_stems if n_stems else nan,
        "bp_precision": hit / len(proposed) if proposed else nan,
        "n_proposals": len(proposals),
        "n_target_stems": n_stems,
    }


def pair_scores(pred: Iterable[tuple[int, int]], ref: Iterable[tuple[int, int]], slip: int = 0) -> dict[str, float]:
    """Base-pair precision, recall and F1 of ``pred`` against ``ref``.

    With ``slip`` 1, a predicted pair (i, j) also matches a reference pair (i±1, j) or
    (i, j±1) (the usual one-position slip allowance).
    """
    pred, ref = set(pred), set(ref)
    if slip:
        def near(p, pool):
            i, j = p
            return any(q in pool for q in ((i, j), (i - 1, j), (i + 1, j), (i, j - 1), (i, j + 1)))
        tp_pred = sum(near(p, ref) for p in pred)
        tp_ref = sum(near(r, pred) for r in ref)
    else:
        tp_pred = tp_ref = len(pred & ref)
    precision = tp_pred / len(pred) if pred else (1.0 if not ref else 0.0)
    recall = tp_ref / len(ref) if ref else (1.0 if not pred else 0.0)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}
