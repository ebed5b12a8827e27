"""Secondary structures as base pairs, dot-bracket strings and local-structure boxes.

Conventions (docs/DESIGN.md, "Structures and boxes"):

* A structure is a list of 0-based pairs ``(i, j)`` with ``i < j``; every base is in at
  most one pair. On disk (column ``one_idx``) it is the pair of lists ``([i...], [j...])``.
* A box is ``((x0, y0), (wx, wy), kind)``: top-left corner and size on the L x L map,
  row = 5' base, column = 3' base.
* A stem of ``w`` stacked pairs ``(x0, y0+w-1) ... (x0+w-1, y0)`` has box
  ``((x0, y0), (w, w), 'stem')``; its reference corner is the outermost pair
  ``(x0, y0+w-1)``.
"""
from __future__ import annotations

from typing import Iterable, NamedTuple

import numpy as np

STEM = "stem"
HAIRPIN = "hairpin_loop"
BULGE = "bulge"
INTERNAL_LOOP = "internal_loop"
PSEUDOKNOT = "pseudo_knot"
KINDS = (STEM, HAIRPIN, BULGE, INTERNAL_LOOP, PSEUDOKNOT)
# Older pickles carry this misspelling; readers map it to PSEUDOKNOT.
LEGACY_KIND_ALIASES = {"pesudo_knot": PSEUDOKNOT}

BRACKETS = ("()", "[]", "{}", "<>")
_PLAIN_DB = str.maketrans("", "", "().")
CANONICAL_PAIRS = frozenset({"AU", "UA", "GC", "CG", "GU", "UG"})


class StructureError(ValueError):
    """A structure that is not a valid set of base pairs."""


class Box(NamedTuple):
    """A local-structure box: top-left corner ``(x0, y0)``, size ``(wx, wy)``, kind."""

    corner: tuple
    size: tuple
    kind: str


def validate_pairs(pairs: Iterable[tuple[int, int]], length: int) -> list[tuple[int, int]]:
    """Return ``pairs`` sorted, as python ints, after checking they form a structure.

    Raises StructureError for ``i >= j``, an index outside ``[0, length)``, or a base in
    two pairs.
    """
    out = sorted((int(i), int(j)) for i, j in pairs)
    seen: set[int] = set()
    for i, j in out:
        if i >= j:
            raise StructureError(f"pair ({i}, {j}) has i >= j")
        if i < 0 or j >= length:
            raise StructureError(f"pair ({i}, {j}) is outside a sequence of length {length}")
        for base in (i, j):
            if base in seen:
                raise StructureError(f"base {base} is in two pairs")
            seen.add(base)
    return out


def pairs_from_one_idx(one_idx) -> list[tuple[int, int]]:
    """``([i...], [j...])`` (the on-disk format) -> sorted list of pairs."""
    left, right = one_idx
    if len(left) != len(right):
        raise StructureError(f"one_idx lists differ in length: {len(left)} vs {len(right)}")
    return sorted((int(i), int(j)) for i, j in zip(left, right))


def one_idx_from_pairs(pairs: Iterable[tuple[int, int]]) -> tuple[list[int], list[int]]:
    """Sorted pairs -> ``([i...], [j...])``."""
    pairs = sorted(pairs)
    return [int(i) for i, _ in pairs], [int(j) for _, j in pairs]


def pairs_from_db(db: str) -> list[tuple[int, int]]:
    """Dot-bracket (``()``, ``[]``, ``{}``, ``<>``, letters ``Aa`` for deeper pseudoknot
    levels; ``.`` or ``-`` unpaired) -> pairs. Positions in errors are 1-based."""
    if not db.translate(_PLAIN_DB):  # only "(", ")" and ".": ViennaRNA's output, the hot path
        stack, pairs = [], []
        for pos, ch in enumerate(db):
            if ch == "(":
                stack.append(pos)
            elif ch == ")":
                if not stack:
                    raise StructureError(f"unmatched ')' at position {pos + 1}")
                pairs.append((stack.pop(), pos))
        if stack:
            raise StructureError(f"unmatched '(' at position {stack[-1] + 1}")
        pairs.sort()
        return pairs
    return _pairs_from_brackets(db, ".-,:_")


