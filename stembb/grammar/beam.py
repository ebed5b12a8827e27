"""The partition function of the loop grammar by beam search: pair probabilities of a
whole long RNA in time and memory linear in its length (LinearPartition's idea, on this
grammar's states).

``stembb.grammar.partition`` sums every nested structure over spans of growing length;
its multiloop tables cover every span, so a whole fold costs L^2 memory and L^3 time.
Here the same loop decomposition is summed left to right, one 3' position j at a time,
in logarithms, over states that each end at j (keyed by their 5' base):

- ``P``: the pair (i, j) and what it closes (``v`` of ``partition``), its pair score
  included; filled from the hairpins ``H`` (i pairs with j, nothing inside), the inner
  pairs of interior loops (pushed from ``P`` states up to ``MAX_LOOP`` bases before), and
  multiloops closed here (``M2`` at j - 1);
- ``M0`` / ``M1`` / ``M2``: an open multiloop whose closing pair starts at base p, with
  bases p + 1..j holding no branch yet / at least one / at least two. Each grows by an
  unpaired base per position, and by a branch when a ``P`` state ends at j;
- ``C``: the exterior sum over bases 0..j (no beam: one number per position).

At each position every kind of state keeps only its ``beam`` best, ranked as LinearPartition
ranks them: the state's inside sum times the exterior sum before its 5' base. A hairpin
state dropped from the beam ends that base's hairpins (``H`` moves from one partner of i
to the next). With a beam at least the sequence length nothing is dropped and the sums are
exactly ``partition.ensemble``'s. The outside pass runs the same transitions backwards over
the states kept, so a pair's probability is ``exp(inside + outside - log Z)``.

Keyed by the closing pair's base, the multiloop states need no limit on the unpaired bases
before a multiloop's first branch (LinearPartition's grammar allows 30): the beam alone
bounds the work, about ``L * beam * (2 * beam + 200)`` log-sums per pass.

Prediction only: the pair score is one number for every pair (a grammar model without S1,
as the shipped one is), and neither the structure of maximum score nor the loop-term counts
of training are computed here.
"""
from __future__ import annotations

import math

import numba
import numpy as np

from stembb.grammar.assemble import HAIRPIN_EDGES, MAX_LOOP, MIN_LOOP, PAIR_TYPE, interior_tables, small_loop_slot
from stembb.grammar.partition import Ensemble
from stembb.structure import CANONICAL_TABLE, base_codes

# Memory per state kept, measured (VmHWM, 2,000-8,000 nt, beam 100; docs/RESULTS.md): the
# states' arrays, inside and outside, and the hairpin lists.
BYTES_PER_STATE = 200
RING = MAX_LOOP + 2  # positions a P state pushes to ahead (interior loops), each with its own slot
NEG = -np.inf


def beam_ensemble(seq: str, terms: dict[str, np.ndarray], pair_score: float, beam: int,
                  max_span: int | None = None) -> Ensemble:
    """Pair probabilities and log Z of ``seq`` over the nested structures of allowed pairs
    (canonical, enclosing at least ``MIN_LOOP`` bases, at most ``max_span`` apart when given),
    each pair scored ``pair_score`` nats plus the loop ``terms`` (nats), keeping the
    ``beam`` best states of each kind per position (module docstring). ``pairs`` are those
    of the states kept, sorted; a pair dropped from the beam has probability 0."""
    if beam < 1:
        raise ValueError(f"beam must be at least 1, got {beam}")
    codes = base_codes(seq).astype(np.int64)
    length = len(codes)
    if length < MIN_LOOP + 2:
        return Ensemble(np.zeros((0, 2), dtype=np.int64), np.zeros(0), 0.0)
    tables = _tables(terms, length)
    next_partner = _next_partner(codes)
    fwd = _inside(codes, next_partner, float(pair_score), int(beam), int(max_span or 0), *tables)
    p_off, p_i, p_in, c_in = fwd[:4]
    p_out = _outside(codes, next_partner, float(pair_score), *fwd, *tables)
    log_z = float(c_in[length])
    j = np.repeat(np.arange(length), np.diff(p_off))
    probs = np.exp(np.minimum(p_in + p_out - log_z, 0.0))
    order = np.lexsort((j, p_i))
    return Ensemble(np.stack([p_i[order], j[order]], axis=1).astype(np.int64), probs[order], log_z)


