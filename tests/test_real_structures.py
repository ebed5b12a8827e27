"""Real structures: the Stockholm reader, the family/clan split, --init, and a
train-on-real -> evaluate round trip with the real scripts."""
import gzip

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import REPO, error_line, run_script, train_s1
from stembb.checkpoint import S1_KIND, init_weights, load_checkpoint
from stembb.data.formats import clean_letters, parse_stockholm, read_structures
from stembb.data.splits import group_split, parse_split_spec, train_val_rows
from stembb.errors import InputError
from stembb.io import read_pickle
from stembb.s1.model import CONFIG_KEYS, build_model
from stembb.structure import pairs_from_one_idx, pairs_from_wuss

SAMPLE = REPO / "tests" / "data" / "rfam_sample.sto"
SHARED_RFAM = REPO.parent / "shared" / "data" / "rfam_seed" / "Rfam_14.9_seed_subset.sto.gz"

# Columns:      0123456789....
# SS_cons:      <<<.A___>>>::a.   pairs (0,10) (1,9) (2,8) and the pseudoknot (4,13)
TOY = """# STOCKHOLM 1.0
#=GF AC   RF99991
#=GF ID   toy_pk
#=GF CL   CL99990

seqA/1-14   GgC.gAAAGcCAAcA
seqB/1-13   GG-.GAAAGCCAACA
seqC/1-14   AGC.GAAAGCCAACA
seqD/1-14   GGC.GAARGCCAACA
#=GC SS_cons <<<.A___>>>::a.
//
"""


def test_wuss_pairs_nested_and_pseudoknot_letters():
    assert pairs_from_wuss("<<<.A___>>>::a.") == [(0, 10), (1, 9), (2, 8), (4, 13)]
    assert pairs_from_wuss("(([[{{<>}}]]))Bb,_-~:") == [(0, 13), (1, 12), (2, 11), (3, 10), (4, 9), (5, 8), (6, 7),
                                                         (14, 15)]
    with pytest.raises(ValueError, match="unmatched 'a'"):
        pairs_from_wuss("..a..")


def test_stockholm_projection_gaps_lowercase_pseudoknot_noncanonical(tmp_path):
    records, counts = parse_stockholm(TOY, tmp_path / "toy.sto")
    by_name = {r.name: r for r in records}
    assert by_name["seqA/1-14"].seq == "GGCGAAAGCCAACA"  # gap removed, lower case read
    assert by_name["seqA/1-14"].pairs == [(0, 9), (1, 8), (2, 7), (3, 12)]  # pseudoknot kept
    assert by_name["seqB/1-13"].seq == "GGGAAAGCCAACA"
    assert by_name["seqB/1-13"].pairs == [(0, 8), (1, 7), (2, 11)]  # pair (2, 8) lands on a gap
    assert by_name["seqC/1-14"].pairs == [(1, 8), (2, 7), (3, 12)]  # A-C dropped
    assert counts["consensus pairs on a gap"] == 1
    assert counts["non-canonical pairs dropped"] == 1
    assert {(r.family, r.clan, r.family_name) for r in records} == {("RF99991", "CL99990", "toy_pk")}

    mapped, c = clean_letters([r for r in records], "n")
    assert [r.seq for r in mapped if r.name == "seqD/1-14"] == ["GGCGAANGCCAACA"]
    assert c["sequences with IUPAC letters mapped to N"] == 1
    kept, c = clean_letters(parse_stockholm(TOY, tmp_path / "toy.sto")[0], "skip")
    assert len(kept) == 3 and c["sequences skipped for IUPAC letters"] == 1


def test_stockholm_gzipped_multi_alignment_and_errors(tmp_path):
    second = TOY.replace("RF99991", "RF99992").replace("#=GF CL   CL99990\n", "").replace("seq", "other")
    path = tmp_path / "two.sto.gz"
    with gzip.open(path, "wt") as fh:
        fh.write(TOY + second)
    records, counts = read_structures(path)
    assert counts["alignments"] == 2 and len(records) == 8
    assert {r.family: r.clan for r in records} == {"RF99991": "CL99990", "RF99992": ""}
    assert {r.source for r in records} == {"two.sto.gz"}

    bad = tmp_path / "bad.sto"
    bad.write_text(TOY.replace("//\n", ""))
    with pytest.raises(InputError, match="does not end with '//'"):
        read_structures(bad)
    bad.write_text(TOY.replace("seqC/1-14   AGC.GAAAGCCAACA", "seqC/1-14   AGC.GAAAGCC"))
    with pytest.raises(InputError, match="seqC/1-14 has 11 columns, SS_cons has 15"):
        read_structures(bad)


