"""The beam-search partition function: exact when the beam drops nothing, a valid
ensemble when it does, and the --beam flag of the prediction scripts."""
import numpy as np
import pytest

from conftest import error_line, run_script
from stembb.checkpoint import read_arrays
from stembb.grammar.beam import beam_ensemble
from stembb.grammar.model import GrammarFold, allowed_pairs
from stembb.grammar.partition import ensemble
from stembb.io import REPO_ROOT
from test_s2 import random_terms

PREDICT = "evaluation/predict_structure.py"


def shipped_terms():
    return GrammarFold.from_state(read_arrays(REPO_ROOT / "models" / "stembb_s2.pth", ("s2_grammar",))).terms


@pytest.mark.parametrize("letters, length, span", [("ACGU", 90, None), ("ACGUN", 70, None), ("GGCCAU", 110, 35),
                                                   ("GCGCAU", 60, 12)])
def test_a_beam_that_drops_nothing_is_the_exact_partition_function(letters, length, span):
    rng = np.random.default_rng(length)
    for terms in (shipped_terms(), random_terms(rng).numpy(), random_terms(rng).numpy()):
        seq = "".join(rng.choice(list(letters), length))
        pairs = allowed_pairs(seq, span)
        exact = ensemble(seq, pairs, np.full(len(pairs), -0.4), terms)
        beam = beam_ensemble(seq, terms, -0.4, length + 1, span)
        assert beam.log_z == pytest.approx(exact.log_z, rel=1e-10, abs=1e-10)
        np.testing.assert_allclose(beam.matrix(length), exact.matrix(length), atol=1e-9)
        assert {tuple(p) for p in beam.pairs.tolist()} <= {tuple(p) for p in pairs.tolist()}


def test_a_narrow_beam_keeps_a_valid_ensemble_that_approaches_the_exact_one():
    terms = shipped_terms()
    rng = np.random.default_rng(3)
    seq = "".join(rng.choice(list("ACGU"), 300))
    pairs = allowed_pairs(seq)
    exact = ensemble(seq, pairs, np.full(len(pairs), float(np.float32(terms["pair_bias"]))), terms)
    gaps = []
    for width in (5, 30, 100):
        ens = beam_ensemble(seq, terms, float(np.float32(terms["pair_bias"])), width)
        per_base = ens.matrix(300) + ens.matrix(300).T
        assert (ens.probs >= 0).all() and per_base.sum(axis=1).max() <= 1 + 1e-9
        assert ens.log_z <= exact.log_z + 1e-9  # a beam sums a subset of the structures
        gaps.append(np.abs(ens.matrix(300) - exact.matrix(300)).max())
    assert gaps[2] < gaps[1] < gaps[0] and gaps[2] < 0.1


def test_the_beam_flag_folds_like_the_exact_one_when_it_drops_nothing(tmp_path):
    fasta = tmp_path / "in.fa"
    rng = np.random.default_rng(0)
    fasta.write_text("".join(f">s{k}\n{''.join(rng.choice(list('ACGU'), 80))}\n" for k in range(4)))
    exact = run_script(PREDICT, "--fasta", fasta).stdout
    assert run_script(PREDICT, "--fasta", fasta, "--beam", "200", "--bpp", tmp_path / "dots").stdout == exact
    assert len(list((tmp_path / "dots").glob("*.bpp"))) == 4
    proc = run_script(PREDICT, "--fasta", fasta, "--beam", "-1", check=False)
    assert proc.returncode == 2 and "--beam must be 0 (exact)" in error_line(proc)
    proc = run_script(PREDICT, "--fasta", fasta, "--beam", "100", "--decoder", "max", check=False)
    assert proc.returncode == 2 and "--beam: the max decoder needs the exact recursions" in error_line(proc)
