"""S2 as a probabilistic model: the loop grammar over every canonical pair, S1 as evidence.

``GrammarFold`` owns the loop terms (``LoopTerms``, in nats: a structure ``y`` has
probability ``exp(S(y)) / Z``) and an optional linear evidence term: every allowed pair
(i, j) (canonical, at least ``MIN_LOOP`` bases apart, at most ``max_span`` apart when
set) scores

    u_ij = pair_bias + w . f_ij

where ``f_ij`` (``EVIDENCE``) are read from S1's maps at that pixel. With ``w`` = 0 the
model is the grammar alone and needs no S1; S1 is worth exactly what ``w`` adds.

Training maximises the conditional log-likelihood of reference structures,
``S(ref) - log Z``, whose gradient is observed minus expected counts of each term
(``stembb.grammar.partition``), plus an L2 pull of the loop terms toward their starting point
(the fit to ViennaRNA's energies, divided by ``KT``), so the model learns from real
structures without forgetting its physics.

Decoding (``decode``) reads the pair probabilities: ``mea`` (maximum expected accuracy,
a pair gains ``(gamma + 1) p - 1``), ``threshold`` (pairs above a cut that are the most
probable partner of both bases), or ``max`` (the structure of maximum ``S``, as
``assemble``).
"""
from __future__ import annotations

import math
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from stembb.grammar.assemble import MAX_LOOP, MIN_LOOP, TERM_SHAPES, LoopTerms, assemble, loop_counts, structure_score
from stembb.grammar.decode import decode_structure
from stembb.grammar.partition import Ensemble, ensemble
from stembb.structure import CANONICAL_TABLE, base_codes, canonical_pair_matrix, is_nested, stems

KIND = "s2_grammar"
KT = 0.61632  # RT at 37 C in kcal/mol: a score in minus kcal/mol over KT is a log-weight
EVIDENCE = ("s1_logit", "s1_stack_logit")
LOGIT_CLIP = 9.0
DECODERS = ("mea", "threshold", "max")


def allowed_pairs(seq: str, max_span: int | None = None) -> np.ndarray:
    """``(P, 2)`` the pairs the grammar may use: canonical (AU, GC, GU), enclosing at
    least ``MIN_LOOP`` bases, and at most ``max_span`` apart when given; sorted. Built
    over (base, span), so memory is linear in L for a bounded span."""
    codes = base_codes(seq)
    length = len(codes)
    spans = np.arange(MIN_LOOP + 1, length if max_span is None else min(max_span + 1, length))
    partner = np.append(codes, 4)[np.minimum(np.arange(length)[:, None] + spans, length)]  # 4: past the end
    i, k = np.nonzero(CANONICAL_TABLE[codes[:, None], partner])
    return np.stack([i, i + spans[k]], axis=1)


# Memory of folding, measured (ru_maxrss over the loaded model, 1,000-5,000 nt, docs/RESULTS.md):
# the recursions' arrays over the candidate pairs, and their banded (L, D) tables.
BYTES_PER_PAIR = 400
BYTES_PER_CELL = 52


def fold_memory(seq: str, max_span: int | None = None, method: str = "threshold") -> int:
    """Bytes that folding ``seq`` needs, about: the candidate pairs are estimated from
    its base composition, and the ``mea`` decoder adds its (L, L) tables."""
    codes = base_codes(seq)
    length = len(codes)
    width = length if max_span is None else min(max_span + 1, length)
    freq = np.bincount(codes, minlength=5)[:4] / max(length, 1)
    spans = max(width - MIN_LOOP - 1, 0)  # spans MIN_LOOP + 1 .. width - 1, each at length - span bases
    cells = spans * length - spans * (MIN_LOOP + width) / 2
    pairs = float(freq @ CANONICAL_TABLE[:4, :4] @ freq) * cells
    need = BYTES_PER_PAIR * pairs + BYTES_PER_CELL * length * width
    return int(need + (BYTES_PER_CELL * length ** 2 if method == "mea" else 0))