def _pairs_from_brackets(text: str, unpaired: str) -> list[tuple[int, int]]:
    """Pairs of a bracket string: ``()``, ``[]``, ``{}``, ``<>`` pair by their own stacks,
    an upper-case letter with the next matching lower-case one (``Aa``); ``unpaired``
    characters are unpaired."""
    openers = {b[0]: b[1] for b in BRACKETS}
    closers = {b[1]: b[0] for b in BRACKETS}
    stacks: dict[str, list[int]] = {}
    pairs = []
    for pos, ch in enumerate(text):
        if ch in openers or (ch.isalpha() and ch.isupper()):
            stacks.setdefault(ch, []).append(pos)
        elif ch in closers or (ch.isalpha() and ch.islower()):
            stack = stacks.get(closers.get(ch, ch.upper()))
            if not stack:
                raise StructureError(f"unmatched {ch!r} at position {pos + 1}")
            pairs.append((stack.pop(), pos))
        elif ch not in unpaired:
            raise StructureError(f"unexpected character {ch!r} at position {pos + 1}")
    for o, stack in stacks.items():
        if stack:
            raise StructureError(f"unmatched {o!r} at position {stack[-1] + 1}")
    return sorted(pairs)


WUSS_UNPAIRED = frozenset(".,:_-~")


def pairs_from_wuss(ss: str) -> list[tuple[int, int]]:
    """WUSS (Rfam/Infernal consensus structures) -> pairs, pseudoknots included.

    ``<>``, ``()``, ``[]``, ``{}`` pair by their own stacks; an upper-case letter pairs with
    the next matching lower-case one (``Aa``: pseudoknot); ``. , : _ - ~`` are unpaired.
    """
    return _pairs_from_brackets(ss, WUSS_UNPAIRED)


def _crosses(a: tuple[int, int], b: tuple[int, int]) -> bool:
    return a[0] < b[0] < a[1] < b[1] or b[0] < a[0] < b[1] < a[1]


def is_nested(pairs: Iterable[tuple[int, int]]) -> bool:
    """Whether no two pairs cross (one pass over the pairs sorted by 5' base)."""
    open_ends: list[int] = []  # 3' ends of the pairs enclosing the current one
    for i, j in sorted(pairs):
        while open_ends and open_ends[-1] < i:
            open_ends.pop()
        if open_ends and j > open_ends[-1]:
            return False
        open_ends.append(j)
    return True


def crossing_pairs(pairs: Iterable[tuple[int, int]]) -> set[tuple[int, int]]:
    """The pairs that cross at least one other pair."""
    pairs = list(pairs)
    if is_nested(pairs):
        return set()
    # every pair against every other at once: scoring reads this once per record and predictor
    a = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    i, j = a[:, 0, None], a[:, 1, None]
    crosses = ((i < a[:, 0]) & (a[:, 0] < j) & (j < a[:, 1])) | ((a[:, 0] < i) & (i < a[:, 1]) & (a[:, 1] < j))
    return {(int(x), int(y)) for x, y in a[crosses.any(axis=1)]}


def db_from_pairs(pairs: Iterable[tuple[int, int]], length: int) -> str:
    """Pairs -> dot-bracket; crossing pairs get ``[]``, then ``{}``, then ``<>``.

    Each pair takes the first bracket type none of whose pairs it crosses (pairs are
    visited by their 5' base), the usual greedy page assignment.
    """
    pairs = validate_pairs(pairs, length)
    pages: list[list[tuple[int, int]]] = [[] for _ in BRACKETS]
    chars = ["."] * length
    for p in pairs:
        for page, (o, c) in zip(pages, BRACKETS):
            if not any(_crosses(p, q) for q in page):
                page.append(p)
                chars[p[0]], chars[p[1]] = o, c
                break
        else:
            raise StructureError(f"pair {p} needs more than {len(BRACKETS)} bracket types")
    return "".join(chars)


def stems(pairs: Iterable[tuple[int, int]]) -> list[list[tuple[int, int]]]:
    """Maximal runs of stacked pairs, outermost pair first, sorted by outermost pair."""
    partner = dict(pairs)
    runs = []
    for i in sorted(partner):
        j = partner[i]
        if partner.get(i - 1) == j + 1:
            continue  # not the outermost pair of its stem
        run = [(i, j)]
        while j - i > 2 and partner.get(i + 1) == j - 1:
            i, j = i + 1, j - 1
            run.append((i, j))
        runs.append(run)
    return runs


def stem_box(stem: list[tuple[int, int]]) -> Box:
    """Box of one stem given outermost pair first."""
    w = len(stem)
    x0, top = stem[0]
    return Box((x0, top - w + 1), (w, w), STEM)


def stem_boxes(pairs: Iterable[tuple[int, int]]) -> list[Box]:
    """Boxes of all stems of a structure."""
    return [stem_box(s) for s in stems(pairs)]


