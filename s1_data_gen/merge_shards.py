"""Join the N shard outputs of one generator run (``--shard K/N``) into the unsharded output.

Every shard must come from the same command apart from --shard/--out/--workers/--dask,
and shards 0..N-1 must all be given (any order). Rows are put back in segment order and
the first --num_data (or --num_seq) accepted segments kept: the same rows, in the same
order, as the run without --shard.

    python merge_shards.py --inputs ../data/part_*.pkl.gz --out ../data/train.pkl.gz
"""
import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from stembb.cli import HelpFormatter, check_num, check_outputs
from stembb.errors import InputError, run_main
from stembb.io import read_pickle, write_pickle
from stembb.runlog import start_run


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--data", "--inputs", dest="inputs", type=Path, nargs="+", required=True, help="the shard pickles")
    p.add_argument("--out", type=Path, required=True, help="merged .pkl.gz")
    p.add_argument("--num", type=int, default=None,
                   help="keep the first N segments (default: the shards' --num_data/--num_seq)")
    return p


def merge_shards(frames: dict[Path, pd.DataFrame], num: int | None = None) -> pd.DataFrame:
    """The unsharded rows from shard frames (each with the ``attrs`` a shard run writes):
    the first ``num`` segments (default: the shards' own target) in segment order."""
    shards = {}
    for path, df in frames.items():
        if not df.attrs.get("shard"):
            raise InputError(f"{path}: not a shard output (made without --shard)")
        k, n = (int(v) for v in df.attrs["shard"].split("/"))
        if k in shards:
            raise InputError(f"{path}: shard {k}/{n} given twice (also {shards[k][0]})")
        shards[k] = (path, df, n)
    first_path, first, n = shards[min(shards)]
    for path, df, n_k in shards.values():
        if n_k != n or df.attrs["run"] != first.attrs["run"]:
            raise InputError(f"{path}: made by another run than {first_path} (flags or shard count differ)")
    missing = sorted(set(range(n)) - set(shards))
    if missing:
        raise InputError(f"shards {missing} of {n} are missing")
    num_wanted = num or first.attrs["num_wanted"]
    # every shard folded all of its tasks up to its last index, so the union is complete up to
    # the smallest last index of the shards whose segment stream did not run out
    covered = min((df.attrs["last_segment_index"] for _, df, _ in shards.values() if not df.attrs["exhausted"]),
                  default=np.inf)
    rows = pd.concat([shards[k][1] for k in range(n)], ignore_index=True)
    rows = rows[rows["segment_index"] <= covered].sort_values("segment_index", kind="stable")
    segments = rows["segment_index"].unique()
    if len(segments) < num_wanted and np.isfinite(covered):
        raise InputError(f"the shards cover {len(segments)} of {num_wanted} segments in order; rerun every shard "
                         f"with a larger --num_data/--num_seq and merge with --num {num_wanted}")
    kept = rows[rows["segment_index"].isin(segments[:num_wanted])].reset_index(drop=True)
    kept.attrs = {}
    return kept


def main(args) -> None:
    check_outputs([args.out], args.inputs)
    log = start_run("merge_shards")
    frames = {path: read_pickle(path) for path in args.inputs}
    check_num(args.num)
    merged = merge_shards(frames, args.num)
    write_pickle(merged, args.out)
    log.info("wrote %d rows (%d segments) from %d shards to %s", len(merged), merged["segment_index"].nunique(),
             len(frames), args.out)


if __name__ == "__main__":
    run_main(lambda: main(get_args_parser().parse_args()))
