"""The engine shared by the data-generation scripts: gene segments -> folded rows.

Segments come from ``stembb.data.genome.iter_segments`` in a seeded order; each gets a task
index (``segment_index`` in the output), folding runs in ``--workers`` processes or on a
Dask cluster (``--dask``) in fixed-size batches, and results are taken in task order, so
the output for a seed does not depend on where or in how many processes it was folded.

Sharding (``--shard K/N``): the task stream is cut into blocks of ``shard_block`` tasks;
shard K folds blocks K, K+N, K+2N, ... until it has ``shard_target`` accepted segments,
and records in the pickle's ``attrs`` how far it got. ``s1_data_gen/merge_shards.py``
puts the shards back in task order and keeps the first ``--num_data`` accepted segments:
exactly the rows of the unsharded run with the same flags.
"""
from __future__ import annotations

import argparse
import gc
import math
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from collections import Counter, deque
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from itertools import islice
from pathlib import Path
from typing import Iterable, Iterator

import pandas as pd
from tqdm import tqdm

from stembb.cli import check_outputs, seed
from stembb.cluster import check_dask, dask_client, parse_shard
from stembb.errors import InputError, RunFailed, pool_worker_start
from stembb.data.dot_brackets import structure_columns_of
from stembb.data.folding import WORKER_DIED, fold, sampling_seed
from stembb.data.genome import DEFAULT_ANNOTATION, DEFAULT_GENOME, Genome, Segment, iter_segments
from stembb.io import write_pickle
from stembb.runlog import start_run
from stembb.data.merge import merge_stem_boxes
from stembb.structure import STEM

SKIP_N = "contains N"
SKIP_FREQ = "mfe_freq below --threshold_mfe_freq"
SKIP_UNSTRUCTURED = "no base pair"
SHARD_BLOCK = 256  # tasks per shard block, at most (smaller for small runs: see shard_block)
SHARD_SLACK = 0.1  # a shard folds this share more than its part, so merged shards cover --num_data
FOLD_CHUNK = 8  # segments per pool or Dask task (amortizes the per-task cost)


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
    parser.add_argument("--seed", type=seed, default=0)
    parser.add_argument("--workers", type=int, default=1, help="folding processes (default 1)")
    parser.add_argument("--dask", default=None, metavar="ADDRESS|local:N",
                        help="fold on a dask.distributed cluster: a running scheduler's address, or local:N for a "
                             "LocalCluster of N processes (replaces --workers; same output)")
    parser.add_argument("--shard", default=None, metavar="K/N",
                        help="fold only shard K of N (0-based) of the segment stream; "
                             "s1_data_gen/merge_shards.py joins the N outputs into the unsharded one")
    parser.add_argument("--out", type=Path, required=True, help="output .pkl.gz")


@dataclass(frozen=True)
class FoldJob:
    """What to compute for each segment (picklable, sent to worker processes).

    ``num_sample`` 0: MFE rows; otherwise one row per unique sample, or one merged row.
    """

    seed: int
    threshold_mfe_freq: float = 0.0
    num_sample: int = 0
    merge: bool = False


def rows_for_segment(job: FoldJob, task: tuple[int, str]) -> tuple[list[dict], str | None]:
    """Fold one segment; return its rows (without provenance) or a skip reason."""
    index, seq = task
    f = fold(seq, partition=True, num_sample=job.num_sample,
             seed=sampling_seed(job.seed, index) if job.num_sample else 0)
    if f.mfe_freq < job.threshold_mfe_freq:
        return [], SKIP_FREQ
    energetics = {"fe": f.fe, "mfe_freq": f.mfe_freq, "ens_div": f.ens_div}
    # the MFE structure first, then the samples: one compiled pass over all of them
    (mfe_one_idx, mfe_boxes), *sampled = structure_columns_of([f.mfe_structure] + f.samples)
    if not job.num_sample:
        if not mfe_one_idx[0]:
            return [], SKIP_UNSTRUCTURED
        return [{"seq": seq, "one_idx": mfe_one_idx, "bounding_boxes": mfe_boxes, **energetics}], None
    sampled = [(one_idx, boxes) for one_idx, boxes in sampled if one_idx[0]]
    if not sampled:
        return [], SKIP_UNSTRUCTURED
    if not job.merge:
        return [{"seq": seq, "one_idx": one_idx, "bounding_boxes": boxes, "sample_id": k, **energetics}
                for k, (one_idx, boxes) in enumerate(sampled)], None
    stems, counts, conflicts = merge_stem_boxes([[b for b in boxes if b.kind == STEM] for _, boxes in sampled])
    loops = sorted({b for _, boxes in sampled for b in boxes if b.kind != STEM})
    return [{"seq": seq, "one_idx": mfe_one_idx, "bounding_boxes": stems + loops,
             "stem_box_count": counts, "n_samples": len(sampled), "n_conflicts": conflicts,
             **energetics}], None


