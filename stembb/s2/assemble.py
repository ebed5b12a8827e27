"""Structure assembly with learned loop terms: the decoder the box transformer trains through.

A nested structure ``y`` made of candidate pairs scores

    S(y) = sum over pairs (i, j) of u_ij                      (pair score, from the network)
         + sum over stacked pairs of max(stack[t(i, j), t(i+1, j-1)], loop)   (pair types)
         + sum over hairpins of hairpin[bucket(unpaired bases)]
         + loop * (pairs closing any other loop: bulge, interior, multi)

where every term is learned (``LoopTerms``). ``assemble`` finds the best structure by
dynamic programming over spans, one anti-diagonal of the L x L table at a time:

    V[i, j]  = u_ij + max(hairpin, V[i+1, j-1] + stack, W1[i+1, j-1] + loop)
    W1[i, j] = max(W1[i+1, j], W1[i, j-1], V[i, j], max_k W1[i, k] + W1[k+1, j])

(``W1``: best non-empty structure of the span; the whole answer is empty when every
non-empty one scores below 0). Hairpins enclose at least ``MIN_LOOP`` unpaired bases.
Training uses ``structure_score`` (the same S(y) as a torch expression) in a margin loss
against the loss-augmented structure (``stembb.s2.engine.structured_hinge``).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from stembb.structure import base_codes

MIN_LOOP = 3
HAIRPIN_EDGES = np.array([4, 5, 6, 7, 9, 13, 21])  # 3 | 4 | 5 | 6 | 7-8 | 9-12 | 13-20 | 21+ unpaired bases
N_HAIRPIN = len(HAIRPIN_EDGES) + 1
N_PAIR_TYPES = 7  # AU UA GC CG GU UG, and 6 = anything else
PAIR_TYPE = np.full((5, 5), N_PAIR_TYPES - 1, dtype=np.int64)
for _k, (_a, _b) in enumerate(("AU", "UA", "GC", "CG", "GU", "UG")):
    PAIR_TYPE["ACGU".index(_a), "ACGU".index(_b)] = _k


def pair_types(seq: str) -> np.ndarray:
    """``(L, L)`` pair type of bases i and j (``PAIR_TYPE``)."""
    c = base_codes(seq)
    return PAIR_TYPE[c[:, None], c[None, :]]


class LoopTerms(nn.Module):
    """The learned loop terms of ``S(y)``, started near a plain pair count."""

    def __init__(self):
        super().__init__()
        self.stack = nn.Parameter(torch.zeros(N_PAIR_TYPES, N_PAIR_TYPES))
        self.hairpin = nn.Parameter(torch.zeros(N_HAIRPIN))
        self.loop = nn.Parameter(torch.zeros(()))

    def numpy(self) -> dict[str, np.ndarray]:
        return {k: v.detach().cpu().double().numpy() for k, v in (("stack", self.stack), ("hairpin", self.hairpin),
                                                                  ("loop", self.loop))}


def assemble(seq: str, pairs: np.ndarray, unary: np.ndarray, terms: dict[str, np.ndarray]) -> list[tuple[int, int]]:
    """The candidate structure of maximum ``S(y)``: ``pairs`` (P, 2) candidates with pair
    scores ``unary`` (P,); ``terms`` from ``LoopTerms.numpy()``. Sorted list of pairs."""
    length = len(seq)
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    if length < MIN_LOOP + 2 or not len(pairs):
        return []
    u = np.full((length, length), -np.inf)
    u[pairs[:, 0], pairs[:, 1]] = unary
    types = pair_types(seq)
    stack, hairpin, loop = terms["stack"], terms["hairpin"], float(terms["loop"])
    v = np.full((length + 1, length + 1), -np.inf)
    w1 = np.full((length + 1, length + 1), -np.inf)
    inner_choice = np.zeros((length, length), dtype=np.int8)  # 0 hairpin, 1 stacked, 2 other loop
    for d in range(1, length):
        i = np.arange(length - d)
        j = i + d
        if d > MIN_LOOP:
            options = np.stack([np.full(len(i), hairpin[np.digitize(d - 1, HAIRPIN_EDGES)]),
                                v[i + 1, j - 1] + stack[types[i, j], types[i + 1, j - 1]],
                                w1[i + 1, j - 1] + loop])
            inner_choice[i, j] = options.argmax(axis=0)
            v[i, j] = u[i, j] + options.max(axis=0)
        value = np.maximum(np.maximum(w1[i + 1, j], w1[i, j - 1]), v[i, j])
        ks = i[:, None] + np.arange(d)[None, :]
        w1[i, j] = np.maximum(value, (w1[i[:, None], ks] + w1[ks + 1, j[:, None]]).max(axis=1))
    if not w1[0, length - 1] > 0:
        return []
    out: list[tuple[int, int]] = []
    todo = [("W", 0, length - 1)]
    while todo:  # every span visited holds a non-empty structure (a finite w1 or v)
        table, i, j = todo.pop()
        if table == "V":
            out.append((i, j))
            choice = inner_choice[i, j]
            if choice:
                todo.append(("V" if choice == 1 else "W", i + 1, j - 1))
            continue
        best = w1[i, j]
        if best == w1[i + 1, j]:
            todo.append(("W", i + 1, j))
        elif best == w1[i, j - 1]:
            todo.append(("W", i, j - 1))
        elif best == v[i, j]:
            todo.append(("V", i, j))
        else:
            ks = np.arange(i, j)
            k = int(ks[np.argmax(w1[i, ks] + w1[ks + 1, j])])
            todo += [("W", i, k), ("W", k + 1, j)]
    return sorted(out)


def loop_features(seq: str, structure: list[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """What ``S(y)`` counts in a nested structure: the stacked type pairs ``(n, 2)``, the
    hairpin buckets ``(m,)``, and the number of pairs closing other loops; plus the
    structure's pairs as an ``(P, 2)`` array."""
    pairs = np.asarray(sorted(structure), dtype=np.int64).reshape(-1, 2)
    if not len(pairs):
        return pairs, np.zeros((0, 2), np.int64), np.zeros(0, np.int64), 0
    paired = np.zeros(len(seq) + 1, dtype=np.int64)
    paired[pairs[:, 0]] = paired[pairs[:, 1]] = 1
    before = np.concatenate([[0], np.cumsum(paired)])
    i, j = pairs[:, 0], pairs[:, 1]
    empty = before[j] - before[i + 1] == 0
    present = set(map(tuple, pairs.tolist()))
    stacked = np.array([(a + 1, b - 1) in present for a, b in pairs.tolist()]) & ~empty
    types = pair_types(seq)
    stacks = np.stack([types[i[stacked], j[stacked]], types[i[stacked] + 1, j[stacked] - 1]], axis=1)
    hairpins = np.digitize(j[empty] - i[empty] - 1, HAIRPIN_EDGES)
    return pairs, stacks, hairpins, int((~empty & ~stacked).sum())


def structure_score(seq: str, structure, pair_index: dict, unary: torch.Tensor, terms: LoopTerms) -> torch.Tensor:
    """``S(y)`` of a nested candidate structure as a torch scalar (differentiable in the
    pair scores ``unary`` (P,) and in ``terms``); ``pair_index`` maps a pair to its row."""
    pairs, stacks, hairpins, n_loops = loop_features(seq, structure)
    rows = torch.as_tensor([pair_index[p] for p in map(tuple, pairs.tolist())], dtype=torch.long,
                           device=unary.device)
    score = unary[rows].sum() + terms.loop * n_loops
    device = terms.stack.device
    if len(stacks):
        stack = terms.stack[torch.as_tensor(stacks[:, 0], device=device), torch.as_tensor(stacks[:, 1], device=device)]
        # the DP may also reach a stacked pair through its 'other loop' branch: it scores the better
        score = score + torch.maximum(stack, terms.loop).sum()
    if len(hairpins):
        score = score + terms.hairpin[torch.as_tensor(hairpins, device=device)].sum()
    return score
