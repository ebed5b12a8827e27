"""S1 training data: gene segments of one length, several unique Boltzmann samples each.

One row per unique sample (``sample_id``), or with ``--merge`` one row per segment whose
target is the union of the samples' stem boxes (conflicts resolved as in stembb.data.merge).
``--num_data`` counts segments.

    python generate_human_transcriptome_segment_high_mfe_freq_multi_struct.py \\
        --len 40 --num_data 100 --num_sample 10 --chromosomes chr1 --out ../data/s1_train_debug.pkl.gz
"""
import argparse

from stembb.cli import HelpFormatter, check_at_least_one
from stembb.data.datagen import FoldJob, add_common_args, run_generator
from stembb.errors import run_main


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--len", type=int, required=True, help="segment length (nt)")
    p.add_argument("--num_data", type=int, required=True, help="number of segments")
    p.add_argument("--num_sample", type=int, default=10, help="unique samples per segment (default 10)")
    p.add_argument("--merge", action="store_true", help="one row per segment, stem boxes of all samples merged")
    p.add_argument("--threshold_mfe_freq", type=float, default=0.0,
                   help="skip segments whose MFE structure frequency is below this (default 0: keep all)")
    add_common_args(p)
    return p


def main(args) -> None:
    check_at_least_one(args, "len", "num_data", "num_sample", "max_per_gene", "workers")
    job = FoldJob(seed=args.seed, threshold_mfe_freq=args.threshold_mfe_freq,
                  num_sample=args.num_sample, merge=args.merge)
    run_generator(args, job, args.num_data, "multi-struct", length=args.len)


if __name__ == "__main__":
    run_main(lambda: main(get_args_parser().parse_args()))
