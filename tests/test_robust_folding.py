"""Hardening round 3: letters outside ACGTU, whitespace in FASTA lines, predictions that
survive a kill and resume byte for byte, --bpp checks and long dot plots, spans shared
by the ViennaRNA rows, and one-line errors of the grammar trainer; real processes, files
and folds throughout."""
import fcntl
import os
import logging
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from conftest import REPO, error_line, run_script
from stembb.data.formats import format_record, read_fasta
from stembb.errors import InputError, UnpairableLetterWarning
from stembb.io import read_pickle, write_pickle
from stembb.report import rnafold_pairs

PREDICT = "evaluation/predict_structure.py"
SAMPLE = REPO / "tests" / "data" / "rfam_sample.sto"


def structures_of(stdout: str) -> dict[str, str]:
    lines = stdout.splitlines()
    return {lines[k][1:]: lines[k + 2].split()[0] for k in range(0, len(lines), 3)}


def test_letters_outside_acgu_fold_unpaired_with_one_note_per_record(tmp_path):
    fasta = tmp_path / "chains.fa"
    fasta.write_text(">pdb\nGGGGPAAACCCC\n>iupac\nGGGGARYCCCCNGGGGAAACCCC\n>plain\nGGGGAAACCCC\n")
    proc = run_script(PREDICT, "--fasta", fasta)
    folded = structures_of(proc.stdout)
    assert folded["pdb"][4] == "." and folded["pdb"].count("(") == 4
    assert folded["plain"] == "((((...))))"
    assert proc.stderr.count("note: record 'pdb': 1 base outside ACGTU (P) folds unpaired") == 1
    assert "note: record 'iupac': 3 bases outside ACGTU (NRY) fold unpaired" in proc.stderr
    assert "record 'plain'" not in proc.stderr and "Warning" not in proc.stderr
    strict = run_script(PREDICT, "--fasta", fasta, "--strict_letters", check=False)
    assert error_line(strict).endswith("record 'pdb': letters outside ACGTUN (--strict_letters): P")
    fasta.write_text(">x\nGGGG*AAACCCC\n")
    assert "record 'x': characters that are not letters: '*'" in error_line(run_script(PREDICT, "--fasta", fasta,
                                                                                       check=False))


def test_the_api_folds_unknown_letters_with_a_warning_and_refuses_other_characters():
    import stembb
    with pytest.warns(UnpairableLetterWarning, match=r"stembb.fold: sequence 1: 1 base outside ACGTU \(P\)"):
        structure, _ = stembb.fold("GGGGPAAACCCC")
    assert structure[4] == "." and structure.count("(") == 4
    predictor = stembb.load_predictor()
    with pytest.warns(UnpairableLetterWarning, match="Predictor.predict: sequence 2"):
        assert predictor.predict(["GGGGAAACCCC", "GGGGRAAACCCC"])[1] == [(0, 11), (1, 10), (2, 9), (3, 8)]
    with pytest.raises(InputError, match=r"characters that are not letters: '\\t' \(U\+0009\)"):
        stembb.fold("GGGG\tAAACCCC")


def test_whitespace_inside_fasta_sequence_lines_is_dropped(tmp_path):
    fasta = tmp_path / "wrapped.fa"
    fasta.write_text(">a\nGGGG AAAC\tCCC\n>b with words\nGGG GAA\nACC CC \n")
    assert [(r.name, r.seq) for r in read_fasta(fasta)] == [("a", "GGGGAAACCCC"), ("b", "GGGGAAACCCC")]
    refs = tmp_path / "refs.fa"
    refs.write_text(">a\nGGGG AAAC CCC\n((((...))))\n")
    assert read_fasta(refs, with_structure=True)[0].pairs == [(0, 10), (1, 9), (2, 8), (3, 7)]


