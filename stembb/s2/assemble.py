"""Structure assembly with learned loop terms: the decoder the box transformer trains through.

A nested structure ``y`` made of candidate pairs is scored loop by loop, in the shape of
a nearest-neighbour energy model whose every number is learned (``LoopTerms``):

    S(y) = sum over pairs (i, j) of u_ij                 (pair score, from the network)
         + per pair (i, j), by what it closes:
             stacked on (i+1, j-1):  stack[t(i, j), t(i+1, j-1)]       (pair types, 7 x 7)
             a hairpin of n bases:   hairpin[bucket(n)]
             one inner pair (k, l), n = (k-i-1) + (j-l-1) unpaired bases, 1 <= n <= MAX_LOOP:
                                     interior[bulge or not, bucket(n)] + asymmetry * |(k-i-1) - (j-l-1)|
             two or more branches:   multi_closing + multi_branch * branches
         + end[t] for every helix end: a pair closing a hairpin, interior or multi loop,
           the inner pair of an interior loop, and every branch of a multi or exterior loop
         + the unpaired bases next to each helix end, by pair type: hairpin_mismatch and
           loop_mismatch [t, base after the 5' end, base before the 3' end] inside hairpins
           and interior loops (both closing pairs), dangle [t, neighbours] outside every
           branch and inside a multiloop's closing pair (base 4 = none: a sequence end)

``assemble`` finds the best structure by dynamic programming over spans, one
anti-diagonal at a time (``V``: (i, j) paired; ``W1``: best non-empty exterior content;
``WM`` / ``M2``: multiloop content with at least one / two branches). The answer is
empty when every non-empty structure scores below 0. ``structure_score`` computes the
same S(y) as a torch expression for the margin loss of training
(``stembb.s2.engine.structured_hinge``). Hairpins have at least ``MIN_LOOP`` bases.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from stembb.structure import base_codes

MIN_LOOP = 3
MAX_LOOP = 30
HAIRPIN_EDGES = np.array([4, 5, 6, 7, 9, 13, 21])  # 3 | 4 | 5 | 6 | 7-8 | 9-12 | 13-20 | 21+ unpaired bases
LOOP_EDGES = np.array([2, 3, 4, 5, 7, 10, 15])  # 1 | 2 | 3 | 4 | 5-6 | 7-9 | 10-14 | 15-30
N_PAIR_TYPES = 7  # AU UA GC CG GU UG, and 6 = anything else
PAIR_TYPE = np.full((5, 5), N_PAIR_TYPES - 1, dtype=np.int64)
for _k, (_a, _b) in enumerate(("AU", "UA", "GC", "CG", "GU", "UG")):
    PAIR_TYPE["ACGU".index(_a), "ACGU".index(_b)] = _k


def base_at(codes: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """Base codes (``base_codes``) at positions ``pos``; 4 ("no base") outside the sequence."""
    inside = (pos >= 0) & (pos < len(codes))
    return np.where(inside, codes[np.where(inside, pos, 0)], 4)


def pair_types(seq: str) -> np.ndarray:
    """``(L, L)`` pair type of bases i and j (``PAIR_TYPE``)."""
    c = base_codes(seq)
    return PAIR_TYPE[c[:, None], c[None, :]]


class LoopTerms(nn.Module):
    """The learned loop terms of ``S(y)``, all zero at the start (a plain pair count)."""

    def __init__(self):
        super().__init__()
        self.stack = nn.Parameter(torch.zeros(N_PAIR_TYPES, N_PAIR_TYPES))
        self.hairpin = nn.Parameter(torch.zeros(len(HAIRPIN_EDGES) + 1))
        self.interior = nn.Parameter(torch.zeros(2, len(LOOP_EDGES) + 1))  # [bulge, internal] x size
        self.asymmetry = nn.Parameter(torch.zeros(()))
        self.multi = nn.Parameter(torch.zeros(2))  # [closing, per branch]
        self.end = nn.Parameter(torch.zeros(N_PAIR_TYPES))
        for name in ("hairpin_mismatch", "loop_mismatch", "dangle"):
            self.register_parameter(name, nn.Parameter(torch.zeros(N_PAIR_TYPES, 5, 5)))

    def numpy(self) -> dict[str, np.ndarray]:
        return {name: p.detach().cpu().double().numpy() for name, p in self.named_parameters()}


def _neighbours(seq: str, pairs: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Index triples (pair type, base, base) of the mismatch / dangle terms of each
    candidate pair (i, j), as seen from each side: ``inside`` (t(i, j), i+1, j-1),
    ``from_loop`` (t(j, i), j+1, i-1: the pair as the inner pair of an interior loop),
    ``closing`` (t(j, i), j-1, i+1) and ``outside`` (t(i, j), i-1, j+1). Base 4 = none."""
    codes = base_codes(seq)

    def base(pos):
        return base_at(codes, pos)

    i, j = pairs[:, 0], pairs[:, 1]
    ci, cj = base(i), base(j)
    return {"inside": (PAIR_TYPE[ci, cj], base(i + 1), base(j - 1)),
            "from_loop": (PAIR_TYPE[cj, ci], base(j + 1), base(i - 1)),
            "closing": (PAIR_TYPE[cj, ci], base(j - 1), base(i + 1)),
            "outside": (PAIR_TYPE[ci, cj], base(i - 1), base(j + 1))}


