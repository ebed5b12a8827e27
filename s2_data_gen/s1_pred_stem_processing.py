"""S2 data: S1 proposals of every sequence turned into candidate base pairs with features.

Adds ``stem_bb_bps``, ``target_bps`` and (with --features) ``stem_bb_bps_features`` to the
input rows (see stembb.s2.candidates). Without --include_all, sequences whose target stems
are not all recoverable from the candidates are skipped; sequences with no proposal are
always skipped. Counts are reported at the end.

    python s1_pred_stem_processing.py --data TEST.pkl.gz --threshold_p 0.1 \
        --model ../s1_training/result/run_32/model_ckpt_ep_79.pth --out_file data/s2.pkl.gz --features --include_all
"""
import argparse
from collections import Counter
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from stembb.cli import HelpFormatter, check_num, check_outputs, check_threshold
from stembb.distributed import pick_device
from stembb.errors import InputError, run_main
from stembb.io import read_pickle, write_pickle
from stembb.s1.predict import decode_proposals, iter_maps, load_s1_model
from stembb.runlog import start_run
from stembb.s2.candidates import s2_row
from stembb.structure import STEM


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--threshold_p", "--threshold", dest="threshold_p", type=float, required=True,
                   help="p_on threshold in (0, 1)")
    p.add_argument("--s1_model", "--model", dest="model", type=Path, required=True, help="S1 checkpoint")
    p.add_argument("--out", "--out_file", dest="out_file", type=Path, required=True, help="output pickle (.pkl.gz)")
    p.add_argument("--features", action="store_true", help="add stem_bb_bps_features")
    p.add_argument("--include_all", action="store_true",
                   help="keep sequences with unrecoverable target stems (target restricted to recoverable ones)")
    p.add_argument("--num", type=int, default=None, help="first N sequences only")
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--device", default=None)
    p.add_argument("--no_progress", action="store_true", help="no progress bar (logs only)")
    return p


def main(args) -> None:
    check_threshold("--threshold_p", args.threshold_p)
    check_num(args.num)
    check_outputs([args.out_file], [args.data, args.model])
    log = start_run("s1_pred_stem_processing")
    df = read_pickle(args.data, first=args.num)
    device = pick_device(args.device)
    model, _ = load_s1_model(args.model, device)
    seqs = df["seq"].tolist()
    records = df.to_dict("records")
    kept, skipped = {}, Counter()
    # maps are decoded batch by batch as they come (never all held at once)
    for k, m in tqdm(iter_maps(model, seqs, device, args.batch_size), total=len(df), desc="S1 + S2 features",
                     disable=args.no_progress):
        proposals = decode_proposals(m, seqs[k], args.threshold_p)
        if not len(proposals):
            skipped["no proposal"] += 1
            continue
        stems = [b for b in records[k]["bounding_boxes"] if b.kind == STEM]
        extra, complete = s2_row(stems, proposals, args.features)
        if not complete and not args.include_all:
            skipped["target stems not all recoverable"] += 1
            continue
        kept[k] = {**records[k], **extra}
    rows = [kept[k] for k in sorted(kept)]
    if not rows:
        raise InputError(f"{args.data}: no sequence kept ({dict(skipped)}); lower --threshold_p or pass --include_all")
    out = pd.DataFrame(rows)
    write_pickle(out, args.out_file)
    n_cand = out["stem_bb_bps"].map(len)
    log.info("wrote %d of %d sequences to %s (%.1f candidate pairs per sequence, %.1f per target pair); skipped: %s",
             len(out), len(df), args.out_file, n_cand.mean(), n_cand.sum() / max(out["target_bps"].map(len).sum(), 1),
             ", ".join(f"{n} {why}" for why, n in skipped.items()) or "none")


if __name__ == "__main__":
    run_main(lambda: main(get_args_parser().parse_args()))