def random_fasta(path, n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    path.write_text("".join(f">r{k}\n{''.join(rng.choice(list('ACGU'), int(rng.integers(60, 100))))}\n"
                            for k in range(n)))


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["dot-bracket", "ct"])
def test_resume_continues_a_cut_partial_file_to_the_same_bytes(tmp_path, fmt):
    fasta = tmp_path / "in.fa"
    random_fasta(fasta, 30, 1)
    whole = tmp_path / "whole.out"
    run_script(PREDICT, "--fasta", fasta, "--format", fmt, "--out", whole)
    data = whole.read_bytes()
    out = tmp_path / "o.out"
    partial = tmp_path / "o.out.partial"
    cut = data.index(b"\n", len(data) // 2 + 7)  # inside a record, after a complete line
    partial.write_bytes(data[:cut])
    proc = run_script(PREDICT, "--fasta", fasta, "--format", fmt, "--out", out, check=False)
    assert "o.out.partial: an interrupted run's output is there; pass --resume" in error_line(proc)
    proc = run_script(PREDICT, "--fasta", fasta, "--format", fmt, "--out", out, "--resume")
    assert out.read_bytes() == data and not partial.exists()
    assert "resuming: " in proc.stderr and " of 30 records were finished" in proc.stderr
    partial.write_bytes(data[:cut])
    with open(partial, "a") as held:  # a run still writing it: a second one must not mix records in
        fcntl.flock(held, fcntl.LOCK_EX)
        proc = run_script(PREDICT, "--fasta", fasta, "--format", fmt, "--out", out, "--resume", check=False)
    assert "o.out.partial: another run is writing it now" in error_line(proc)
    assert partial.read_bytes() == data[:cut]
    random_fasta(fasta, 30, 2)  # another input: the partial file is not its output
    proc = run_script(PREDICT, "--fasta", fasta, "--format", fmt, "--out", out, "--resume", check=False)
    assert "is not 'r0' of this input" in error_line(proc) and "another run's output" in error_line(proc)
    assert partial.read_bytes() == data[:cut]  # another input's file is left as it was


@pytest.mark.slow
def test_a_prediction_killed_on_the_way_keeps_its_records_and_resumes_byte_identical(tmp_path):
    fasta = tmp_path / "big.fa"
    random_fasta(fasta, 500, 3)
    out, partial, bpp = tmp_path / "o.db", tmp_path / "o.db.partial", tmp_path / "dots"
    command = [sys.executable, str(REPO / PREDICT), "--fasta", str(fasta), "--out", str(out)]
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (partial.exists() and partial.stat().st_size) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("interrupted: ") and "of 500 records are finished in" in last and "--resume" in last
    assert not out.exists() and partial.exists()
    kept = partial.read_text()
    run_script(PREDICT, "--fasta", fasta, "--out", out, "--resume")
    whole = run_script(PREDICT, "--fasta", fasta).stdout
    assert out.read_text() == whole and whole.startswith(kept) and not partial.exists()

    # one long record (about 20 s here): the kill lands once folding has begun, before it ends, on any machine
    long = tmp_path / "long.fa"
    long.write_text(">long\n" + "".join(np.random.default_rng(0).choice(list("ACGU"), 2000)) + "\n")
    early = subprocess.Popen([sys.executable, str(REPO / PREDICT), "--fasta", str(long), "--out",
                              str(tmp_path / "e.db"), "--bpp", str(bpp)], stderr=subprocess.PIPE, text=True)
    for line in early.stderr:
        if "longer than" in line:  # the last line before the fold
            break
    early.send_signal(signal.SIGTERM)
    early.communicate(timeout=60)
    assert early.returncode in (143, -signal.SIGTERM)
    assert not bpp.exists() and not (tmp_path / "e.db.partial").exists() and not (tmp_path / "e.db").exists()


def test_bpp_and_out_are_checked_before_any_work(tmp_path):
    fasta = tmp_path / "in.fa"
    fasta.write_text(">a\nGGGGAAACCCC\n")
    same = tmp_path / "X"
    proc = run_script(PREDICT, "--fasta", fasta, "--bpp", same, "--out", same, check=False)
    assert "--bpp" in error_line(proc) and "is also --out" in error_line(proc) and not same.exists()
    taken = tmp_path / "file.txt"
    taken.write_text("keep")
    proc = run_script(PREDICT, "--fasta", fasta, "--bpp", taken, check=False)
    assert "is an existing file; give a folder" in error_line(proc) and taken.read_text() == "keep"
    proc = run_script(PREDICT, "--fasta", fasta, "--resume", check=False)
    assert "--resume continues an --out file" in error_line(proc)


def test_dot_plots_are_drawn_from_the_sparse_pairs():
    import stembb
    from stembb.fold_cli import DOT_PLOT_PIXELS, dot_plot_image
    seq = "GGGGAAACCCCAUAUGGGCGAAAGCCCUU"
    _, (ens,), _ = stembb.load_predictor().fold([seq])
    dense = ens.matrix(len(seq))
    np.testing.assert_allclose(dot_plot_image(len(seq), ens.pairs, ens.probs), np.maximum(dense, dense.T))
    pairs, probs = np.array([[0, 19_999], [10, 30], [11, 31]]), np.array([0.9, 0.2, 0.7])
    image = dot_plot_image(20_000, pairs, probs)
    assert image.shape == (DOT_PLOT_PIXELS, DOT_PLOT_PIXELS) and image[0, 999] == image[999, 0] == 0.9
    assert image[0, 1] == 0.7 and image.sum() == pytest.approx(2 * (0.9 + 0.7))


def test_run_end_to_end_folds_both_rows_with_the_span_and_reads_iupac_references(tmp_path):
    rng = np.random.default_rng(4)
    seq = "".join(rng.choice(list("ACGU"), 120))
    vienna = rnafold_pairs(seq, "MFE")
    refs = tmp_path / "refs.fa"
    refs.write_text(f">long\n{seq}\n{format_record('x', seq, vienna, 'dot-bracket').splitlines()[2]}\n"
                    ">iupac\nGGGGARYCCCC\n((((...))))\n")
    out = tmp_path / "e2e.csv"
    proc = run_script("evaluation/run_end_to_end.py", "--refs", refs, "--max_span", 30, "--out", out)
    per_seq = pd.read_csv(out)
    assert sorted(per_seq["method"].unique()) == ["ViennaRNA (span 30)", "stembb (span 30)"]
    spanned = rnafold_pairs(seq, "MFE", 30)
    assert max(j - i for i, j in spanned) <= 30 and spanned != vienna
    row = per_seq[(per_seq["method"] == "ViennaRNA (span 30)") & (per_seq["index"] == 0)]
    hits = len(set(spanned) & set(vienna))
    assert row["f1"].item() == pytest.approx(2 * hits / (len(spanned) + len(vienna)))
    assert "note: record 'iupac': 2 bases outside ACGTU (RY) fold unpaired" in proc.stderr
    assert per_seq[(per_seq["index"] == 1) & (per_seq["method"] == "stembb (span 30)")]["f1"].item() == 1.0


def test_the_grammar_trainer_refuses_splits_it_cannot_use_with_one_line(tmp_path):
    data = tmp_path / "real.pkl.gz"
    run_script("s1_data_gen/make_structure_dataset.py", "--inputs", SAMPLE, "--out", data, "--max_per_family", 2,
               "--val_families", 0.25, "--test_families", 0.25, "--len_min", 20, "--len_max", 120)
    df = read_pickle(data)
    common = ["--init_terms", REPO / "models" / "stembb_s2.pth", "--epochs", 0, "--no_progress"]
    for split, why in (("val", "no training rows (the data's split column"), ("train", "no validation rows")):
        one_side = tmp_path / f"{split}.pkl.gz"
        write_pickle(df.assign(split=split), one_side)
        proc = run_script("s2_training/train_s2_grammar.py", "--data", one_side, "--out", tmp_path / "m.pth", *common,
                          check=False)
        assert why in error_line(proc) and not (tmp_path / "m.pth").exists()
    plain = tmp_path / "plain.pkl.gz"
    write_pickle(df.drop(columns="split"), plain)
    for value in ("1.5", "0", "1"):
        proc = run_script("s2_training/train_s2_grammar.py", "--data", plain, "--out", tmp_path / "m.pth", *common,
                          "--training_proportion", value, check=False)
        assert f"--training_proportion must be in (0, 1), got {float(value)}" in error_line(proc)
    proc = run_script("s2_training/train_s2_grammar.py", "--data", data, "--out", "/dev/full", *common, check=False)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == ("error: /dev/full: could not be written (No space left on "
                                                    "device); what was there before is kept")


def test_split_messages_name_what_happened_to_a_listed_family(tmp_path):
    out = tmp_path / "d.pkl.gz"
    proc = run_script("s1_data_gen/make_structure_dataset.py", "--inputs", SAMPLE, "--out", out, "--len_max", 80,
                      "--test_families", "DsrA", check=False)
    assert "every record of ['DsrA'] was dropped by the filters" in error_line(proc)
    proc = run_script("s1_data_gen/make_structure_dataset.py", "--inputs", SAMPLE, "--out", out,
                      "--test_families", "NoSuchFamily", check=False)
    assert "['NoSuchFamily'] not in the data" in error_line(proc)


class Kept(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def test_a_protected_family_listed_for_validation_goes_to_test_with_a_note():
    from stembb.data.splits import group_split
    meta = pd.DataFrame({"family": ["RF00001", "RF00002", "RF00003"], "clan": ["", "", ""],
                         "family_name": ["5S_rRNA", "other", "third"]})
    log, kept = logging.getLogger("split_note_test"), Kept()
    log.addHandler(kept)
    log.setLevel(logging.INFO)
    assert list(group_split(meta, {"RF00001"}, 0.0, 0, log=log)) == ["test", "train", "train"]
    assert any("group RF00001 is held out forever" in m and "goes to test" in m for m in kept.messages)
    assert list(group_split(meta, {"RF00002"}, 0.0, 0, log=log)) == ["test", "val", "train"]
    assert len(kept.messages) == 1


def test_small_things_energies_help_and_the_api_span_hint(monkeypatch):
    import stembb
    from stembb import memory
    assert format_record("e", "ACGU", [], "dot-bracket", -0.001).splitlines()[2] == ".... (  0.00)"
    helped = run_script(PREDICT, "--help").stdout
    assert "(default: 16)" in helped and "(default: dot-bracket)" in helped and "(default: None)" not in helped
    monkeypatch.setattr(memory, "available_memory", lambda: 1000)
    with pytest.raises(InputError, match=r"pass a smaller max_span: stembb.load_predictor\(max_span=300\)"):
        stembb.fold("GGGGAAACCCC" * 300)


def test_the_fold_path_loads_no_network_code_no_s1_and_no_torch():
    """The shipped model folds with numpy and the compiled passes: no torch, no pandas,
    no S1, no network or training code."""
    code = ("import sys, stembb; print(stembb.fold('GGGGAAACCCC')[0]); p = stembb.load_predictor(); "
            "print(p.s1_model is None, 'torch' in sys.modules, 'pandas' in sys.modules, "
            "' '.join(sorted(m for m in sys.modules if m.startswith('stembb'))))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    structure, line = proc.stdout.splitlines()
    no_s1, torch_loaded, pandas_loaded, modules = line.split(" ", 3)
    assert structure == "((((...))))" and no_s1 == "True" and torch_loaded == pandas_loaded == "False"
    assert set(modules.split()) == {
        "stembb", "stembb.api", "stembb.checkpoint", "stembb.cli", "stembb.errors", "stembb.io", "stembb.memory",
        "stembb.pipeline", "stembb.sequences", "stembb.structure", "stembb.grammar", "stembb.grammar.assemble",
        "stembb.grammar.decode", "stembb.grammar.model", "stembb.grammar.partition", "stembb.grammar.pseudoknots"}


@pytest.mark.parametrize("flags, message", [
    (["--gamma", "2"], "--gamma is the MEA decoder's; {m} decodes by threshold: add --decoder mea"),
    (["--decoder", "mea", "--cut", "0.2"], "--cut is the threshold decoder's; {m} decodes by mea"),
    (["--threshold_p", "0.2"], "--threshold_p is S1's box-proposal threshold, read by the two-stage box models"),
    (["--batch_size", "4"], "--batch_size sets S1's forward passes; {m} runs no S1"),
    (["--s1_model", REPO / "models" / "stembb_s1.pth"], "--s1_model: {m} gives S1 no weight"),
    (["--decoder", "max", "--s2_model", REPO / "models" / "stembb_s2_box.pth"], "--decoder is for grammar models"),
])
def test_a_flag_the_model_would_not_read_is_refused(tmp_path, flags, message):
    fasta = tmp_path / "in.fa"
    fasta.write_text(">a\nGGGGAAACCCC\n")
    proc = run_script(PREDICT, "--fasta", fasta, *flags, check=False)
    assert message.format(m=REPO / "models" / "stembb_s2.pth") in error_line(proc)


@pytest.mark.slow
def test_the_decoder_and_its_settings_are_chosen_by_flag(tmp_path):
    fasta = tmp_path / "in.fa"
    fasta.write_text(">a\nGGGGAAACCCCAUAUGGGCGAAAGCCCUU\n")
    shipped = structures_of(run_script(PREDICT, "--fasta", fasta).stdout)["a"]
    assert structures_of(run_script(PREDICT, "--fasta", fasta, "--decoder", "threshold").stdout)["a"] == shipped
    strict = structures_of(run_script(PREDICT, "--fasta", fasta, "--cut", "0.999").stdout)["a"]
    assert strict.count("(") < shipped.count("(")
    loose = structures_of(run_script(PREDICT, "--fasta", fasta, "--decoder", "mea", "--gamma", "50").stdout)["a"]
    assert loose.count("(") >= shipped.count("(")
    assert structures_of(run_script(PREDICT, "--fasta", fasta, "--decoder", "max").stdout)["a"].count("(") > 0


def test_checkpoints_read_without_torch_equal_torch_load(tmp_path):
    """read_arrays (no torch) gives what torch.load gives, tensors as arrays of the same
    dtype and values, for every shipped checkpoint; a file of another layout goes to
    torch.load and its one-line error."""
    import torch
    from stembb.checkpoint import read_arrays
    from stembb.pipeline import S2_CHECKPOINT_KINDS

    def same(a, t):
        if isinstance(t, dict):
            assert list(a) == list(t)
            return all(same(a[k], t[k]) for k in t)
        if isinstance(t, (list, tuple)):
            return len(a) == len(t) and all(same(x, y) for x, y in zip(a, t))
        if isinstance(t, torch.Tensor):
            return isinstance(a, np.ndarray) and a.dtype == t.numpy().dtype and np.array_equal(a, t.numpy())
        return a == t

    kinds = ("s1_stem_bb", *S2_CHECKPOINT_KINDS)
    for path in sorted((REPO / "models").glob("*.pth")):
        assert same(read_arrays(path, kinds), torch.load(path, weights_only=True)), path
    transposed = tmp_path / "t.pth"
    torch.save({"kind": "s2_grammar", "model": {"w": torch.arange(6.0).reshape(2, 3).t()}}, transposed)
    assert np.array_equal(read_arrays(transposed, "s2_grammar")["model"]["w"], np.arange(6.0).reshape(2, 3).T)
    (tmp_path / "bad.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match=r"bad.pth: not a readable torch checkpoint"):
        read_arrays(tmp_path / "bad.pth", "s2_grammar")


def test_small_folds_do_not_read_the_memory_available(monkeypatch):
    import stembb
    from stembb import memory
    reads = []
    monkeypatch.setattr(memory, "available_memory", lambda: reads.append(1) or 1000)
    predictor = stembb.load_predictor()
    assert predictor.fold(["GGGGAAACCCC"])[0] == [[(0, 10), (1, 9), (2, 8), (3, 7)]] and not reads
    with pytest.raises(InputError, match=r"sequence 1 \(3000 nt\): folding it whole needs about"):
        predictor.fold(["GC" * 1500])
    assert reads



def test_shards_concatenated_are_the_unsharded_output(tmp_path):
    fasta = tmp_path / "in.fa"
    random_fasta(fasta, 40, 8)
    whole = run_script(PREDICT, "--fasta", fasta, "--format", "bpseq").stdout
    parts = []
    for k in range(3):
        out = tmp_path / f"part{k}.bpseq"
        run_script(PREDICT, "--fasta", fasta, "--format", "bpseq", "--shard", f"{k}/3", "--out", out,
                   *(["--bpp", tmp_path / "bpp"] if k == 1 else []))
        parts.append(out.read_text())
    assert "".join(parts) == whole and all(parts)
    assert sorted(p.name for p in (tmp_path / "bpp").glob("*.bpp"))[0] == "14_r13.bpp"  # numbered in the whole input
    for shard, message in (("3/3", "--shard K/N needs 0 <= K < N"), ("a/b", "--shard must be K/N")):
        assert message in error_line(run_script(PREDICT, "--fasta", fasta, "--shard", shard, check=False))


def test_a_fasta_file_is_read_a_record_at_a_time(tmp_path):
    """The records come as the file is read: the first arrives before a bad line further
    on is reached; a gzipped pipe is read once."""
    from stembb.data.formats import iter_fasta
    bad = tmp_path / "bad.fa"
    bad.write_bytes(b">a\nGGGGAAACCCC\n>b\nGGG\xffAAA\n")
    records = iter_fasta(bad)
    assert next(records).seq == "GGGGAAACCCC"
    with pytest.raises(InputError, match=r"bad.fa: not UTF-8 text \(line 4, byte 4"):
        next(records)
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    writer = subprocess.Popen(f"printf '>q\\nGGGGAAACCCC\\n' | gzip > {pipe}", shell=True)
    proc = run_script(PREDICT, "--fasta", pipe)
    writer.wait(30)
    assert proc.stdout.splitlines()[:3] == [">q", "GGGGAAACCCC", "((((...)))) ( -3.82)"]


@pytest.mark.slow
def test_dask_folds_give_one_process_output(tmp_path):
    fasta = tmp_path / "in.fa"
    random_fasta(fasta, 400, 9)
    one, dask = tmp_path / "one.db", tmp_path / "dask.db"
    run_script(PREDICT, "--fasta", fasta, "--out", one)
    proc = run_script(PREDICT, "--fasta", fasta, "--out", dask, "--dask", "local:2")
    assert "folding on Dask: local:2" in proc.stderr and dask.read_bytes() == one.read_bytes()
    assert "--dask local:N needs a number" in error_line(
        run_script(PREDICT, "--fasta", fasta, "--dask", "local:0", check=False))


def test_the_pseudoknot_layer_adds_crossing_stems_of_unpaired_bases():
    from stembb.grammar.partition import Ensemble
    from stembb.grammar.pseudoknots import crossing_stems
    nested = [(0, 10), (1, 9), (2, 8)]
    pairs = np.array([[4, 15], [5, 14], [6, 13], [12, 20], [16, 22], [3, 18], [11, 19], [7, 16]])
    ens = Ensemble(pairs, np.array([0.3, 0.2, 0.005, 0.5, 0.4, 0.6, 0.9, 0.25]), 0.0)
    # (4, 15) and (5, 14) cross (0, 10) and stack; (6, 13) is below the cut; (12, 20), (16, 22)
    # and (11, 19) cross nothing; (3, 18) crosses but stacks on nothing; (7, 16) crosses
    # (4, 15), more probable, taken before it
    assert crossing_stems(nested, ens, 0.01, 2) == [(4, 15), (5, 14)]
    assert crossing_stems(nested, ens, 0.01, 1) == [(3, 18), (4, 15), (5, 14)]
    assert crossing_stems(nested, ens, 0.22, 1) == [(3, 18), (4, 15)]
    assert crossing_stems([], ens) == []


PSEUDOKNOTTED = "AAGUUUACCACUGACCGAUAUGUGGUAUAUAAAUGGUCGGGUUGA"  # PDB 4rmo chain B (SPOT-RNA TR1)


def test_pseudoknots_flag_writes_brackets_that_read_back(tmp_path):
    from stembb.structure import crossing_pairs, pairs_from_db
    fasta = tmp_path / "in.fa"
    fasta.write_text(f">pk\n{PSEUDOKNOTTED}\n")
    nested_lines = run_script(PREDICT, "--fasta", fasta).stdout.splitlines()
    knotted_lines = run_script(PREDICT, "--fasta", fasta, "--pseudoknots").stdout.splitlines()
    nested, knotted = nested_lines[2].split()[0], knotted_lines[2].split()[0]
    assert "[" not in nested and "[" in knotted
    assert set(pairs_from_db(nested)) < set(pairs_from_db(knotted))  # the layer only adds
    assert crossing_pairs(pairs_from_db(knotted)) and nested_lines[2][len(nested):] == knotted_lines[2][len(knotted):]
    bpseq = run_script(PREDICT, "--fasta", fasta, "--pseudoknots", "--format", "bpseq").stdout
    partners = [int(line.split()[2]) for line in bpseq.splitlines() if line and not line.startswith("#")]
    assert sum(p > 0 for p in partners) == 2 * len(pairs_from_db(knotted))
    assert "--pseudoknot_cut is the pseudoknot layer's; add --pseudoknots" in error_line(
        run_script(PREDICT, "--fasta", fasta, "--pseudoknot_cut", "0.1", check=False))
    assert "--pseudoknots is for grammar models" in error_line(run_script(
        PREDICT, "--fasta", fasta, "--pseudoknots", "--s2_model", REPO / "models" / "stembb_s2_box.pth", check=False))
    import stembb
    assert crossing_pairs(stembb.load_predictor(pseudoknots=True).predict([PSEUDOKNOTTED])[0])