def _inner_candidates(pairs: np.ndarray) -> tuple[np.ndarray, ...]:
    """For every candidate (i, j): the candidates (k, l) inside it that can close an
    interior loop with it (1 to MAX_LOOP unpaired bases), as ``(P, K)`` padded arrays of
    index (-1 = padding), loop size, shorter side and side difference."""
    i, j = pairs[:, 0], pairs[:, 1]
    left = i[None, :] - i[:, None] - 1  # row: outer pair, column: inner pair
    right = j[:, None] - j[None, :] - 1
    ok = (left >= 0) & (right >= 0) & (left + right >= 1) & (left + right <= MAX_LOOP) & (j[None, :] > i[None, :])
    rows, cols = np.nonzero(ok)  # row-major: each row's inner candidates in order
    counts = ok.sum(1)
    slot = np.arange(len(rows)) - np.repeat(np.cumsum(counts) - counts, counts)
    shape = (len(pairs), max(int(counts.max(initial=0)), 1))
    idx, size, side, diff = (np.full(shape, -1 if k == 0 else 0, dtype=np.int64) for k in range(4))
    idx[rows, slot] = cols
    lf, rt = left[rows, cols], right[rows, cols]
    size[rows, slot], side[rows, slot], diff[rows, slot] = lf + rt, np.minimum(lf, rt), np.abs(lf - rt)
    return idx, size, side, diff


def assemble(seq: str, pairs: np.ndarray, unary: np.ndarray, terms: dict[str, np.ndarray]) -> list[tuple[int, int]]:
    """The candidate structure of maximum ``S(y)``: ``pairs`` (P, 2) candidates with pair
    scores ``unary`` (P,); ``terms`` from ``LoopTerms.numpy()``. Sorted list of pairs."""
    length = len(seq)
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    keep = pairs[:, 1] - pairs[:, 0] > MIN_LOOP
    pairs, unary = pairs[keep], np.asarray(unary, dtype=float)[keep]
    if length < MIN_LOOP + 2 or not len(pairs):
        return []
    types = pair_types(seq)
    t = types[pairs[:, 0], pairs[:, 1]]
    end = terms["end"]
    multi_close, multi_branch = terms["multi"]
    near = _neighbours(seq, pairs)
    hairpin_mm = terms["hairpin_mismatch"][near["inside"]]
    loop_mm = terms["loop_mismatch"][near["inside"]]
    inner_mm = terms["loop_mismatch"][near["from_loop"]]
    closing_dangle = terms["dangle"][near["closing"]]
    branch_end = end[t] + terms["dangle"][near["outside"]]
    inner_idx, inner_size, inner_side, inner_diff = _inner_candidates(pairs)
    safe = np.maximum(inner_idx, 0)
    inner_bonus = np.where(
        inner_idx >= 0,
        terms["interior"][(inner_side > 0).astype(int), np.digitize(inner_size, LOOP_EDGES)]
        + terms["asymmetry"] * inner_diff + end[t[safe]] + inner_mm[safe], -np.inf)
    v_of = np.full(len(pairs), -np.inf)  # V of each candidate
    choice = np.zeros(len(pairs), dtype=np.int64)  # 0 hairpin, 1 stacked, 2 interior, 3 multi
    inner_pick = np.full(len(pairs), -1, dtype=np.int64)
    v = np.full((length + 1, length + 1), -np.inf)
    # exterior (w1) and multiloop (wm: >= 1 branch, m2: >= 2) contents of span [i, j],
    # -inf when empty; recursions on the branch that ends at j, over the candidates (k, j)
    w1, wm, m2 = (np.full((length + 1, length + 1), -np.inf) for _ in range(3))
    starts = _starts_by_end(pairs, length)  # (L, K) candidate index ending at j, -1 padding
    by_span = {d: np.flatnonzero(pairs[:, 1] - pairs[:, 0] == d) for d in np.unique(pairs[:, 1] - pairs[:, 0])}
    for d in range(1, length):
        c = by_span.get(d)
        if c is not None:
            i, j = pairs[c, 0], pairs[c, 1]
            interior = inner_bonus[c] + np.where(inner_idx[c] >= 0, v_of[np.maximum(inner_idx[c], 0)], -np.inf)
            options = np.stack([
                np.full(len(c), terms["hairpin"][np.digitize(d - 1, HAIRPIN_EDGES)]) + end[t[c]] + hairpin_mm[c],
                v[i + 1, j - 1] + terms["stack"][t[c], types[i + 1, j - 1]],
                interior.max(axis=1) + end[t[c]] + loop_mm[c],
                m2[i + 1, j - 1] + multi_close + end[t[c]] + closing_dangle[c]])
            choice[c] = options.argmax(axis=0)
            inner_pick[c] = inner_idx[c, interior.argmax(axis=1)]
            v_of[c] = unary[c] + options.max(axis=0)
            v[i, j] = v_of[c]
        i = np.arange(length - d)
        j = i + d
        ext_left, multi_left, multi_left2, branch = _last_branch(i, j, starts, pairs, v_of, branch_end, w1, wm)
        w1[i, j] = np.maximum(w1[i, j - 1], (ext_left + branch).max(axis=1))
        wm[i, j] = np.maximum(wm[i, j - 1], (multi_left + branch + multi_branch).max(axis=1))
        m2[i, j] = np.maximum(m2[i, j - 1], (multi_left2 + branch + multi_branch).max(axis=1))
    if not w1[0, length - 1] > 0:
        return []
    tables = {"W": w1, "WM": wm, "M2": m2}
    return sorted(_traceback(length, pairs, starts, choice, inner_pick, v_of, tables, branch_end, multi_branch))


