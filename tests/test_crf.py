"""The grammar model and its training: likelihood gradients, training steps, decoders, the scripts."""
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import error_line, run_script
from stembb.errors import InputError
from stembb.io import REPO_ROOT
from stembb.checkpoint import S2_GRAMMAR_KIND
from stembb.grammar import crf, references
from stembb.grammar import model as grammar
from stembb.grammar.partition import Ensemble
from stembb.structure import is_nested
from test_s2 import random_terms


def tiny_model(rng, n_evidence=2):
    model = crf.GrammarCRF(n_evidence)
    model.terms.load_state_dict(random_terms(rng).state_dict())
    with torch.no_grad():
        for p in model.terms.parameters():
            p.mul_(0.5)
        if n_evidence:
            model.evidence.weight.copy_(torch.as_tensor(rng.normal(size=(1, n_evidence))))
    return model.double()


def test_nll_gradient_equals_finite_differences():
    rng = np.random.default_rng(0)
    model = tiny_model(rng)
    seq = "GGGACAUAGCUCAGGCUAGUCCCAAUGC"
    p_on = rng.random((len(seq), len(seq)))
    example = model.example(seq, p_on, [(0, 22), (1, 21), (2, 20), (8, 15)])
    assert all(p in set(map(tuple, example.pairs.tolist())) for p in example.reference)
    loss = model.nll(example)
    loss.backward()
    checks = [(model.evidence.weight, (0, 0)), (model.evidence.weight, (0, 1)), (model.terms.pair_bias, ()),
              (model.terms.stack, (2, 3)), (model.terms.hairpin, (4,)), (model.terms.multi, (0,)),
              (model.terms.end, (2,)), (model.terms.dangle, (2, 0, 1))]
    for param, index in checks:
        with torch.no_grad():
            value = param[index].item()
            param[index] = value + 1e-5
            up = model.nll(example).item()
            param[index] = value - 1e-5
            down = model.nll(example).item()
            param[index] = value
        assert param.grad[index].item() == pytest.approx((up - down) / 2e-5, abs=1e-5)
    assert loss.item() > 0  # the reference is one of many structures


def test_training_steps_raise_the_likelihood_of_the_references():
    rng = np.random.default_rng(1)
    model = crf.GrammarCRF(0)
    seqs = ["".join(rng.choice(list("ACGU"), int(n))) for n in rng.integers(30, 60, 12)]
    examples = []
    for seq in seqs:
        ex = model.example(seq)
        pick = ex.pairs[rng.permutation(len(ex.pairs))[:6]]
        ref = [tuple(p) for p in pick.tolist()]
        kept = []
        for p in ref:
            if is_nested(kept + [p]) and not {*p} & {b for q in kept for b in q}:
                kept.append(p)
        examples.append(grammar.Example(seq, ex.pairs, None, references.trainable_reference(seq, kept)))
    optimizer = torch.optim.Adam(model.parameters(), 0.05)
    losses = []
    for _ in range(15):
        loss = crf.batch_nll(model, examples, threads=2)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]
    assert model.terms.pair_weight.grad is None or model.terms.pair_weight.grad.abs().sum() == 0


def test_trainable_reference_drops_what_the_grammar_cannot_make():
    seq = "GGGGAAAACCCCAAAAGGGGAAAACCCC"
    # a 4-pair stem 0-11, a 2-pair stem crossing it, a non-canonical pair and a too-short one
    ref = [(0, 11), (1, 10), (2, 9), (3, 8), (5, 18), (6, 17), (12, 13), (16, 19)]
    assert references.trainable_reference(seq, ref) == [(0, 11), (1, 10), (2, 9), (3, 8)]
    long_loop = "G" + "A" * 40 + "GAAAAC" + "A" * 3 + "C"
    assert references.trainable_reference(long_loop, [(0, len(long_loop) - 1), (41, 46)]) is None
    assert references.trainable_reference(long_loop, [(0, len(long_loop) - 1)]) == [(0, len(long_loop) - 1)]


def test_threshold_decoder_takes_mutual_best_partners_nested():
    pairs = np.array([[0, 10], [1, 9], [0, 9], [2, 14], [11, 20]])
    ens = Ensemble(pairs, np.array([0.6, 0.55, 0.3, 0.45, 0.42]), 0.0)
    # (0, 9) is not the best partner of 0; (2, 14) crosses (0, 10) and loses to it
    assert grammar.threshold_structure(ens, 0.4) == [(0, 10), (1, 9), (11, 20)]
    assert grammar.threshold_structure(ens, 0.58) == [(0, 10)]