def provenance(seg: Segment, index: int) -> dict:
    return {"chrom": seg.gene.chrom, "strand": seg.gene.strand, "start": seg.start,
            "end": seg.end, "gene_id": seg.gene.gene_id, "segment_index": index}


def shard_block(num_wanted: int, n_shards: int) -> int:
    """Tasks per block: small enough that every shard folds many blocks, so the shards
    advance through the task stream together."""
    return max(1, min(SHARD_BLOCK, num_wanted // (8 * n_shards)))


def shard_target(num_wanted: int, n_shards: int) -> int:
    """Accepted segments one shard folds: its share plus ``SHARD_SLACK`` (and a few), so
    that the merged shards reach ``num_wanted`` in task order."""
    return math.ceil(num_wanted * (1 + SHARD_SLACK) / n_shards) + 8


def fold_batch(job: FoldJob, tasks: list[tuple[int, str]]) -> list[tuple[list[dict], str | None]]:
    """``rows_for_segment`` over a list of tasks (one pool or Dask task)."""
    return [rows_for_segment(job, t) for t in tasks]


class Folder:
    """Where segments are folded: this process, a local process pool, or a Dask cluster.
    ``submit(tasks)`` returns a handle, ``results(handle)`` the rows in task order.

    The local pool is a ``ProcessPoolExecutor``: a worker that dies (killed, or a crash
    in native code) makes the run stop with an error instead of waiting forever for the
    rows it held, as a ``multiprocessing.Pool`` would."""

    def __init__(self, job: FoldJob, workers: int = 1, dask: str | None = None):
        self.job, self.workers, self.pool, self.client, self.cluster = job, workers, None, None, None
        if dask:
            self.client, self.cluster = dask_client(dask)
            self.workers = max(len(self.client.scheduler_info()["workers"]), 1)
        elif workers > 1:
            self.pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"),
                                            initializer=_start_worker)

    def submit(self, tasks: list[tuple[int, str]]):
        chunks = [tasks[k:k + FOLD_CHUNK] for k in range(0, len(tasks), FOLD_CHUNK)]
        if self.client is not None:
            return self.client.map(fold_batch, [self.job] * len(chunks), chunks, pure=False)
        if self.pool is not None:
            return [self.pool.submit(fold_batch, self.job, chunk) for chunk in chunks]
        return map(partial(rows_for_segment, self.job), tasks)

    def results(self, handle) -> Iterable:
        if self.client is None and self.pool is None:
            return handle
        try:
            return [r for future in handle for r in future.result()]
        except BrokenProcessPool:
            raise RunFailed(WORKER_DIED) from None

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)
        if self.client is not None:
            self.client.close()
        if self.cluster is not None:
            self.cluster.close()


def _start_worker() -> None:
    """Workers fork lazily, inside ``cyclic_gc_paused``: they collect as usual, only the
    process that holds the rows pauses its collector; and SIGTERM ends them at once
    (``pool_worker_start``)."""
    gc.enable()
    pool_worker_start()