def _next_partner(codes: np.ndarray) -> np.ndarray:
    """``(5, L + 1)``: ``[b, x]`` the first position at or after x whose base pairs with a
    base of code b (L where none does)."""
    length = len(codes)
    out = np.full((5, length + 1), length, dtype=np.int64)
    for b in range(5):
        hits = np.flatnonzero(CANONICAL_TABLE[b, codes])
        at = np.searchsorted(hits, np.arange(length + 1))
        out[b] = np.append(hits, length)[at]
    return out


def _tables(terms: dict[str, np.ndarray], length: int) -> tuple:
    """The loop terms as the compiled passes read them (sizes expanded to their buckets,
    as ``assemble.candidates`` does)."""
    interior, asymmetry, small, small_start = interior_tables(terms)
    return (terms["hairpin"][np.digitize(np.arange(length + 1), HAIRPIN_EDGES)].astype(np.float64),
            terms["end"].astype(np.float64), np.ascontiguousarray(terms["hairpin_mismatch"], dtype=np.float64),
            np.ascontiguousarray(terms["loop_mismatch"], dtype=np.float64),
            np.ascontiguousarray(terms["mismatch_1x1"], dtype=np.float64),
            np.ascontiguousarray(terms["dangle"], dtype=np.float64), terms["triloop"].astype(np.float64),
            terms["tetraloop"].astype(np.float64), terms["multi"].astype(np.float64), interior.astype(np.float64),
            asymmetry.astype(np.float64), np.ascontiguousarray(terms["stack"], dtype=np.float64),
            small.astype(np.float64), small_start.astype(np.int64), PAIR_TYPE)


@numba.njit(cache=True, nogil=True, inline="always")
def _lae(a, b):  # pragma: no cover (compiled)
    """log(exp(a) + exp(b))."""
    if a < b:
        a, b = b, a
    if b == NEG:
        return a
    return a + math.log1p(math.exp(b - a))


@numba.njit(cache=True, nogil=True, inline="always")
def _base(codes, x):  # pragma: no cover (compiled)
    return codes[x] if 0 <= x < len(codes) else 4


@numba.njit(cache=True, nogil=True, inline="always")
def _allowed(codes, i, j, span):  # pragma: no cover (compiled)
    """Whether (i, j) may pair: canonical (``next_partner`` lists only such bases), far
    enough apart for a hairpin, within ``span`` (0: any)."""
    return j - i > MIN_LOOP and (span == 0 or j - i <= span)


@numba.njit(cache=True, nogil=True, inline="always")
def _special_slot(codes, i, n):  # pragma: no cover (compiled)
    """``assemble.special_loop`` of one hairpin: its n + 2 bases from i in base 4."""
    slot = 0
    for k in range(n + 2):
        if codes[i + k] == 4:
            return 4 ** (n + 2)
        slot += codes[i + k] * 4 ** k
    return slot


@numba.njit(cache=True, nogil=True)
def _hairpin(codes, i, j, hairpin, end, hairpin_mismatch, triloop, tetraloop, pair_type):  # pragma: no cover
    """Score of (i, j) closing a hairpin (``assemble.candidates``' ``hairpin``)."""
    t = pair_type[codes[i], codes[j]]
    n = j - i - 1
    score = hairpin[n] + end[t]
    if n > 3:
        score += hairpin_mismatch[t, codes[i + 1], codes[j - 1]]
    if n == 3:
        score += triloop[_special_slot(codes, i, 3)]
    elif n == 4:
        score += tetraloop[_special_slot(codes, i, 4)]
    return score


@numba.njit(cache=True, nogil=True, inline="always")
def _branch(codes, i, j, end, dangle, pair_type):  # pragma: no cover (compiled)
    """Score of (i, j) as a branch of an exterior or multi loop, its dangles included."""
    t = pair_type[codes[i], codes[j]]
    return end[t] + dangle[t, _base(codes, i - 1), _base(codes, j + 1)]


@numba.njit(cache=True, nogil=True, inline="always")
def _closing(codes, i, j, end, dangle, multi, pair_type):  # pragma: no cover (compiled)
    """Score of (i, j) closing a multiloop, its inner dangles included."""
    t = pair_type[codes[i], codes[j]]
    return multi[0] + end[t] + dangle[pair_type[codes[j], codes[i]], codes[j - 1], codes[i + 1]]


