"""The data-generation scripts, run as a user runs them, on real genomes."""
import pandas as pd
import pytest

from conftest import error_line, run_script
from stembb.io import read_pickle
from stembb.structure import STEM, pairs_from_one_idx, stem_boxes

MULTI = "s1_data_gen/generate_human_transcriptome_segment_high_mfe_freq_multi_struct.py"
FIXED = "s1_data_gen/generate_human_transcriptome_segment_high_mfe_freq.py"
VARLEN = "s2_data_gen/generate_human_transcriptome_segment_high_mfe_freq_var_len.py"


def test_same_seed_same_pickle_with_one_and_two_workers(tmp_path):
    outs = []
    for workers in (1, 2):
        out = tmp_path / f"w{workers}.pkl.gz"
        run_script(MULTI, "--len", 40, "--num_data", 150, "--num_sample", 5, "--chromosomes", "chr3", "chr4",
                   "--seed", 3, "--workers", workers, "--out", out)
        outs.append(pd.read_pickle(out))
    pd.testing.assert_frame_equal(outs[0], outs[1])
    df = read_pickle(tmp_path / "w1.pkl.gz")
    assert df.groupby(["chrom", "start", "strand"]).ngroups == 150
    assert df["gene_id"].nunique() > 5  # spans many genes, not the first of the annotation
    assert (df["seq"].str.len() == 40).all()
    for _, row in df.iterrows():
        stems = [b for b in row["bounding_boxes"] if b.kind == STEM]
        assert sorted(stems) == sorted(stem_boxes(pairs_from_one_idx(row["one_idx"])))
    per_seq = df.groupby("seq")["one_idx"].apply(lambda s: len({str(x) for x in s}) == len(s))
    assert per_seq.all()  # samples of a segment are unique


@pytest.mark.parametrize("script, size", [(MULTI, ["--len", 30, "--num_data", 60, "--num_sample", 3]),
                                          (VARLEN, ["--len_min", 20, "--len_max", 60, "--num_seq", 50])])
@pytest.mark.slow
def test_shards_merge_into_the_unsharded_output_and_dask_matches_one_worker(tmp_path, script, size):
    common = [*size, "--chromosomes", "chr3", "--seed", 1]
    run_script(script, *common, "--out", tmp_path / "full.pkl.gz")
    full = pd.read_pickle(tmp_path / "full.pkl.gz")
    shards = []
    for k in range(3):
        shards.append(tmp_path / f"part{k}.pkl.gz")
        run_script(script, *common, "--shard", f"{k}/3", "--out", shards[-1])
    run_script("s1_data_gen/merge_shards.py", "--inputs", *reversed(shards), "--out", tmp_path / "merged.pkl.gz")
    pd.testing.assert_frame_equal(full, read_pickle(tmp_path / "merged.pkl.gz"))
    assert full["segment_index"].is_monotonic_increasing

    proc = run_script("s1_data_gen/merge_shards.py", "--inputs", *shards[:2], "--out", tmp_path / "m2.pkl.gz",
                      check=False)
    assert "shards [2] of 3 are missing" in error_line(proc) and not (tmp_path / "m2.pkl.gz").exists()
    if script == MULTI:
        run_script(script, *common, "--dask", "local:2", "--out", tmp_path / "dask.pkl.gz")
        pd.testing.assert_frame_equal(full, pd.read_pickle(tmp_path / "dask.pkl.gz"))


def test_different_seed_different_data(tmp_path):
    a, b = tmp_path / "a.pkl.gz", tmp_path / "b.pkl.gz"
    run_script(FIXED, "--len", 40, "--num_seq", 20, "--seed", 1, "--out", a)
    run_script(FIXED, "--len", 40, "--num_seq", 20, "--seed", 2, "--out", b)
    assert set(pd.read_pickle(a)["seq"]) != set(pd.read_pickle(b)["seq"])


def test_merge_rows_hold_compatible_stems_and_counts(tmp_path):
    out = tmp_path / "m.pkl.gz"
    proc = run_script(MULTI, "--len", 40, "--num_data", 30, "--num_sample", 10, "--chromosomes", "chr3",
                      "--merge", "--out", out)
    assert "merge conflicts:" in proc.stderr
    df = read_pickle(out)
    assert len(df) == 30
    for _, row in df.iterrows():
        stems = [b for b in row["bounding_boxes"] if b.kind == STEM]
        assert len(stems) == len(row["stem_box_count"])
        assert all(1 <= c <= row["n_samples"] for c in row["stem_box_count"])


def test_fixed_length_threshold_and_summary(tmp_path):
    out = tmp_path / "f.pkl.gz"
    proc = run_script(FIXED, "--len", 40, "--num_seq", 20, "--threshold_mfe_freq", 0.2,
                      "--chromosomes", "chr3", "--out", out)
    df = read_pickle(out)
    assert len(df) == 20 and (df["mfe_freq"] >= 0.2).all()
    summary = proc.stderr.strip().splitlines()[-1]
    assert "wrote 20 rows" in summary and "mfe_freq below --threshold_mfe_freq" in summary


def test_var_len_held_out_chromosome_and_warning(tmp_path):
    out = tmp_path / "v.pkl.gz"
    proc = run_script(VARLEN, "--len_min", 20, "--len_max", 80, "--num_seq", 25, "--threshold_mfe_freq", 0.01,
                      "--chromosomes", "chr1", "chr2", "chr5", "--max_per_gene", 50, "--out", out)
    assert "skipping chromosomes absent from genome.fa or without genes: chr1 chr2" in proc.stderr
    df = read_pickle(out, required=("seq", "one_idx", "bounding_boxes", "fe", "mfe_freq", "ens_div"))
    assert (df["chrom"] == "chr5").all()
    lengths = df["seq"].str.len()
    assert lengths.between(20, 80).all() and lengths.nunique() > 5
    for _, grp in df.groupby("gene_id"):
        spans = sorted(zip(grp["start"], grp["end"]))
        assert all(e1 < s2 for (_, e1), (s2, _) in zip(spans, spans[1:]))


