"""The loop grammar's score ``S(y)`` (the tables of ``TERM_SHAPES``) and its best
structure (``assemble``), in numpy and compiled loops: what the grammar model
(``stembb.grammar.model``) folds with.

A nested structure ``y`` made of candidate pairs is scored loop by loop, in the shape of
a nearest-neighbour energy model (the loop decomposition of Turner 2004 with dangles on
both sides of every branch) whose every number is learned (``TERM_SHAPES``):

    S(y) = sum over pairs (i, j) of u_ij      (pair score: pair_weight * network logit + pair_bias)
         + per pair (i, j), by what it closes (t = pair type, 7 kinds; n = unpaired bases):
             stacked on (i+1, j-1):  stack[t(i, j), t(i+1, j-1)]
             a hairpin:              hairpin[size(n)] + end[t]
                                     + n = 3: triloop[the 5 bases i..j]
                                       n > 3: hairpin_mismatch[t, i+1, j-1]
                                       n = 4: tetraloop[the 6 bases i..j]
             one inner pair (k, l), 1 <= n = (k-i-1) + (j-l-1) <= MAX_LOOP:
               a bulge (one side empty): bulge[size(n)]
                                     + n = 1: stack[t(i, j), t(k, l)] (the helix stacks across it)
                                       n > 1: end of both pairs
               an internal loop:     internal[size(n)] + asymmetry[min(|left - right|, 5)]
                                     + end of both pairs
                                     + 1 x 1: mismatch_1x1 from both pairs + int11[loop]
                                       1 x 2: int21[loop]
                                       1 x n (n > 2): nothing more
                                       2 x 2: loop_mismatch from both pairs + int22[loop]
                                       otherwise: loop_mismatch from both pairs
             two or more branches:   multi_closing + multi_branch * branches
         + end[t] and dangle[t, neighbours] for every branch of a multi or exterior loop
           and inside a multiloop's closing pair (base 4 = none: a sequence end)

Mismatch terms are indexed [t, base after the pair's 5' base, base before its 3' base],
seen from inside the loop (an inner pair is read as (l, k)). ``int11`` / ``int21`` /
``int22`` hold the small internal loops by sequence, as Turner's tables do, indexed
[t(i, j), t(k, l), the left bases, the right bases] (``small_loop_slot``): a loop read
from its inner pair is the same loop, so 1 x 1 and 2 x 2 loops use the smaller of their
two readings and 1 x 2 loops the one with the single base on the left. They start at 0
and correct what the size, asymmetry and mismatch terms miss; without them the least-
squares fit of these terms to ViennaRNA's energies of sampled structures leaves an error
of 0.43 kcal/mol on held-out sequences, with them 0.23 (docs/TRAINING.md, S2 training). ``assemble`` finds the
best structure by dynamic programming over spans, one anti-diagonal at a time (``V``:
(i, j) paired; ``W1``: best non-empty exterior content; ``WM`` / ``M2``: multiloop
content with at least one / two branches). The answer is empty when every non-empty
structure scores below 0. ``stembb.grammar.terms`` holds the same tables as torch
parameters for training, and ``structure_score`` there computes S(y) as a torch expression.
Hairpins have at least ``MIN_LOOP`` bases.
"""
from __future__ import annotations

from typing import NamedTuple

import numba
import numpy as np

from stembb.structure import base_codes

MIN_LOOP = 3
MAX_LOOP = 30
HAIRPIN_EDGES = np.array([4, 5, 6, 7, 8, 9, 10, 11, 14, 18, 24, 31])  # 3 .. 10 | 11-13 | 14-17 | 18-23 | 24-30 | 31+
LOOP_EDGES = np.array([2, 3, 4, 5, 6, 7, 8, 9, 12, 16, 21])  # 1 .. 8 | 9-11 | 12-15 | 16-20 | 21-30
MAX_ASYMMETRY = 5
N_PAIR_TYPES = 7  # AU UA GC CG GU UG, and 6 = anything else
PAIR_TYPE = np.full((5, 5), N_PAIR_TYPES - 1, dtype=np.int64)
for _k, (_a, _b) in enumerate(("AU", "UA", "GC", "CG", "GU", "UG")):
    PAIR_TYPE["ACGU".index(_a), "ACGU".index(_b)] = _k
