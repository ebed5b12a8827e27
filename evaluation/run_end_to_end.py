"""End-to-end evaluation: sequence -> S1 -> S2 -> structure, beside ViennaRNA's MFE.

References: a test pickle (--data: a generator's MFE structures, or real structures from
s1_data_gen/make_structure_dataset.py, with --split test for its held-out families) or
structure files (--refs: a folder of .bpseq/.ct files, subfolders naming families, or a
FASTA with dot-bracket lines). With --max_span N both fold with pairs at most N apart
(their rows say so). Both predictors are scored by base-pair precision, recall
and F1 per sequence (exact, and with a one-position slip allowance), and timed per
sequence. Writes --out (per sequence and method), <out>_summary.csv (mean F1 overall, per
length bin, per family and per clan, and the family-macro mean) and <out>.png.

    python evaluation/run_end_to_end.py --s1_model S1.pth --s2_model S2.pth --data TEST.pkl.gz --out data/e2e.csv
"""
import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from stembb.cli import HelpFormatter, check_num, check_outputs
from stembb.errors import run_main
from stembb.io import write_csv
from stembb.pipeline import add_predictor_args, make_predictor
from stembb.plots import plt, save_figure
from stembb.report import add_reference_args, reference_records, rnafold_pairs, score_row, span_note, summarize
from stembb.runlog import start_run



def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    add_predictor_args(p)
    add_reference_args(p)
    p.add_argument("--out", type=Path, required=True, help="per-sequence CSV")
    return p


def plot_comparison(per_seq: pd.DataFrame, summary: pd.DataFrame, methods: tuple[str, str], path: Path) -> None:
    wide = per_seq.pivot(index="index", columns="method", values="f1")
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    ax1.scatter(wide[methods[1]], wide[methods[0]], s=10, alpha=0.6)
    ax1.plot([0, 1], [0, 1], color="grey", lw=1)
    ax1.set(xlabel=f"{methods[1]} MFE: F1", ylabel=f"{methods[0]}: F1", title="per-sequence base-pair F1")
    bins = summary[summary["group"] == "length"]
    labels = list(dict.fromkeys(bins["value"]))
    x = np.arange(len(labels))
    for k, method in enumerate(methods):
        vals = bins[bins["method"] == method].set_index("value").reindex(labels)["f1"]
        ax2.bar(x + (k - 0.5) * 0.4, vals, 0.4, label=method)
    ax2.set_xticks(x, labels, rotation=20)
    ax2.set(ylabel="mean F1", xlabel="length bin (nt)", title="mean F1 by length", ylim=(0, 1))
    ax2.legend()
    save_figure(fig, path)


def main(args) -> None:
    check_outputs([args.out], [args.data or args.refs, args.s1_model, args.s2_model])
    check_num(args.num)
    log = start_run("run_end_to_end")
    records = reference_records(args, log)
    predictor = make_predictor(args)
    methods = ours_name, vienna_name = "stembb" + span_note(args.max_span), "ViennaRNA" + span_note(args.max_span)
    predictor.warm_up()
    rows = []
    for k, rec in enumerate(tqdm(records, desc="end-to-end")):
        t = time.perf_counter()
        ours = predictor.predict([rec.seq])[0]
        t_ours = time.perf_counter() - t
        t = time.perf_counter()
        vienna = rnafold_pairs(rec.seq, "MFE", args.max_span)
        t_vienna = time.perf_counter() - t
        rows += [score_row(k, rec, ours_name, ours, t_ours), score_row(k, rec, vienna_name, vienna, t_vienna)]
    per_seq = pd.DataFrame(rows)
    summary = summarize(per_seq)
    write_csv(per_seq, args.out)
    stem = args.out.with_name(args.out.name.removesuffix(".csv"))
    write_csv(summary, Path(f"{stem}_summary.csv"))
    plot_comparison(per_seq, summary, methods, Path(f"{stem}.png"))
    overall = summary[summary["group"] == "all"].set_index("method")
    log.info("wrote %s, %s_summary.csv and %s.png", args.out, stem, stem)
    log.info("end-to-end F1 on %d sequences: %s %.3f (slip %.3f, %.3f s/seq), %s %.3f (slip %.3f, %.4f s/seq)",
             len(records), ours_name, overall.loc[ours_name, "f1"], overall.loc[ours_name, "f1_slip"],
             overall.loc[ours_name, "seconds_per_seq"], vienna_name, overall.loc[vienna_name, "f1"],
             overall.loc[vienna_name, "f1_slip"], overall.loc[vienna_name, "seconds_per_seq"])
    macro = summary[summary["group"] == "family_macro"].set_index("method")
    if not macro.empty:
        n_fam = int((summary["group"] == "family").sum() // len(methods))
        log.info("family-macro F1 over %d families: %s %.3f, %s %.3f", n_fam, ours_name, macro.loc[ours_name, "f1"],
                 vienna_name, macro.loc[vienna_name, "f1"])


if __name__ == "__main__":
    run_main(lambda: main(get_args_parser().parse_args()))