@numba.njit(cache=True, nogil=True)
def _interior(codes, i, j, k, l, end, loop_mismatch, mismatch_1x1, interior, asymmetry, stack, small, small_start,
              pair_type):  # pragma: no cover (compiled)
    """Score of the loop that (i, j) closes around (k, l): a stack, a bulge or an internal
    loop, as ``assemble.interior_loops`` scores it."""
    t_out, t_in = pair_type[codes[i], codes[j]], pair_type[codes[k], codes[l]]
    left, right = k - i - 1, j - l - 1
    if left + right == 0:
        return stack[t_out, t_in]
    if left == 0 or right == 0:
        if left + right == 1:
            return interior[0, 1] + stack[t_out, t_in]
        return interior[0, left + right] + end[t_out] + end[t_in]
    score = interior[1, left + right] + asymmetry[abs(left - right)] + end[t_out] + end[t_in]
    t_back = pair_type[codes[l], codes[k]]
    if left == 1 and right == 1:
        score += mismatch_1x1[t_out, codes[i + 1], codes[j - 1]] + mismatch_1x1[t_back, codes[l + 1], codes[k - 1]]
    elif left > 1 and right > 1:
        score += loop_mismatch[t_out, codes[i + 1], codes[j - 1]] + loop_mismatch[t_back, codes[l + 1], codes[k - 1]]
    if left + right <= 4:
        table, slot = small_loop_slot(codes, t_out, t_in, i, j, k, l)
        if table >= 0:
            score += small[small_start[table] + slot]
    return score


@numba.njit(cache=True, nogil=True)
def _keep_best(starts, values, keys, n, beam, out_starts, out_values, at):  # pragma: no cover (compiled)
    """Writes the ``beam`` entries of largest ``keys`` among the first ``n`` (all when n <=
    beam), sorted by start, to ``out_*[at:]``; returns how many."""
    if n > beam:
        cut = np.partition(keys[:n].copy(), n - beam)[n - beam]
        m = 0
        for e in range(n):  # strictly above the cut first, then ties up to the beam
            if keys[e] > cut:
                starts[m], values[m], keys[m] = starts[e], values[e], keys[e]
                m += 1
        for e in range(n):
            if keys[e] == cut and m < beam:
                starts[m], values[m] = starts[e], values[e]
                m += 1
        n = m
    order = np.argsort(starts[:n])
    for e in range(n):
        out_starts[at + e] = starts[order[e]]
        out_values[at + e] = values[order[e]]
    return n