REVERSED_TYPE = np.array([1, 0, 3, 2, 5, 4, 6])  # t(j, i) from t(i, j)
INDEX = np.int32  # candidate and base indices of the recursions' tables: half of int64's memory (P, L < 2 ** 31)
SMALL_LOOPS = ("int11", "int21", "int22")  # the tables of small_loop_slot's table numbers 0, 1, 2
# The shape of every loop-term table of S(y) (``stembb.grammar.terms.LoopTerms`` holds them as
# parameters); the pair score's own two numbers, pair_weight and pair_bias, are not loop terms.
TERM_SHAPES = {
    "stack": (N_PAIR_TYPES, N_PAIR_TYPES),
    "hairpin": (len(HAIRPIN_EDGES) + 1,),
    "interior": (2, len(LOOP_EDGES) + 1),  # [bulge, internal] x size
    "asymmetry": (MAX_ASYMMETRY + 1,),
    "multi": (2,),  # [closing, per branch]
    "end": (N_PAIR_TYPES,),
    **{name: (N_PAIR_TYPES, 5, 5) for name in ("hairpin_mismatch", "loop_mismatch", "mismatch_1x1", "dangle")},
    # one slot per sequence of the closing pair and loop; the last for any with an N
    "triloop": (4 ** 5 + 1,),
    "tetraloop": (4 ** 6 + 1,),
    **{name: (N_PAIR_TYPES, N_PAIR_TYPES) + (5,) * n_bases for name, n_bases in zip(SMALL_LOOPS, (2, 3, 4))},
}


