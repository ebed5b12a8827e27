"""The partition function of the loop grammar: base-pair probabilities and expected counts.

``stembb.grammar.assemble`` finds the candidate structure of maximum score ``S(y)``; here the
same loop decomposition is summed instead of maximised (McCaskill's inside-outside
recursions) with each structure weighted ``exp(S(y))``: ``S`` is read as a log-weight in
nats, so a model whose terms are minus free energies in kcal/mol must divide them by kT
first (``stembb.grammar.crf``). What comes out:

- ``log_z``: log of ``Z = sum over structures y of exp(S(y))`` (the empty structure
  counts, with S = 0);
- ``probs`` (P,): the probability of each candidate pair, ``P(i, j) = sum over y
  holding (i, j) of exp(S(y)) / Z``; the probabilities of one base's pairs sum to at
  most 1;
- with ``counts=True``, the expected number of times ``S`` uses each entry of each
  ``LoopTerms`` table (the shapes of ``assemble.loop_counts``), which is the gradient of
  ``log_z`` in the terms, as ``probs`` is its gradient in the pair scores.

Numbers stay in range two ways. The exterior sums (over bases 0..j and j..L-1, which
grow with L) are kept as logarithms. Every other partial sum covers at most the longest
candidate's span: under ``UNSCALED_SPAN`` bases it is stored as it is; beyond, it is
scaled as ViennaRNA does, divided by ``exp(scale * d)`` over a span of d bases, with
``scale`` = the best score per base of the structures whose pairs are at most
``SCALE_SPAN`` apart (``assemble``'s recursions over those pairs only: one cheap pass), so
a long span's sum is about the number of structures near the best; when that still
overflows, the best structure's own score per base (a pass over every pair). Memory: a
few arrays over the candidates and a few (L, D) tables, banded as ``assemble``'s (D - 1
the longest candidate's span): linear in L for a bounded span.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numba
import numpy as np

from stembb.grammar.assemble import (HAIRPIN_EDGES, LOOP_EDGES, MAX_ASYMMETRY, MAX_INNER, MAX_LOOP, SMALL_LOOPS,
                                TERM_SHAPES, Candidates, fill_and_trace, pair_neighbours, candidates, first_start,
                                interior_loops, small_loop_slot, special_loop)
from stembb.structure import base_codes

UNSCALED_SPAN = 400
SCALE_SPAN = 100


@dataclass
class Ensemble:
    """The pair probabilities of one sequence: ``pairs`` (P, 2) the candidates as given,
    ``probs`` (P,) (0 for candidates the grammar cannot use), ``log_z``, and ``counts``
    (expected loop-term counts, ``{name: flat array}``) when asked for."""

    pairs: np.ndarray
    probs: np.ndarray
    log_z: float
    counts: dict[str, np.ndarray] | None = None

    def matrix(self, length: int) -> np.ndarray:
        """``(L, L)`` pair probabilities, upper triangle."""
        out = np.zeros((length, length))
        out[self.pairs[:, 0], self.pairs[:, 1]] = self.probs
        return out


def ensemble(seq: str, pairs: np.ndarray, unary: np.ndarray, terms: dict[str, np.ndarray],
             counts: bool = False) -> Ensemble:
    """Pair probabilities and log Z over the nested structures made of candidate ``pairs``
    (P, 2) with pair scores ``unary`` (P,) and loop ``terms`` (``LoopTerms.numpy()``), all
    read as log-weights; with ``counts``, the expected loop-term counts too."""
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    probs = np.zeros(len(pairs))
    cands, keep = candidates(seq, pairs, unary, terms)
    if cands is None:
        empty = {name: np.zeros(int(np.prod(shape))) for name, shape in TERM_SHAPES.items()} if counts else None
        return Ensemble(pairs, probs, 0.0, empty)
    scale = _best_score_per_base(seq, cands, terms, SCALE_SPAN) if cands.index_of.shape[1] > UNSCALED_SPAN else 0.0
    weights = Weights.of(cands, scale)
    inside = _inside(*_shape(cands), *weights)
    if not np.isfinite(inside[3][-1]):  # overflow: scale by the best structure itself
        scale = _best_score_per_base(seq, cands, terms)
        weights = Weights.of(cands, scale)
        inside = _inside(*_shape(cands), *weights)
    out = _outside(*_shape(cands), *weights, *inside, counts)
    probs[keep] = inside[0] * out[0]
    expected = _loop_counts(seq, cands, out) if counts else None
    return Ensemble(pairs, probs, float(inside[3][-1] + scale * cands.length), expected)


def _best_score_per_base(seq: str, cands: Candidates, terms: dict[str, np.ndarray], span: int | None = None) -> float:
    """The best structure's score (0 for the empty one) per base: the scale of the sums;
    with ``span``, the best of the structures whose pairs are at most that far apart (a
    lower bound, from a pass over the short pairs only, much cheaper on a whole fold)."""
    if span is not None and cands.index_of.shape[1] > span + 1:
        near = cands.pj - cands.pi <= span
        cands, _ = candidates(seq, np.stack([cands.pi, cands.pj], axis=1)[near], cands.unary[near], terms)
        if cands is None:
            return 0.0
    return max(float(fill_and_trace(*cands)[1]), 0.0) / len(seq)


class Weights(NamedTuple):
    """``Candidates``' scores as weights (exp), and ``s[d]`` = exp(-scale * d), the
    divisor of a partial sum over d bases."""

    s: np.ndarray
    eu: np.ndarray
    eh: np.ndarray
    ecm: np.ndarray
    eb: np.ndarray
    ebm: np.ndarray
    e_end: np.ndarray
    e_mismatch: np.ndarray
    e_interior: np.ndarray
    e_asymmetry: np.ndarray
    e_stack: np.ndarray
    e_small: np.ndarray

    @classmethod
    def of(cls, c: Candidates, scale: float) -> "Weights":
        return cls(np.exp(-scale * np.arange(c.length + 2)), np.exp(c.unary), np.exp(c.hairpin),
                   np.exp(c.closing_multi), np.exp(c.branch), np.exp(c.branch + c.multi_branch), np.exp(c.end),
                   np.exp(c.mismatch), np.exp(c.interior), np.exp(c.asymmetry), np.exp(c.stack), np.exp(c.small))


def _shape(c: Candidates) -> tuple:
    """What the sums read of ``Candidates`` besides the weights."""
    return (c.length, c.pi, c.pj, c.t, c.small_start, c.codes, c.index_of, c.row_cands, c.row_rank, c.starts,
            c.start_base, c.slot_of)


def log_z(cands: Candidates, scale: float) -> float:
    """log Z summed with partial sums scaled by ``exp(scale * d)`` (any scale that stays
    in range gives the same value)."""
    return float(_inside(*_shape(cands), *Weights.of(cands, scale))[3][-1] + scale * cands.length)


@numba.njit(cache=True, nogil=True)
def _inside(length, pi, pj, t, small_start, codes, index_of, row_cands, row_rank, starts, start_base, slot_of, s, eu,
            eh, ecm, eb, ebm, e_end, e_mismatch, e_interior, e_asymmetry, e_stack,
            e_small):  # pragma: no cover (compiled)
    """Inside sums, each over a span of d bases divided by ``exp(scale * d)``: ``v[c]``
    over what candidate c = (i, j) closes (c included); ``wm`` / ``m2`` [i, d] over
    multiloop content of i..i+d with at least one / two branches (banded as ``index_of``);
    ``log_zp[j]``: the log of the sum over exterior content of bases 0..j-1
    (``log_zp[0]`` = 0, ``log_zp[L]`` = log Z - scale * L); ``stems`` (laid out as
    ``starts``) each candidate's ``v * ebm``, its weight as a multiloop branch."""
    n_cands = len(pi)
    width = index_of.shape[1]
    v = np.zeros(n_cands)
    wm = np.zeros((length, width))
    m2 = np.zeros((length, width))
    stems = np.zeros(starts.shape)  # v * ebm of each branch, laid out as starts
    loop_inner = np.zeros(MAX_INNER, dtype=np.int64)
    loop_value = np.zeros(MAX_INNER)
    order = np.argsort(pj - pi, kind="mergesort")
    ptr = 0
    for d in range(1, width):
        while ptr < n_cands and pj[order[ptr]] - pi[order[ptr]] == d:
            c = order[ptr]
            ptr += 1
            i, j = pi[c], pj[c]
            total = eh[c] * s[d + 1]
            inner = index_of[i + 1, d - 2]
            if inner >= 0:
                total += v[inner] * e_stack[t[c], t[inner]] * s[2]
            for e in range(interior_loops(c, pi, pj, t, e_end, e_mismatch, e_interior, e_asymmetry, e_stack, e_small,
                                          small_start, codes, row_cands, row_rank, loop_inner, loop_value, True)):
                inner = loop_inner[e]
                total += v[inner] * loop_value[e] * s[d - (pj[inner] - pi[inner])]
            if d > 2:
                total += m2[i + 1, d - 2] * ecm[c] * s[2]
            v[c] = eu[c] * total
            stems[j, slot_of[c]] = v[c] * ebm[c]
        for i in range(0, length - d):
            j = i + d
            sum_m, sum_2 = wm[i, d - 1] * s[1], m2[i, d - 1] * s[1]
            for slot in range(first_start(start_base, j, i), starts.shape[1]):
                k = start_base[j, slot]
                if k == length:
                    break
                stem = stems[j, slot]
                if k > i:
                    sum_m += (s[k - i] + wm[i, k - 1 - i]) * stem
                    sum_2 += wm[i, k - 1 - i] * stem
                else:
                    sum_m += stem
            wm[i, d], m2[i, d] = sum_m, sum_2
    log_zp = np.zeros(length + 1)
    for j in range(length):
        total = s[1]
        for slot in range(starts.shape[1]):
            c = starts[j, slot]
            if c < 0:
                break
            total += np.exp(log_zp[pi[c]] - log_zp[j]) * v[c] * eb[c]
        log_zp[j + 1] = log_zp[j] + np.log(total)
    return v, wm, m2, log_zp, stems


