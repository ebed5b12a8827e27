"""The loop grammar's partition function against brute force over every structure."""
import itertools

import numpy as np
import pytest

from conftest import random_candidates
from stembb.grammar import partition
from stembb.grammar.model import allowed_pairs
from stembb.grammar.assemble import TERM_SHAPES, candidates, loop_counts, loop_score
from stembb.grammar.terms import LoopTerms
from stembb.grammar.partition import ensemble
from stembb.structure import canonical_pair_matrix, is_nested
from test_s2 import random_terms


def all_structures(pairs):
    """Every nested structure (a tuple of pairs, each base at most once) of ``pairs``."""
    pairs = [tuple(p) for p in pairs.tolist()]
    out = [()]
    for r in range(1, len(pairs) + 1):
        for c in itertools.combinations(pairs, r):
            bases = [b for p in c for b in p]
            if len(set(bases)) == len(bases) and is_nested(c):
                out.append(c)
    return out


def brute_force(seq, pairs, unary, terms):
    """log Z, pair probabilities and expected loop-term counts by enumeration."""
    index = {tuple(p): k for k, p in enumerate(pairs.tolist())}
    structures = all_structures(pairs[pairs[:, 1] - pairs[:, 0] > 3])
    scores, used, counts = [], [], []
    for y in structures:
        found, c = loop_counts(seq, list(y))
        rows = [index[p] for p in map(tuple, found.tolist())]
        loops = sum(c[name] @ terms[name].ravel() for name in TERM_SHAPES)
        assert loop_score(seq, list(y), terms)[1] == pytest.approx(loops, abs=1e-9)  # prediction's shortcut
        scores.append(unary[rows].sum() + loops)
        used.append(rows)
        counts.append(c)
    scores = np.array(scores)
    log_z = np.logaddexp.reduce(scores)
    weight = np.exp(scores - log_z)
    probs = np.zeros(len(pairs))
    for w, rows in zip(weight, used):
        probs[rows] += w
    expected = {name: sum(w * c[name] for w, c in zip(weight, counts)) for name in TERM_SHAPES}
    return log_z, probs, expected


@pytest.mark.parametrize("max_span", [None, 9])
def test_probabilities_log_z_and_expected_counts_equal_brute_force(max_span):
    """Over every candidate span, and banded: candidates at most ``max_span`` apart, so the
    recursions' tables are narrower than the sequence."""
    rng = np.random.default_rng(3)
    checked = 0
    for _ in range(60):
        seq, pairs = random_candidates(rng, 9, 26, 4, 0.3)
        if max_span is not None:
            pairs = pairs[pairs[:, 1] - pairs[:, 0] <= max_span]
        pairs = pairs[rng.permutation(len(pairs))[:11]]
        unary = rng.normal(size=len(pairs))
        terms = random_terms(rng).numpy()
        got = ensemble(seq, pairs, unary, terms, counts=True)
        log_z, probs, expected = brute_force(seq, pairs, unary, terms)
        assert got.log_z == pytest.approx(log_z, abs=1e-6)
        np.testing.assert_allclose(got.probs, probs, atol=1e-6)
        for name in TERM_SHAPES:
            np.testing.assert_allclose(got.counts[name], expected[name], atol=1e-6, err_msg=name)
        checked += len(pairs) > 3
    assert checked > 40


def test_every_canonical_pair_of_a_real_length_sequence():
    """A 120-nt sequence over all its canonical pairs, energy-like terms: each base pairs
    with probability at most 1, and the G's of a strong hairpin placed in it mostly pair,
    most likely with its C's, in the hairpin's register."""
    rng = np.random.default_rng(5)
    hairpin = "GGGGGGGGAAAACCCCCCCC"
    seq = "".join(rng.choice(list("ACGU"), 50)) + hairpin + "".join(rng.choice(list("ACGU"), 50))
    i, j = np.nonzero(np.triu(canonical_pair_matrix(seq), 4))
    pairs = np.stack([i, j], axis=1)
    terms = LoopTerms().numpy()
    terms["stack"][:6, :6] = 1.0
    terms["stack"][2:4, 2:4] = 3.0  # GC on GC
    terms["hairpin"][:] = -3.0
    terms["multi"][:] = (-3.0, -0.5)
    got = ensemble(seq, pairs, np.full(len(pairs), -0.5), terms)
    per_base = np.bincount(pairs.ravel(), weights=np.repeat(got.probs, 2), minlength=len(seq))
    assert (got.probs >= 0).all() and per_base.max() <= 1 + 1e-9
    assert per_base[50:58].min() > 0.75
    assert got.matrix(len(seq))[50:58].argmax(axis=1).tolist() == list(range(69, 61, -1))