def loop_boxes(pairs: Iterable[tuple[int, int]]) -> list[Box]:
    """Hairpin, bulge and internal-loop boxes, also where a closing pair crosses others.

    Stems are taken in order of their 5' end. The innermost pair (a, b) of a stem closes a
    hairpin ``((a, a), (b-a+1, b-a+1))`` when at least one base lies between a and b and
    every one is unpaired (a pair of neighbouring bases encloses no loop); if
    the next stem's outermost pair (c, d) lies inside, a < c < d < b, with every base
    between a and c and between d and b unpaired, they close a bulge / internal loop
    ``((a, d), (c-a+1, b-d+1))``. Anything else (multiloops) has no box.
    """
    pairs = sorted(pairs)
    if not pairs:
        return []
    paired = np.zeros(max(j for _, j in pairs) + 2, dtype=np.int64)
    for i, j in pairs:
        paired[i] = paired[j] = 1
    before = np.concatenate([[0], np.cumsum(paired)])  # before[k]: paired bases among 0..k-1

    def unpaired_between(lo: int, hi: int) -> bool:
        return before[hi] - before[lo + 1] == 0  # bases lo+1 .. hi-1

    runs = stems(pairs)
    boxes = []
    for k, run in enumerate(runs):
        a, b = run[-1]
        if unpaired_between(a, b):
            if b - a > 1:
                boxes.append(Box((a, a), (b - a + 1, b - a + 1), HAIRPIN))
        elif k + 1 < len(runs):
            c, d = runs[k + 1][0]
            if a < c and d < b and unpaired_between(a, c) and unpaired_between(d, b):
                kind = BULGE if c == a + 1 or d == b - 1 else INTERNAL_LOOP
                boxes.append(Box((a, d), (c - a + 1, b - d + 1), kind))
    return boxes


def pseudoknot_boxes(pairs: Iterable[tuple[int, int]], runs: list | None = None) -> list[Box]:
    """One box per two consecutive stems (by 5' end) that cross, spanning both.

    ``runs``: the structure's ``stems`` when the caller already has them.
    """
    runs = stems(pairs) if runs is None else runs
    boxes = []
    for s, t in zip(runs, runs[1:]):
        if _crosses(s[0], t[0]):
            lo = min(s[0][0], t[0][0])
            hi = max(s[0][1], t[0][1])
            boxes.append(Box((lo, lo), (hi - lo + 1, hi - lo + 1), PSEUDOKNOT))
    return boxes


def local_structure_boxes(pairs: Iterable[tuple[int, int]]) -> list[Box]:
    """All boxes of a structure: stems, loops, pseudoknots (``stem_boxes + loop_boxes +
    pseudoknot_boxes``). The generators' hot path, many nested structures at once, is the
    compiled ``stembb.data.dot_brackets.structure_columns_of`` (tested equal to this)."""
    pairs = sorted(pairs)
    runs = stems(pairs)
    return [stem_box(r) for r in runs] + loop_boxes(pairs) + pseudoknot_boxes(pairs, runs)


def normalize_box(box) -> Box:
    """Box from any nested sequence form, legacy kind spellings mapped."""
    (x0, y0), (wx, wy), kind = box
    kind = LEGACY_KIND_ALIASES.get(kind, kind)
    if kind not in KINDS:
        raise StructureError(f"unknown box kind {kind!r}")
    return Box((int(x0), int(y0)), (int(wx), int(wy)), kind)


def normalize_seq(seq: str) -> str:
    """Upper case, T read as U: what ViennaRNA and the pairing rules see."""
    return seq.upper().replace("T", "U")


def is_canonical(seq: str, i: int, j: int) -> bool:
    """Whether bases i and j of ``seq`` (DNA or RNA letters) can form a canonical pair."""
    return normalize_seq(seq[i] + seq[j]) in CANONICAL_PAIRS


_CODE = np.full(256, 4, dtype=np.int64)  # A C G U -> 0..3, anything else -> 4
for _k, _letters in enumerate(("Aa", "Cc", "Gg", "UuTt")):
    for _ch in _letters:
        _CODE[ord(_ch)] = _k
CANONICAL_TABLE = np.zeros((5, 5), dtype=bool)
for _a, _b in CANONICAL_PAIRS:
    CANONICAL_TABLE["ACGU".index(_a), "ACGU".index(_b)] = True


def base_codes(seq: str) -> np.ndarray:
    """``(L,)`` codes 0..3 for A, C, G, U/T (either case), 4 for anything else."""
    return _CODE[np.frombuffer(seq.encode(), dtype=np.uint8)]


def canonical_pair_matrix(seq: str) -> np.ndarray:
    """``(L, L)`` bool: entry (i, j) true when bases i and j can pair canonically."""
    c = base_codes(seq)
    return CANONICAL_TABLE[c[:, None], c[None, :]]
