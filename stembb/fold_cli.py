r"""Fold the sequences of a FASTA file (a file, or standard input) with the shipped model
or given checkpoints: the ``stembb-fold`` command and ``evaluation/predict_structure.py``.

    stembb-fold --fasta in.fa                          # the shipped model; or: stembb-fold < in.fa
    python evaluation/predict_structure.py --s1_model S1.pth --s2_model S2.pth --fasta in.fa \
        [--out out.db] [--format dot-bracket|bpseq|ct] [--bpp DIR]

Lowercase, T and U are accepted. Dot-bracket output is FASTA like RNAfold's (name,
sequence, structure and, for a grammar model, the structure's score as a pseudo free
energy in kcal/mol); bpseq and ct records are concatenated. With a grammar model
(s2_training/train_s2_grammar.py), --bpp DIR writes each sequence's base-pair probabilities
to DIR/<n>_<name>.bpp (lines "i j p", 1-based, p > 1e-4) and a dot plot DIR/<n>_<name>.png
(n: the record's number from 1). --pseudoknots adds stems crossing the nested
structure (dot-bracket ``[]``, ``{}``, ``<>``; BPSEQ and CT carry every pair).

Records are written as they finish: to standard output, or to OUT.partial, renamed onto
--out when the last is done, so a reader never finds half a file under that name. A run
killed on the way (a scheduler's time limit) keeps its finished records there, and the
same command with --resume folds only the rest; the output is the same, byte for byte.

A FASTA file is read a record at a time, twice: once to check every record (and the
memory its fold needs) before any work, once to fold, so its size is not bounded by
memory (standard input and pipes are read whole). Beyond one process: --shard K/N folds
the K-th of N equal runs of records (the N outputs, concatenated in order, are the
unsharded output), and --dask ADDRESS|local:N folds batches on a Dask cluster, written
in input order; both outputs equal one process's, byte for byte.
"""
import argparse
import copy
import fcntl
import os
import re
import sys
import time
from collections import deque
from itertools import islice
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
from tqdm import tqdm

from stembb.cli import HelpFormatter, check_outputs
from stembb.cluster import check_dask, dask_client, parse_shard
from stembb.errors import InputError, run_main, signals_held
from stembb.data.formats import FastaFile, format_record, read_fasta
from stembb.io import atomic_path, streams
from stembb.pipeline import add_predictor_args, make_predictor
from stembb.sequences import add_letters_arg, check_record
from stembb.runlog import start_run


TRAINED_LENGTH = 200  # the shipped model's longest training sequences (models/MODEL_CARD.md)
BOX_MAX_LENGTH = 500


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    add_predictor_args(p)
    add_letters_arg(p)
    p.add_argument("--fasta", type=Path, default=Path("-"), help="FASTA file; - (default) reads standard input")
    p.add_argument("--out", type=Path, default=None, help="output file (default: standard output)")
    p.add_argument("--format", choices=("dot-bracket", "bpseq", "ct"), default="dot-bracket", help="output format")
    p.add_argument("--max_length", type=int, default=None,
                   help="a longer record is an error (default: no limit for grammar models, whose memory need is "
                        f"checked before folding, with or without --max_span; {BOX_MAX_LENGTH} nt for the box "
                        "model, whose S1 image grows with L^2)")
    p.add_argument("--bpp", type=Path, default=None,
                   help="folder for base-pair probabilities and dot plots (grammar models)")
    p.add_argument("--shard", default=None, metavar="K/N",
                   help="fold only the K-th of N equal runs of the input's records (0-based): the outputs of shards "
                        "0 .. N-1, concatenated in order, are the unsharded output (a SLURM array: README)")
    p.add_argument("--dask", default=None, metavar="ADDRESS|local:N",
                   help="fold on a dask.distributed cluster: a running scheduler's address, or local:N for N local "
                        "processes; the output is the same as one process's, in input order")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted run: its finished records wait in OUT.partial; the output equals an "
                        "uninterrupted run's byte for byte")
    return p


