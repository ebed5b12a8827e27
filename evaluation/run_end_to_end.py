"""End-to-end evaluation: sequence -> S1 -> S2 -> structure, beside ViennaRNA's MFE.

References: a test pickle (--data; its MFE structures) or real structures (--refs: a
folder of .bpseq/.ct files, subfolders naming families, or a FASTA with dot-bracket
lines). Both predictors are scored by base-pair precision, recall and F1 per sequence
(exact, and with a one-position slip allowance), and timed per sequence. Writes --out
(per sequence and method), <out>_summary.csv (mean F1 overall, per length bin and per
family) and <out>.png.

    python evaluation/run_end_to_end.py --s1_model S1.pth --s2_model S2.pth --data TEST.pkl.gz --out data/e2e.csv
"""
import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from stembb.errors import run_main
from stembb.data.folding import fold
from stembb.data.formats import Record, read_references
from stembb.io import read_pickle, write_csv
from stembb.metrics import pair_scores
from stembb.pipeline import add_predictor_args, check_sequences, make_predictor
from stembb.plots import plt, save_figure
from stembb.runlog import start_run
from stembb.structure import pairs_from_db, pairs_from_one_idx

METHODS = ("stembb", "ViennaRNA")
LENGTH_BINS = (0, 50, 100, 150, 200, 300, 500, 10 ** 6)


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_predictor_args(p)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", type=Path, help="test pickle from the var-len generator")
    src.add_argument("--refs", type=Path, help="folder of BPSEQ/CT files, or FASTA with dot-bracket lines")
    p.add_argument("--out", type=Path, required=True, help="per-sequence CSV")
    p.add_argument("--num", type=int, default=None, help="first N sequences only")
    p.add_argument("--max_length", type=int, default=500)
    return p.parse_args()


def load_records(args) -> list[Record]:
    if args.data is not None:
        df = read_pickle(args.data, first=args.num)
        records = [Record(f"row{k}", seq.upper(), pairs_from_one_idx(idx), "")
                   for k, (seq, idx) in enumerate(zip(df["seq"], df["one_idx"]))]
    else:
        records = read_references(args.refs)
    return records[:args.num] if args.num else records


def summarize(per_seq: pd.DataFrame) -> pd.DataFrame:
    bins = pd.cut(per_seq["length"], LENGTH_BINS, right=True)
    order = {str(c): k for k, c in enumerate(bins.cat.categories)}
    per_seq = per_seq.assign(length_bin=bins.astype(str)).sort_values("length_bin", key=lambda s: s.map(order))
    parts = [per_seq.assign(group="all", value="all")]
    parts.append(per_seq.assign(group="length", value=per_seq["length_bin"]))
    if (per_seq["family"] != "").any():
        parts.append(per_seq.assign(group="family", value=per_seq["family"]))
    table = pd.concat(parts).groupby(["group", "value", "method"], sort=False).agg(
        n=("f1", "size"), precision=("precision", "mean"), recall=("recall", "mean"), f1=("f1", "mean"),
        f1_slip=("f1_slip", "mean"), seconds_per_seq=("seconds", "mean"))
    return table.reset_index()


def plot_comparison(per_seq: pd.DataFrame, summary: pd.DataFrame, path: Path) -> None:
    wide = per_seq.pivot(index="name", columns="method", values="f1")
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    ax1.scatter(wide["ViennaRNA"], wide["stembb"], s=10, alpha=0.6)
    ax1.plot([0, 1], [0, 1], color="grey", lw=1)
    ax1.set(xlabel="ViennaRNA MFE: F1", ylabel="stembb (S1 + S2): F1", title="per-sequence base-pair F1")
    bins = summary[summary["group"] == "length"]
    labels = list(dict.fromkeys(bins["value"]))
    x = np.arange(len(labels))
    for k, method in enumerate(METHODS):
        vals = bins[bins["method"] == method].set_index("value").reindex(labels)["f1"]
        ax2.bar(x + (k - 0.5) * 0.4, vals, 0.4, label=method)
    ax2.set_xticks(x, labels, rotation=20)
    ax2.set(ylabel="mean F1", xlabel="length bin (nt)", title="mean F1 by length", ylim=(0, 1))
    ax2.legend()
    save_figure(fig, path)


def main():
    args = parse_args()
    log = start_run("run_end_to_end", args.seed)
    records = load_records(args)
    check_sequences(args.data or args.refs, records, args.max_length)
    predictor = make_predictor(args)
    rows = []
    for rec in tqdm(records, desc="end-to-end"):
        t = time.perf_counter()
        ours = predictor.predict([rec.seq])[0]
        t_ours = time.perf_counter() - t
        t = time.perf_counter()
        vienna = pairs_from_db(fold(rec.seq, partition=False).mfe_structure)
        t_vienna = time.perf_counter() - t
        for method, pred, seconds in (("stembb", ours, t_ours), ("ViennaRNA", vienna, t_vienna)):
            exact, slip = pair_scores(pred, rec.pairs), pair_scores(pred, rec.pairs, slip=1)
            rows.append({"name": rec.name, "family": rec.family, "length": len(rec.seq), "method": method,
                         **exact, "f1_slip": slip["f1"], "n_pred_pairs": len(pred), "n_ref_pairs": len(rec.pairs),
                         "seconds": seconds})
    per_seq = pd.DataFrame(rows)
    summary = summarize(per_seq)
    write_csv(per_seq, args.out)
    stem = args.out.with_name(args.out.name.removesuffix(".csv"))
    write_csv(summary, Path(f"{stem}_summary.csv"))
    plot_comparison(per_seq, summary, Path(f"{stem}.png"))
    overall = summary[summary["group"] == "all"].set_index("method")
    log.info("wrote %s, %s_summary.csv and %s.png", args.out, stem, stem)
    log.info("end-to-end F1 on %d sequences: stembb %.3f (slip %.3f, %.3f s/seq), ViennaRNA %.3f (slip %.3f, %.4f s/seq)",
             len(records), overall.loc["stembb", "f1"], overall.loc["stembb", "f1_slip"],
             overall.loc["stembb", "seconds_per_seq"], overall.loc["ViennaRNA", "f1"],
             overall.loc["ViennaRNA", "f1_slip"], overall.loc["ViennaRNA", "seconds_per_seq"])


if __name__ == "__main__":
    run_main(main)
