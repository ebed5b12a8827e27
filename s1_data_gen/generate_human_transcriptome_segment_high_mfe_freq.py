"""S1 data: gene segments of one length with their MFE structure, kept when the MFE
structure's ensemble frequency reaches ``--threshold_mfe_freq``.

    python generate_human_transcriptome_segment_high_mfe_freq.py --len 40 --num_seq 1000 \\
        --threshold_mfe_freq 0.02 --chromosomes chr3 --out ../data/s1_train_mfe_len40_1000.pkl.gz
"""
import argparse

from stembb.cli import HelpFormatter, check_at_least_one
from stembb.data.datagen import FoldJob, add_common_args, run_generator
from stembb.errors import run_main


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--len", type=int, required=True, help="segment length (nt)")
    p.add_argument("--num_seq", type=int, required=True, help="number of sequences")
    p.add_argument("--threshold_mfe_freq", type=float, default=0.0)
    add_common_args(p)
    return p


def main(args) -> None:
    check_at_least_one(args, "len", "num_seq", "max_per_gene", "workers")
    job = FoldJob(seed=args.seed, threshold_mfe_freq=args.threshold_mfe_freq)
    run_generator(args, job, args.num_seq, "MFE", length=args.len)


if __name__ == "__main__":
    run_main(lambda: main(get_args_parser().parse_args()))
