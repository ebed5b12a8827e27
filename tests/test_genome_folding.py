import math

import numpy as np
import pytest
import RNA

from conftest import SHARED_MINIGENOME
from stembb.errors import InputError
from stembb.data.folding import fold
from stembb.data.genome import DEFAULT_ANNOTATION, DEFAULT_GENOME, Genome, iter_segments, read_genes, reverse_complement
from stembb.data.merge import merge_stem_boxes
from stembb.structure import STEM, Box, pairs_from_db, stem_boxes


def test_minus_strand_gene_is_reverse_complemented(tiny_genome):
    fasta, gtf, seq = tiny_genome
    genome = Genome(fasta, gtf)
    genes, unusable = genome.usable_genes(["chrT"])
    assert unusable == []
    segs = list(iter_segments(genes, seed=1, max_per_gene=10, length=20))
    by_gene = {}
    for s in segs:
        by_gene.setdefault(s.gene.gene_id, []).append(s)
    assert sorted(by_gene) == ["geneM", "geneN", "geneP"]
    for s in by_gene["geneP"]:
        assert genome.segment_seq(s) == seq[s.start - 1:s.end]
        assert s.start == 11 + s.offset
    for s in by_gene["geneM"]:
        assert genome.segment_seq(s) == reverse_complement(seq[s.start - 1:s.end])
        assert s.end == 160 - s.offset  # offsets count from the 5' end: the high coordinate
    m0 = [s for s in by_gene["geneM"] if s.offset == 0][0]
    assert genome.segment_seq(m0) == reverse_complement(seq[140:160])


def test_gene_types_filter_and_gtf_errors(tiny_genome, tmp_path):
    _, gtf, _ = tiny_genome
    assert [g.gene_id for g in read_genes(gtf, ["lncRNA"])] == ["geneM"]
    bad = tmp_path / "bad.gtf"
    bad.write_text("chrT\ttest\tgene\t1\n")
    with pytest.raises(InputError, match=r"bad.gtf:1: expected 9"):
        read_genes(bad)


def test_unusable_chromosomes(tiny_genome):
    fasta, gtf, _ = tiny_genome
    genome = Genome(fasta, gtf)
    genes, unusable = genome.usable_genes(["chr1", "chrT"])
    assert unusable == ["chr1"] and len(genes) == 3
    with pytest.raises(InputError, match="chrT.*pass --genome/--annotation"):
        genome.usable_genes(["chr1"])


def test_segments_are_seeded_non_overlapping_and_capped(tiny_genome):
    fasta, gtf, _ = tiny_genome
    genes, _ = Genome(fasta, gtf).usable_genes(["chrT"])
    a = list(iter_segments(genes, seed=5, max_per_gene=2, len_min=10, len_max=25))
    b = list(iter_segments(genes, seed=5, max_per_gene=2, len_min=10, len_max=25))
    assert a == b
    for gene_id in {s.gene.gene_id for s in a}:
        mine = sorted((s.offset, s.offset + s.length) for s in a if s.gene.gene_id == gene_id)
        assert len(mine) <= 2
        assert all(e1 <= s2 for (_, e1), (s2, _) in zip(mine, mine[1:]))
        assert all(10 <= e - s <= 25 and e <= 60 for s, e in mine)


@pytest.mark.skipif(not SHARED_MINIGENOME.exists(), reason="../shared minigenome not present")
def test_shared_minigenome_segments_read_through_pyfaidx():
    genome = Genome(SHARED_MINIGENOME / "genome.fa", SHARED_MINIGENOME / "genes.gtf.gz")
    genes, unusable = genome.usable_genes(["chr1", "chr2", "chr9", "chr22"])
    assert unusable == ["chr22"]
    segs = list(iter_segments(genes, seed=0, max_per_gene=1, length=50))
    seqs = [genome.segment_seq(s) for s in segs]
    assert len(seqs) > 50 and all(len(s) == 50 and set(s) <= set("ACGTN") for s in seqs)


def test_embedded_genome_is_the_default_and_has_three_contigs():
    genome = Genome(DEFAULT_GENOME, DEFAULT_ANNOTATION)
    assert genome.chromosomes == ["chr3", "chr4", "chr5"]
    assert {g.chrom for g in genome.genes} == {"chr3", "chr4", "chr5"}


def test_fold_matches_viennarna_and_frequency_formula():
    seq = "GGGAAAUCCCGCGCAUUAGCGCGUUAGCAAUGCUAACG"
    f = fold(seq.replace("U", "T"), num_sample=10, seed=4)
    structure, mfe = RNA.fold(seq)
    assert f.mfe_structure == structure and f.fe == pytest.approx(mfe, abs=1e-4)
    fc = RNA.fold_compound(seq)
    fc.exp_params_rescale(mfe)
    _, g = fc.pf()
    kT = (37.0 + 273.15) * 1.98717 / 1000.0
    assert f.mfe_freq == pytest.approx(math.exp(-(mfe - g) / kT), rel=1e-3)
    assert f.ens_div > 0
    assert len(f.samples) == 10 and len(set(f.samples)) == 10
    assert fold(seq, num_sample=10, seed=4).samples == f.samples
    assert fold(seq, num_sample=10, seed=5).samples != f.samples


def test_short_sequence_has_fewer_unique_samples():
    samples = fold("GGGAAACCC", num_sample=50, seed=0).samples
    assert 1 <= len(samples) < 50 and len(set(samples)) == len(samples)


def test_merge_keeps_box_seen_in_more_samples():
    a = Box((0, 30), (4, 4), STEM)
    b = Box((1, 31), (4, 4), STEM)   # shares pixels with a
    c = Box((10, 20), (2, 2), STEM)  # compatible with both
    kept, counts, conflicts = merge_stem_boxes([[a, c], [b], [b, c], [b]])
    assert kept == [b, c] and counts == [3, 2] and conflicts == 1
    # ties go to the larger stem, then the smaller corner: deterministic whatever the order
    d = Box((0, 30), (3, 3), STEM)
    e = Box((0, 29), (3, 3), STEM)
    assert merge_stem_boxes([[d], [e]]) == merge_stem_boxes([[e], [d]])
    assert merge_stem_boxes([[d], [e]])[0] == [e]
    big = Box((0, 30), (5, 5), STEM)
    assert merge_stem_boxes([[d], [big]])[0] == [big]


def test_merged_boxes_never_share_a_pixel():
    seq = "GCGCAUUAGCGCGUUAGCAAUGCUAACGGAUCCUAGCAUG"
    samples = [stem_boxes(pairs_from_db(s)) for s in fold(seq, num_sample=20, seed=1).samples]
    kept, counts, conflicts = merge_stem_boxes(samples)
    grid = np.zeros((len(seq), len(seq)), int)
    for (x0, y0), (w, _), _ in kept:
        grid[x0:x0 + w, y0:y0 + w] += 1
    assert grid.max() == 1
    assert conflicts == len({b for s in samples for b in s}) - len(kept)



def test_bgzip_fasta_reads_like_plain(tiny_genome, tmp_path):
    from Bio import bgzf
    fasta, gtf, seq = tiny_genome
    packed = tmp_path / "tiny.fa.gz"
    with bgzf.BgzfWriter(str(packed), "wb") as fh:
        fh.write(fasta.read_bytes())
    plain, compressed = Genome(fasta, gtf), Genome(packed, gtf)
    genes, _ = compressed.usable_genes(["chrT"])
    for s in iter_segments(genes, seed=2, max_per_gene=3, length=15):
        assert compressed.segment_seq(s) == plain.segment_seq(s)
