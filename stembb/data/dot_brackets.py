"""Many dot-brackets of one sequence -> ``one_idx`` and local-structure boxes, compiled.

The generators turn every ViennaRNA structure (MFE and each sample: nested, ``(``, ``)``
and ``.`` only) into its ``one_idx`` and ``bounding_boxes``. Done one structure at a
time in Python (``pairs_from_db`` + ``local_structure_boxes``) that cost about a quarter
of ViennaRNA's own folding time; here one compiled pass reads all structures of a
segment as a ``(n, L)`` byte array and returns flat arrays, and Python only builds the
output objects. The results are those of ``stembb.structure`` exactly (tested).
"""
from __future__ import annotations

from typing import Sequence

import numba
import numpy as np

from stembb.structure import BULGE, HAIRPIN, INTERNAL_LOOP, STEM, Box, StructureError

LOOP_KINDS = (HAIRPIN, BULGE, INTERNAL_LOOP)  # codes 0, 1, 2 of the compiled pass
_OPEN, _CLOSE, _DOT = ord("("), ord(")"), ord(".")
_new_tuple = tuple.__new__


@numba.njit(cache=True, nogil=True)
def _scan(chars):
    """``chars`` (n, L) uint8 -> pairs (p, 2) rows (i, j), i < j, stems (m, 3) rows (x0,
    y0, w), loops (k, 5) rows (kind code, x0, y0, wx, wy), each grouped by structure in
    order, with the (3, n + 1) row offsets of every structure's group in the three, and
    an error code per structure (0 fine, 1 unmatched bracket, 2 other character)."""
    n, length = chars.shape
    p = np.empty(length, dtype=np.int64)  # partner of each base of the structure at hand, -1 unpaired
    errors = np.zeros(n, dtype=np.int64)
    pairs = np.empty((n * (length // 2) + 1, 2), dtype=np.int64)
    stems = np.empty((n * (length // 2) + 1, 3), dtype=np.int64)
    loops = np.empty((n * (length // 2) + 1, 5), dtype=np.int64)
    bounds = np.zeros((3, n + 1), dtype=np.int64)
    n_pairs = n_stems = n_loops = 0
    stack = np.empty(length, dtype=np.int64)
    for s in range(n):
        p[:] = -1
        depth = 0
        for pos in range(length):
            c = chars[s, pos]
            if c == _OPEN:
                stack[depth] = pos
                depth += 1
            elif c == _CLOSE:
                if depth == 0:
                    errors[s] = 1
                    break
                depth -= 1
                p[stack[depth]] = pos
                p[pos] = stack[depth]
            elif c != _DOT:
                errors[s] = 2
                break
        if depth and not errors[s]:
            errors[s] = 1
        if errors[s]:
            bounds[0, s + 1], bounds[1, s + 1], bounds[2, s + 1] = n_pairs, n_stems, n_loops
            continue
        for a in range(length):  # pairs (a, b) in order of their 5' base, as local_structure_boxes
            b = p[a]
            if b <= a:
                continue
            pairs[n_pairs, 0], pairs[n_pairs, 1] = a, b
            n_pairs += 1
            if a == 0 or b == length - 1 or p[a - 1] != b + 1:  # outermost pair of its stem
                i, j = a, b
                while j - i > 2 and p[i + 1] == j - 1:
                    i, j = i + 1, j - 1
                w = i - a + 1
                stems[n_stems, 0], stems[n_stems, 1], stems[n_stems, 2] = a, b - w + 1, w
                n_stems += 1
            if b - a > 2 and p[a + 1] == b - 1:
                continue
            k, n_children, c0, d0 = a + 1, 0, -1, -1
            while k < b:
                q = p[k]
                if q < 0:
                    k += 1
                else:
                    n_children += 1
                    if n_children == 1:
                        c0, d0 = k, q
                    k = q + 1
            if n_children == 0:
                if b - a < 2:  # neighbouring bases enclose no hairpin
                    continue
                row = (0, a, a, b - a + 1, b - a + 1)
            elif n_children == 1:
                row = (1 if c0 == a + 1 or d0 == b - 1 else 2, a, d0, c0 - a + 1, b - d0 + 1)
            else:
                continue
            for col in range(5):
                loops[n_loops, col] = row[col]
            n_loops += 1
        bounds[0, s + 1], bounds[1, s + 1], bounds[2, s + 1] = n_pairs, n_stems, n_loops
    return pairs[:n_pairs], stems[:n_stems], loops[:n_loops], bounds, errors


def structure_columns_of(dbs: Sequence[str]) -> list[tuple[tuple[list[int], list[int]], list[Box]]]:
    """``(one_idx, boxes)`` of each dot-bracket of one sequence (all the same length):
    ``one_idx_from_pairs(pairs_from_db(db))`` and ``local_structure_boxes`` of it.
    A bracket that does not match, or a character other than ``( ) .``, is a
    StructureError naming the structure."""
    if not dbs:
        return []
    if any(len(db) != len(dbs[0]) for db in dbs):
        raise StructureError(f"structures of one sequence differ in length: {sorted({len(db) for db in dbs})}")
    chars = np.frombuffer("".join(dbs).encode("ascii"), dtype=np.uint8).reshape(len(dbs), -1)
    pair_rows, stem_rows, loop_rows, bounds, errors = _scan(chars)
    if errors.any():
        bad = int(np.flatnonzero(errors)[0])
        why = "an unmatched bracket" if errors[bad] == 1 else "a character other than ( ) ."
        raise StructureError(f"structure {bad} ({dbs[bad]!r}) has {why}")
    pair_bounds, stem_bounds, loop_bounds = bounds.tolist()
    ii, jj = pair_rows.T.tolist()
    # tuple.__new__: the namedtuple's own constructor runs a Python frame per box
    stems = [_new_tuple(Box, ((x0, y0), (w, w), STEM)) for x0, y0, w in stem_rows.tolist()]
    loops = [_new_tuple(Box, ((x0, y0), (wx, wy), LOOP_KINDS[kind])) for kind, x0, y0, wx, wy in loop_rows.tolist()]
    return [((ii[pair_bounds[s]:pair_bounds[s + 1]], jj[pair_bounds[s]:pair_bounds[s + 1]]),
             stems[stem_bounds[s]:stem_bounds[s + 1]] + loops[loop_bounds[s]:loop_bounds[s + 1]])
            for s in range(len(dbs))]
