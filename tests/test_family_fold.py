"""Real files as they come (neighbouring pairs, one-sided partners, a file per family),
training references made producible and cropped to domains, crossing-pair scores, and
the family-fold benchmark end to end on a few small families."""
from collections import Counter

import numpy as np
import pandas as pd
import pytest

from conftest import error_line, run_script
from stembb.data.folding import fold
from stembb.data.formats import format_record, read_bpseq, read_references
from stembb.errors import InputError
from stembb.metrics import pair_scores
from stembb.report import score_row
from stembb.grammar import references
from stembb.structure import pairs_from_db

HAIRPIN = ("GGGCGAAAGCCC", [(0, 11), (1, 10), (2, 9), (3, 8)])


def bpseq_with(partners: dict[int, int], seq: str) -> str:
    return "# r\n" + "".join(f"{k} {b} {partners.get(k, 0)}\n" for k, b in enumerate(seq, 1))


def test_real_files_keep_neighbouring_pairs_and_drop_one_sided_partners(tmp_path):
    path = tmp_path / "a.bpseq"
    path.write_text(bpseq_with({1: 12, 12: 1, 5: 6, 6: 5, 3: 10}, "GGGCGAAAGCCC"))  # 3 -> 10, 10 -> nothing
    counts = Counter()
    (rec,) = read_bpseq(path, counts=counts)
    assert rec.pairs == [(0, 11), (4, 5)]
    assert counts == {"pairs of neighbouring bases kept": 1, "one-sided partners dropped": 1}
    with pytest.raises(InputError, match="base 3 pairs with 10, which does not pair back"):
        read_bpseq(path, strict=True)
    path.write_text(bpseq_with({1: 13}, "GGGCGAAAGCCC"))
    with pytest.raises(InputError, match="outside the record's 12 bases"):
        read_bpseq(path)  # malformed whatever --strict says


def test_a_folder_of_multi_record_files_is_one_family_per_file(tmp_path):
    for family in ("famA", "famB"):
        (tmp_path / f"{family}.bpseq").write_text("".join(
            format_record(f"{family}{k}", HAIRPIN[0], HAIRPIN[1], "bpseq") for k in range(2)))
    (tmp_path / "single.bpseq").write_text(format_record("one", *HAIRPIN, "bpseq"))
    records = read_references(tmp_path)
    assert [(r.name, r.family) for r in records] == [
        ("famA:famA0", "famA"), ("famA:famA1", "famA"), ("famB:famB0", "famB"), ("famB:famB1", "famB"),
        ("single", "")]


def test_pseudoknot_letters_in_dot_bracket_and_crossing_pair_scores():
    assert pairs_from_db("((AA..))aa") == [(0, 7), (1, 6), (2, 9), (3, 8)]
    with pytest.raises(ValueError, match="unmatched 'a' at position 3"):
        pairs_from_db("..a")

    class Rec:
        name, family, clan, seq = "r", "", "", "G" * 20
        pairs = [(0, 10), (1, 9), (5, 15), (6, 14)]

    nested = score_row(0, Rec, "m", [(0, 10), (1, 9)], 0.0)
    assert nested["pseudoknotted"] and nested["f1_crossing"] == 0.0
    assert score_row(0, Rec, "m", Rec.pairs, 0.0)["f1_crossing"] == 1.0
    Rec.pairs = [(0, 10)]
    assert pd.isna(score_row(0, Rec, "m", [(0, 10)], 0.0)["f1_crossing"])
    assert pair_scores([], [])["f1"] == 1.0


