"""Genome access: genes from a GTF, sequence from a FASTA (pyfaidx), segments of genes.

Segments are taken on the transcribed strand: a minus-strand gene's segment is the
reverse complement of the genomic interval, and offsets count from the gene's 5' end.
Coordinates reported with a segment (``start``, ``end``) are 1-based inclusive genomic
coordinates of the contig, whatever the strand.
"""
from __future__ import annotations

import gzip
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pyfaidx

from stembb.errors import InputError
from stembb.io import REPO_ROOT

DEFAULT_GENOME = REPO_ROOT / "data" / "genome" / "genome.fa"
DEFAULT_ANNOTATION = REPO_ROOT / "data" / "genome" / "genes.gtf.gz"

_COMPLEMENT = str.maketrans("ACGTUNacgtun", "TGCAANtgcaan")
_ATTR = re.compile(r'(\S+)\s+"([^"]*)"')


def reverse_complement(seq: str) -> str:
    """Reverse complement of a DNA string (U read as T's partner A)."""
    return seq.translate(_COMPLEMENT)[::-1]


@dataclass(frozen=True)
class Gene:
    """A gene record: 1-based inclusive ``start``..``end`` on ``chrom``."""

    gene_id: str
    chrom: str
    start: int
    end: int
    strand: str
    gene_type: str

    @property
    def length(self) -> int:
        return self.end - self.start + 1


@dataclass(frozen=True)
class Segment:
    """A piece of a gene on its transcribed strand; ``offset`` counts from the 5' end."""

    gene: Gene
    offset: int
    length: int

    @property
    def start(self) -> int:
        """1-based genomic start (lowest coordinate) of the segment."""
        if self.gene.strand == "+":
            return self.gene.start + self.offset
        return self.gene.end - self.offset - self.length + 1

    @property
    def end(self) -> int:
        return self.start + self.length - 1


def _open_text(path: Path):
    with open(path, "rb") as fh:
        magic = fh.read(2)
    if magic == b"\x1f\x8b":
        return gzip.open(path, "rt")
    return open(path, "rt")


def read_genes(path: Path, gene_types: Sequence[str] | None = None) -> list[Gene]:
    """The ``gene`` records of a GTF (plain or gzip), optionally filtered on type.

    The type is read from ``gene_type`` (GENCODE) or ``gene_biotype`` (Ensembl).
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: annotation file not found")
    wanted = set(gene_types) if gene_types else None
    try:
        return _parse_genes(path, wanted)
    except (EOFError, OSError, UnicodeDecodeError) as exc:  # gzip.BadGzipFile is an OSError
        raise InputError(f"{path}: unreadable annotation, truncated or not a (gzipped) GTF "
                         f"({type(exc).__name__}: {exc})") from None


def _parse_genes(path: Path, wanted: set | None) -> list[Gene]:
    genes = []
    with _open_text(path) as fh:
        for lineno, line in enumerate(fh, 1):
            if line.startswith("#") or not line.strip():
                continue
            cols = line.rstrip("\n").split("\t")
            if len(cols) != 9:
                raise InputError(f"{path}:{lineno}: expected 9 tab-separated GTF columns, got {len(cols)}")
            if cols[2] != "gene":
                continue
            attrs = dict(_ATTR.findall(cols[8]))
            gene_type = attrs.get("gene_type", attrs.get("gene_biotype", ""))
            if wanted is not None and gene_type not in wanted:
                continue
            try:
                start, end = int(cols[3]), int(cols[4])
            except ValueError:
                raise InputError(f"{path}:{lineno}: start/end are not integers") from None
            if cols[6] not in "+-" or len(cols[6]) != 1:
                raise InputError(f"{path}:{lineno}: strand must be + or -, got {cols[6]!r}")
            gene_id = attrs.get("gene_id")
            if gene_id is None:
                raise InputError(f"{path}:{lineno}: gene record without gene_id")
            genes.append(Gene(gene_id, cols[0], start, end, cols[6], gene_type))
    return genes


class Genome:
    """Sequence access (pyfaidx) plus the annotation's genes, for chosen chromosomes."""

    def __init__(self, fasta: Path, annotation: Path, gene_types: Sequence[str] | None = None):
        fasta = Path(fasta)
        if not fasta.exists():
            raise InputError(f"{fasta}: genome FASTA not found")
        index = fasta.with_name(fasta.name + ".fai")
        if not index.exists() and not os.access(fasta.parent, os.W_OK):
            raise InputError(f"{fasta}: no index {index.name}, and its folder is not writable to make one; "
                             f"run `samtools faidx {fasta}` where you can write, or copy the FASTA to a writable folder")
        try:
            self.fasta = pyfaidx.Fasta(str(fasta), as_raw=True, sequence_always_upper=True)
        except Exception as exc:  # pyfaidx raises several types for bad files
            raise InputError(f"{fasta}: cannot read FASTA ({exc})") from None
        self.fasta_path = fasta
        self.annotation_path = Path(annotation)
        self.genes = read_genes(self.annotation_path, gene_types)

    @property
    def chromosomes(self) -> list[str]:
        return list(self.fasta.keys())

    def usable_genes(self, chromosomes: Sequence[str]) -> tuple[list[Gene], list[str]]:
        """Genes on the requested chromosomes that lie inside the FASTA; and the
        requested chromosomes that are unusable (absent from the FASTA or without genes).

        Raises InputError when none is usable.
        """
        have = set(self.chromosomes)
        genes = [g for g in self.genes if g.chrom in chromosomes and g.chrom in have
                 and g.end <= len(self.fasta[g.chrom])]
        with_genes = {g.chrom for g in genes}
        unusable = [c for c in chromosomes if c not in with_genes]
        past_end = self.genes_past_end(chromosomes)
        if not genes and past_end:
            raise InputError(f"all {past_end} genes of {' '.join(chromosomes)} in {self.annotation_path.name} run past "
                             f"the end of their contig in {self.fasta_path.name}: the annotation does not fit this "
                             "genome (another assembly, or coordinates with an offset)")
        if not genes:
            raise InputError(
                f"none of the requested chromosomes ({' '.join(chromosomes)}) has genes in "
                f"{self.fasta_path.name}/{self.annotation_path.name}, which hold "
                f"{' '.join(sorted(have & {g.chrom for g in self.genes})) or 'no annotated chromosome'}; "
                "pass --genome/--annotation for a full genome")
        return genes, unusable

    def genes_past_end(self, chromosomes: Sequence[str]) -> int:
        """How many genes of ``chromosomes`` end beyond their contig in the FASTA (unusable)."""
        have = set(self.chromosomes)
        return sum(1 for g in self.genes if g.chrom in chromosomes and g.chrom in have
                   and g.end > len(self.fasta[g.chrom]))

    def segment_seq(self, seg: Segment) -> str:
        """Sequence of a segment on the gene's strand, upper case DNA."""
        seq = self.fasta[seg.gene.chrom][seg.start - 1:seg.end]
        return seq if seg.gene.strand == "+" else reverse_complement(seq)


