"""Real structures -> the project's training pickle, split by clan (or family).

Reads Stockholm alignments (Rfam seed; plain or gzipped, many alignments per file; each
sequence gets the consensus pairs whose two columns hold its residues, non-canonical ones
dropped), folders of .bpseq/.ct files (subfolders name families) and dot-bracket FASTA
files (the file is the family; in a folder, so is a file of several records: ArchiveII's
``5s.bpseq``, ``tRNA.bpseq``). Pairs are kept as the files give them, crossing, neighbouring
and non-canonical ones too (test rows are references); the pairs the loop grammar cannot
produce, which its trainer drops, are counted by reason in the log and in the pickle's
``attrs["not_producible"]``, and ``attrs["reader"]`` counts what the readers dropped or
kept. --strict refuses a file for a pair of neighbouring bases or a one-sided partner.
Writes the generators' schema (``seq``, ``one_idx``,
``bounding_boxes``) plus ``family``, ``clan``, ``family_name``, ``family_size`` (the
family's sequences in the inputs), ``source``, ``name`` and ``split`` (train / val /
test). Whole clans, or families without a clan, go to one split; 5S rRNA, tRNA, tmRNA
and RNase P families always go to test. The trainers use the ``split`` column (never its
test rows); evaluation/run_end_to_end.py --data X --split test scores it. With
--held_out_from OTHER.pkl.gz, every row is test and rows of a family or clan in OTHER's
train or val split are dropped: e.g. the long records of the families a model never saw.

    python make_structure_dataset.py --inputs Rfam.seed.gz --out ../data/rfam_len20_200.pkl.gz \\
        --len_min 20 --len_max 200 --val_families 0.1 --test_families 0.1 --seed 0
"""
import argparse
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from stembb.cli import HelpFormatter, check_outputs, seed
from stembb.data.formats import clean_letters, read_structures
from stembb.data.splits import SPLITS, group_split, parse_split_spec
from stembb.errors import InputError, run_main
from stembb.io import STRUCTURE_COLUMNS, read_pickle, write_pickle
from stembb.plots import plt, save_figure
from stembb.runlog import start_run
from stembb.grammar.references import PRODUCIBLE_DROPS, trainable_reference
from stembb.structure import crossing_pairs, local_structure_boxes, one_idx_from_pairs, pairs_from_one_idx


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--data", "--inputs", dest="inputs", type=Path, nargs="+", required=True,
                   help="Stockholm files (.sto, .sto.gz), folders of .bpseq/.ct files, dot-bracket FASTA files")
    p.add_argument("--out", type=Path, required=True, help="output pickle (.pkl.gz)")
    p.add_argument("--len_min", type=int, default=10, help="drop shorter sequences")
    p.add_argument("--len_max", type=int, default=None, help="drop longer sequences (default: keep all)")
    p.add_argument("--max_per_family", type=int, default=None,
                   help="keep at most N sequences per family (a seeded sample; default: all)")
    p.add_argument("--iupac", choices=("n", "skip"), default="n",
                   help="letters other than ACGTUN: map to N (their pairs dropped) or skip the sequence")
    p.add_argument("--val_families", nargs="+", default=["0.1"],
                   help="fraction of groups (clans, or families without one), or a list of families/clans")
    p.add_argument("--test_families", nargs="+", default=["0.1"], help="as --val_families, for the test split")
    p.add_argument("--seed", type=seed, default=0, help="seed of the group order for fractional splits")
    p.add_argument("--held_out_from", type=Path, default=None,
                   help="a pickle of this script: keep only families and clans outside its train and val splits, "
                        "all as test (instead of --val_families / --test_families)")
    p.add_argument("--strict", action="store_true",
                   help="refuse a structure file with a pair of neighbouring bases or a partner that does not pair back "
                        "(default: kept / dropped and counted)")
    p.add_argument("--plot", type=Path, default=None, help="statistics PNG (default: next to --out)")
    return p


def read_inputs(paths: list[Path], iupac: str, log, strict: bool = False) -> tuple[list, Counter]:
    records, counts = [], Counter()
    for path in paths:
        recs, c = read_structures(path, strict)
        log.info("%s: %d sequences%s", path, len(recs),
                 "".join(f", {n} {why}" for why, n in c.items() if why not in ("sequences",)))
        records += recs
        counts += c
    records, c = clean_letters(records, iupac)
    return records, counts + c


def build_frame(records: list, len_min: int, len_max: int | None) -> tuple[pd.DataFrame, Counter]:
    """One row per kept record: length filter, sequences without pairs dropped, exact
    duplicate sequences dropped (first kept). ``family_size``: the family's number of
    sequences in the inputs, before any filter."""
    rows, dropped, seen = [], Counter(), set()
    family_size = Counter(rec.family for rec in records)
    for rec in records:
        n = len(rec.seq)
        if n < len_min or (len_max is not None and n > len_max):
            dropped["outside --len_min/--len_max"] += 1
        elif not rec.pairs:
            dropped["no base pair"] += 1
        elif rec.seq in seen:
            dropped["duplicate sequence"] += 1
        else:
            seen.add(rec.seq)
            rows.append({"seq": rec.seq, "one_idx": one_idx_from_pairs(rec.pairs),
                         "bounding_boxes": local_structure_boxes(rec.pairs), "family": rec.family, "clan": rec.clan,
                         "family_name": rec.family_name, "family_size": family_size[rec.family],
                         "source": rec.source, "name": rec.name,
                         "pseudoknotted": bool(crossing_pairs(rec.pairs))})
    return pd.DataFrame(rows), dropped


