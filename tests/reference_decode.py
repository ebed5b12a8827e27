"""The slow, obviously-correct per-pixel S1 decoder the tests and bench/ compare against."""
import numpy as np

from stembb.s1.predict import Proposals
from stembb.structure import is_canonical


def proposals_from_lists(boxes):
    """``Proposals`` from ``[((bx, by, w), (prob_on_sm, prob_other_sm, prob_on_sl, prob_other_sl)), ...]``,
    the per-source lists of docs/DESIGN.md's S1 decoding, boxes in sorted order."""
    flat = {"box": [], "source": [], "prob_on": [], "prob_other": []}
    for k, (_, (on_sm, other_sm, on_sl, other_sl)) in enumerate(boxes):
        for source, on, other in ((0, on_sm, other_sm), (1, on_sl, other_sl)):
            flat["box"] += [k] * len(on)
            flat["source"] += [source] * len(on)
            flat["prob_on"] += list(on)
            flat["prob_other"] += list(other)
    corners = np.array([corner for corner, _ in boxes], dtype=np.int64).reshape(-1, 3)
    return Proposals(corners[:, 0], corners[:, 1], corners[:, 2], np.array(flat["box"], dtype=np.int64),
                     np.array(flat["source"], dtype=np.int8), np.array(flat["prob_on"], dtype=float),
                     np.array(flat["prob_other"], dtype=float))


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
    return proposals_from_lists([(corner, e["sm"] + e["sl"]) for corner, e in sorted(boxes.items())])
