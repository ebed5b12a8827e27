import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import REPO, error_line, random_candidates, run_script
from stembb.errors import InputError
from stembb.grammar.decode import decode_structure
from stembb.data.folding import fold
from stembb.data.formats import format_record, read_bpseq, read_ct, read_fasta, read_references
from stembb.metrics import pair_scores
from stembb.s2.gnn import PairGNN, build_graph, collate_graphs
from stembb.structure import canonical_pair_matrix, is_nested, pairs_from_db, validate_pairs


def test_decoded_structure_is_always_valid():
    rng = np.random.default_rng(0)
    for _ in range(150):
        seq, pairs = random_candidates(rng, 2, 70, 1, rng.uniform(0.05, 1.0))
        length = len(seq)
        probs = rng.random(len(pairs)) ** rng.uniform(0.2, 3)
        out = decode_structure(length, pairs, probs, gamma=float(rng.uniform(0.3, 8)), seq=seq)
        validate_pairs(out, length)  # each base at most once, i < j, in range
        assert is_nested(out)
        allowed = {tuple(p) for p in pairs}
        canonical = canonical_pair_matrix(seq)
        assert all((a, b) in allowed and b - a > 3 and canonical[a, b] for a, b in out)


def test_decoding_a_matrix_that_marks_one_structure_returns_it():
    seq = "GGGAAAUCCCGCGCAUUAGCGCGUUAGCAAUGCUAACGGAUCCUAGCAUGCAUGGCUAGGAUCC"
    truth = pairs_from_db(fold(seq, partition=False).mfe_structure)
    assert len(truth) > 10
    i, j = np.triu_indices(len(seq), 1)
    pairs = np.stack([i, j], axis=1)
    probs = np.array([1.0 if (a, b) in set(truth) else 0.0 for a, b in pairs])
    assert decode_structure(len(seq), pairs, probs, seq=seq) == truth
    assert decode_structure(len(seq), np.zeros((0, 2)), np.zeros(0), seq=seq) == []


def test_gamma_trades_precision_for_recall():
    pairs = np.array([[0, 10], [1, 9], [20, 30]])
    probs = np.array([0.9, 0.4, 0.3])
    seq = "G" * 2 + "A" * 7 + "C" * 2 + "A" * 9 + "G" + "A" * 9 + "C"
    assert decode_structure(len(seq), pairs, probs, gamma=1.0, seq=seq) == [(0, 10)]
    assert decode_structure(len(seq), pairs, probs, gamma=4.0, seq=seq) == [(0, 10), (1, 9), (20, 30)]


def test_formats_round_trip_with_pseudoknot(tmp_path):
    seq = "GGGAAACCCAGGAAACCUUUAGG"
    db = "(((..[[)))..]]........."
    pairs = pairs_from_db(db)
    for fmt, reader in (("bpseq", read_bpseq), ("ct", read_ct)):
        path = tmp_path / f"x.{fmt}"
        path.write_text(format_record("x", seq, pairs, fmt))
        [rec] = reader(path)
        assert rec.seq == seq and rec.pairs == pairs
    path = tmp_path / "x.fa"
    path.write_text(format_record("x", seq, pairs, "dot-bracket", energy=-3.2))
    rec = read_fasta(path, with_structure=True)[0]
    assert (rec.name, rec.seq, rec.pairs) == ("x", seq, pairs)
    assert "[[" in path.read_text() and "( -3.20)" in path.read_text()
    # references keep the pseudoknot and are scored as they are
    fam = tmp_path / "refs" / "famA"
    fam.mkdir(parents=True)
    (fam / "x.bpseq").write_text(format_record("x", seq, pairs, "bpseq"))
    (tmp_path / "refs" / "y.ct").write_text(format_record("y", seq, pairs[:3], "ct"))
    refs = read_references(tmp_path / "refs")
    assert [(r.name, r.family, len(r.pairs)) for r in refs] == [("x", "famA", 5), ("y", "", 3)]
    assert pair_scores(pairs[:3], refs[0].pairs)["recall"] == pytest.approx(3 / 5)


def test_slip_allowance():
    ref = [(0, 20), (1, 19)]
    assert pair_scores([(0, 21), (1, 19)], ref)["f1"] == 0.5
    assert pair_scores([(0, 21), (1, 19)], ref, slip=1)["f1"] == 1.0


def test_gnn_scores_candidate_pairs_only():
    seq = "GGGAAACCCUUUGGGAAACCC"
    cands = [(0, 8), (1, 7), (12, 20)]
    feats = [[1, 0, 0.5, 0.2, 0, 0]] * 3
    graph = build_graph(seq, cands, feats, 3, labels=[1, 0, 1])
    batch = collate_graphs([graph, build_graph(seq, cands[:1], feats[:1], 3, labels=[0])])
    torch.manual_seed(0)
    logits = PairGNN(3, 8, [8, 8])(batch)
    assert logits.shape == (4,) and batch["labels"].tolist() == [1, 0, 1, 0]
    # a true pair the candidates miss (2, 6) has no logit, so it cannot enter the loss
    assert batch["pairs"].tolist() == [[0, 8], [1, 7], [12, 20], [21, 29]]


