"""Variable-length gene segments (lengths uniform in [len_min, len_max], non-overlapping)
with their MFE structure, ``fe``, ``mfe_freq`` and ``ens_div``; kept when ``mfe_freq``
reaches ``--threshold_mfe_freq``. Also the test-set generator (held-out chromosome).

    python generate_human_transcriptome_segment_high_mfe_freq_var_len.py \\
        --len_min 20 --len_max 200 --num_seq 1000 --threshold_mfe_freq 0.02 \\
        --chromosomes chr2 chr3 --out ../data/human_transcriptome_segment_high_mfe_freq_training_len20_200_1000.pkl.gz
"""
import argparse

from stembb.cli import HelpFormatter, check_at_least_one
from stembb.data.datagen import FoldJob, add_common_args, run_generator
from stembb.errors import InputError, run_main


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--len_min", type=int, required=True)
    p.add_argument("--len_max", type=int, required=True)
    p.add_argument("--num_seq", type=int, required=True, help="number of sequences")
    p.add_argument("--threshold_mfe_freq", type=float, default=0.0)
    add_common_args(p)
    return p


def main(args) -> None:
    check_at_least_one(args, "len_min", "num_seq", "max_per_gene", "workers")
    if args.len_max < args.len_min:
        raise InputError(f"--len_max ({args.len_max}) is below --len_min ({args.len_min})")
    job = FoldJob(seed=args.seed, threshold_mfe_freq=args.threshold_mfe_freq)
    run_generator(args, job, args.num_seq, "MFE var-len", len_min=args.len_min, len_max=args.len_max)


if __name__ == "__main__":
    run_main(lambda: main(get_args_parser().parse_args()))