def evidence_features(p_on: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """``(P, len(EVIDENCE))`` float32 S1 evidence of ``pairs`` from S1's ``p_on`` map
    (L, L): the clipped logit of p_on at (i, j), and the mean clipped logit of its two
    stacking neighbours (i - 1, j + 1) and (i + 1, j - 1) (-``LOGIT_CLIP`` off the map)."""
    length = len(p_on)
    p = np.clip(p_on.astype(np.float64), 1e-7, 1 - 1e-7)
    logit = np.clip(np.log(p) - np.log1p(-p), -LOGIT_CLIP, LOGIT_CLIP)
    padded = np.full((length + 2, length + 2), -LOGIT_CLIP, dtype=np.float64)
    padded[1:-1, 1:-1] = logit
    i, j = pairs[:, 0] + 1, pairs[:, 1] + 1
    neighbours = (padded[i - 1, j + 1] + padded[i + 1, j - 1]) / 2
    return np.stack([padded[i, j], neighbours], axis=1).astype(np.float32)


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


@dataclass
class Example:
    """One training or prediction item: ``pairs`` (P, 2) allowed pairs, ``features``
    (P, F) S1 evidence (or None), ``reference`` pairs (training only)."""

    seq: str
    pairs: np.ndarray
    features: np.ndarray | None = None
    reference: list | None = None


class _LogPartition(torch.autograd.Function):
    """log Z of one example as a function of its pair scores and the loop terms; the
    backward pass returns the pair probabilities and the expected loop-term counts."""

    @staticmethod
    def forward(ctx, seq, pairs, unary, *params):
        terms = {name: p.detach().double().cpu().numpy() for name, p in zip(TERM_SHAPES, params)}
        ens = ensemble(seq, pairs, unary.detach().double().cpu().numpy(), terms, counts=True)
        ctx.probs = torch.as_tensor(ens.probs, dtype=unary.dtype, device=unary.device)
        ctx.counts = [torch.as_tensor(ens.counts[name].reshape(p.shape), dtype=p.dtype, device=p.device)
                      for name, p in zip(TERM_SHAPES, params)]
        return torch.tensor(ens.log_z, dtype=unary.dtype, device=unary.device)

    @staticmethod
    def backward(ctx, grad):
        return (None, None, grad * ctx.probs, *[grad * c for c in ctx.counts])


class GrammarFold(nn.Module):
    """The S2 model that ships: loop terms and evidence weights (``n_evidence`` of them,
    0 for the grammar alone); ``config`` is what the checkpoint stores to rebuild it."""

    def __init__(self, n_evidence: int = 0, max_span: int | None = None):
        super().__init__()
        self.terms = LoopTerms()
        self.evidence = nn.Linear(n_evidence, 1, bias=False) if n_evidence else None
        if self.evidence is not None:
            nn.init.zeros_(self.evidence.weight)
        self.max_span = max_span

    @property
    def config(self) -> dict:
        return {"n_evidence": 0 if self.evidence is None else self.evidence.in_features, "max_span": self.max_span}

    @property
    def uses_evidence(self) -> bool:
        """Whether S1 changes the result (an evidence weight other than 0)."""
        return self.evidence is not None and bool(self.evidence.weight.detach().abs().sum() > 0)

    def example(self, seq: str, p_on: np.ndarray | None = None, reference=None) -> Example:
        pairs = allowed_pairs(seq, self.max_span)
        features = evidence_features(p_on, pairs) if self.evidence is not None and p_on is not None else None
        return Example(seq, pairs, features, reference)

    def unary(self, example: Example) -> torch.Tensor:
        """``(P,)`` pair scores, nats."""
        bias = self.terms.pair_bias.expand(len(example.pairs))
        if self.evidence is None or example.features is None:
            return bias
        return bias + self.evidence(torch.as_tensor(example.features, dtype=bias.dtype)).squeeze(1)

    def nll(self, example: Example) -> torch.Tensor:
        """``log Z - S(reference)`` of one example, nats (differentiable)."""
        unary = self.unary(example)
        params = [getattr(self.terms, name) for name in TERM_SHAPES]
        log_z = _LogPartition.apply(example.seq, example.pairs, unary, *params)
        index = {p: k for k, p in enumerate(map(tuple, example.pairs.tolist()))}
        return log_z - structure_score(example.seq, example.reference, index, unary, self.terms)

    @torch.no_grad()
    def ensemble(self, example: Example) -> Ensemble:
        return ensemble(example.seq, example.pairs, self.unary(example).double().numpy(), self.terms.numpy())

    @torch.no_grad()
    def score(self, example: Example, structure) -> float:
        """``S(structure)`` in nats (its log-weight; log P = S - log Z). A numpy sum, not
        ``structure_score``'s torch expression: at prediction no gradient is needed, and
        building that expression took ten times the rest of decoding at 200 nt."""
        pairs, counts = loop_counts(example.seq, structure)
        unary = self.unary(example).double().numpy()
        rows = np.searchsorted(example.pairs[:, 0] * len(example.seq) + example.pairs[:, 1],
                               pairs[:, 0] * len(example.seq) + pairs[:, 1])
        terms = self.terms.numpy()
        return float(unary[rows].sum() + sum(c @ terms[name].ravel() for name, c in counts.items()))

    @torch.no_grad()
    def max_structure(self, example: Example, bonus: float = 0.0) -> list[tuple[int, int]]:
        """The structure of maximum ``S`` (``bonus`` nats added to every pair)."""
        return assemble(example.seq, example.pairs, self.unary(example).double().numpy() + bonus, self.terms.numpy())


def build_grammar(config: dict) -> GrammarFold:
    return GrammarFold(config.get("n_evidence", 0), config.get("max_span"))


def threshold_structure(ens: Ensemble, cut: float) -> list[tuple[int, int]]:
    """Pairs with probability above ``cut`` that are the most probable partner of both
    bases; for a cut under 0.5 such pairs may cross, and the less probable of two
    crossing pairs is left out."""
    pairs, probs = ens.pairs, ens.probs
    if not len(pairs):
        return []
    n = int(pairs.max()) + 1
    best = np.zeros(n)
    np.maximum.at(best, pairs[:, 0], probs)
    np.maximum.at(best, pairs[:, 1], probs)
    take = (probs > cut) & (probs >= best[pairs[:, 0]]) & (probs >= best[pairs[:, 1]])
    kept: list = []
    used: set = set()
    for k in np.flatnonzero(take)[np.argsort(-probs[take], kind="stable")]:
        p = tuple(map(int, pairs[k]))
        if p[0] not in used and p[1] not in used and is_nested(kept + [p]):
            kept.append(p)
            used.update(p)
    return sorted(kept)


def decode(model: GrammarFold, example: Example, method: str = "mea", gamma: float = 1.0,
           cut: float = 0.5, ens: Ensemble | None = None) -> list[tuple[int, int]]:
    """One structure of ``example`` by ``method`` (``DECODERS``); ``ens`` reuses pair
    probabilities already computed. ``max`` adds log(gamma) nats to every pair."""
    if method == "max":
        return model.max_structure(example, math.log(gamma))
    ens = model.ensemble(example) if ens is None else ens
    if method == "threshold":
        return threshold_structure(ens, cut)
    return decode_structure(len(example.seq), ens.pairs, ens.probs, gamma, example.seq)


def set_energy_terms(model: GrammarFold, energy_terms: LoopTerms) -> None:
    """Loop terms and pair bias from energy-fitted ones (minus kcal/mol): divided by KT."""
    with torch.no_grad():
        for name, p in energy_terms.named_parameters():
            if name != "pair_weight":
                getattr(model.terms, name).copy_(p / KT)


def pull(model: GrammarFold, anchor: dict[str, torch.Tensor]) -> torch.Tensor:
    """Squared distance of the loop terms and pair bias from ``anchor`` (nats squared)."""
    return sum(((getattr(model.terms, name) - value) ** 2).sum() for name, value in anchor.items())


def ensembles(model: GrammarFold, examples: list[Example], threads: int = 1) -> list[Ensemble]:
    """Each example's pair probabilities, ``threads`` partition functions at a time (the
    compiled recursions release the GIL)."""
    with ThreadPoolExecutor(max(threads, 1)) as pool:
        return list(pool.map(model.ensemble, examples))


def batch_nll(model: GrammarFold, examples: list[Example], threads: int = 1) -> torch.Tensor:
    """Mean ``nll`` per reference pair over ``examples``. With ``threads`` > 1 the
    partition functions run on a thread pool (the compiled recursions release the GIL)."""
    if threads > 1 and len(examples) > 1:
        with ThreadPoolExecutor(threads) as pool:
            losses = list(pool.map(model.nll, examples))
    else:
        losses = [model.nll(e) for e in examples]
    sizes = torch.as_tensor([max(len(e.reference), 1) for e in examples], dtype=losses[0].dtype)
    return (torch.stack(losses) / sizes).mean()
