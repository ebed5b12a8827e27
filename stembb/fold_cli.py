"""Fold the sequences of a FASTA file (a file, or standard input) with S1 + S2: the
``stembb-fold`` command and ``evaluation/predict_structure.py``.

    stembb-fold --fasta in.fa                          # the shipped model; or: stembb-fold < in.fa
    python evaluation/predict_structure.py --s1_model S1.pth --s2_model S2.pth --fasta in.fa \
        [--out out.db] [--format dot-bracket|bpseq|ct] [--bpp DIR]

Lowercase, T and U are accepted. Dot-bracket output is FASTA like RNAfold's (name,
sequence, structure and, for a grammar S2 model, the structure's score as a pseudo free
energy in kcal/mol); bpseq and ct records are concatenated. With a grammar S2 model
(s2_training/train_s2_crf.py), --bpp DIR writes each sequence's base-pair probabilities
to DIR/<n>_<name>.bpp (lines "i j p", 1-based, p > 1e-4) and a dot plot DIR/<n>_<name>.png
(n: the record's number from 1).
"""
import argparse
import re
import sys
import time
from pathlib import Path

import numpy as np

from stembb.cli import check_outputs
from stembb.errors import InputError, run_main
from stembb.data.formats import format_record, read_fasta
from stembb.io import atomic_path
from stembb.pipeline import add_predictor_args, check_sequences, make_predictor
from stembb.runlog import start_run


TRAINED_LENGTH = 200  # the shipped model's longest training sequences (models/MODEL_CARD.md)
BOX_MAX_LENGTH = 500


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_predictor_args(p)
    p.add_argument("--fasta", type=Path, default=Path("-"), help="FASTA file; - (default) reads standard input")
    p.add_argument("--out", type=Path, default=None, help="output file (default: standard output)")
    p.add_argument("--format", choices=("dot-bracket", "bpseq", "ct"), default="dot-bracket")
    p.add_argument("--max_length", type=int, default=None,
                   help="a longer record is an error (default: no limit for grammar S2 models, whose memory need is "
                        f"checked before folding, with or without --max_span; {BOX_MAX_LENGTH} nt for the box "
                        "model, whose S1 image grows with L^2)")
    p.add_argument("--bpp", type=Path, default=None,
                   help="folder for base-pair probabilities and dot plots (grammar S2 models)")
    return p


def write_pair_probabilities(folder: Path, number: int, name: str, seq: str, ens) -> None:
    """``i j p`` lines (1-based, p > 1e-4, by i then j) and a dot plot (the probability
    matrix, symmetric, grey level the square root of p)."""
    from stembb.plots import plt, save_figure

    stem = folder / f"{number}_{re.sub(r'[^A-Za-z0-9_.-]', '_', name)[:60]}"
    keep = ens.probs > 1e-4
    lines = "".join(f"{i + 1} {j + 1} {p:.6f}\n" for (i, j), p in zip(ens.pairs[keep].tolist(), ens.probs[keep]))
    with atomic_path(stem.with_suffix(".bpp")) as tmp:
        tmp.write_text(lines)
    matrix = ens.matrix(len(seq))
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.imshow(np.sqrt(matrix + matrix.T), cmap="Greys", vmin=0, vmax=1)
    ax.set(title=f"{name}: base-pair probabilities", xlabel="j", ylabel="i")
    save_figure(fig, stem.with_suffix(".png"))


def main(args) -> None:
    check_outputs([args.out], [None if str(args.fasta) == "-" else args.fasta, args.s1_model, args.s2_model])
    log = start_run("predict_structure")
    records = read_fasta(args.fasta)
    predictor = make_predictor(args)
    max_length = args.max_length if args.max_length is not None else (
        float("inf") if predictor.is_grammar else BOX_MAX_LENGTH)
    check_sequences(args.fasta, records, max_length)
    longer = sum(len(r.seq) > TRAINED_LENGTH for r in records)
    if longer:
        log.info("note: %d of %d sequences are longer than %d nt, the longest of the shipped model's training and "
                 "validation sequences", longer, len(records), TRAINED_LENGTH)
    if args.bpp is not None:
        if not predictor.is_grammar:
            raise InputError(f"--bpp needs a grammar S2 model (s2_training/train_s2_crf.py); "
                             f"{args.s2_model} is not one")
        args.bpp.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    if predictor.is_grammar:
        structures, ensembles, energies = predictor.fold([r.seq for r in records], [r.name for r in records])
    else:
        structures, ensembles, energies = predictor.predict([r.seq for r in records]), [], [None] * len(records)
    seconds = time.perf_counter() - started
    log.info("predicted %d structures in %.2f s (%.1f sequences/s, %s)", len(records), seconds,
             len(records) / max(seconds, 1e-9), predictor.device)
    if args.bpp is not None:
        for k, (r, ens) in enumerate(zip(records, ensembles), 1):
            write_pair_probabilities(args.bpp, k, r.name, r.seq, ens)
        log.info("wrote pair probabilities and dot plots of %d sequences to %s", len(records), args.bpp)
    text = "".join(format_record(r.name, r.seq, pairs, args.format, energy)
                   for r, pairs, energy in zip(records, structures, energies))
    if args.out is None:
        sys.stdout.write(text)
    else:
        with atomic_path(args.out) as tmp:
            tmp.write_text(text)


def run() -> None:
    """The ``stembb-fold`` console command."""
    run_main(lambda: main(get_args_parser().parse_args()))