def gene_order(genes: Sequence[Gene], rng: np.random.Generator) -> list[Gene]:
    """Genes in a seeded random order, so data sets span many genes."""
    return [genes[k] for k in rng.permutation(len(genes))]


def fixed_length_segments(gene: Gene, length: int, max_per_gene: int,
                          rng: np.random.Generator) -> list[Segment]:
    """Up to ``max_per_gene`` non-overlapping windows of ``length``, chosen at random
    among the gene's tiling from its 5' end, returned 5' to 3'."""
    n = gene.length // length
    chosen = np.sort(rng.choice(n, size=min(n, max_per_gene), replace=False)) if n else []
    return [Segment(gene, int(k) * length, length) for k in chosen]


def variable_length_segments(gene: Gene, len_min: int, len_max: int, max_per_gene: int,
                             rng: np.random.Generator) -> list[Segment]:
    """Non-overlapping windows of lengths uniform in ``[len_min, len_max]``, tiled from
    the 5' end, of which up to ``max_per_gene`` are chosen at random."""
    tiles = []
    offset = 0
    while True:
        length = int(rng.integers(len_min, len_max + 1))
        if offset + length > gene.length:
            break
        tiles.append(Segment(gene, offset, length))
        offset += length
    if len(tiles) > max_per_gene:
        keep = np.sort(rng.choice(len(tiles), size=max_per_gene, replace=False))
        tiles = [tiles[k] for k in keep]
    return tiles


def iter_segments(genes: Sequence[Gene], seed: int, max_per_gene: int, length: int | None = None,
                  len_min: int | None = None, len_max: int | None = None) -> Iterator[Segment]:
    """Segments gene by gene in a seeded order: fixed ``length``, or ``len_min..len_max``.

    Each gene draws from its own generator seeded by (seed, gene position), so the
    segments of a gene do not depend on how many were consumed before it.
    """
    order_rng = np.random.default_rng([seed, 0])
    for k, gene in enumerate(gene_order(genes, order_rng)):
        rng = np.random.default_rng([seed, 1, k])
        if length is not None:
            yield from fixed_length_segments(gene, length, max_per_gene, rng)
        else:
            yield from variable_length_segments(gene, len_min, len_max, max_per_gene, rng)