@numba.njit(cache=True, nogil=True)
def _outside(length, pi, pj, t, small_start, codes, index_of, row_cands, row_rank, starts, start_base, slot_of, s, eu,
             eh, ecm, eb, ebm, e_end, e_mismatch, e_interior, e_asymmetry, e_stack, e_small, v, wm, m2, log_zp,
             stems, want_counts):  # pragma: no cover (compiled)
    """Outside sums of ``v`` divided by Z (``vo[c]``: over everything around candidate c,
    scaled by the bases outside it, so P(c) = v[c] vo[c]), spans from long to short, and,
    with ``want_counts``, the expected uses of each loop term: per candidate ``q`` rows
    [hairpin, closing a multiloop, branch of an exterior or multi loop, branch of a
    multiloop, extra ``end`` of an interior loop, loop mismatch seen from inside / from
    the loop, 1 x 1 mismatch seen from inside / from the loop], and the tables ``stack``
    (7, 7), ``interior`` [bulge or internal, size], ``asymmetry`` and ``small`` (flat)."""
    n_cands = len(pi)
    log_zs = np.zeros(length + 1)  # log of the sum over exterior content of bases i..L-1
    for i in range(length - 1, -1, -1):
        total = s[1]
        for r in range(row_cands.shape[1]):
            c = row_cands[i, r]
            if c < 0:
                break
            total += v[c] * eb[c] * np.exp(log_zs[pj[c] + 1] - log_zs[i + 1])
        log_zs[i] = log_zs[i + 1] + np.log(total)
    vo = np.zeros(n_cands)
    q = np.zeros((9, n_cands if want_counts else 0))
    for c in range(n_cands):
        vo[c] = np.exp(log_zp[pi[c]] + log_zs[pj[c] + 1] - log_zp[length]) * eb[c]
        if want_counts:
            q[2, c] = vo[c] * v[c]
    stack_count = np.zeros(e_stack.shape)
    interior_count = np.zeros(e_interior.shape)
    asym_count = np.zeros(len(e_asymmetry))
    small_count = np.zeros(len(e_small))
    width = index_of.shape[1]
    wmo = np.zeros((length, width))
    m2o = np.zeros((length, width))
    around = np.zeros(starts.shape)  # each branch's outside sum as a multiloop branch, over ebm
    loop_inner = np.zeros(MAX_INNER, dtype=np.int64)
    loop_value = np.zeros(MAX_INNER)
    order = np.argsort(pj - pi, kind="mergesort")
    ptr = n_cands - 1
    for d in range(width - 1, 0, -1):
        for i in range(0, length - d):  # multiloop content of span d: every use of it is longer
            j = i + d
            go_m, go_2 = wmo[i, d], m2o[i, d]
            if go_m == 0.0 and go_2 == 0.0:
                continue
            wmo[i, d - 1] += go_m * s[1]
            m2o[i, d - 1] += go_2 * s[1]
            for slot in range(first_start(start_base, j, i), starts.shape[1]):
                k = start_base[j, slot]
                if k == length:
                    break
                if k > i:
                    wmo[i, k - 1 - i] += (go_m + go_2) * stems[j, slot]
                    around[j, slot] += go_m * (s[k - i] + wm[i, k - 1 - i]) + go_2 * wm[i, k - 1 - i]
                else:
                    around[j, slot] += go_m
        while ptr >= 0 and pj[order[ptr]] - pi[order[ptr]] == d:  # candidates of span d: complete now
            c = order[ptr]
            ptr -= 1
            i, j = pi[c], pj[c]
            branch = around[j, slot_of[c]] * ebm[c]  # every multiloop using c as a branch is longer, or this span
            vo[c] += branch
            if want_counts:
                q[2, c] += branch * v[c]
                q[3, c] += branch * v[c]
            out = vo[c] * eu[c]
            if out == 0.0:
                continue
            if want_counts:
                q[0, c] = out * eh[c] * s[d + 1]
            inner = index_of[i + 1, d - 2]
            if inner >= 0:
                w = out * e_stack[t[c], t[inner]] * s[2]
                vo[inner] += w
                if want_counts:
                    stack_count[t[c], t[inner]] += w * v[inner]
            for e in range(interior_loops(c, pi, pj, t, e_end, e_mismatch, e_interior, e_asymmetry, e_stack, e_small,
                                          small_start, codes, row_cands, row_rank, loop_inner, loop_value, True)):
                inner = loop_inner[e]
                k, l = pi[inner], pj[inner]
                w = out * loop_value[e] * s[d - (l - k)]
                vo[inner] += w
                if want_counts:
                    _count_interior(w * v[inner], c, inner, i, j, k, l, t, codes, q, stack_count, interior_count,
                                    asym_count, small_count, small_start)
            if d > 2:
                w = out * ecm[c] * s[2]
                m2o[i + 1, d - 2] += w
                if want_counts:
                    q[1, c] = w * m2[i + 1, d - 2]
    return vo, q, stack_count, interior_count, asym_count, small_count