DOT_PLOT_PIXELS = 1000  # a longer sequence's dot plot bins bases, so its image never holds L x L values


def dot_plot_image(length: int, pairs: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """``(n, n)`` image of the pair probabilities from the sparse pairs, symmetric, each
    pixel the largest p of the pairs it covers; n = min(L, ``DOT_PLOT_PIXELS``), so the
    image of a 20,000-nt fold takes 8 MB, not 3 GB."""
    n = min(length, DOT_PLOT_PIXELS)
    image = np.zeros((n, n))
    if len(pairs):
        i, j = (np.asarray(pairs) * n // length).T
        np.maximum.at(image, (i, j), probs)
        np.maximum.at(image, (j, i), probs)
    return image


def write_pair_probabilities(folder: Path, number: int, name: str, seq: str, ens) -> None:
    """``i j p`` lines (1-based, p > 1e-4, by i then j) and a dot plot (grey level the
    square root of p; ``dot_plot_image``). The folder is made at the first record, so an
    interrupt before it leaves none."""
    from stembb.plots import plt, save_figure

    stem = folder / f"{number}_{re.sub(r'[^A-Za-z0-9_.-]', '_', name)[:60]}"
    keep = ens.probs > 1e-4
    lines = "".join(f"{i + 1} {j + 1} {p:.6f}\n" for (i, j), p in zip(ens.pairs[keep].tolist(), ens.probs[keep]))
    with atomic_path(stem.with_suffix(".bpp")) as tmp:
        tmp.write_text(lines)
    fig, ax = plt.subplots(figsize=(5, 5))
    extent = (0.5, len(seq) + 0.5, len(seq) + 0.5, 0.5)
    ax.imshow(np.sqrt(dot_plot_image(len(seq), ens.pairs[keep], ens.probs[keep])), cmap="Greys", vmin=0, vmax=1,
              extent=extent, interpolation="nearest")
    ax.set(title=f"{name}: base-pair probabilities", xlabel="j", ylabel="i")
    save_figure(fig, stem.with_suffix(".png"))


def check_bpp(bpp: Path | None, out: Path | None) -> None:
    """``--bpp`` before any work: not an existing file, not the ``--out`` path."""
    if bpp is None:
        return
    if bpp.exists() and not bpp.is_dir():
        raise InputError(f"--bpp {bpp}: is an existing file; give a folder (made if absent)")
    if out is not None and bpp.resolve() == out.resolve():
        raise InputError(f"--bpp {bpp}: is also --out; give the pair probabilities their own folder")


def partial_path(out: Path) -> Path:
    """Where ``--out`` grows while records finish: renamed onto ``out`` at the end."""
    return out.with_name(out.name + ".partial")


def resume_point(partial: Path, records, fmt: str) -> tuple[int, int]:
    """``(records, bytes)``: how many of ``records`` ``partial`` holds whole, and where the
    last whole one ends (a record cut by the kill is dropped). InputError when a record
    there is not the input's record at that place (another input, or format)."""
    data = partial.read_bytes()
    lines = data.splitlines(keepends=True)
    at = offset = done = 0
    for rec in records:
        expected = format_record(rec.name, rec.seq, [], fmt, 0.0 if fmt == "dot-bracket" else None).splitlines()
        block = lines[at:at + len(expected)]
        if len(block) < len(expected) or not block[-1].endswith(b"\n"):
            break
        if block[0].decode(errors="replace").rstrip("\n") != expected[0] or (
                fmt == "dot-bracket" and block[1].decode(errors="replace").rstrip("\n") != expected[1]):
            raise InputError(f"{partial}: record {done + 1} is not {rec.name!r} of this input in --format {fmt}; "
                             "it is another run's output: remove it, or resume with that run's flags")
        at += len(expected)
        offset += sum(len(line) for line in block)
        done += 1
    return done, offset


def open_partial(partial: Path, resuming: bool):
    """``partial`` opened to append, created only when not ``resuming``, and locked: a
    second run of the same --out (started at the same moment, or resuming while the first
    still runs) is refused rather than mixing its records into the first one's."""
    try:
        sink = open(partial, "a" if resuming else "x")
    except FileExistsError:
        raise InputError(f"{partial}: another run of this --out started at the same moment; two runs of one "
                         "output would mix their records: choose another --out") from None
    try:
        fcntl.flock(sink, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        sink.close()
        raise InputError(f"{partial}: another run is writing it now; wait for it to end, or choose another "
                         "--out") from None
    return sink


CHUNK_BASES = 10_000  # records folded between writes: a kill loses at most about this much work


def chunks(records: Iterable, threads: int) -> Iterator[list]:
    """``records`` in runs of about ``CHUNK_BASES`` nucleotides, at least ``threads``
    records each (the folds of a run go in parallel)."""
    batch, bases = [], 0
    for rec in records:
        batch.append(rec)
        bases += len(rec.seq)
        if bases >= CHUNK_BASES and len(batch) >= threads:
            yield batch
            batch, bases = [], 0
    if batch:
        yield batch


def fold_records(predictor, records, want_pairs: bool = True) -> tuple[list, list, list]:
    """Structures, pair probabilities (grammar models, when ``want_pairs``; else empty)
    and energies of ``records``, which ``check_record`` has checked."""
    seqs = [r.seq for r in records]
    if predictor.is_grammar:
        structures, ensembles, energies = predictor.fold_checked(seqs, [r.name for r in records])
        return structures, ensembles if want_pairs else [], energies
    return predictor.predict_checked(seqs), [], [None] * len(records)


def folded_chunks(predictor, batches: Iterable[list], dask: str | None, want_pairs: bool) -> Iterator[tuple]:
    """``(batch, structures, pair probabilities, energies)`` of each batch, in input
    order: folded here, or on a Dask cluster (``--dask``), where each worker holds a copy
    of the predictor folding one batch at a time and at most two batches per worker
    wait, so the input is read only as fast as it is folded."""
    if dask is None:
        for batch in batches:
            yield (batch, *fold_records(predictor, batch, want_pairs))
        return
    client, cluster = dask_client(dask)
    try:
        remote = copy.copy(predictor)
        remote.threads = 1  # a worker is one process of one thread; more folds at once means more workers
        shared = client.scatter(remote, broadcast=True)
        ahead = 2 * max(len(client.scheduler_info()["workers"]), 1)
        pending: deque = deque()
        for batch in batches:
            pending.append((batch, client.submit(fold_records, shared, batch, want_pairs, pure=False)))
            if len(pending) >= ahead:
                done, future = pending.popleft()
                yield (done, *future.result())
        while pending:
            done, future = pending.popleft()
            yield (done, *future.result())
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def checked_count(args, records, predictor, log) -> int:
    """How many records the input holds, after checking every one (letters, length, and
    the memory its fold needs) before any work; the input is read once for this, a
    record at a time."""
    max_length = args.max_length if args.max_length is not None else (
        float("inf") if predictor.is_grammar else BOX_MAX_LENGTH)
    total = longer = 0
    for rec in records:
        if not check_record(args.fasta, rec, max_length, args.strict_letters, log):
            raise InputError(f"{args.fasta}: record {rec.name!r} is {len(rec.seq)} nt, longer than --max_length "
                             f"{max_length}")
        if predictor.is_grammar:
            predictor.folds_at_once([rec.seq], [rec.name])
        total += 1
        longer += len(rec.seq) > TRAINED_LENGTH
    if longer:
        log.info("note: %d of %d sequences are longer than %d nt, the longest of the shipped model's training and "
                 "validation sequences", longer, total, TRAINED_LENGTH)
    return total


def main(args) -> None:
    check_outputs([args.out], [None if str(args.fasta) == "-" else args.fasta, args.s1_model, args.s2_model])
    check_bpp(args.bpp, args.out)
    shard = parse_shard(args.shard)
    check_dask(args.dask)
    stream = args.out is None or streams(args.out)
    if args.resume and stream:
        raise InputError("--resume continues an --out file; give --out FILE (standard output and devices cannot "
                         "be resumed)")
    final = args.out.resolve() if args.out is not None and args.out.is_symlink() else args.out  # a link stays
    partial = None if stream else partial_path(final)
    if partial is not None and partial.exists() and not args.resume:
        raise InputError(f"{partial}: an interrupted run's output is there; pass --resume to continue it, or "
                         "remove it")
    log = start_run("predict_structure")
    records = read_fasta(args.fasta) if streams(args.fasta) else FastaFile(args.fasta)  # a pipe is read once
    predictor = make_predictor(args)
    if args.bpp is not None and not predictor.is_grammar:
        raise InputError(f"--bpp needs a grammar model (s2_training/train_s2_grammar.py); {args.s2_model} is not one")
    total = checked_count(args, records, predictor, log)
    first, end = (total * shard[0] // shard[1], total * (shard[0] + 1) // shard[1]) if shard else (0, total)
    if shard:
        log.info("shard %s: records %d to %d of %d", args.shard, first + 1, end, total)

    def mine() -> Iterator:
        return islice(iter(records), first, end)

    count, done, sink, resumed = end - first, 0, None, False
    if partial is None:
        sink = sys.stdout if str(args.out or "-") == "-" else open(args.out, "a")
    else:
        resuming = partial.exists()
        partial.parent.mkdir(parents=True, exist_ok=True)
    if args.dask:
        log.info("folding on Dask: %s", args.dask)
    started = time.perf_counter()
    try:
        if partial is not None:
            with signals_held():  # an interrupt from here on finds the partial file ours, and removes it if empty
                sink = open_partial(partial, resuming)
            if resuming:
                done, offset = resume_point(partial, mine(), args.format)
                resumed = True
                sink.truncate(offset)
                log.info("resuming: %d of %d records were finished in %s", done, count, partial)
            elif args.resume:
                log.info("--resume: no %s, so nothing to resume; folding every record", partial)
        with tqdm(total=count, initial=done, desc="fold", unit="seq", disable=count - done < 2) as bar:
            batches = chunks(islice(mine(), done, None), predictor.threads)
            for batch, structures, ensembles, energies in folded_chunks(predictor, batches, args.dask,
                                                                       args.bpp is not None):
                if args.bpp is not None:
                    for k, (r, ens) in enumerate(zip(batch, ensembles), first + done + 1):
                        write_pair_probabilities(args.bpp, k, r.name, r.seq, ens)
                sink.write("".join(format_record(r.name, r.seq, pairs, args.format, energy)
                                   for r, pairs, energy in zip(batch, structures, energies)))
                sink.flush()
                if partial is not None:
                    os.fsync(sink.fileno())
                done += len(batch)
                bar.update(len(batch))
    except BaseException as exc:
        if sink is None:  # the partial file is another run's (open_partial refused it), or was never made
            raise
        if sink is not sys.stdout:
            sink.close()
        if partial is None or (resuming and not resumed):  # unchecked, or another input's file: not ours to clear
            raise
        # what the file holds, not a counter: a signal can land between a record's write and its count
        kept = resume_point(partial, mine(), args.format)[0] if partial.exists() else 0
        if not kept:
            partial.unlink(missing_ok=True)
        elif isinstance(exc, KeyboardInterrupt):
            raise KeyboardInterrupt(f"interrupted: {kept} of {count} records are finished in {partial}; "
                                    "rerun the same command with --resume to continue") from None
        raise
    if sink is not sys.stdout:
        sink.close()
    if partial is not None:
        os.replace(partial, final)
    seconds = time.perf_counter() - started
    log.info("predicted %d structures in %.2f s (%.1f sequences/s, %s)", count, seconds, count / max(seconds, 1e-9),
             args.dask or predictor.device)
    if args.bpp is not None:
        log.info("wrote pair probabilities and dot plots of %d sequences to %s", count, args.bpp)


def run() -> None:
    """The ``stembb-fold`` console command."""
    run_main(lambda: main(get_args_parser().parse_args()))