@pytest.fixture(scope="module")
def tiny_models(s2_models):
    """The tiny S1 and box-transformer S2 checkpoints of the session's ``s2_models``."""
    root, s1, box, _ = s2_models
    return root, s1, box


def test_s2_training_outputs_next_to_log(tiny_models):
    root, _, _ = tiny_models
    names = sorted(p.name for p in (root / "result").iterdir() if p.name.startswith("box."))
    assert names == ["box.log", "box.metrics.csv", "box.metrics.png", "box.model_ckpt_ep_0.pth",
                     "box.model_ckpt_ep_1.pth", "box.terms.csv", "box.terms.png"]
    metrics = pd.read_csv(root / "result" / "box.metrics.csv")
    assert {"loss", "auroc", "auprc", "f1_at_0.3", "f1_at_0.5", "f1_at_0.7"} <= set(metrics.columns)
    assert len(metrics) == 4
    terms = pd.read_csv(root / "result" / "box.terms.csv")  # the loop terms fitted alone first
    assert {"epoch", "split", "loss", "decoded_f1"} <= set(terms.columns) and terms["epoch"].nunique() == 3


@pytest.mark.slow
def test_end_to_end_on_pickle_and_references(tiny_models, tiny_s1_data, tmp_path):
    _, s1, s2 = tiny_models
    out = tmp_path / "e2e.csv"
    proc = run_script("evaluation/run_end_to_end.py", "--s1_model", s1, "--s2_model", s2, "--data", tiny_s1_data,
                      "--out", out, "--num", 8, "--threshold_p", 0.05)
    per_seq = pd.read_csv(out)
    assert sorted(per_seq["method"].unique()) == ["ViennaRNA", "stembb"] and len(per_seq) == 16
    assert {"precision", "recall", "f1", "f1_slip", "seconds"} <= set(per_seq.columns)
    summary = pd.read_csv(tmp_path / "e2e_summary.csv")
    assert set(summary["group"]) == {"all", "length"}
    assert (tmp_path / "e2e.png").read_bytes()[:4] == b"\x89PNG"
    assert "end-to-end F1 on 8 sequences: stembb" in proc.stderr

    refs = tmp_path / "refs.fa"
    refs.write_text(">r1\nGGGGAAAACCCCAUGCGAAAGCAUG\n((((....)))).(((....)))..\n>r2\nGGGAAACCC\n(((...)))\n")
    run_script("evaluation/run_end_to_end.py", "--s1_model", s1, "--s2_model", s2, "--refs", refs,
               "--out", tmp_path / "r.csv")
    r = pd.read_csv(tmp_path / "r.csv")
    assert list(r["name"].unique()) == ["r1", "r2"]


@pytest.mark.slow
def test_predict_structure_formats_and_errors(tiny_models, tmp_path):
    _, s1, s2 = tiny_models
    fasta = tmp_path / "in.fa"
    fasta.write_text(">a desc\nggguuuacccgcgcau\nuagcgcguuagc\n>b\nACGUACGUAAAACGUACGU\n")
    proc = run_script("evaluation/predict_structure.py", "--s1_model", s1, "--s2_model", s2, "--fasta", fasta)
    lines = proc.stdout.splitlines()
    assert lines[0] == ">a" and lines[1] == "GGGUUUACCCGCGCAUUAGCGCGUUAGC" and len(lines[2]) == 28 and lines[3] == ">b"
    for fmt, reader in (("bpseq", read_bpseq), ("ct", read_ct)):
        out = tmp_path / f"o.{fmt}"
        run_script("evaluation/predict_structure.py", "--s1_model", s1, "--s2_model", s2, "--fasta", fasta,
                   "--format", fmt, "--out", out)
        assert out.read_text().count("\n") == 28 + 19 + 2
        assert [(r.name, len(r.seq)) for r in reader(out)] == [("a", 28), ("b", 19)]  # every record reads back
    for text, message in ((">x\n", "record 'x': empty sequence"), ("", "no FASTA record"),
                          (">x\nACGU1X\n", "record 'x': characters that are not letters: '1'"),
                          (">long\n" + "A" * 30 + "\n", "record 'long' is 30 nt, longer than --max_length 20")):
        fasta.write_text(text)
        proc = run_script("evaluation/predict_structure.py", "--s1_model", s1, "--s2_model", s2, "--fasta", fasta,
                          "--max_length", 20, "--out", tmp_path / "never.db", check=False)
        assert message in error_line(proc)
    assert not (tmp_path / "never.db").exists()


