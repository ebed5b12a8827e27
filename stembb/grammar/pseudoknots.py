"""A pseudoknot layer over a nested structure: stems that cross it, taken from the pair
probabilities of the grammar's (nested) ensemble, two-level decoding as IPknot's.

The nested ensemble still puts weight on a pseudoknot's second helix: it is the
alternative to the helix it crosses. So after the nested structure is decoded, pairs of
probability above ``cut`` whose two bases it leaves unpaired and that cross one of its
pairs are added, most probable first, each base at most once and the added pairs nested
among themselves (one more bracket level), and kept where they form stems of at least
``min_stem`` stacked pairs. Chosen on PDB TR1, the validation set (docs/RESULTS.md,
"Pseudoknot layer"): ``PSEUDOKNOT_CUT`` 0.01, ``PSEUDOKNOT_MIN_STEM`` 2.
"""
from __future__ import annotations

import numpy as np

from stembb.grammar.partition import Ensemble
from stembb.structure import is_nested, stems

PSEUDOKNOT_CUT = 0.01
PSEUDOKNOT_MIN_STEM = 2


def crossing_stems(nested: list[tuple[int, int]], ens: Ensemble, cut: float = PSEUDOKNOT_CUT,
                   min_stem: int = PSEUDOKNOT_MIN_STEM) -> list[tuple[int, int]]:
    """The pairs the layer adds to ``nested`` (sorted; none cross each other, each
    crosses a pair of ``nested``), from the candidates and probabilities of ``ens``."""
    if not nested or not len(ens.pairs):
        return []
    paired = np.zeros(int(max(ens.pairs.max(), max(j for _, j in nested))) + 1, dtype=bool)
    paired[np.asarray(nested).ravel()] = True
    i, j = ens.pairs[:, 0], ens.pairs[:, 1]
    keep = (ens.probs > cut) & ~paired[i] & ~paired[j]
    a, b = np.asarray(nested).T
    ci, cj = i[keep, None], j[keep, None]
    crosses = (((a < ci) & (ci < b) & (b < cj)) | ((ci < a) & (a < cj) & (cj < b))).any(axis=1)
    rows = np.flatnonzero(keep)[crosses]
    added: list = []
    used: set = set()
    for k in rows[np.argsort(-ens.probs[rows], kind="stable")]:
        p = (int(i[k]), int(j[k]))
        if p[0] not in used and p[1] not in used and is_nested(added + [p]):
            added.append(p)
            used.update(p)
    return sorted(p for stem in stems(added) if len(stem) >= min_stem for p in stem)