def toy_meta(n_clans=8, fams_per_clan=3, n_free=40):
    fams, clans, names = [], [], []
    for c in range(n_clans):
        for f in range(fams_per_clan):
            fams.append(f"RF1{c:02d}{f}")
            clans.append(f"CL9{c:03d}")
            names.append(f"fam{c}_{f}")
    for f in range(n_free):
        fams.append(f"RF2{f:04d}")
        clans.append("")
        names.append(f"free{f}")
    fams.append("RF03000")
    clans.append("CL00001")  # tRNA clan: protected
    names.append("tRNA-like")
    meta = pd.DataFrame({"family": fams, "clan": clans, "family_name": names})
    return pd.concat([meta] * 3, ignore_index=True)  # three sequences per family


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_group_split_never_puts_a_family_or_clan_on_two_sides(seed):
    meta = toy_meta()
    split = group_split(meta, 0.2, 0.2, seed)
    meta = meta.assign(split=split)
    assert (meta.groupby("family")["split"].nunique() == 1).all()
    assert (meta[meta["clan"] != ""].groupby("clan")["split"].nunique() == 1).all()
    assert set(split) == {"train", "val", "test"}
    assert (meta.loc[meta["clan"] == "CL00001", "split"] == "test").all()
    np.testing.assert_array_equal(split, group_split(meta, 0.2, 0.2, seed))


def test_group_split_lists_pull_whole_clans():
    meta = toy_meta()
    split = group_split(meta, parse_split_spec("--val_families", ["RF1001"]),
                        parse_split_spec("--test_families", ["CL9003", "free7"]), 0)
    assert set(split[meta["clan"] == "CL9000"]) == {"val"}  # RF1001 is in clan CL9000
    assert set(split[meta["clan"] == "CL9003"]) == {"test"}
    assert set(split[meta["family_name"] == "free7"]) == {"test"}
    assert set(split[meta["family_name"] == "free8"]) == {"train"}
    with pytest.raises(InputError, match="not in the data"):
        group_split(meta, {"RF77777"}, 0.1, 0)
    with pytest.raises(InputError, match="both select group"):
        group_split(meta, {"RF1000"}, {"RF1002"}, 0)
    with pytest.raises(InputError, match="fraction in"):
        parse_split_spec("--val_families", ["1.5"])


def test_trainers_split_column_leaves_test_rows_out():
    df = pd.DataFrame({"seq": list("ABCDE"), "split": ["train", "val", "test", "train", "val"]})
    train, val, how = train_val_rows(df, 0.5, 0)
    assert list(train) == [0, 3] and list(val) == [1, 4] and "1 test rows left out" in how
    with pytest.raises(InputError, match="no split value"):
        train_val_rows(df.assign(split=["train", None, "val", "train", "val"]), 0.5, 0)


@pytest.mark.slow
def test_init_loads_weights_and_refuses_another_architecture(tiny_s1_data, tmp_path):
    train_s1(tiny_s1_data, tmp_path / "base", "--epoch", 1)
    ckpt = tmp_path / "base" / "model_ckpt_ep_0.pth"
    saved = load_checkpoint(ckpt, S1_KIND)
    model = build_model(saved["config"])
    init_weights(model, ckpt, S1_KIND, saved["config"])
    for name, value in model.state_dict().items():
        assert torch.equal(value, saved["model"][name])
    torch.load(ckpt, weights_only=True)  # a plain load reads our checkpoints

    train_s1(tiny_s1_data, tmp_path / "ft", "--epoch", 1, "--init", ckpt)
    log = (tmp_path / "ft" / "run.log").read_text()
    assert "--init" in log and "epoch 0:" in log
    assert load_checkpoint(tmp_path / "ft" / "model_ckpt_ep_0.pth", S1_KIND)["epoch"] == 0

    other = dict(saved["config"], num_filters=[4, 8])
    with pytest.raises(InputError, match="another architecture: num_filters"):
        init_weights(build_model({k: other[k] for k in CONFIG_KEYS}), ckpt, S1_KIND, other)
    proc = run_script("s1_training/train_conv_pixel_stem_bb.py", "--data", tiny_s1_data, "--result", tmp_path / "bad",
                      "--num_filters", 4, 8, "--filter_width", 3, 3, "--hid_shared", 4, "--hid_output", 4,
                      "--epoch", 1, "--cpu", 0, "--device", "cpu", "--no_progress", "--init", ckpt, check=False)
    assert "another architecture" in error_line(proc)


