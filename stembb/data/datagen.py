"""The engine shared by the data-generation scripts: gene segments -> folded rows.

Segments come from ``stembb.data.genome.iter_segments`` in a seeded order; each gets a task
index, folding runs in ``--workers`` processes in fixed-size batches, and results are
taken in task order, so the output for a seed does not depend on the number of workers.
"""
from __future__ import annotations

import argparse
import multiprocessing
from collections import Counter, deque
from dataclasses import dataclass
from functools import partial
from itertools import islice
from pathlib import Path
from typing import Iterable, Iterator

import pandas as pd
from tqdm import tqdm

from stembb.cli import check_outputs
from stembb.errors import InputError
from stembb.data.folding import fold, sampling_seed
from stembb.data.genome import DEFAULT_ANNOTATION, DEFAULT_GENOME, Genome, Segment, iter_segments
from stembb.io import write_pickle
from stembb.runlog import start_run
from stembb.data.merge import merge_stem_boxes
from stembb.structure import STEM, local_structure_boxes, one_idx_from_pairs, pairs_from_db

SKIP_N = "contains N"
SKIP_FREQ = "mfe_freq below --threshold_mfe_freq"
SKIP_UNSTRUCTURED = "no base pair"


def add_common_args(parser: argparse.ArgumentParser) -> None:
    """Flags every generator shares: genome, annotation, chromosomes, seed, workers, out."""
    parser.add_argument("--chromosomes", nargs="+", default=None,
                        help="contigs to draw genes from (default: every contig of --genome)")
    parser.add_argument("--genome", type=Path, default=DEFAULT_GENOME,
                        help="genome FASTA, plain or bgzip (default: the embedded hg19 slices)")
    parser.add_argument("--annotation", type=Path, default=DEFAULT_ANNOTATION,
                        help="GTF, plain or .gz, with gene records (default: the embedded genes)")
    parser.add_argument("--gene_types", nargs="+", default=None,
                        help="keep genes whose gene_type/gene_biotype is one of these")
    parser.add_argument("--max_per_gene", type=int, default=20,
                        help="at most this many segments from one gene (default 20)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=1, help="folding processes (default 1)")
    parser.add_argument("--out", type=Path, required=True, help="output .pkl.gz")


def check_positive(parser: argparse.ArgumentParser, args: argparse.Namespace, *names: str) -> None:
    for name in names:
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1, got {getattr(args, name)}")


@dataclass(frozen=True)
class FoldJob:
    """What to compute for each segment (picklable, sent to worker processes).

    ``num_sample`` 0: MFE rows; otherwise one row per unique sample, or one merged row.
    """

    seed: int
    threshold_mfe_freq: float = 0.0
    num_sample: int = 0
    merge: bool = False


def structure_columns(pairs: list[tuple[int, int]]) -> dict:
    return {"one_idx": one_idx_from_pairs(pairs), "bounding_boxes": local_structure_boxes(pairs)}


def rows_for_segment(job: FoldJob, task: tuple[int, str]) -> tuple[list[dict], str | None]:
    """Fold one segment; return its rows (without provenance) or a skip reason."""
    index, seq = task
    f = fold(seq, partition=True, num_sample=job.num_sample,
             seed=sampling_seed(job.seed, index) if job.num_sample else 0)
    if f.mfe_freq < job.threshold_mfe_freq:
        return [], SKIP_FREQ
    energetics = {"fe": f.fe, "mfe_freq": f.mfe_freq, "ens_div": f.ens_div}
    if not job.num_sample:
        pairs = pairs_from_db(f.mfe_structure)
        if not pairs:
            return [], SKIP_UNSTRUCTURED
        return [{"seq": seq, **structure_columns(pairs), **energetics}], None
    samples = [pairs_from_db(s) for s in f.samples]
    samples = [p for p in samples if p]
    if not samples:
        return [], SKIP_UNSTRUCTURED
    if not job.merge:
        return [{"seq": seq, **structure_columns(p), "sample_id": k, **energetics}
                for k, p in enumerate(samples)], None
    per_sample = [local_structure_boxes(p) for p in samples]
    stems, counts, conflicts = merge_stem_boxes([[b for b in bs if b.kind == STEM] for bs in per_sample])
    loops = sorted({b for bs in per_sample for b in bs if b.kind != STEM})
    mfe_pairs = pairs_from_db(f.mfe_structure)
    return [{"seq": seq, "one_idx": one_idx_from_pairs(mfe_pairs), "bounding_boxes": stems + loops,
             "stem_box_count": counts, "n_samples": len(samples), "n_conflicts": conflicts,
             **energetics}], None


def provenance(seg: Segment) -> dict:
    return {"chrom": seg.gene.chrom, "strand": seg.gene.strand, "start": seg.start,
            "end": seg.end, "gene_id": seg.gene.gene_id}


def generate(genome: Genome, segments: Iterable[Segment], job: FoldJob, num_wanted: int,
             workers: int, desc: str) -> tuple[list[dict], Counter, int]:
    """Fold segments until ``num_wanted`` segments gave rows.

    Returns the rows (provenance added), a Counter of skip reasons, and the number of
    segments that gave rows.
    """
    skipped: Counter = Counter()
    rows: list[dict] = []
    accepted = 0

    def tasks() -> Iterator[tuple[tuple[int, str], Segment]]:
        index = 0
        for seg in segments:
            seq = genome.segment_seq(seg)
            if "N" in seq:
                skipped[SKIP_N] += 1
                continue
            yield (index, seq), seg
            index += 1

    work = partial(rows_for_segment, job)
    batch_size = 256 * workers
    pool = multiprocessing.get_context("fork").Pool(workers) if workers > 1 else None
    task_iter = tasks()
    pending: deque = deque()  # (batch, its results or async handle), oldest first

    def refill() -> None:
        # Keep up to two batches in flight, sized to what is still wanted, so workers fold
        # the next batch while this process turns the previous one into rows.
        need = num_wanted - accepted - sum(len(b) for b, _ in pending)
        while need > 0 and len(pending) < 2:
            batch = list(islice(task_iter, min(batch_size, max(need, 8 * workers))))
            if not batch:
                return
            inputs = [t for t, _ in batch]
            pending.append((batch, pool.map_async(work, inputs, chunksize=8) if pool else map(work, inputs)))
            need -= len(batch)

    try:
        with tqdm(total=num_wanted, desc=desc, unit="seq") as bar:
            refill()
            while pending:
                batch, handle = pending.popleft()
                refill()
                for (seg_rows, reason), (_, seg) in zip(handle.get() if pool else handle, batch):
                    if reason:
                        skipped[reason] += 1
                        continue
                    prov = provenance(seg)
                    rows.extend({**r, **prov} for r in seg_rows)
                    accepted += 1
                    bar.update()
                    if accepted == num_wanted:
                        return rows, skipped, accepted
                refill()
    finally:
        if pool:
            pool.terminate()
    return rows, skipped, accepted


def summarize(log, out: Path, n_rows: int, accepted: int, num_wanted: int, skipped: Counter) -> None:
    """The one-line summary every generator ends with."""
    reasons = ", ".join(f"{n} {why}" for why, n in sorted(skipped.items())) or "none"
    line = f"wrote {n_rows} rows from {accepted} segments to {out}; skipped segments: {reasons}"
    if accepted < num_wanted:
        line += (f"; {num_wanted - accepted} segments short: the genes ran out "
                 "(raise --max_per_gene, add --chromosomes, or lower --threshold_mfe_freq)")
    log.info(line)


def open_genome(args: argparse.Namespace, log) -> tuple[Genome, list]:
    """Open ``--genome``/``--annotation`` and return it with the usable genes of
    ``--chromosomes``, warning in one line about requested chromosomes that are unusable."""
    genome = Genome(args.genome, args.annotation, args.gene_types)
    chromosomes = args.chromosomes or genome.chromosomes
    genes, unusable = genome.usable_genes(chromosomes)
    if unusable:
        log.warning("warning: skipping chromosomes absent from %s or without genes: %s",
                    args.genome.name, " ".join(unusable))
    past_end = genome.genes_past_end(chromosomes)
    if past_end:
        log.warning("warning: %d of %d genes run past the end of their contig in %s and are skipped",
                    past_end, past_end + len(genes), args.genome.name)
    return genome, genes


def write_rows(rows: list[dict], out: Path) -> None:
    if not rows:
        raise InputError(f"{out}: no rows were generated, nothing written")
    write_pickle(pd.DataFrame(rows), out)


def run_generator(args: argparse.Namespace, job: FoldJob, num_wanted: int, desc: str,
                  **segment_shape) -> None:
    """A generator script's whole run: log, open the genome, fold, write, summarise.

    ``segment_shape`` is ``length=...`` or ``len_min=..., len_max=...``.
    """
    if not 0 <= job.threshold_mfe_freq <= 1:
        raise InputError(f"--threshold_mfe_freq is a frequency in [0, 1], got {job.threshold_mfe_freq}")
    check_outputs([args.out], [args.genome, args.annotation])
    log = start_run(desc, args.seed)
    genome, genes = open_genome(args, log)
    shortest = segment_shape.get("length", segment_shape.get("len_min"))
    if not any(g.end - g.start + 1 >= shortest for g in genes):
        longest = max(g.end - g.start + 1 for g in genes)
        raise InputError(f"--len/--len_min {shortest}: every usable gene is shorter (the longest is {longest} nt)")
    segments = iter_segments(genes, args.seed, args.max_per_gene, **segment_shape)
    rows, skipped, accepted = generate(genome, segments, job, num_wanted, args.workers, desc)
    write_rows(rows, args.out)
    if job.merge:
        log.info("merge conflicts: %d stem boxes dropped over %d segments",
                 sum(r["n_conflicts"] for r in rows), accepted)
    summarize(log, args.out, len(rows), accepted, num_wanted, skipped)