def test_training_references_made_producible_by_reason_and_cropped_to_domains():
    seq = "GGGCGAAAGCCCAAGGGCGAAAGCCCAAGCAU"
    ref = [(0, 11), (1, 10), (2, 9), (3, 8), (14, 25), (15, 24), (16, 23), (17, 22), (28, 29), (4, 20), (7, 31)]
    counts = Counter()
    kept = references.trainable_reference(seq, ref, counts=counts)
    assert kept == [(0, 11), (1, 10), (2, 9), (3, 8), (14, 25), (15, 24), (16, 23), (17, 22)]
    assert counts == {reason: 1 for reason in references.PRODUCIBLE_DROPS}  # G-A; a hairpin of none; (7, 31) crosses
    assert references.domains(kept, len(seq), 40) == [(0, len(seq) - 1)]
    assert references.domains(kept, len(seq), 20) == [(0, 11), (14, 25)]
    outer = [(0, 31)] + kept
    assert references.domains(outer, 32, 20) == [(0, 11), (14, 25)]  # the pair longer than the crop is left out


@pytest.mark.slow
def test_family_fold_end_to_end_on_three_small_families(tmp_path):
    families = {"famA": ["GGGCGAAAGCCC", "GGACUUCGGUCC", "GCGCAAAAGCGC"],
                "famB": ["GGGAAACCCAGGGAAACCC", "GCGCAUAGCGCAAGGCAAGCC", "CCCCAAAAGGGG"],
                "famC": ["GGGGAAAACCCCAAGGGAAACCCU", "AGGCUAAAGCCUAGGG", "CGCGAAAACGCG"]}
    data = write_families(tmp_path / "archive", families)
    out = tmp_path / "ff"
    argv = ["--data", data, "--out", out, "--epochs", 1, "--threads", 1, "--no_progress", "--no_shipped",
            "--families", "famA", "famB"]
    proc = run_script("evaluation/family_fold.py", *argv)
    per_seq = pd.read_csv(out / "family_fold.csv")
    assert set(per_seq["family"]) == {"famA", "famB"}
    assert per_seq.groupby("method").size().to_dict() == {m: 6 for m in ("RNAfold MFE", "RNAfold MEA", "energy fit",
                                                                          "trained")}
    summary = pd.read_csv(out / "family_fold_summary.csv").set_index("method")
    assert summary.loc["RNAfold MFE", "F1"] == pytest.approx(per_seq[per_seq["method"] == "RNAfold MFE"]["f1"].mean())
    assert {"famA", "famB", "families above RNAfold MFE"} <= set(summary.columns)
    assert (out / "family_fold.png").stat().st_size > 0 and "family-fold over 2 families" in proc.stderr
    train = pd.read_pickle(out / "famA" / "data.pkl.gz")
    assert set(train.loc[train["split"] == "test", "family"]) == {"famA"}
    assert set(train.loc[train["split"] != "test", "family"]) == {"famB", "famC"}
    assert (train.groupby("family")["split"].apply(lambda s: (s == "val").sum()) >= 1).loc[["famB", "famC"]].all()
    before = (out / "famA" / "grammar.pth").stat().st_mtime_ns
    assert "folder holds an earlier run" in error_line(run_script("evaluation/family_fold.py", *argv, check=False))
    proc = run_script("evaluation/family_fold.py", *argv, "--resume")
    assert "famA: reusing" in proc.stderr and (out / "famA" / "grammar.pth").stat().st_mtime_ns == before


def test_val_families_choose_on_whole_families_never_trained_on(tmp_path):
    rng = np.random.default_rng(0)
    random_rna = lambda n: "".join(rng.choice(list("ACGU"), n))  # noqa: E731
    families = {"famA": ["GGGCGAAAGCCC", "GGACUUCGGUCC"],
                "famB": ["GGGGC" + random_rna(8) + "GCCCC" for _ in range(50)],
                "famC": ["CCGCGG" + random_rna(8) + "CCGCGG" for _ in range(50)]}
    data = write_families(tmp_path / "archive", families)
    fold_a = ["--data", data, "--families", "famA"]
    proc = run_script("evaluation/family_fold.py", *fold_a, "--out", tmp_path / "ff", "--val_families", 1,
                      "--max_val", 20, "--epochs", 0, "--threads", 1, "--no_progress", "--no_shipped")
    df = pd.read_pickle(tmp_path / "ff" / "famA" / "data.pkl.gz")
    val_family = set(df.loc[df["split"] == "val", "family"])
    assert len(val_family) == 1 and (df["split"] == "val").sum() == 20
    assert set(df.loc[df["split"] == "train", "family"]) == {"famB", "famC"} - val_family
    assert f"val 20 records of the families {val_family.pop()}" in proc.stderr
    too_many = error_line(run_script("evaluation/family_fold.py", *fold_a, "--out", tmp_path / "ff2",
                                     "--val_families", 2, check=False))
    assert "--val_families 2: fold famA has 2 families of at least 50 records" in too_many


