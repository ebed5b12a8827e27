"""An in-family test set: sequences of the training families that training never saw.

--data is make_structure_dataset.py's pickle that models train on; --more is the same
call with a larger --max_per_family (same inputs, --seed and split flags, so every family
keeps its split). The output holds the rows of --more in --data's training families whose
sequences --data does not hold at all, at most --max_per_family per family (a seeded
sample), with split "test": families shared with training, sequences not.

    python in_family_split.py --data ../data/real/rfam_f2.pkl.gz --more ../data/real/rfam_f6.pkl.gz \\
        --out ../data/real/rfam_in_family.pkl.gz
"""
import argparse
from pathlib import Path

import numpy as np

from stembb.cli import HelpFormatter, check_at_least_one, check_outputs, seed
from stembb.errors import InputError, run_main
from stembb.io import read_pickle, write_pickle
from stembb.runlog import start_run


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="the training pickle (make_structure_dataset.py)")
    p.add_argument("--more", type=Path, required=True, help="a larger draw of the same families")
    p.add_argument("--out", type=Path, required=True, help="the in-family test pickle (.pkl.gz)")
    p.add_argument("--max_per_family", type=int, default=1, help="held-out sequences kept per family")
    p.add_argument("--seed", type=seed, default=0)
    return p


def main(args) -> None:
    check_outputs([args.out], [args.data, args.more])
    check_at_least_one(args, "max_per_family")
    log = start_run("in_family_split", args.seed)
    data, more = (read_pickle(p, required=("seq", "one_idx", "family", "split")) for p in (args.data, args.more))
    families = data.loc[data["split"] == "train", "family"].unique()
    disagree = more.groupby("family")["split"].first().reindex(families).ne("train")
    if disagree.any():
        raise InputError(f"{args.more}: family {disagree[disagree].index[0]} is not in the training split there; "
                         "make both pickles with the same inputs, --seed and split flags")
    rows = more[more["family"].isin(families) & ~more["seq"].isin(set(data["seq"]))]
    rng = np.random.default_rng([args.seed, 7])
    rank = rows.assign(key=rng.random(len(rows))).groupby("family")["key"].rank(method="first")
    out = rows[rank <= args.max_per_family].assign(split="test").reset_index(drop=True)
    if out.empty:
        raise InputError(f"{args.more}: no sequence of a training family outside {args.data}")
    write_pickle(out, args.out)
    log.info("wrote %d held-out sequences of %d training families to %s", len(out), out["family"].nunique(), args.out)


if __name__ == "__main__":
    run_main(lambda: main(get_args_parser().parse_args()))