@numba.njit(cache=True, nogil=True)
def _count_interior(w, c, inner, i, j, k, l, t, codes, q, stack_count, interior_count, asym_count, small_count,
                    small_start):  # pragma: no cover (compiled)
    """Adds weight ``w`` to every term the interior loop (i, j) around (k, l) uses, as
    ``interior_loops`` scores it."""
    left, right = k - i - 1, j - l - 1
    if left == 0 or right == 0:
        interior_count[0, left + right] += w
        if left + right == 1:
            stack_count[t[c], t[inner]] += w
        else:
            q[4, c] += w
            q[4, inner] += w
        return
    interior_count[1, left + right] += w
    asym_count[abs(left - right)] += w
    q[4, c] += w
    q[4, inner] += w
    if left == 1 and right == 1:
        q[7, c] += w
        q[8, inner] += w
    elif left > 1 and right > 1:
        q[5, c] += w
        q[6, inner] += w
    if left + right <= 4:
        table, slot = small_loop_slot(codes, t[c], t[inner], i, j, k, l)
        if table >= 0:
            small_count[small_start[table] + slot] += w


def _loop_counts(seq: str, cands, out) -> dict[str, np.ndarray]:
    """The outside pass's per-candidate and per-table sums as expected counts of every
    ``LoopTerms`` entry (flat, ``TERM_SHAPES``), with the same index rules as
    ``assemble.candidates``."""
    _, q, stack_count, interior_count, asym_count, small_count = out
    pairs = np.stack([cands.pi, cands.pj], axis=1)
    near = pair_neighbours(seq, pairs)
    counts = {name: np.zeros(int(np.prod(shape))) for name, shape in TERM_SHAPES.items()}

    def add(name, index, weight):
        flat = np.ravel_multi_index(index, TERM_SHAPES[name]) if isinstance(index, tuple) else index
        counts[name] += np.bincount(flat, weights=weight, minlength=counts[name].size)

    n = cands.pj - cands.pi - 1
    hairpin, close, branch, multi_branch, ends = q[:5]
    add("hairpin", np.digitize(n, HAIRPIN_EDGES), hairpin)
    add("end", cands.t, hairpin + close + branch + ends)
    long = n > 3
    add("hairpin_mismatch", tuple(x[long] for x in near["inside"]), hairpin[long])
    codes = base_codes(seq)
    for size, name in ((3, "triloop"), (4, "tetraloop")):
        add(name, special_loop(codes, cands.pi[n == size], size), hairpin[n == size])
    add("dangle", near["closing"], close)
    add("dangle", near["outside"], branch)
    counts["multi"] = np.array([close.sum(), multi_branch.sum()])
    for name, rows in (("loop_mismatch", (5, 6)), ("mismatch_1x1", (7, 8))):
        add(name, near["inside"], q[rows[0]])
        add(name, near["from_loop"], q[rows[1]])
    counts["stack"] = stack_count.ravel()
    sizes = np.arange(MAX_LOOP + 1)
    for kind in (0, 1):
        add("interior", (np.full(len(sizes), kind), np.digitize(sizes, LOOP_EDGES)), interior_count[kind])
    add("asymmetry", np.minimum(np.arange(len(asym_count)), MAX_ASYMMETRY), asym_count)
    for k, name in enumerate(SMALL_LOOPS):
        counts[name] = small_count[cands.small_start[k]:cands.small_start[k + 1]]
    return counts