def _starts_by_end(pairs: np.ndarray, length: int) -> np.ndarray:
    """``(L, K)``: for each 3' base j, the candidates (k, j) ending there (-1 padding)."""
    order = np.argsort(pairs[:, 1], kind="stable")
    counts = np.bincount(pairs[:, 1], minlength=length)
    slot = np.arange(len(order)) - np.repeat(np.cumsum(counts) - counts, counts)
    out = np.full((length, max(int(counts.max(initial=0)), 1)), -1, dtype=np.int64)
    out[pairs[order, 1], slot] = order
    return out


def _last_branch(i, j, starts, pairs, v_of, branch_end, w1, wm):
    """For spans [i, j] (arrays) and each candidate (k, j) inside: the best exterior
    content left of k (empty = 0), the same for multiloops with any / at least one branch,
    and the branch's own score V + its end terms; -inf where (k, j) does not fit."""
    c = starts[j]  # (n, K)
    k = pairs[np.maximum(c, 0), 0]
    fits = (c >= 0) & (k >= i[:, None])
    rows = i[:, None]
    before = np.maximum(k - 1, 0)
    has_left = k > rows
    ext_left = np.where(has_left, np.maximum(w1[rows, before], 0.0), 0.0)
    multi_left = np.where(has_left, np.maximum(wm[rows, before], 0.0), 0.0)
    multi_left2 = np.where(has_left, wm[rows, before], -np.inf)
    branch = np.where(fits, v_of[np.maximum(c, 0)] + branch_end[np.maximum(c, 0)], -np.inf)
    return ext_left, multi_left, multi_left2, branch


def _traceback(length, pairs, starts, choice, inner_pick, v_of, tables, branch_end, multi_branch) -> list:
    w1, wm = tables["W"], tables["WM"]
    out = []
    todo = [("W", 0, length - 1)]
    while todo:  # every span visited holds a non-empty structure
        table, i, j = todo.pop()
        if table == "V":
            out.append((i, j))
            c = int(np.flatnonzero((pairs[:, 0] == i) & (pairs[:, 1] == j))[0])
            if choice[c] == 1:
                todo.append(("V", i + 1, j - 1))
            elif choice[c] == 2:
                k, l = pairs[inner_pick[c]]
                todo.append(("V", int(k), int(l)))
            elif choice[c] == 3:
                todo.append(("M2", i + 1, j - 1))
            continue
        grid = tables[table]
        if grid[i, j] == grid[i, j - 1]:
            todo.append((table, i, j - 1))
            continue
        ext_left, multi_left, multi_left2, branch = _last_branch(np.array([i]), np.array([j]), starts, pairs, v_of,
                                                                 branch_end, w1, wm)
        left, bonus, left_table = {"W": (ext_left, 0.0, "W"), "WM": (multi_left, multi_branch, "WM"),
                                   "M2": (multi_left2, multi_branch, "WM")}[table]
        totals = (left + branch + bonus if bonus else left + branch)[0]
        slot = int(np.argmax(totals))
        k = int(pairs[starts[j, slot], 0])
        todo.append(("V", k, j))
        if k > i and (table == "M2" or left[0, slot] > 0):
            todo.append((left_table, i, k - 1))
    return out