@numba.njit(cache=True, nogil=True)
def _inside(codes, next_partner, u, beam, span, hairpin, end, hairpin_mismatch, loop_mismatch, mismatch_1x1, dangle,
            triloop, tetraloop, multi, interior, asymmetry, stack, small, small_start,
            pair_type):  # pragma: no cover (compiled)
    """The inside sums (log) of the states kept, left to right. Returns, per kind (``P``,
    ``M1``, ``M2``, and ``M0`` without values, all 0), CSR arrays: ``off`` (L + 1,) where
    position j's states start, their 5' bases (``P``) or closing bases (``M*``), sorted, and
    their inside sums; and ``c`` (L + 1,): ``c[j]`` the log of the exterior sum over bases
    0..j-1 (``c[L]`` = log Z)."""
    length = len(codes)
    per = min(beam, length + 1)
    cap = length * per + 1
    p_off = np.zeros(length + 1, dtype=np.int64)
    p_i = np.zeros(cap, dtype=np.int32)
    p_in = np.zeros(cap)
    m_off = np.zeros((3, length + 1), dtype=np.int64)
    m_p = np.zeros((3, cap), dtype=np.int32)
    m_in = np.zeros((3, cap))
    c = np.full(length + 1, NEG)
    c[0] = 0.0
    pend = np.full((RING, length), NEG)  # the P sums of the positions ahead, by 5' base
    touched = np.zeros((RING, length), dtype=np.int32)
    n_touched = np.zeros(RING, dtype=np.int64)
    h_head = np.full(length + 1, -1, dtype=np.int64)  # hairpin states by 3' base: linked lists of 5' bases
    h_next = np.zeros(length * (per + 1) + 1, dtype=np.int64)
    h_i = np.zeros(length * (per + 1) + 1, dtype=np.int64)
    n_h = 0
    m_val = np.full((3, length), NEG)  # this position's M0, M1, M2 sums by closing base
    m_touched = np.zeros((3, length), dtype=np.int32)
    n_m = np.zeros(3, dtype=np.int64)
    starts = np.zeros(length + 1, dtype=np.int32)
    values = np.zeros(length + 1)
    keys = np.zeros(length + 1)
    h_kept = np.zeros(length + 1, dtype=np.int32)
    h_value = np.zeros(length + 1)
    for j in range(length):
        slot = j % RING
        q = next_partner[codes[j], min(j + MIN_LOOP + 1, length)]  # base j starts its hairpins
        if q < length and _allowed(codes, j, q, span):
            h_i[n_h], h_next[n_h], h_head[q] = j, h_head[q], n_h
            n_h += 1
        n = 0
        e = h_head[j]
        while e >= 0:
            i = h_i[e]
            starts[n], values[n] = i, _hairpin(codes, i, j, hairpin, end, hairpin_mismatch, triloop, tetraloop,
                                               pair_type)
            keys[n] = c[i] + values[n]
            n += 1
            e = h_next[e]
        n = _keep_best(starts, values, keys, n, beam, h_kept, h_value, 0)
        for e in range(n):
            i = h_kept[e]
            if pend[slot, i] == NEG:
                touched[slot, n_touched[slot]] = i
                n_touched[slot] += 1
            pend[slot, i] = _lae(pend[slot, i], h_value[e])
            q = next_partner[codes[i], j + 1]
            if q < length and _allowed(codes, i, q, span):
                h_i[n_h], h_next[n_h], h_head[q] = i, h_head[q], n_h
                n_h += 1
        if j > 0:
            for e in range(m_off[2, j - 1], m_off[2, j]):  # multiloops closed by (p, j)
                p = m_p[2, e]
                if _allowed(codes, p, j, span) and CANONICAL_TABLE[codes[p], codes[j]]:
                    if pend[slot, p] == NEG:
                        touched[slot, n_touched[slot]] = p
                        n_touched[slot] += 1
                    pend[slot, p] = _lae(pend[slot, p], m_in[2, e] + _closing(codes, p, j, end, dangle, multi,
                                                                              pair_type))
        n = 0
        for e in range(n_touched[slot]):
            i = touched[slot, e]
            starts[n], values[n] = i, u + pend[slot, i]
            keys[n] = c[i] + values[n]
            pend[slot, i] = NEG
            n += 1
        n_touched[slot] = 0
        n = _keep_best(starts, values, keys, n, beam, p_i, p_in, p_off[j])
        p_off[j + 1] = p_off[j] + n
        exterior = c[j]  # base j unpaired
        for e in range(p_off[j], p_off[j + 1]):
            k, v = p_i[e], p_in[e]
            branch = _branch(codes, k, j, end, dangle, pair_type)
            exterior = _lae(exterior, c[k] + v + branch)
            if k > 0:  # (k, j) as a multiloop's first branch, or one more
                stem = v + branch + multi[1]
                for kind in (0, 1):
                    for s in range(m_off[kind, k - 1], m_off[kind, k]):
                        p, w = m_p[kind, s], m_in[kind, s] + stem
                        for into in range(1, kind + 2):  # M0 -> M1; M1 -> M1 and M2
                            if m_val[into, p] == NEG:
                                m_touched[into, n_m[into]] = p
                                n_m[into] += 1
                            m_val[into, p] = _lae(m_val[into, p], w)
            for left in range(MAX_LOOP + 1):  # interior loops (p, q) around (k, j)
                p = k - 1 - left
                if p < 0:
                    break
                q = next_partner[codes[p], j + 1]
                while q < length and q <= j + 1 + MAX_LOOP - left:
                    if _allowed(codes, p, q, span):
                        target = q % RING
                        if pend[target, p] == NEG:
                            touched[target, n_touched[target]] = p
                            n_touched[target] += 1
                        pend[target, p] = _lae(pend[target, p], v + _interior(
                            codes, p, q, k, j, end, loop_mismatch, mismatch_1x1, interior, asymmetry, stack, small,
                            small_start, pair_type))
                    q = next_partner[codes[p], q + 1]
        c[j + 1] = exterior
        if codes[j] < 4:  # base j may close a multiloop: an open one starts here
            m_touched[0, n_m[0]] = j
            m_val[0, j] = 0.0
            n_m[0] += 1
        for kind in range(3):
            if j > 0:  # base j unpaired inside the open multiloops of j - 1
                for s in range(m_off[kind, j - 1], m_off[kind, j]):
                    p = m_p[kind, s]
                    if m_val[kind, p] == NEG:
                        m_touched[kind, n_m[kind]] = p
                        n_m[kind] += 1
                    m_val[kind, p] = _lae(m_val[kind, p], m_in[kind, s])
            n = 0
            for e in range(n_m[kind]):
                p = m_touched[kind, e]
                starts[n], values[n] = p, m_val[kind, p]
                keys[n] = c[p] + values[n]
                m_val[kind, p] = NEG
                n += 1
            n_m[kind] = 0
            n = _keep_best(starts, values, keys, n, beam, m_p[kind], m_in[kind], m_off[kind, j])
            m_off[kind, j + 1] = m_off[kind, j] + n
    return p_off, p_i[:p_off[length]], p_in[:p_off[length]], c, m_off, m_p, m_in


