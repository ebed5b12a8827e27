"""Reference structures made trainable: the part of a real structure the nested grammar
can produce (``trainable_reference``) and the domains a long one is cropped into for
training (``domains``)."""
from __future__ import annotations

from collections import Counter

from stembb.grammar.assemble import MAX_LOOP, MIN_LOOP
from stembb.structure import canonical_pair_matrix, is_nested, stems

PRODUCIBLE_DROPS = ("non-canonical pairs dropped", "pairs closing a hairpin under 3 bases dropped",
                    "crossing pairs dropped")


def trainable_reference(seq: str, pairs, max_loop: int = MAX_LOOP,
                        counts: Counter | None = None) -> list[tuple[int, int]] | None:
    """The part of a reference structure the grammar can produce: its canonical pairs
    (a letter outside ACGU pairs with nothing) enclosing at least ``MIN_LOOP`` bases,
    nested (stems kept longest first, a stem crossing a kept pair dropped); ``None`` when
    two consecutive pairs enclose an interior loop of more than ``max_loop`` bases, which
    no structure of the grammar has. ``counts`` adds the pairs dropped, by reason
    (``PRODUCIBLE_DROPS``)."""
    counts = Counter() if counts is None else counts
    ok = canonical_pair_matrix(seq)
    canonical = [(i, j) for i, j in pairs if ok[i, j]]
    counts[PRODUCIBLE_DROPS[0]] += len(pairs) - len(canonical)
    pairs = [(i, j) for i, j in canonical if j - i > MIN_LOOP]
    counts[PRODUCIBLE_DROPS[1]] += len(canonical) - len(pairs)
    if not is_nested(pairs):
        kept: list = []
        for stem in sorted(stems(pairs), key=len, reverse=True):
            if is_nested(kept + stem):
                kept += stem
        counts[PRODUCIBLE_DROPS[2]] += len(pairs) - len(kept)
        pairs = kept
    pairs = sorted(pairs)
    return None if _longest_interior(pairs) > max_loop else pairs


def domains(pairs: list[tuple[int, int]], length: int, crop: int,
            min_length: int = 2 * MIN_LOOP + 4) -> list[tuple[int, int]]:
    """Windows ``[i, j]`` (0-based, inclusive) of a nested structure on ``length`` bases
    for training on at most ``crop`` bases each: the whole sequence when it fits, else
    its largest domains that do, each a pair (i, j) with j - i < ``crop`` not enclosed by
    another such pair. A domain is a complete substructure (no pair leaves it), unlike a
    random window, whose cut pairs would teach their bases to stay unpaired; domains
    shorter than ``min_length`` are left out."""
    if length <= crop:
        return [(0, length - 1)]
    windows, end = [], -1
    for i, j in sorted(pairs):
        if i > end and j - i < crop:
            if j - i + 1 >= min_length:
                windows.append((i, j))
            end = j
    return windows


def _longest_interior(pairs: list[tuple[int, int]]) -> int:
    """The most unpaired bases of any interior loop (one pair directly inside another)
    of a nested structure, sorted by 5' base."""
    children: dict = {}
    open_pairs: list = []
    for i, j in pairs:
        while open_pairs and open_pairs[-1][1] < i:
            open_pairs.pop()
        if open_pairs:
            children.setdefault(open_pairs[-1], []).append((i, j))
        open_pairs.append((i, j))
    return max(((k - i - 1) + (j - l - 1) for (i, j), inside in children.items() if len(inside) == 1
                for k, l in inside), default=0)