def base_at(codes: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """Base codes (``base_codes``) at positions ``pos``; 4 ("no base") outside the sequence."""
    inside = (pos >= 0) & (pos < len(codes))
    return np.where(inside, codes[np.where(inside, pos, 0)], 4)


def pair_type(codes: np.ndarray, i, j):
    """Pair type (``PAIR_TYPE``) of bases i and j (ints or arrays of positions) of a
    sequence with base ``codes``."""
    return PAIR_TYPE[codes[i], codes[j]]


@numba.njit(cache=True, nogil=True)
def small_loop_slot(codes, t_outer, t_inner, i, j, k, l):  # pragma: no cover (compiled)
    """``(table, slot)``: the ``SMALL_LOOPS`` table (0, 1, 2; -1 for none) and its flat
    index for the internal loop closed by (i, j) around (k, l), pair types ``t_outer`` =
    t(i, j) and ``t_inner`` = t(k, l); ``codes`` the sequence's base codes."""
    left, right = k - i - 1, j - l - 1
    if left == 1 and right == 1:
        table = 0
    elif left + right == 3 and min(left, right) == 1:
        table = 1
    elif left == 2 and right == 2:
        table = 2
    else:
        return -1, -1
    forward = t_outer * N_PAIR_TYPES + t_inner
    for p in range(i + 1, k):
        forward = forward * 5 + codes[p]
    for p in range(l + 1, j):
        forward = forward * 5 + codes[p]
    rotated = REVERSED_TYPE[t_inner] * N_PAIR_TYPES + REVERSED_TYPE[t_outer]
    for p in range(l + 1, j):
        rotated = rotated * 5 + codes[p]
    for p in range(i + 1, k):
        rotated = rotated * 5 + codes[p]
    if table == 1:
        return table, forward if left == 1 else rotated
    return table, min(forward, rotated)


def special_loop(codes: np.ndarray, i: np.ndarray, n: int) -> np.ndarray:
    """Slot of ``triloop`` (n = 3) / ``tetraloop`` (n = 4) for the hairpins closed at
    positions ``i``: the n + 2 bases from i as a base-4 number, ``4 ** (n + 2)`` when one
    of them is not A, C, G or U."""
    bases = codes[np.asarray(i)[:, None] + np.arange(n + 2)]
    slot = (bases * 4 ** np.arange(n + 2)).sum(1)
    return np.where((bases < 4).all(1), slot, 4 ** (n + 2))


def pair_neighbours(seq: str, pairs: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Index triples (pair type, base, base) of the mismatch / dangle terms of each
    candidate pair (i, j), as seen from each side: ``inside`` (t(i, j), i+1, j-1),
    ``from_loop`` (t(j, i), j+1, i-1: the pair as the inner pair of an interior loop),
    ``closing`` (t(j, i), j-1, i+1) and ``outside`` (t(i, j), i-1, j+1). Base 4 = none."""
    padded = np.concatenate([[4], base_codes(seq), [4]])  # one "no base" each side: candidates reach one past

    def base(pos):
        return padded[pos + 1]

    i, j = pairs[:, 0], pairs[:, 1]
    ci, cj = base(i), base(j)
    return {"inside": (PAIR_TYPE[ci, cj], base(i + 1), base(j - 1)),
            "from_loop": (PAIR_TYPE[cj, ci], base(j + 1), base(i - 1)),
            "closing": (PAIR_TYPE[cj, ci], base(j - 1), base(i + 1)),
            "outside": (PAIR_TYPE[ci, cj], base(i - 1), base(j + 1))}


class Candidates(NamedTuple):
    """What the recursions read, per candidate c = (pi[c], pj[c]) (j - i > ``MIN_LOOP``):
    ``t`` pair type, ``unary`` pair score, ``hairpin`` its score as a hairpin's closing
    pair, ``end`` its ``end[t]``, ``mismatch`` (4, P) loop / 1x1 mismatch seen from inside
    it and from its enclosing loop, ``closing_multi`` / ``branch`` its score closing a
    multiloop / as a branch; ``interior`` [bulge or internal, size], ``asymmetry`` by
    |left - right|, the ``stack`` table, the ``small`` loop tables flat with their
    ``small_start``; the sequence's base ``codes``; ``index_of`` (L, D) the candidate at
    (i, i + d) in row i, column d, or -1, where D - 1 is the longest candidate's span
    (every table of the recursions is banded the same way, so memory is linear in L for a
    bounded span); ``row_cands``, ``row_rank`` (``_rows``); ``starts``, ``start_base``,
    ``slot_of`` (``_starts_by_end``). Scores are log-weights (nats) or
    minus kcal/mol alike: nothing here depends on their unit."""

    length: int
    pi: np.ndarray
    pj: np.ndarray
    t: np.ndarray
    unary: np.ndarray
    hairpin: np.ndarray
    end: np.ndarray
    mismatch: np.ndarray
    closing_multi: np.ndarray
    branch: np.ndarray
    multi_branch: float
    interior: np.ndarray
    asymmetry: np.ndarray
    stack: np.ndarray
    small: np.ndarray
    small_start: np.ndarray
    codes: np.ndarray
    index_of: np.ndarray
    row_cands: np.ndarray
    row_rank: np.ndarray
    starts: np.ndarray
    start_base: np.ndarray
    slot_of: np.ndarray


def candidates(seq: str, pairs: np.ndarray, unary: np.ndarray, terms: dict[str, np.ndarray]
               ) -> tuple[Candidates | None, np.ndarray]:
    """The recursions' inputs for candidate ``pairs`` (P, 2) with pair scores ``unary``
    (P,), and the mask (P,) of the pairs kept (those enclosing at least ``MIN_LOOP``
    bases); ``None`` instead of the inputs when no pair is kept. Gathered with numpy, so
    the compiled recursions only read arrays."""
    length = len(seq)
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    keep = pairs[:, 1] - pairs[:, 0] > MIN_LOOP
    pairs, unary = pairs[keep], np.asarray(unary, dtype=float).reshape(-1)[keep]
    if length < MIN_LOOP + 2 or not len(pairs):
        return None, keep
    i, j = pairs[:, 0], pairs[:, 1]
    codes = base_codes(seq)
    t = pair_type(codes, i, j)
    end = terms["end"]
    near = pair_neighbours(seq, pairs)
    index_of = np.full((length, int((j - i).max()) + 1), -1, dtype=INDEX)
    index_of[i, j - i] = np.arange(len(pairs), dtype=INDEX)
    n = j - i - 1
    hairpin = terms["hairpin"][np.digitize(n, HAIRPIN_EDGES)] + end[t]
    hairpin[n > 3] += terms["hairpin_mismatch"][near["inside"]][n > 3]
    for size, name in ((3, "triloop"), (4, "tetraloop")):
        hairpin[n == size] += terms[name][special_loop(codes, i[n == size], size)]
    closing_multi = terms["multi"][0] + end[t] + terms["dangle"][near["closing"]]
    branch = end[t] + terms["dangle"][near["outside"]]
    mismatch = np.stack([terms[name][near[side]] for name in ("loop_mismatch", "mismatch_1x1")
                         for side in ("inside", "from_loop")])  # (4, P): loop out / in, 1x1 out / in
    interior, asymmetry, small, small_start = interior_tables(terms)
    return Candidates(length, i.astype(INDEX), j.astype(INDEX), t.astype(INDEX), np.ascontiguousarray(unary), hairpin, end[t], np.ascontiguousarray(mismatch),
                      closing_multi, branch, float(terms["multi"][1]), interior, asymmetry,
                      np.ascontiguousarray(terms["stack"]), small, small_start, codes, index_of,
                      *_rows(pairs, length, index_of.shape[1]), *_starts_by_end(pairs, length)), keep


def interior_tables(terms: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The interior-loop terms by loop size, as the compiled passes read them:
    ``interior`` (2, MAX_LOOP + 1) [bulge or internal, n], ``asymmetry`` (MAX_LOOP + 1,) by
    |left - right|, the ``SMALL_LOOPS`` tables flat and their ``small_start``."""
    sizes = np.arange(MAX_LOOP + 1)
    interior = np.ascontiguousarray(terms["interior"][:, np.digitize(sizes, LOOP_EDGES)])
    asymmetry = terms["asymmetry"][np.minimum(sizes, MAX_ASYMMETRY)]
    small = np.concatenate([terms[name].ravel() for name in SMALL_LOOPS])
    return interior, asymmetry, small, np.cumsum([0] + [terms[name].size for name in SMALL_LOOPS])


def assemble(seq: str, pairs: np.ndarray, unary: np.ndarray, terms: dict[str, np.ndarray]) -> list[tuple[int, int]]:
    """The candidate structure of maximum ``S(y)``: ``pairs`` (P, 2) candidates with pair
    scores ``unary`` (P,) (``pair_weight`` and ``pair_bias`` already applied); ``terms``
    from ``LoopTerms.numpy()`` or a model file. Sorted list of pairs."""
    cands, _ = candidates(seq, pairs, unary, terms)
    if cands is None:
        return []
    out, _ = fill_and_trace(*cands)
    return sorted(map(tuple, out.tolist()))


def _rows(pairs: np.ndarray, length: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """The candidates by 5' base, for the interior loops, which read the inner pairs
    (k, l) of a span of l: ``row_cands`` (L, R), for each base k the candidates (k, l)
    by growing l (-1 padding); ``row_rank`` (L, ``width`` + 1) int32, ``row_rank[k, d]``
    the number of them with l - k < d, so those of spans d0..d1 are
    ``row_cands[k, row_rank[k, d0]:row_rank[k, d1 + 1]]``: a loop visits only candidates,
    in order, not every (k, l)."""
    order = np.lexsort((pairs[:, 1], pairs[:, 0]))
    counts = np.bincount(pairs[:, 0], minlength=length)
    slot = np.arange(len(order)) - np.repeat(np.cumsum(counts) - counts, counts)
    row_cands = np.full((length, max(int(counts.max(initial=0)), 1)), -1, dtype=INDEX)
    row_cands[pairs[order, 0], slot] = order
    per_span = np.bincount(pairs[:, 0] * (width + 1) + pairs[:, 1] - pairs[:, 0] + 1, minlength=length * (width + 1))
    return row_cands, np.cumsum(per_span.reshape(length, width + 1), axis=1, dtype=np.int32)


def _starts_by_end(pairs: np.ndarray, length: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The candidates by 3' base, for the multiloop sums, which read every branch ending
    at a base: ``starts`` (L, K), for each base j the candidates (k, j) ending there by
    growing k (-1 padding); ``start_base`` (L, K) their k (L as padding); ``slot_of`` (P,)
    each candidate's column. The recursions keep each branch's score in an (L, K) table
    of the same layout, so those sums read memory in order instead of gathering by
    candidate."""
    order = np.lexsort((pairs[:, 0], pairs[:, 1]))
    counts = np.bincount(pairs[:, 1], minlength=length)
    slot = np.arange(len(order)) - np.repeat(np.cumsum(counts) - counts, counts)
    starts = np.full((length, max(int(counts.max(initial=0)), 1)), -1, dtype=INDEX)
    starts[pairs[order, 1], slot] = order
    start_base = np.full(starts.shape, length, dtype=INDEX)
    start_base[pairs[order, 1], slot] = pairs[order, 0]
    slot_of = np.empty(len(pairs), dtype=INDEX)
    slot_of[order] = slot
    return starts, start_base, slot_of


@numba.njit(cache=True, nogil=True, inline="always")
def first_start(start_base, j, i):  # pragma: no cover (compiled)
    """The first column of ``start_base[j]`` whose candidate starts at or after base i (a
    binary search: the multiloop sums read only branches inside their span)."""
    lo, hi = 0, start_base.shape[1]
    while lo < hi:
        mid = (lo + hi) // 2
        if start_base[j, mid] < i:
            lo = mid + 1
        else:
            hi = mid
    return lo


# the most inner pairs one closing pair can have in interior loops of at most MAX_LOOP bases
MAX_INNER = (MAX_LOOP + 1) * (MAX_LOOP + 2) // 2


@numba.njit(cache=True, nogil=True, inline="always")
def _join(a, b, product):  # pragma: no cover (compiled)
    return a * b if product else a + b


@numba.njit(cache=True, nogil=True)
def interior_loops(c, pi, pj, t, end, mismatch, interior, asymmetry, stack_table, small, small_start, codes,
                   row_cands, row_rank, inner, value, product):  # pragma: no cover (compiled)
    """The interior loops (bulges, internal loops, and a stack across one bulged base)
    that candidate ``c`` can close: writes each one's inner candidate to ``inner`` and its
    score (the inner pair's own ``V`` not included) to ``value`` (both ``MAX_INNER``
    long); returns how many. The one enumeration every recursion uses, in one order.
    With ``product`` the score tables hold weights (exp of scores) and a loop's weight is
    their product, so the partition function needs no exp per loop."""
    i, j = pi[c], pj[c]
    n = 0
    for k in range(i + 1, min(i + MAX_LOOP + 2, j - MIN_LOOP - 1)):
        left = k - i - 1
        shortest = max(MIN_LOOP + 1, j - 1 - (MAX_LOOP - left) - k)  # inner spans l - k that fit
        for r in range(row_rank[k, j - k] - 1, row_rank[k, shortest] - 1, -1):  # l from j - 1 down
            inside = row_cands[k, r]
            right = j - pj[inside] - 1
            if left + right == 0:
                continue
            l = pj[inside]
            if left == 0 or right == 0:
                score = interior[0, left + right]
                if left + right == 1:
                    score = _join(score, stack_table[t[c], t[inside]], product)
                else:
                    score = _join(score, _join(end[c], end[inside], product), product)
            else:
                score = _join(_join(interior[1, left + right], asymmetry[abs(left - right)], product),
                              _join(end[c], end[inside], product), product)
                if left == 1 and right == 1:
                    score = _join(score, _join(mismatch[2, c], mismatch[3, inside], product), product)
                elif left > 1 and right > 1:
                    score = _join(score, _join(mismatch[0, c], mismatch[1, inside], product), product)
                if left + right <= 4:
                    table, slot = small_loop_slot(codes, t[c], t[inside], i, j, k, l)
                    if table >= 0:
                        score = _join(score, small[small_start[table] + slot], product)
            inner[n] = inside
            value[n] = score
            n += 1
    return n


@numba.njit(cache=True, nogil=True)
def fill_and_trace(length, pi, pj, t, unary, hairpin, end, mismatch, closing_multi, branch, multi_branch,
                    interior, asymmetry, stack_table, small, small_start, codes, index_of, row_cands, row_rank,
                    starts, start_base, slot_of):  # pragma: no cover (compiled)
    """The recursions of ``assemble`` over spans of growing length, then the traceback.

    Per candidate c = (i, j): ``v[c]`` its best score closing what lies inside, and the
    choice made (0 hairpin, 1 stacked on (i+1, j-1), 2 interior loop on ``inner[c]``,
    3 multiloop). Per span [i, i + d], banded as ``index_of`` (row i, column d; only
    spans inside the longest candidate are ever read): ``wm`` / ``m2`` multiloop content
    with at least one / two branches (-inf when there is none), each with the candidate of
    the branch ending at i + d (``*_arg``; -1: the best leaves that base unpaired). Per
    3' base j: ``w1[j]`` the best non-empty exterior content of bases 0..j, and its
    ``w1_arg``. Ties keep the earlier option. Returns the chosen pairs, (n, 2), and their
    score."""
    n_cands = len(pi)
    width = index_of.shape[1]
    neg = -np.inf
    v = np.full(n_cands, neg)
    choice = np.zeros(n_cands, dtype=np.int32)
    inner = np.full(n_cands, -1, dtype=np.int32)
    loop_inner = np.zeros(MAX_INNER, dtype=np.int64)
    loop_value = np.zeros(MAX_INNER)
    wm = np.full((length, width), neg)
    m2 = np.full((length, width), neg)
    wm_arg = np.full((length, width), -1, dtype=np.int32)
    m2_arg = np.full((length, width), -1, dtype=np.int32)
    stems = np.full(starts.shape, neg)  # v + branch of each branch, laid out as starts
    order = np.argsort(pj - pi, kind="mergesort")
    ptr = 0
    for d in range(1, width):
        while ptr < n_cands and pj[order[ptr]] - pi[order[ptr]] == d:
            c = order[ptr]
            ptr += 1
            i, j = pi[c], pj[c]
            best, pick = hairpin[c], 0
            s = index_of[i + 1, d - 2]
            if s >= 0 and v[s] + stack_table[t[c], t[s]] > best:
                best, pick = v[s] + stack_table[t[c], t[s]], 1
            loop_best, best_inner = neg, -1
            for e in range(interior_loops(c, pi, pj, t, end, mismatch, interior, asymmetry, stack_table, small,
                                          small_start, codes, row_cands, row_rank, loop_inner, loop_value, False)):
                value = loop_value[e] + v[loop_inner[e]]
                if value > loop_best:
                    loop_best, best_inner = value, loop_inner[e]
            if loop_best > best:
                best, pick = loop_best, 2
                inner[c] = best_inner
            if d > 2 and m2[i + 1, d - 2] + closing_multi[c] > best:
                best, pick = m2[i + 1, d - 2] + closing_multi[c], 3
            v[c] = unary[c] + best
            choice[c] = pick
            stems[j, slot_of[c]] = v[c] + branch[c]
        for i in range(0, length - d):
            j = i + d
            bm, b2 = wm[i, d - 1], m2[i, d - 1]
            am, a2 = -1, -1
            for slot in range(first_start(start_base, j, i), starts.shape[1]):
                k = start_base[j, slot]
                if k == length:
                    break
                stem = stems[j, slot]
                if stem == neg:
                    continue
                multi_left, multi_left2 = 0.0, neg
                if k > i:
                    multi_left = max(wm[i, k - 1 - i], 0.0)
                    multi_left2 = wm[i, k - 1 - i]
                if multi_left + stem + multi_branch > bm:
                    bm, am = multi_left + stem + multi_branch, starts[j, slot]
                if multi_left2 + stem + multi_branch > b2:
                    b2, a2 = multi_left2 + stem + multi_branch, starts[j, slot]
            wm[i, d], m2[i, d] = bm, b2
            wm_arg[i, d], m2_arg[i, d] = am, a2
    w1 = np.full(length, neg)
    w1_arg = np.full(length, -1, dtype=np.int64)
    for j in range(length):
        b1, a1 = (w1[j - 1] if j > 0 else neg), -1
        for slot in range(starts.shape[1]):
            k = start_base[j, slot]
            if k == length:
                break
            stem = stems[j, slot]
            if stem == neg:
                continue
            left = max(w1[k - 1], 0.0) if k > 0 else 0.0
            if left + stem > b1:
                b1, a1 = left + stem, starts[j, slot]
        w1[j], w1_arg[j] = b1, a1
    out = np.zeros((n_cands, 2), dtype=np.int64)
    n_out = 0
    if not w1[length - 1] > 0:
        return out[:0], 0.0
    # traceback: rows (table, i, j), table 0 = W1 (i = 0), 1 = WM, 2 = M2, 3 = V (i = the candidate)
    todo = np.zeros((4 * (length + n_cands) + 4, 3), dtype=np.int64)
    todo[0, 2] = length - 1
    top = 1
    while top:
        top -= 1
        table, i, j = todo[top, 0], todo[top, 1], todo[top, 2]
        if table == 3:
            out[n_out, 0], out[n_out, 1] = pi[i], pj[i]
            n_out += 1
            if choice[i] == 1:
                todo[top, 0], todo[top, 1] = 3, index_of[pi[i] + 1, pj[i] - pi[i] - 2]
                top += 1
            elif choice[i] == 2:
                todo[top, 0], todo[top, 1] = 3, inner[i]
                top += 1
            elif choice[i] == 3:
                todo[top, 0], todo[top, 1], todo[top, 2] = 2, pi[i] + 1, pj[i] - 1
                top += 1
            continue
        if table == 0:
            arg = w1_arg[j]
        elif table == 1:
            arg = wm_arg[i, j - i]
        else:
            arg = m2_arg[i, j - i]
        if arg < 0:
            todo[top, 2] = j - 1
            top += 1
            continue
        k = pi[arg]
        if k > i and (table == 2 or (w1[k - 1] > 0 if table == 0 else wm[i, k - 1 - i] > 0)):
            todo[top, 0], todo[top, 1], todo[top, 2] = (0 if table == 0 else 1), i, k - 1
            top += 1
        todo[top, 0], todo[top, 1] = 3, arg
        top += 1
    return out[:n_out], w1[length - 1]


def loop_features(seq: str, structure) -> dict[str, np.ndarray]:
    """What ``S(y)`` counts in a nested structure: ``pairs`` (P, 2); ``multi`` [loops,
    branches]; and for every other ``LoopTerms`` table, the index rows of the entries it
    uses, one column per table dimension (``TERM_SHAPES``): ``stack`` (n, 2) type pairs,
    ``hairpin`` size buckets, ``interior`` [bulge or internal, size bucket], ``asymmetry``
    slots, ``end`` pair types, ``triloop`` / ``tetraloop`` slots, and (type, base, base)
    rows of ``hairpin_mismatch``, ``loop_mismatch``, ``mismatch_1x1`` and ``dangle``."""
    pairs = np.asarray(sorted(structure), dtype=np.int64).reshape(-1, 2)
    codes = base_codes(seq)
    near = {name: np.stack(v, axis=1) for name, v in pair_neighbours(seq, pairs).items()} if len(pairs) else {}
    row = {p: k for k, p in enumerate(map(tuple, pairs.tolist()))}
    types = dict(zip(row, pair_type(codes, pairs[:, 0], pairs[:, 1]).tolist()))
    children: dict = {(-1, len(seq)): []}
    stack_of = [(-1, len(seq))]
    for i, j in pairs.tolist():  # sorted by i: a stack of enclosing pairs finds each pair's parent
        while stack_of[-1][1] < i:
            stack_of.pop()
        children[stack_of[-1]].append((i, j))
        children[(i, j)] = []
        stack_of.append((i, j))
    out = {name: [] for name in TERM_SHAPES if name != "multi"}
    multi = [0, 0]
    for (i, j), inside in children.items():
        branches = inside
        if i < 0:
            pass
        elif not inside:
            n = j - i - 1
            out["hairpin"].append(np.digitize(n, HAIRPIN_EDGES))
            out["end"].append(types[i, j])
            if n > 3:
                out["hairpin_mismatch"].append(near["inside"][row[(i, j)]])
            if n in (3, 4):
                out["triloop" if n == 3 else "tetraloop"].append(special_loop(codes, np.array([i]), n)[0])
            branches = []
        elif len(inside) == 1 and inside[0] == (i + 1, j - 1):
            out["stack"].append((types[i, j], types[i + 1, j - 1]))
            branches = []
        elif len(inside) == 1:
            k, l = inside[0]
            left, right = k - i - 1, j - l - 1
            out["interior"].append((int(min(left, right) > 0), np.digitize(left + right, LOOP_EDGES)))
            if min(left, right) == 0 and left + right == 1:
                out["stack"].append((types[i, j], types[k, l]))
            else:
                out["end"] += [types[i, j], types[k, l]]
            if min(left, right) > 0:
                out["asymmetry"].append(min(abs(left - right), MAX_ASYMMETRY))
            if left == right == 1:
                out["mismatch_1x1"] += [near["inside"][row[(i, j)]], near["from_loop"][row[(k, l)]]]
            elif min(left, right) > 1:
                out["loop_mismatch"] += [near["inside"][row[(i, j)]], near["from_loop"][row[(k, l)]]]
            table, slot = small_loop_slot(codes, types[i, j], types[k, l], i, j, k, l)
            if table >= 0:
                name = SMALL_LOOPS[table]
                out[name].append(np.unravel_index(slot, TERM_SHAPES[name]))
            branches = []
        else:
            multi[0] += 1
            multi[1] += len(inside)
            out["end"].append(types[i, j])
            out["dangle"].append(near["closing"][row[(i, j)]])
        for k, l in branches:  # exterior or multiloop branches
            out["end"].append(types[k, l])
            out["dangle"].append(near["outside"][row[(k, l)]])
    feats = {name: np.array(v, dtype=np.int64).reshape(-1, len(TERM_SHAPES[name])) for name, v in out.items()}
    return feats | {"pairs": pairs, "multi": np.array(multi, float)}


def loop_counts(seq: str, structure) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """``(pairs (P, 2), counts)``: how many times ``S(y)`` of a nested structure uses each
    entry of each ``LoopTerms`` table, flat (``counts[name]`` has that parameter's size;
    ``pair_weight`` / ``pair_bias`` are not loop terms). ``S(y) = sum of u over pairs +
    sum over names of counts[name] . terms[name].flatten()``: linear in the terms."""
    f = loop_features(seq, structure)
    counts = {name: np.bincount(np.ravel_multi_index(tuple(f[name].T), shape), minlength=int(np.prod(shape)))
              for name, shape in TERM_SHAPES.items() if name != "multi"}
    return f["pairs"], counts | {"multi": f["multi"]}


def loop_score(seq: str, structure, terms: dict[str, np.ndarray]) -> tuple[np.ndarray, float]:
    """``(pairs (P, 2), the loop terms' part of S(y))`` of a nested structure: the sum of
    ``loop_counts``, read from the entries it uses rather than dotted with whole tables
    (at 50 nt that took most of a fold's time)."""
    f = loop_features(seq, structure)
    total = float(f["multi"] @ terms["multi"])
    for name in TERM_SHAPES:
        if name != "multi":
            total += float(terms[name][tuple(f[name].T)].sum())
    return f["pairs"], total
