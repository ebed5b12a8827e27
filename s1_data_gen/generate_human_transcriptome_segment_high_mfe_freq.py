"""S1 data: gene segments of one length with their MFE structure, kept when the MFE
structure's ensemble frequency reaches ``--threshold_mfe_freq``."""
import argparse

from stembb.data.datagen import FoldJob, add_common_args, check_positive, run_generator
from stembb.errors import run_main


def parse_args():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--len", type=int, required=True, help="segment length (nt)")
    p.add_argument("--num_seq", type=int, required=True, help="number of sequences")
    p.add_argument("--threshold_mfe_freq", type=float, default=0.0)
    add_common_args(p)
    args = p.parse_args()
    check_positive(p, args, "len", "num_seq", "max_per_gene", "workers")
    return args


def main():
    args = parse_args()
    job = FoldJob(seed=args.seed, threshold_mfe_freq=args.threshold_mfe_freq)
    run_generator(args, job, args.num_seq, "MFE", length=args.len)


if __name__ == "__main__":
    run_main(main)