def test_allowed_pairs_and_span():
    seq = "GCAUGCAUGCAUGCAUGCAU"
    pairs = grammar.allowed_pairs(seq)
    assert (pairs[:, 1] - pairs[:, 0] > 3).all()
    assert all(seq[i] + seq[j] in ("AU", "UA", "GC", "CG", "GU", "UG") for i, j in pairs.tolist())
    spanned = grammar.allowed_pairs(seq, max_span=8)
    assert (spanned[:, 1] - spanned[:, 0] <= 8).all()
    assert {tuple(p) for p in spanned.tolist()} == {tuple(p) for p in pairs.tolist() if p[1] - p[0] <= 8}


@pytest.mark.slow
def test_train_predict_with_pair_probabilities_and_evaluate(s2_models, tiny_s1_data, tmp_path):
    """train_s2_grammar.py with S1 evidence on generator data -> predict_structure --bpp -> run_end_to_end."""
    _, s1, box, _ = s2_models
    out = tmp_path / "crf.pth"
    proc = run_script("s2_training/train_s2_grammar.py", "--data", tiny_s1_data, "--out", out, "--s1_model", s1,
                      "--init_terms", box, "--epochs", 2, "--batch_size", 8, "--lr", 0.01, "--evidence_lr", 0.05,
                      "--keep_last", "--no_progress")
    assert "decoder chosen on validation" in proc.stderr and out.is_file()
    assert "kept epoch 1 " in proc.stderr and "as --keep_last asks" in proc.stderr
    assert len(pd.read_csv(tmp_path / "crf.metrics.csv")) == 4 and (tmp_path / "crf.metrics.png").stat().st_size
    state = torch.load(out, weights_only=True)
    assert state["kind"] == S2_GRAMMAR_KIND and state["decode"]["method"] in grammar.DECODERS
    assert state["model"]["evidence.weight"].shape == (1, len(grammar.EVIDENCE)) and state["epoch"] == 1
    assert state["model"]["evidence.weight"].abs().sum() > 0  # learned, and S1 runs at prediction
    fasta = tmp_path / "in.fa"
    fasta.write_text(">first one\nGGGGAAACCCCAUAUGGGCUUCGGCCCAUAU\n>two\nACGUACGUAGCUAGCUAGGCAUCGAUCGAUGCAUG\n")
    bpp = tmp_path / "bpp"
    proc = run_script("evaluation/predict_structure.py", "--s1_model", s1, "--s2_model", out, "--fasta", fasta,
                      "--bpp", bpp)
    assert proc.stdout.count(">") == 2
    lines = (bpp / "1_first.bpp").read_text().splitlines()
    triples = [(int(i), int(j), float(p)) for i, j, p in (line.split() for line in lines)]
    assert triples and all(1 <= i < j <= 31 and 0 < p <= 1 for i, j, p in triples)
    assert (bpp / "2_two.png").stat().st_size > 0
    e2e = tmp_path / "e2e.csv"
    run_script("evaluation/run_end_to_end.py", "--s1_model", s1, "--s2_model", out, "--data", tiny_s1_data,
               "--num", 5, "--out", e2e)
    assert len(pd.read_csv(e2e)) == 10


def test_bpp_needs_a_grammar_model(s2_models, tmp_path):
    _, s1, box, _ = s2_models
    fasta = tmp_path / "in.fa"
    fasta.write_text(">a\nGGGGAAACCCC\n")
    proc = run_script("evaluation/predict_structure.py", "--s1_model", s1, "--s2_model", box, "--fasta", fasta,
                      "--bpp", tmp_path / "bpp", check=False)
    assert proc.returncode == 2 and "--bpp needs a grammar model" in proc.stderr.strip().splitlines()[-1]


@pytest.mark.slow
def test_max_span_never_pairs_farther_and_the_whole_span_changes_nothing(tmp_path):
    rng = np.random.default_rng(4)
    seq = "GGGGGAAAACCCCC" + "".join(rng.choice(list("ACGU"), 60)) + "GGGGCGAAAGCCCC"
    fasta = tmp_path / "in.fa"
    fasta.write_text(f">s\n{seq}\n")

    def fold(*extra):
        proc = run_script("evaluation/predict_structure.py", "--fasta", fasta, "--format", "bpseq", *extra)
        rows = [line.split() for line in proc.stdout.splitlines()[1:]]
        return {(int(i), int(j)) for i, _, j in rows if int(j) > int(i)}

    whole = fold()
    assert any(j - i > 20 for i, j in whole)  # the outer helices pair across the sequence
    assert fold("--max_span", len(seq)) == whole
    spanned = fold("--max_span", 20)
    assert spanned and all(j - i <= 20 for i, j in spanned)
    proc = run_script("evaluation/predict_structure.py", "--fasta", fasta, "--max_span", 3, check=False)
    assert "--max_span must be above 3" in proc.stderr.strip().splitlines()[-1]


