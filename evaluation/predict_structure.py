"""Predict secondary structures for the sequences of a FASTA file with S1 + S2.

    python evaluation/predict_structure.py --s1_model S1.pth --s2_model S2.pth --fasta in.fa \
        [--out out.db] [--format dot-bracket|bpseq|ct]

Lowercase, T and U are accepted. Dot-bracket output is FASTA like RNAfold's (name,
sequence, structure); bpseq and ct records are concatenated.
"""
import argparse
import sys
import time
from pathlib import Path

from stembb.cli import check_outputs
from stembb.errors import run_main
from stembb.data.formats import format_record, read_fasta
from stembb.io import atomic_path
from stembb.pipeline import add_predictor_args, check_sequences, make_predictor
from stembb.runlog import start_run


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_predictor_args(p)
    p.add_argument("--fasta", type=Path, required=True)
    p.add_argument("--out", type=Path, default=None, help="output file (default: standard output)")
    p.add_argument("--format", choices=("dot-bracket", "bpseq", "ct"), default="dot-bracket")
    p.add_argument("--max_length", type=int, default=500)
    return p


def main(args) -> None:
    check_outputs([args.out], [args.fasta, args.s1_model, args.s2_model])
    log = start_run("predict_structure")
    records = read_fasta(args.fasta)
    check_sequences(args.fasta, records, args.max_length)
    predictor = make_predictor(args)
    started = time.perf_counter()
    structures = predictor.predict([r.seq for r in records])
    seconds = time.perf_counter() - started
    log.info("predicted %d structures in %.2f s (%.1f sequences/s, %s)", len(records), seconds,
             len(records) / max(seconds, 1e-9), predictor.device)
    text = "".join(format_record(r.name, r.seq, pairs, args.format) for r, pairs in zip(records, structures))
    if args.out is None:
        sys.stdout.write(text)
    else:
        with atomic_path(args.out) as tmp:
            tmp.write_text(text)


if __name__ == "__main__":
    run_main(lambda: main(get_args_parser().parse_args()))