@contextmanager
def cyclic_gc_paused() -> Iterator[None]:
    """Rows are trees of dicts, lists and tuples, without reference cycles; while they
    pile up, CPython's cyclic collector re-scans them ever more often for nothing (it
    cost as much time as building them: bench/bench_data_gen.py)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def generate(genome: Genome, segments: Iterable[Segment], job: FoldJob, num_wanted: int,
             workers: int, desc: str, dask: str | None = None,
             shard: tuple[int, int] | None = None) -> tuple[list[dict], Counter, int, dict]:
    """Fold segments until ``num_wanted`` segments gave rows (with ``shard`` (K, N): only
    shard K's blocks, until ``shard_target`` did).

    Returns the rows (provenance added), a Counter of skip reasons, the number of
    segments that gave rows, and the shard record (``attrs`` of a shard's pickle).
    """
    skipped: Counter = Counter()
    rows: list[dict] = []
    accepted = 0
    target = shard_target(num_wanted, shard[1]) if shard else num_wanted
    block = shard_block(num_wanted, shard[1]) if shard else 1
    last_index = -1
    exhausted = True

    def tasks() -> Iterator[tuple[tuple[int, str], Segment]]:
        index = 0
        for seg in segments:
            seq = genome.segment_seq(seg)
            if "N" in seq:
                skipped[SKIP_N] += 1
                continue
            if shard is None or (index // block) % shard[1] == shard[0]:
                yield (index, seq), seg
            index += 1

    folder = Folder(job, workers, dask)
    batch_size = 256 * folder.workers
    task_iter = tasks()
    pending: deque = deque()  # (batch, its results or async handle), oldest first

    def refill() -> None:
        # Keep up to two batches in flight, sized to what is still wanted, so workers fold
        # the next batch while this process turns the previous one into rows.
        need = target - accepted - sum(len(b) for b, _ in pending)
        while need > 0 and len(pending) < 2:
            batch = list(islice(task_iter, min(batch_size, max(need, 8 * folder.workers))))
            if not batch:
                return
            pending.append((batch, folder.submit([t for t, _ in batch])))
            need -= len(batch)

    try:
        with tqdm(total=target, desc=desc, unit="seq") as bar, cyclic_gc_paused():
            refill()
            while pending and accepted < target:
                batch, handle = pending.popleft()
                refill()
                for (seg_rows, reason), ((index, _), seg) in zip(folder.results(handle), batch):
                    last_index = index
                    if reason:
                        skipped[reason] += 1
                        continue
                    prov = provenance(seg, index)
                    rows.extend({**r, **prov} for r in seg_rows)
                    accepted += 1
                    bar.update()
                    if accepted == target:
                        exhausted = False
                        break
                refill()
    finally:
        folder.close()
    record = {"shard": f"{shard[0]}/{shard[1]}" if shard else None, "num_wanted": num_wanted,
              "last_segment_index": last_index, "exhausted": exhausted}
    return rows, skipped, accepted, record


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


def write_rows(rows: list[dict], out: Path, attrs: dict | None = None) -> None:
    if not rows:
        raise InputError(f"{out}: no rows were generated, nothing written")
    df = pd.DataFrame(rows)
    df.attrs.update(attrs or {})
    write_pickle(df, out)


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
    shard = parse_shard(args.shard)
    check_dask(args.dask)
    if args.dask:
        log.info("folding on Dask: %s", args.dask)
    segments = iter_segments(genes, args.seed, args.max_per_gene, **segment_shape)
    rows, skipped, accepted, record = generate(genome, segments, job, num_wanted, args.workers, desc, args.dask,
                                               shard)
    if shard:  # what merge_shards.py checks: same run, every shard, enough coverage
        record["run"] = {k: str(v) for k, v in sorted(vars(args).items()) if k not in ("shard", "out", "workers",
                                                                                         "dask")}
    write_rows(rows, args.out, record if shard else None)
    if job.merge:
        log.info("merge conflicts: %d stem boxes dropped over %d segments",
                 sum(r["n_conflicts"] for r in rows), accepted)
    if shard:
        log.info("shard %s: %d accepted segments up to segment index %d (target %d)%s", args.shard, accepted,
                 record["last_segment_index"], shard_target(num_wanted, shard[1]),
                 "; the segment stream ran out" if record["exhausted"] else "")
        num_wanted = shard_target(num_wanted, shard[1])
    summarize(log, args.out, len(rows), accepted, num_wanted, skipped)