@numba.njit(cache=True, nogil=True)
def _outside(codes, next_partner, u, p_off, p_i, p_in, c, m_off, m_p, m_in, hairpin, end, hairpin_mismatch, loop_mismatch,
             mismatch_1x1, dangle, triloop, tetraloop, multi, interior, asymmetry, stack, small, small_start,
             pair_type):  # pragma: no cover (compiled)
    """The outside sums (log) of the ``P`` states kept: ``_inside``'s transitions run
    backwards, right to left, so that every use of a state is summed before it is read."""
    length = len(codes)
    p_out = np.full(len(p_i), NEG)
    m_out = np.full((3, m_p.shape[1]), NEG)
    co = np.full(length + 1, NEG)
    co[length] = 0.0
    p_at = np.full((RING, length), -1, dtype=np.int64)  # the P states of positions j..j + RING - 1, by 5' base
    m_at = np.full((3, length), -1, dtype=np.int64)  # this position's M1, M2 states by closing base
    for j in range(length - 1, -1, -1):
        slot = j % RING
        if j + RING < length:
            for e in range(p_off[j + RING], p_off[j + RING + 1]):
                p_at[slot, p_i[e]] = -1
        for e in range(p_off[j], p_off[j + 1]):
            p_at[slot, p_i[e]] = e
        for kind in (1, 2):
            for s in range(m_off[kind, j], m_off[kind, j + 1]):
                m_at[kind, m_p[kind, s]] = s
            if j > 0:  # base j unpaired in the open multiloops of j - 1
                for s in range(m_off[kind, j - 1], m_off[kind, j]):
                    t = m_at[kind, m_p[kind, s]]
                    if t >= 0:
                        m_out[kind, s] = _lae(m_out[kind, s], m_out[kind, t])
        for e in range(p_off[j], p_off[j + 1]):
            k, v = p_i[e], p_in[e]
            branch = _branch(codes, k, j, end, dangle, pair_type)
            out = co[j + 1] + c[k] + branch
            co[k] = _lae(co[k], co[j + 1] + v + branch)
            if k > 0:
                stem = branch + multi[1]
                for kind in (0, 1):
                    for s in range(m_off[kind, k - 1], m_off[kind, k]):
                        p = m_p[kind, s]
                        got = NEG  # the outside of what (k, j) joined this open multiloop into
                        for into in range(1, kind + 2):
                            t = m_at[into, p]
                            if t >= 0:
                                got = _lae(got, m_out[into, t])
                        if got > NEG:
                            out = _lae(out, got + stem + m_in[kind, s])
                            if kind == 1:
                                m_out[1, s] = _lae(m_out[1, s], got + stem + v)
            for left in range(MAX_LOOP + 1):
                p = k - 1 - left
                if p < 0:
                    break
                q = next_partner[codes[p], j + 1]
                while q < length and q <= j + 1 + MAX_LOOP - left:
                    t = p_at[q % RING, p]
                    if t >= 0:
                        out = _lae(out, p_out[t] + u + _interior(codes, p, q, k, j, end, loop_mismatch, mismatch_1x1,
                                                                 interior, asymmetry, stack, small, small_start,
                                                                 pair_type))
                    q = next_partner[codes[p], q + 1]
            p_out[e] = out
        if j > 0:
            for s in range(m_off[2, j - 1], m_off[2, j]):
                p = m_p[2, s]
                t = p_at[slot, p]
                if t >= 0:
                    m_out[2, s] = _lae(m_out[2, s], p_out[t] + u + _closing(codes, p, j, end, dangle, multi,
                                                                           pair_type))
        co[j] = _lae(co[j], co[j + 1])
        for kind in (1, 2):
            for s in range(m_off[kind, j], m_off[kind, j + 1]):
                m_at[kind, m_p[kind, s]] = -1
    return p_out
