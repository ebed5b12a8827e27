"""Dataset statistics as one PNG: stem size distribution, sequence lengths, boxes per kind,
and for merged multi-struct data the conflicts per segment.

    python evaluation/plot_dataset_statistics.py --data data/s1_train.pkl.gz data/test.pkl.gz \\
        --out plot/stem_size_distribution.png
"""
import argparse
from collections import Counter
from pathlib import Path

import numpy as np

from stembb.cli import HelpFormatter
from stembb.errors import run_main
from stembb.io import read_pickle
from stembb.plots import plt, save_figure
from stembb.runlog import start_run
from stembb.structure import KINDS, STEM


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--data", type=Path, nargs="+", required=True, help="one or more pickles")
    p.add_argument("--out", type=Path, default=Path("plot/stem_size_distribution.png"), help="output PNG")
    return p


def main(args) -> None:
    log = start_run("plot_dataset_statistics")
    frames = {path.name: read_pickle(path) for path in args.data}
    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    ax_stem, ax_len, ax_kind, ax_conf = axes.ravel()
    width = 0.8 / len(frames)
    for k, (name, df) in enumerate(frames.items()):
        boxes = [b for bs in df["bounding_boxes"] for b in bs]
        sizes = np.array([b.size[0] for b in boxes if b.kind == STEM])
        edges = np.arange(1, max(sizes.max(initial=1), 12) + 2) - 0.5
        ax_stem.hist(sizes, bins=edges, density=True, histtype="step", label=name)
        lengths = df["seq"].str.len().to_numpy()
        ax_len.hist(lengths, bins=30, histtype="step", label=name)
        kinds = Counter(b.kind for b in boxes)
        ax_kind.bar(np.arange(len(KINDS)) + k * width, [kinds[c] / len(df) for c in KINDS], width, label=name)
        if "n_conflicts" in df.columns:
            conflicts = df["n_conflicts"].to_numpy()
            ax_conf.hist(conflicts, bins=np.arange(conflicts.max() + 2) - 0.5, histtype="step", label=name)
        log.info("%s: %d rows, %d stems (median size %g), lengths %d-%d",
                 name, len(df), len(sizes), np.median(sizes) if len(sizes) else 0, lengths.min(), lengths.max())
    ax_stem.set(title="stem size distribution", xlabel="stem size (stacked pairs)", ylabel="density")
    ax_len.set(title="sequence length", xlabel="nt", ylabel="rows")
    ax_kind.set_xticks(np.arange(len(KINDS)) + 0.4 - width / 2, KINDS, rotation=20)
    ax_kind.set(title="boxes per row, by kind", ylabel="boxes / row")
    ax_conf.set(title="merge conflicts per segment (merged data only)", xlabel="stem boxes dropped", ylabel="segments")
    for ax in axes.ravel():
        if ax.has_data():
            ax.legend(fontsize=7)
    save_figure(fig, args.out)
    log.info("wrote %s", args.out)


if __name__ == "__main__":
    run_main(lambda: main(get_args_parser().parse_args()))