@pytest.mark.slow
def test_a_long_rna_folds_with_a_span_in_memory_linear_in_its_length(tmp_path):
    """12,000 nt with a span of 40, in its own process: folded whole, its tables alone
    would take over 5 GB; spanned, the fold adds under 0.3 GB to the process's peak
    (VmHWM, after the model is loaded and has folded a short sequence; ru_maxrss would
    count pytest's own memory at the fork) and no pair is longer than the span."""
    seq = "".join(np.random.default_rng(8).choice(list("ACGU"), 12000))
    code = ("import re, stembb; p = stembb.load_predictor(max_span=40); p.predict([{short!r}]); "
            "peak = lambda: int(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1)); "
            "before = peak(); y = p.predict([{seq!r}])[0]; "
            "print(peak() - before, len(y), max(j - i for i, j in y))").format(short=seq[:100], seq=seq)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO_ROOT)
    added_kb, n_pairs, longest = map(int, proc.stdout.split())
    assert added_kb < 300_000 and n_pairs > 1000 and longest <= 40


def test_a_fold_that_cannot_fit_in_memory_is_refused_before_any_work(tmp_path):
    fasta = tmp_path / "in.fa"
    fasta.write_text(">huge\n" + "GCAU" * 25000 + "\n")
    proc = run_script("evaluation/predict_structure.py", "--fasta", fasta, "--out", tmp_path / "out.db", check=False)
    line = error_line(proc)
    assert "record 'huge' (100000 nt): folding it whole needs about" in line and "--max_span" in line
    assert not (tmp_path / "out.db").exists()


def test_long_folds_run_one_at_a_time_when_two_would_not_fit(monkeypatch):
    """The thread pool folds as many sequences at once as fit together in the memory
    available (a machine with room for one long fold at a time, simulated by what
    /proc/meminfo would say); each fold itself is real."""
    import stembb
    from stembb import memory, pipeline

    monkeypatch.setattr(pipeline, "SMALL_FOLDS", 0)  # these folds are small enough to go unchecked otherwise
    predictor = stembb.load_predictor(max_span=50)
    predictor.threads = 2
    rng = np.random.default_rng(5)
    seqs = ["".join(rng.choice(list("ACGU"), n)) for n in (3000, 2500, 60)]
    need = grammar.fold_memory(seqs[0], 50, predictor.decoder["method"])
    assert predictor.folds_at_once(seqs) == 2  # this machine: room for both
    monkeypatch.setattr(memory, "available_memory", lambda: int(1.5 * need))
    assert predictor.folds_at_once(seqs) == 1
    structures, _, _ = predictor.fold(seqs)
    assert all(j - i <= 50 for y in structures for i, j in y) and len(structures[0]) > 100
    monkeypatch.setattr(memory, "available_memory", lambda: need // 2)
    with pytest.raises(InputError, match=r"sequence 1 \(3000 nt\): folding it with pairs at most 50 apart needs"):
        predictor.fold(seqs)


def test_a_scheduler_memory_limit_counts_as_the_memory_available(tmp_path):
    """A SLURM job's cgroup (v2, the limit on the job, the process in a step below it;
    v1's memory controller) leaves less than the machine's MemAvailable: the headroom
    under each limit on the way up is found."""
    from stembb.memory import cgroup_headroom

    mount = tmp_path / "cgroup"
    job = mount / "system.slice" / "slurmstepd.scope" / "job_7"
    (job / "step_0").mkdir(parents=True)
    (job / "memory.max").write_text("2000000000\n")
    (job / "memory.current").write_text("1500000000\n")
    (job / "step_0" / "memory.max").write_text("max\n")
    (job / "step_0" / "memory.current").write_text("1400000000\n")
    proc = tmp_path / "cgroup.txt"
    proc.write_text("0::/system.slice/slurmstepd.scope/job_7/step_0\n")
    assert cgroup_headroom(proc, mount) == [500_000_000]
    v1 = mount / "memory" / "job_8"
    v1.mkdir(parents=True)
    (v1 / "memory.limit_in_bytes").write_text("3000000000\n")
    (v1 / "memory.usage_in_bytes").write_text("1000000000\n")
    proc.write_text("7:pids:/job_8\n4:cpuacct,memory:/job_8\n0::/\n")
    assert cgroup_headroom(proc, mount) == [2_000_000_000]
    assert cgroup_headroom(tmp_path / "missing", mount) == []
