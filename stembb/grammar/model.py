"""The grammar model, the one that ships: ``GrammarFold`` folds with the loop terms of a
checkpoint of kind ``s2_grammar`` (read by ``stembb.checkpoint.read_arrays``) in numpy and the
compiled passes, no torch.

A structure ``y`` has probability ``exp(S(y)) / Z``: ``S`` is the loop grammar's score in
nats (``stembb.grammar.assemble``) plus, for every pair, ``u_ij = pair_bias + w . f_ij``,
where ``f_ij`` (``EVIDENCE``) are read from S1's ``p_on`` map at that pixel. With ``w`` = 0
(or no evidence) the model is the grammar alone and needs no S1; S1 is worth exactly
what ``w`` adds. Allowed pairs are canonical (AU, GC, GU), enclose at least ``MIN_LOOP``
bases and are at most ``max_span`` apart when that is set.

Decoding (``DECODERS``) reads the pair probabilities: ``mea`` (maximum expected
accuracy, a pair gains ``(gamma + 1) p - 1``), ``threshold`` (pairs above a cut that are
the most probable partner of both bases), or ``max`` (the structure of maximum ``S``).
With ``beam`` > 0 the pair probabilities come from the left-to-right beam search of
``stembb.grammar.beam`` (time and memory linear in L, for whole long RNAs; a model
without S1 only, and no ``max`` decoder). With ``pseudoknots`` set in the decoder, stems crossing that nested structure are added
from the same pair probabilities (``stembb.grammar.pseudoknots``).
Its training (the conditional log-likelihood, torch) is ``stembb.grammar.crf``.
"""
from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from stembb.grammar.assemble import MIN_LOOP, TERM_SHAPES, assemble, loop_score
from stembb.grammar.decode import decode_structure
from stembb.grammar.partition import Ensemble, ensemble
from stembb.grammar.pseudoknots import PSEUDOKNOT_CUT, crossing_stems
from stembb.structure import CANONICAL_TABLE, base_codes, is_nested

KT = 0.61632  # RT at 37 C in kcal/mol: a score in minus kcal/mol over KT is a log-weight
EVIDENCE = ("s1_logit", "s1_stack_logit")
LOGIT_CLIP = 9.0
DECODERS = ("mea", "threshold", "max")
DEFAULT_DECODER = {"method": "mea", "gamma": 1.0, "cut": 0.5, "pseudoknots": False, "pseudoknot_cut": PSEUDOKNOT_CUT}


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


def fold_memory(seq: str, max_span: int | None = None, method: str = "threshold", beam: int = 0) -> int:
    """Bytes that folding ``seq`` needs, about: the candidate pairs are estimated from
    its base composition (with ``beam``, the states kept instead), and the ``mea``
    decoder adds its (L, L) tables."""
    codes = base_codes(seq)
    length = len(codes)
    if beam:
        from stembb.grammar.beam import BYTES_PER_STATE  # the exact fold path does not load the beam's passes
        return int(BYTES_PER_STATE * length * min(beam, length + 1) + (BYTES_PER_CELL * length ** 2 if method == "mea"
                                                                         else 0))
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


@dataclass
class Example:
    """One training or prediction item: ``pairs`` (P, 2) allowed pairs, ``features``
    (P, F) S1 evidence (or None), ``reference`` pairs (training only). For a model with
    a deep S1 network: ``grammar`` the grammar-alone ensemble it reads (``(P,)`` pair
    probabilities and the decoded structure), ``network_score`` ``(P,)`` nats the
    network adds to each pair's score, ``pair_map`` ``(P,)`` its probability that each
    pair is in the structure (what the pseudoknot layer then reads), ``full_reference``
    every reference pair, crossing ones too (the network's own heads learn from them;
    training only)."""

    seq: str
    pairs: np.ndarray
    features: np.ndarray | None = None
    reference: list | None = None
    grammar: tuple[np.ndarray, list] | None = None
    network_score: np.ndarray | None = None
    pair_map: np.ndarray | None = None
    full_reference: list | None = None