def test_shortfall_is_written_and_explained(tmp_path, tiny_genome):
    fasta, gtf, _ = tiny_genome
    out = tmp_path / "short.pkl.gz"
    proc = run_script(FIXED, "--len", 20, "--num_seq", 50, "--genome", fasta, "--annotation", gtf,
                      "--chromosomes", "chrT", "--out", out)
    summary = proc.stderr.strip().splitlines()[-1]
    assert "3 contains N" in summary and "segments short" in summary and "--max_per_gene" in summary
    assert 0 < len(pd.read_pickle(out)) <= 6


@pytest.mark.parametrize("args, message", [
    (["--chromosomes", "chr1"], "hold chr3 chr4 chr5; pass --genome/--annotation"),
    (["--genome", "missing.fa"], "missing.fa: genome FASTA not found"),
    (["--annotation", "missing.gtf"], "missing.gtf: annotation file not found"),
])
def test_bad_input_one_line_error_and_no_output(tmp_path, args, message):
    out = tmp_path / "o.pkl.gz"
    proc = run_script(MULTI, "--len", 40, "--num_data", 5, "--out", out, *args, cwd=tmp_path, check=False)
    assert message in error_line(proc)
    assert not out.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args, message", [
    (["--len", "0", "--num_data", "5"], "--len must be at least 1"),
    (["--len", "40", "--num_data", "5", "--workers", "0"], "--workers must be at least 1"),
    (["--len", "40", "--num_data", "5", "--threshold_mfe_freq", "1.5"], "--threshold_mfe_freq is a frequency in [0, 1]"),
    (["--len", "40", "--num_data", "5", "--out", "."], "output path is an existing folder"),
    (["--len", "40", "--num_data", "5", "--shard", "3/3"], "--shard K/N needs 0 <= K < N"),
    (["--len", "40", "--num_data", "5", "--shard", "half"], "--shard must be K/N"),
    (["--len", "40", "--num_data", "5", "--dask", "local:x"], "--dask local:N needs a number of processes"),
])
def test_bad_flags(tmp_path, args, message):
    proc = run_script(MULTI, "--out", tmp_path / "o.pkl.gz", *args, cwd=tmp_path, check=False)
    assert proc.returncode == 2 and message in proc.stderr


def test_segments_longer_than_every_gene_and_genes_past_the_contig_end(tmp_path, tiny_genome):
    fasta, gtf, _ = tiny_genome
    proc = run_script(FIXED, "--len", 500, "--num_seq", 5, "--genome", fasta, "--annotation", gtf,
                      "--out", tmp_path / "o.pkl.gz", check=False)
    assert "every usable gene is shorter (the longest is 60 nt)" in error_line(proc)
    past = tmp_path / "past.gtf"
    past.write_text('chrT\tt\tgene\t250\t400\t.\t+\t.\tgene_id "late"; gene_type "lncRNA";\n')
    proc = run_script(FIXED, "--len", 20, "--num_seq", 5, "--genome", fasta, "--annotation", past,
                      "--out", tmp_path / "o.pkl.gz", check=False)
    assert "all 1 genes of chrT in past.gtf run past the end of their contig" in error_line(proc)
    both = tmp_path / "both.gtf.gz"
    both.write_bytes(gtf.read_bytes())
    import gzip
    with gzip.open(both, "at") as fh:
        fh.write(past.read_text())
    proc = run_script(FIXED, "--len", 20, "--num_seq", 3, "--genome", fasta, "--annotation", both,
                      "--out", tmp_path / "o.pkl.gz")
    assert "1 of 4 genes run past the end of their contig" in proc.stderr


def test_notebook_debug_command_runs_on_a_genome_with_chr1(tmp_path):
    """The notebook's debug command as written, with the shared hg38 slices as --genome."""
    from conftest import SHARED_MINIGENOME
    if not SHARED_MINIGENOME.exists():
        pytest.skip("../shared minigenome not present")
    (tmp_path / "s1_data_gen").mkdir()
    (tmp_path / "data").mkdir()
    run_script(MULTI, "--len", 40, "--num_data", 100, "--num_sample", 10, "--chromosomes", "chr1",
               "--out", "../data/s1_train_debug.pkl.gz", "--genome", SHARED_MINIGENOME / "genome.fa",
               "--annotation", SHARED_MINIGENOME / "genes.gtf.gz", cwd=tmp_path / "s1_data_gen")
    df = read_pickle(tmp_path / "data" / "s1_train_debug.pkl.gz")
    assert df.groupby("start").ngroups == 100 and (df["chrom"] == "chr1").all()


def test_plot_dataset_statistics(tmp_path):
    data = tmp_path / "m.pkl.gz"
    run_script(MULTI, "--len", 40, "--num_data", 10, "--num_sample", 4, "--merge", "--out", data)
    png = tmp_path / "stats.png"
    run_script("evaluation/plot_dataset_statistics.py", "--data", data, "--out", png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_folding_workers_collect_garbage_while_the_parent_pauses_its_collector():
    import gc
    from stembb.data.datagen import Folder, FoldJob, cyclic_gc_paused
    folder = Folder(FoldJob(seed=0), workers=2)
    try:
        with cyclic_gc_paused():  # the pool's workers fork here, as in generate()
            assert not gc.isenabled()
            assert [f.result() for f in [folder.pool.submit(gc.isenabled) for _ in range(4)]] == [True] * 4
        assert gc.isenabled()
    finally:
        folder.close()