@pytest.mark.slow
@pytest.mark.skipif(not SHARED_RFAM.is_file(), reason="../shared Rfam seed subset absent")
def test_shared_rfam_subset_reads_whole():
    records, counts = read_structures(SHARED_RFAM)
    assert counts["alignments"] == 4085 and len(records) == counts["sequences"] > 80000
    assert counts["non-canonical pairs dropped"] > 0 and counts["consensus pairs on a gap"] > 0
    assert all(r.family.startswith("RF") for r in records)
    assert any(r.clan for r in records)
    sample = next(r for r in records if r.pairs)
    assert all(i < j < len(sample.seq) for i, j in sample.pairs)


@pytest.mark.slow
def test_train_on_real_structures_and_evaluate_by_family(tmp_path):
    """make_structure_dataset -> S1 -> S2 data -> S2 -> run_end_to_end --split test."""
    data = tmp_path / "real.pkl.gz"
    proc = run_script("s1_data_gen/make_structure_dataset.py", "--inputs", SAMPLE, "--out", data,
                      "--val_families", 0.2, "--test_families", 0.3, "--len_min", 20, "--len_max", 90)
    assert "wrote" in proc.stderr and (tmp_path / "real_statistics.png").stat().st_size > 0
    df = read_pickle(data)
    assert {"family", "clan", "source", "name", "split"} <= set(df.columns)
    assert (df.groupby("family")["split"].nunique() == 1).all()
    for seq, idx in zip(df["seq"], df["one_idx"]):
        assert all(a + b in ("AU", "UA", "GC", "CG", "GU", "UG") for a, b in
                   ((seq[i].replace("T", "U"), seq[j].replace("T", "U")) for i, j in pairs_from_one_idx(idx)))

    train_s1(data, tmp_path / "s1", "--epoch", 1)
    assert "the data's split column" in (tmp_path / "s1" / "run.log").read_text()
    s1 = tmp_path / "s1" / "model_ckpt_ep_0.pth"
    s2_data = tmp_path / "s2.pkl.gz"
    run_script("s2_data_gen/s1_pred_stem_processing.py", "--data", data, "--threshold_p", 0.05, "--model", s1,
               "--out_file", s2_data, "--include_all")
    run_script("s2_training/train_s2_box.py", "--input_data", s2_data, "--epochs", 1, "--batch_size", 8,
               "--dim", 16, "--layers", 1, "--heads", 2, "--no_progress", "--log", tmp_path / "s2" / "box.log")
    assert "split: the data's split column" in (tmp_path / "s2" / "box.log").read_text()
    s2 = tmp_path / "s2" / "box.model_ckpt_ep_0.pth"
    out = tmp_path / "e2e.csv"
    proc = run_script("evaluation/run_end_to_end.py", "--s1_model", s1, "--s2_model", s2, "--data", data,
                      "--split", "test", "--out", out)
    per_seq = pd.read_csv(out, keep_default_na=False)
    test = read_pickle(data).query("split == 'test'")
    assert sorted(per_seq["family"].unique()) == sorted(test["family"].unique())
    assert len(per_seq) == 2 * len(test)
    summary = pd.read_csv(tmp_path / "e2e_summary.csv", keep_default_na=False)
    assert {"family", "family_macro"} <= set(summary["group"])
    fam = summary[(summary["group"] == "family") & (summary["method"] == "ViennaRNA")]
    macro = summary[(summary["group"] == "family_macro") & (summary["method"] == "ViennaRNA")]
    assert macro["f1"].item() == pytest.approx(fam["f1"].mean())
    assert "family-macro F1" in proc.stderr