def not_producible(df: pd.DataFrame) -> dict[str, int]:
    """Pairs of ``df``'s references the loop grammar cannot produce, by reason
    (``PRODUCIBLE_DROPS``), and the structures it cannot produce at all."""
    drops, left_out = Counter(), 0
    for seq, one_idx in zip(df["seq"], df["one_idx"]):
        left_out += trainable_reference(seq, pairs_from_one_idx(one_idx), counts=drops) is None
    return {why: int(drops[why]) for why in PRODUCIBLE_DROPS} | {
        "structures with an interior loop over the grammar's longest": left_out}


def cap_families(df: pd.DataFrame, max_per_family: int, seed: int) -> tuple[pd.DataFrame, int]:
    """At most ``max_per_family`` rows per family, a seeded sample, file order kept."""
    rng = np.random.default_rng([seed, 31])
    keys = pd.Series(rng.random(len(df)), index=df.index)
    rank = keys.groupby(df["family"]).rank(method="first")
    kept = df[rank <= max_per_family]
    return kept.reset_index(drop=True), len(df) - len(kept)


def plot_statistics(df: pd.DataFrame, path: Path) -> None:
    fig, axes = plt.subplots(1, 4, figsize=(17, 3.8))
    lengths = df["seq"].str.len()
    density = df["one_idx"].map(lambda idx: len(idx[0])) / lengths
    for split in SPLITS:
        sel = df["split"] == split
        axes[0].hist(lengths[sel], bins=30, histtype="step", label=split)
        axes[1].hist(density[sel], bins=30, histtype="step", label=split)
    axes[0].set(title="sequence length", xlabel="nt")
    axes[1].set(title="base pairs per nt", xlabel="pairs / nt")
    by_split = df.groupby("split")
    x = np.arange(len(SPLITS))
    axes[2].bar(x, [by_split["pseudoknotted"].mean().get(s, 0) for s in SPLITS])
    axes[2].set(title="share of pseudoknotted sequences")
    axes[3].bar(x, [by_split["family"].nunique().get(s, 0) for s in SPLITS])
    axes[3].set(title="families per split")
    for ax in axes[2:]:
        ax.set_xticks(x, SPLITS)
    for ax in axes[:2]:
        ax.legend(fontsize=7)
    save_figure(fig, path)


def main(args) -> None:
    if args.max_per_family is not None and args.max_per_family < 1:
        raise InputError(f"--max_per_family must be at least 1, got {args.max_per_family}")
    if args.len_min < 1 or (args.len_max is not None and args.len_max < args.len_min):
        raise InputError(f"--len_min {args.len_min} / --len_max {args.len_max}: need 1 <= len_min <= len_max")
    val = parse_split_spec("--val_families", args.val_families)
    test = parse_split_spec("--test_families", args.test_families)
    if isinstance(val, float) and isinstance(test, float) and val + test >= 1:
        raise InputError(f"--val_families {val} + --test_families {test} leave no training groups")
    plot = args.plot or args.out.with_name(args.out.name.removesuffix(".gz").removesuffix(".pkl") + "_statistics.png")
    check_outputs([args.out, plot], args.inputs + [args.held_out_from])
    log = start_run("make_structure_dataset", args.seed)
    records, counts = read_inputs(args.inputs, args.iupac, log, args.strict)
    df, dropped = build_frame(records, args.len_min, args.len_max)
    if args.held_out_from is not None:
        seen = read_pickle(args.held_out_from, STRUCTURE_COLUMNS + ("family", "clan", "split"))
        seen = seen[seen["split"].isin(["train", "val"])]
        known = df["family"].isin(set(seen["family"])) | df["clan"].isin(set(seen["clan"]) - {""})
        dropped[f"in a train or val family or clan of {args.held_out_from}"] = int(known.sum())
        df = df[~known].reset_index(drop=True)
    if args.max_per_family is not None and not df.empty:
        df, n_capped = cap_families(df, args.max_per_family, args.seed)
        dropped[f"over --max_per_family {args.max_per_family}"] = n_capped
    if df.empty:
        raise InputError(f"{' '.join(map(str, args.inputs))}: no sequence left ({dict(dropped)})")
    df["split"] = "test" if args.held_out_from is not None else group_split(
        df, val, test, args.seed, {n for r in records for n in (r.family, r.family_name, r.clan)}, log)
    df.attrs["reader"] = {why: int(n) for why, n in counts.items()}
    df.attrs["not_producible"] = not_producible(df[df["split"] != "test"])
    log.info("pairs of train and val rows the loop grammar cannot produce (its trainer drops them): %s",
             ", ".join(f"{n} {why}" for why, n in df.attrs["not_producible"].items()))
    write_pickle(df, args.out)
    plot_statistics(df, plot)
    per_split = df.groupby("split").agg(n=("seq", "size"), families=("family", "nunique"))
    log.info("read %d sequences (%s)", sum(c for w, c in counts.items() if w == "sequences"),
             ", ".join(f"{n} {why}" for why, n in counts.items() if why != "sequences"))
    log.info("wrote %d sequences to %s and %s: %s; dropped: %s", len(df), args.out, plot,
             ", ".join(f"{s} {per_split.loc[s, 'n']} ({per_split.loc[s, 'families']} families)"
                       for s in SPLITS if s in per_split.index),
             ", ".join(f"{n} {why}" for why, n in dropped.items()) or "none")


if __name__ == "__main__":
    run_main(lambda: main(get_args_parser().parse_args()))