def loop_features(seq: str, structure) -> dict[str, np.ndarray]:
    """What ``S(y)`` counts in a nested structure: ``pairs`` (P, 2); ``stacks`` (n, 2)
    type pairs; ``hairpins`` (m,) buckets; ``interior`` (q, 2) [kind, bucket] and
    ``asymmetry`` (q,); ``multi`` [loops, branches]; ``ends`` (e,) pair types; and the
    (type, base, base) rows of ``hairpin_mismatch``, ``loop_mismatch`` and ``dangle``."""
    pairs = np.asarray(sorted(structure), dtype=np.int64).reshape(-1, 2)
    types = pair_types(seq)
    near = {name: np.stack(v, axis=1) for name, v in _neighbours(seq, pairs).items()} if len(pairs) else {}
    row = {p: k for k, p in enumerate(map(tuple, pairs.tolist()))}
    children: dict = {(-1, len(seq)): []}
    stack_of = [(-1, len(seq))]
    for i, j in pairs.tolist():  # sorted by i: a stack of enclosing pairs finds each pair's parent
        while stack_of[-1][1] < i:
            stack_of.pop()
        children[stack_of[-1]].append((i, j))
        children[(i, j)] = []
        stack_of.append((i, j))
    out = {name: [] for name in ("stacks", "hairpins", "interior", "asymmetry", "ends", "hairpin_mismatch",
                                 "loop_mismatch", "dangle")}
    multi = [0, 0]
    for (i, j), inside in children.items():
        branches = inside
        if i < 0:
            pass
        elif not inside:
            out["hairpins"].append(np.digitize(j - i - 1, HAIRPIN_EDGES))
            out["ends"].append(types[i, j])
            out["hairpin_mismatch"].append(near["inside"][row[(i, j)]])
            branches = []
        elif len(inside) == 1 and inside[0] == (i + 1, j - 1):
            out["stacks"].append((types[i, j], types[i + 1, j - 1]))
            branches = []
        elif len(inside) == 1:
            k, l = inside[0]
            left, right = k - i - 1, j - l - 1
            out["interior"].append((int(min(left, right) > 0), np.digitize(left + right, LOOP_EDGES)))
            out["asymmetry"].append(abs(left - right))
            out["ends"] += [types[i, j], types[k, l]]
            out["loop_mismatch"] += [near["inside"][row[(i, j)]], near["from_loop"][row[(k, l)]]]
            branches = []
        else:
            multi[0] += 1
            multi[1] += len(inside)
            out["ends"].append(types[i, j])
            out["dangle"].append(near["closing"][row[(i, j)]])
        for k, l in branches:  # exterior or multiloop branches
            out["ends"].append(types[k, l])
            out["dangle"].append(near["outside"][row[(k, l)]])
    shapes = {"stacks": (-1, 2), "interior": (-1, 2), "hairpin_mismatch": (-1, 3), "loop_mismatch": (-1, 3),
              "dangle": (-1, 3)}
    feats = {name: np.array(v, dtype=float if name == "asymmetry" else np.int64).reshape(shapes.get(name, (-1,)))
             for name, v in out.items()}
    return feats | {"pairs": pairs, "multi": np.array(multi, float)}


def structure_score(seq: str, structure, pair_index: dict, unary: torch.Tensor, terms: LoopTerms) -> torch.Tensor:
    """``S(y)`` of a nested candidate structure as a torch scalar (differentiable in the
    pair scores ``unary`` (P,) and in ``terms``); ``pair_index`` maps a pair to its row."""
    f = loop_features(seq, structure)
    device = terms.stack.device

    def idx(a):
        return torch.as_tensor(a, dtype=torch.long, device=device)

    rows = [pair_index[p] for p in map(tuple, f["pairs"].tolist())]
    score = unary[idx(rows)].sum()
    score = score + terms.stack[idx(f["stacks"][:, 0]), idx(f["stacks"][:, 1])].sum()
    score = score + terms.hairpin[idx(f["hairpins"])].sum() + terms.end[idx(f["ends"])].sum()
    score = score + terms.interior[idx(f["interior"][:, 0]), idx(f["interior"][:, 1])].sum()
    score = score + terms.asymmetry * float(f["asymmetry"].sum())
    for name in ("hairpin_mismatch", "loop_mismatch", "dangle"):
        rows3 = f[name]
        score = score + getattr(terms, name)[idx(rows3[:, 0]), idx(rows3[:, 1]), idx(rows3[:, 2])].sum()
    return score + (terms.multi * torch.as_tensor(f["multi"], dtype=terms.multi.dtype, device=device)).sum()