def write_families(folder, families: dict[str, list[str]]):
    """One BPSEQ file per family in ``folder``, each record folded by RNAfold."""
    folder.mkdir()
    for family, seqs in families.items():
        (folder / f"{family}.bpseq").write_text("".join(
            format_record(f"{family}{k}", seq, pairs_from_db(mfe_db(seq)), "bpseq") for k, seq in enumerate(seqs)))
    return folder


def mfe_db(seq: str) -> str:
    return fold(seq, partition=False).mfe_structure


def test_compare_predictors_refuses_a_name_given_twice(tmp_path):
    refs = tmp_path / "r.fa"
    refs.write_text(">a\nGGGCGAAAGCCC\n((((....))))\n")
    model = "models/stembb_s2.pth"
    proc = run_script("evaluation/compare_predictors.py", "--refs", refs, "--model", "a", "-", model,
                      "--model", "a", "-", model, "--out", tmp_path / "c.csv", check=False)
    assert "--model a: this name is given twice" in error_line(proc)


@pytest.mark.slow
def test_family_fold_measures_a_deep_s1_over_the_shipped_grammar(tmp_path):
    families = {"famA": ["GGGCGAAAGCCCAAUU", "GGACUUCGGUCCA", "GCGCAAAAGCGCUU"],
                "famB": ["GGGAAACCCAGGGAAACCC", "GCGCAUAGCGCAAGGCAAGCC", "CCCCAAAAGGGGA", "GGCGAAAGCCAGGCAAAGCC"]}
    data = write_families(tmp_path / "archive", families)
    out = tmp_path / "ff"
    run_script("evaluation/family_fold.py", "--data", data, "--out", out, "--families", "famA", "--deep_s1", "deep16",
               "--deep_epochs", 1, "--deep_epoch_size", 2, "--no_grammar_training", "--threads", 1, "--no_progress")
    per_seq = pd.read_csv(out / "family_fold.csv")
    assert per_seq.groupby("method").size().to_dict() == {m: 3 for m in (
        "RNAfold MFE", "RNAfold MEA", "shipped", "shipped + deep S1", "shipped + deep S1 + pseudoknots")}
    assert not (out / "famA" / "grammar.pth").exists() and (out / "famA" / "deep_s1.pth").is_file()
    log = (out / "famA" / "deep_s1.log").read_text()
    assert "deep S1 deep16" in log and "epoch 0: training NLL" in log


def test_all_families_data_holds_every_family_as_train_and_val(tmp_path):
    families = {"famA": ["GGGCGAAAGCCC", "GGACUUCGGUCC", "GCGCAAAAGCGC"], "famB": ["GGGAAACCCAGGGAAACCC", "GGGCGAAAGCCC"]}
    data = write_families(tmp_path / "archive", families)
    out = tmp_path / "all.pkl.gz"
    proc = run_script("evaluation/family_fold.py", "--data", data, "--all_families_data", out, "--val_fraction", 0.3)
    df = pd.read_pickle(out)
    assert set(df["split"]) == {"train", "val"} and set(df["family"]) == {"famA", "famB"}
    assert (df.groupby("family")["split"].apply(lambda s: (s == "val").sum()) >= 1).all()
    assert len(df) == 4 and "1 duplicate or held-out sequence" in proc.stderr  # famB's copy of famA0 left out
    assert (tmp_path / "all.log").is_file()
    assert "--out is required" in error_line(run_script("evaluation/family_fold.py", "--data", data, check=False))