def make_example(seq: str, max_span: int | None, reads_evidence: bool, p_on: np.ndarray | None = None,
                 reference=None) -> Example:
    """The allowed pairs of ``seq`` and, for a model with evidence and a ``p_on`` map, their features."""
    pairs = allowed_pairs(seq, max_span)
    features = evidence_features(p_on, pairs) if reads_evidence and p_on is not None else None
    return Example(seq, pairs, features, reference)


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


def decode_ensemble(ens: Ensemble, seq: str, method: str, gamma: float = 1.0, cut: float = 0.5
                    ) -> list[tuple[int, int]]:
    """One structure from pair probabilities: ``mea`` at ``gamma`` or ``threshold`` at ``cut``."""
    if method == "threshold":
        return threshold_structure(ens, cut)
    return decode_structure(len(seq), ens.pairs, ens.probs, gamma, seq)


@dataclass
class GrammarFold:
    """The grammar model as it folds: ``terms`` (``TERM_SHAPES`` tables and ``pair_bias``,
    float64, nats), the evidence weights ``evidence_weight`` ((len(EVIDENCE),) float32,
    or None for the grammar alone), ``max_span`` and the ``decoder`` settings chosen on
    validation (``method``, ``gamma``, ``cut``)."""

    terms: dict[str, np.ndarray]
    evidence_weight: np.ndarray | None = None
    max_span: int | None = None
    decoder: dict = field(default_factory=lambda: dict(DEFAULT_DECODER))
    network: object = None  # a deep S1 (stembb.s1.model.DeepStemNet, torch, CPU) whose pair logit is added
    beam: int = 0  # > 0: pair probabilities by beam search keeping this many states of each kind per base

    @classmethod
    def from_state(cls, state: dict) -> "GrammarFold":
        """From a checkpoint of kind ``s2_grammar`` read by ``read_arrays``."""
        weights = {k: np.asarray(v) for k, v in state["model"].items()}
        terms = {name: weights[f"terms.{name}"].astype(np.float64) for name in (*TERM_SHAPES, "pair_bias")}
        evidence = weights.get("evidence.weight")
        decoder = DEFAULT_DECODER | state.get("decode", {})
        network = None
        if state.get("network") is not None:
            from stembb.grammar.network import load_network
            network = load_network(state["network"])
        return cls(terms, None if evidence is None else evidence.reshape(-1).astype(np.float32),
                   state["config"].get("max_span"), decoder, network)

    @property
    def reads_evidence(self) -> bool:
        """Whether the model has evidence weights (then its examples carry S1 features)."""
        return self.evidence_weight is not None

    @property
    def uses_evidence(self) -> bool:
        """Whether S1 changes the result (an evidence weight other than 0)."""
        return self.reads_evidence and bool(np.abs(self.evidence_weight).sum() > 0)

    def example(self, seq: str, p_on: np.ndarray | None = None, reference=None) -> Example:
        if self.beam:  # the beam search finds its pairs itself: no list of every allowed pair (L^2)
            return Example(seq, np.zeros((0, 2), dtype=np.int64), reference=reference)
        return make_example(seq, self.max_span, self.reads_evidence, p_on, reference)

    def unary(self, example: Example) -> np.ndarray:
        """``(P,)`` pair scores, nats, float64 (the sum in float32, as training computes it)."""
        bias = np.float32(self.terms["pair_bias"])
        if example.features is None or self.evidence_weight is None:
            unary = np.full(len(example.pairs), float(bias))
        else:
            unary = (bias + example.features @ self.evidence_weight).astype(np.float64)
        if example.network_score is not None:
            unary = (unary.astype(np.float32) + example.network_score.astype(np.float32)).astype(np.float64)
        return unary

    def ensemble(self, example: Example) -> Ensemble:
        if self.beam:
            from stembb.grammar.beam import beam_ensemble
            return beam_ensemble(example.seq, self.terms, float(np.float32(self.terms["pair_bias"])), self.beam,
                                 self.max_span)
        return ensemble(example.seq, example.pairs, self.unary(example), self.terms)

    def score(self, example: Example, structure) -> float:
        """``S(structure)`` in nats (its log-weight; log P = S - log Z)."""
        pairs, loops = loop_score(example.seq, structure, self.terms)
        if self.beam:  # every pair scores pair_bias (a beam model reads no S1)
            return float(len(pairs) * float(np.float32(self.terms["pair_bias"])) + loops)
        length = len(example.seq)
        rows = np.searchsorted(example.pairs[:, 0] * length + example.pairs[:, 1], pairs[:, 0] * length + pairs[:, 1])
        return float(self.unary(example)[rows].sum() + loops)

    def energy(self, example: Example, structure) -> float:
        """The structure's score as a pseudo free energy, ``-KT * S`` (kcal/mol when the
        loop terms are ViennaRNA's energies, as they start)."""
        return -KT * self.score(example, structure)

    def max_structure(self, example: Example, bonus: float = 0.0) -> list[tuple[int, int]]:
        """The structure of maximum ``S`` (``bonus`` nats added to every pair)."""
        return assemble(example.seq, example.pairs, self.unary(example) + bonus, self.terms)

    def decode(self, example: Example, ens: Ensemble | None = None, method: str | None = None,
               gamma: float | None = None, cut: float | None = None) -> list[tuple[int, int]]:
        """One structure of ``example`` by ``method`` (``DECODERS``; default: the model's
        ``decoder``); ``ens`` reuses pair probabilities already computed. ``max`` adds
        log(gamma) nats to every pair."""
        method = self.decoder["method"] if method is None else method
        gamma = self.decoder["gamma"] if gamma is None else gamma
        if method == "max":
            if self.beam:
                raise ValueError("the max decoder needs the exact recursions; fold without a beam")
            return self.max_structure(example, math.log(gamma))
        ens = self.ensemble(example) if ens is None else ens
        return decode_ensemble(ens, example.seq, method, gamma, self.decoder["cut"] if cut is None else cut)

    def pseudoknots(self, nested: list[tuple[int, int]], ens: Ensemble, example: Example | None = None
                    ) -> list[tuple[int, int]]:
        """The crossing pairs the pseudoknot layer adds to ``nested``; none unless the
        decoder's ``pseudoknots`` is set. It reads the deep S1's pair map where
        ``example`` has one, else the nested ensemble ``ens``."""
        if not self.decoder["pseudoknots"]:
            return []
        if example is not None and example.pair_map is not None:
            ens = Ensemble(ens.pairs, example.pair_map.astype(np.float64), ens.log_z)
        return crossing_stems(nested, ens, self.decoder["pseudoknot_cut"])

    def add_grammar_views(self, examples: list[Example], threads: int = 1) -> None:
        """Give each example that has none its ``grammar`` view: what a deep S1 reads of
        the grammar-alone ensemble (computed once; the loop terms do not change under it)."""
        from stembb.grammar.network import grammar_view
        missing = [e for e in examples if e.grammar is None]
        for e in missing:
            e.network_score = None  # the ensemble of the grammar alone
        for e, ens in zip(missing, self.ensembles(missing, threads)):
            e.grammar = grammar_view(e, ens)

    def add_network_scores(self, examples: list[Example], threads: int = 1) -> None:
        """Give each example the deep S1's ``network_score`` and ``pair_map`` (nothing
        without a network): the grammar views first, then the network reads them."""
        if self.network is None:
            return
        from stembb.grammar.network import network_scores
        self.add_grammar_views(examples, threads)
        for e in examples:
            e.network_score, e.pair_map = network_scores(self.network, e)

    def ensembles(self, examples: list[Example], threads: int = 1) -> list[Ensemble]:
        """Each example's pair probabilities, ``threads`` partition functions at a time
        (the compiled recursions release the GIL)."""
        if threads <= 1 or len(examples) <= 1:
            return [self.ensemble(e) for e in examples]
        with ThreadPoolExecutor(threads) as pool:
            return list(pool.map(self.ensemble, examples))