@pytest.mark.slow
def test_in_family_split_and_a_comparison_table(tmp_path):
    """make_structure_dataset twice -> in_family_split -> train_s2_grammar (no epoch: the energy
    fit, decoder chosen) -> compare_predictors beside RNAfold, by length and family size."""
    made = {}
    for n in (2, 5):
        made[n] = tmp_path / f"f{n}.pkl.gz"
        run_script("s1_data_gen/make_structure_dataset.py", "--inputs", SAMPLE, "--out", made[n], "--max_per_family",
                   n, "--val_families", 0.25, "--test_families", 0.25, "--len_min", 20, "--len_max", 120)
    data, more = read_pickle(made[2]), read_pickle(made[5])
    assert (data["family_size"] >= 1).all() and data.groupby("family")["family_size"].nunique().eq(1).all()
    in_family = tmp_path / "in_family.pkl.gz"
    run_script("s1_data_gen/in_family_split.py", "--data", made[2], "--more", made[5], "--out", in_family,
               "--max_per_family", 2)
    held = read_pickle(in_family)
    assert (held["split"] == "test").all() and not set(held["seq"]) & set(data["seq"])
    assert set(held["family"]) <= set(data.loc[data["split"] == "train", "family"])
    assert held.groupby("family").size().max() <= 2 and set(held["seq"]) <= set(more["seq"])

    grammar = tmp_path / "grammar.pth"
    proc = run_script("s2_training/train_s2_grammar.py", "--data", made[2], "--init_terms", REPO / "models" / "stembb_s2.pth",
                      "--out", grammar, "--epochs", 0, "--no_progress")
    assert "kept epoch -1 (validation F1" in proc.stderr
    out = tmp_path / "compare.csv"
    proc = run_script("evaluation/compare_predictors.py", "--data", in_family, "--split", "test",
                      "--model", "grammar", "-", grammar, "--model", "grammar max", "-", grammar, "max",
                      "--out", out, "--no_progress")
    per_seq = pd.read_csv(out)
    assert sorted(per_seq["method"].unique()) == ["RNAfold MEA", "RNAfold MFE", "grammar", "grammar max"]
    assert per_seq.groupby("method").size().eq(len(held)).all()
    table = (tmp_path / "compare_table.md").read_text()
    assert "| grammar max |" in table and "family size" in table and "| grammar max |" in proc.stderr
    summary = pd.read_csv(tmp_path / "compare_summary.csv")
    assert {"all", "length", "family_size", "family_macro"} <= set(summary["group"])

    proc = run_script("evaluation/compare_predictors.py", "--data", in_family, "--model", "x", "-", grammar, "best",
                      "--out", tmp_path / "bad.csv", check=False)
    assert "METHOD one of mea, threshold, max" in error_line(proc)
    s1_needed = run_script("evaluation/compare_predictors.py", "--data", in_family, "--model", "box", "-",
                           REPO / "models" / "stembb_s2_box.pth", "--out", tmp_path / "bad.csv", check=False)
    assert "this S2 model reads S1's output; give it an S1 checkpoint" in error_line(s1_needed)

    held_out = tmp_path / "held_out.pkl.gz"  # the long-RNA set's recipe: families and clans f2 never trained on
    run_script("s1_data_gen/make_structure_dataset.py", "--inputs", SAMPLE, "--out", held_out, "--held_out_from",
               made[2], "--len_min", 20)
    rows, seen = read_pickle(held_out), data[data["split"] != "test"]
    assert len(rows) and (rows["split"] == "test").all() and not set(rows["family"]) & set(seen["family"])
    assert not (set(rows["clan"]) - {""}) & set(seen["clan"])
    spanned = tmp_path / "spanned.csv"
    run_script("evaluation/compare_predictors.py", "--data", held_out, "--model", "grammar", "-", grammar,
               "--max_span", 30, "--out", spanned, "--no_progress")
    assert sorted(pd.read_csv(spanned)["method"].unique()) == [
        "RNAfold MEA (span 30)", "RNAfold MFE (span 30)", "grammar (span 30)"]
