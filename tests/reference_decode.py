"""The slow, obviously-correct per-pixel S1 decoder the tests and bench/ compare against."""
import numpy as np
import pandas as pd

from stembb.s1.predict import PROPOSAL_COLUMNS
from stembb.structure import is_canonical


def slow_decode(maps, seq, threshold):
    """Obviously-correct per-pixel reference of docs/DESIGN.md's S1 decoding."""
    length = len(seq)
    boxes = {}
    for i in range(length):
        for j in range(i + 1, length):
            if not float(maps["p_on"][i, j]) > threshold:
                continue
            lx, ly, sz = int(maps["loc_x"][i, j]), int(maps["loc_y"][i, j]), int(maps["size"][i, j])
            if lx == 11 or ly == 11:
                continue
            x0, top = i - lx, j + ly
            p_loc = float(maps["p_loc_x"][i, j]) * float(maps["p_loc_y"][i, j])
            w_sl = max(int(np.rint(maps["size_scalar"][i, j])), 1)
            sources = [("sl", w_sl, p_loc)] if sz == 10 else [("sm", sz + 1, p_loc * float(maps["p_size"][i, j])),
                                                             ("sl", w_sl, p_loc)]
            for source, w, other in sources:
                if x0 < 0 or top >= length or not x0 + w - 1 < top - w + 1:
                    continue
                if not all(is_canonical(seq, x0 + k, top - k) for k in range(w)):
                    continue
                entry = boxes.setdefault((x0, top, w), {"sm": ([], []), "sl": ([], [])})
                entry[source][0].append(float(maps["p_on"][i, j]))
                entry[source][1].append(other)
    rows = [{"bb_x": x, "bb_y": y, "siz_x": w, "siz_y": w, "prob_on_sm": e["sm"][0], "prob_other_sm": e["sm"][1],
             "prob_on_sl": e["sl"][0], "prob_other_sl": e["sl"][1]} for (x, y, w), e in sorted(boxes.items())]
    return pd.DataFrame(rows, columns=PROPOSAL_COLUMNS)