def test_scaled_sums_give_the_same_log_z():
    rng = np.random.default_rng(7)
    seq = "".join(rng.choice(list("ACGU"), 90))
    i, j = np.nonzero(np.triu(canonical_pair_matrix(seq), 4))
    pairs = np.stack([i, j], axis=1)
    terms = random_terms(rng).numpy()
    cands, _ = candidates(seq, pairs, rng.normal(size=len(pairs)), terms)
    log_z = [partition.log_z(cands, scale) for scale in (0.0, 0.7, -0.4)]
    assert log_z == pytest.approx([log_z[0]] * 3, rel=1e-10)


def test_long_sequences_are_scaled_not_overflowed():
    rng = np.random.default_rng(9)
    seq = "".join(rng.choice(list("GC"), 600))
    i, j = np.nonzero(np.triu(canonical_pair_matrix(seq), 4))
    pairs = np.stack([i, j], axis=1)
    terms = LoopTerms().numpy()
    terms["stack"][:6, :6] = 5.0  # about 5 nats a base: exp(S) of the best structure is far beyond float range
    got = ensemble(seq, pairs, np.zeros(len(pairs)), terms)
    assert np.isfinite(got.log_z) and got.log_z > 1000
    assert np.isfinite(got.probs).all() and got.probs.max() > 0.5


def test_a_long_sequence_with_short_pairs_sums_its_exterior_in_logs():
    """3,000 nt of pairs at most 30 apart: Z is far beyond float range while every span's
    sum is not, and the unscaled sums (exterior in logs) agree with scaled ones."""
    rng = np.random.default_rng(11)
    seq = "".join(rng.choice(list("ACGU"), 3000))
    pairs = allowed_pairs(seq, max_span=30)
    terms = random_terms(rng).numpy()
    cands, _ = candidates(seq, pairs, rng.normal(size=len(pairs)), terms)
    assert cands.index_of.shape == (3000, 31)
    log_z = [partition.log_z(cands, scale) for scale in (0.0, 0.3)]
    assert log_z[0] > 800 and log_z[1] == pytest.approx(log_z[0], rel=1e-10)
    got = ensemble(seq, pairs, np.zeros(len(pairs)), terms)
    per_base = np.bincount(pairs.ravel(), weights=np.repeat(got.probs, 2), minlength=len(seq))
    assert np.isfinite(got.probs).all() and per_base.max() <= 1 + 1e-9 and got.probs.max() > 0.5


def test_a_whole_long_fold_scaled_by_its_short_pairs_equals_one_scaled_by_its_best_structure():
    """Spans over UNSCALED_SPAN take their scale from the structures of pairs at most
    SCALE_SPAN apart (a cheap lower bound); the probabilities and log Z are those of the
    sums scaled by the best structure's own score per base."""
    rng = np.random.default_rng(13)
    seq = "".join(rng.choice(list("ACGU"), 700))
    pairs = allowed_pairs(seq)
    terms = LoopTerms().numpy()
    terms["stack"][:6, :6], terms["hairpin"][:], terms["multi"][:] = 2.0, -4.0, (-5.0, -0.5)
    unary = np.full(len(pairs), -0.5)
    cands, _ = candidates(seq, pairs, unary, terms)
    short, best = (partition._best_score_per_base(seq, cands, terms, span) for span in (partition.SCALE_SPAN, None))
    assert 0 < short < best
    got = ensemble(seq, pairs, unary, terms)
    weights = partition.Weights.of(cands, best)
    inside = partition._inside(*partition._shape(cands), *weights)
    probs = inside[0] * partition._outside(*partition._shape(cands), *weights, *inside, False)[0]
    np.testing.assert_allclose(got.probs, probs, rtol=1e-9, atol=1e-15)
    assert got.log_z == pytest.approx(inside[3][-1] + best * len(seq), rel=1e-12)