def test_shipped_model_predicts_with_no_model_flags(tmp_path):
    """A fresh clone predicts at once: models/ is the default of the end-to-end scripts."""
    fasta = tmp_path / "in.fa"
    fasta.write_text(">hairpin\nGGGGAAACCCCAUAUGGGCGAAAGCCCUU\n>lower\nacgugcaugcuagcuagcuagcaugcaugca\n")
    proc = run_script("evaluation/predict_structure.py", "--fasta", fasta, cwd=tmp_path)
    lines = proc.stdout.splitlines()
    assert lines[0] == ">hairpin" and len(lines) == 6
    for seq, db in ((lines[1], lines[2]), (lines[4], lines[5])):
        db = db.split()[0]  # a grammar model prints the structure's energy after it, as RNAfold does
        assert len(db) == len(seq) and db.count("(") == db.count(")") > 0
    assert "predicted 2 structures" in proc.stderr


def test_python_api_and_console_command_fold_with_the_shipped_model():
    import stembb

    structure, energy = stembb.fold("gggGAAACCCCauauGGGCGAAAGCCCUU")
    assert structure.startswith("((((") and len(structure) == 29 and energy < 0
    predictor = stembb.load_predictor(device="cpu")
    assert predictor.predict(["GGGGAAACCCC", "GGGGAAACCCC"]) == [predictor.predict(["GGGGAAACCCC"])[0]] * 2
    with pytest.raises(InputError, match="characters that are not letters: '-'"):
        stembb.fold("GGG-AAACCC")
    command = Path(sys.executable).parent / "stembb-fold"  # pyproject's console entry, installed by make
    proc = subprocess.run([command], input=">a\nGGGGAAACCCCAUAUGGGCGAAAGCCCUU\n", capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[2].split()[0] == stembb.fold("GGGGAAACCCCAUAUGGGCGAAAGCCCUU")[0]


def test_model_export_refuses_a_bad_pair_and_leaves_models_as_they_were(tmp_path, monkeypatch):
    shipped = [REPO / "models" / name for name in ("stembb_s1.pth", "stembb_s2.pth")]
    before = [p.read_bytes() for p in shipped]
    import stembb.runlog
    monkeypatch.setattr(stembb.runlog, "git_commit", lambda: "0123abc-dirty")  # the export script reads it at start
    proc = run_script("scripts/export_models.py", *shipped, check=False)
    assert "the tree has uncommitted changes (0123abc-dirty); commit them first" in error_line(proc)
    monkeypatch.undo()
    proc = run_script("scripts/export_models.py", shipped[0], tmp_path / "missing_s2.pth", check=False)
    assert "missing_s2.pth: checkpoint not found" in error_line(proc)
    proc = run_script("scripts/export_models.py", shipped[1], shipped[1], check=False)  # an S2 file as the S1
    assert proc.returncode == 2 and [p.read_bytes() for p in shipped] == before


def test_structure_files_with_several_records_and_malformed_columns(tmp_path):
    seqs = {"one": ("GGGGAAACCCC", [(0, 10), (1, 9)]), "two": ("ACGUAGCUAGCUAGC", [(2, 12)]),
            "three": ("GGGAAAUCC", [])}
    for fmt, reader in (("bpseq", read_bpseq), ("ct", read_ct)):
        path = tmp_path / f"many.{fmt}"
        path.write_text("".join(format_record(name, seq, pairs, fmt) for name, (seq, pairs) in seqs.items()))
        assert [(r.name, r.seq, r.pairs) for r in reader(path)] == [(n, s, p) for n, (s, p) in seqs.items()]
        refs = read_references(path)  # one file as --refs: every record, not the first
        assert [r.name for r in refs] == list(seqs)

    def refused(name, text, reader):
        path = tmp_path / name
        path.write_text(text)
        with pytest.raises(InputError) as err:
            reader(path)
        return str(err.value)

    bpseq = "".join(f"{k} {b} 0\n" for k, b in enumerate("GGGGAAACCCC", 1))
    assert "base column 'AG' is not one letter" in refused("a.bpseq", bpseq.replace("5 A 0", "5 AG 0"), read_bpseq)
    assert "base 5 pairs with itself" in refused("b.bpseq", bpseq.replace("5 A 0", "5 A 5"), read_bpseq)
    assert "pair (5, 6) closes a hairpin of no base" in refused(
        "c.bpseq", bpseq.replace("5 A 0", "5 A 6").replace("6 A 0", "6 A 5"), lambda p: read_bpseq(p, strict=True))
    ct = format_record("x", "GGGGAAACCCC", [(0, 10)], "ct")
    rows = ct.splitlines()
    assert "index column says 4, expected 3" in refused(
        "a.ct", "\n".join([rows[0], rows[1], rows[2], rows[4], rows[3]] + rows[5:]) + "\n", read_ct)
    assert "header says 9 bases, but row 10 follows" in refused("b.ct", ct.replace("11 x", "9 x", 1), read_ct)
    assert "header says 12 bases, found 11" in refused("c.ct", ct.replace("11 x", "12 x", 1), read_ct)
    assert "closes a hairpin of no base" in refused("d.fa", ">x\nGGAC\n.().\n",
                                                    lambda p: read_fasta(p, True, strict=True))
